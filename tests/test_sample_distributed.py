"""`mlx-d2o sample` under `mlx.launch`: 2 ranks of MLX's ring backend on loopback, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_d2o.sample import SampleArgs, sample
from mlx_d2o.sample.cache import MANIFEST, read_cache, shard_name

BIN = Path(sys.executable).parent
LAUNCH, MLX_D2O = BIN / "mlx.launch", BIN / "mlx-d2o"

pytestmark = pytest.mark.skipif(
    not (LAUNCH.exists() and MLX_D2O.exists()),
    reason="needs the mlx.launch and mlx-d2o console scripts",
)


def _launch(model, data, out, port: int) -> subprocess.CompletedProcess:
    # mlx.launch runs `python <command...>`; the console script's path is a Python file.
    cmd = [
        str(LAUNCH),
        "-n",
        "2",
        "--backend",
        "ring",
        "--starting-port",
        str(port),
        "--",
        str(MLX_D2O),
        "sample",
        "-m",
        str(model),
        "--data",
        str(data),
        "-o",
        str(out),
        "-k",
        "2",
        "--max-tokens",
        "6",
        "--temp",
        "1.0",
        "--batch-size",
        "1",
        "--seed",
        "0",
    ]
    env = dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


def test_two_ranks_every_record_once_and_resume(tiny_model, records_file, tmp_path):
    out = tmp_path / "cache"
    r = _launch(tiny_model, records_file, out, 31400 + os.getpid() % 500 * 2)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest, rows = read_cache(out)
    assert manifest["world_size"] == 2 and manifest["complete"] is True
    assert [row["id"] for row in rows] == [
        f"r{i}" for i in range(8)
    ]  # every record once, data order
    shards = [out / shard_name(rank, 2) for rank in (0, 1)]
    assert [json.loads(line)["id"] for line in shards[0].read_text().splitlines()] == [
        "r0",
        "r2",
        "r4",
        "r6",
    ]
    assert [json.loads(line)["id"] for line in shards[1].read_text().splitlines()] == [
        "r1",
        "r3",
        "r5",
        "r7",
    ]

    # A batch's seed depends on its records only: one process with the same batch size draws
    # the same samples, and the reference scores agree.
    single = tmp_path / "single"
    sample(
        SampleArgs(
            model=str(tiny_model),
            data=str(records_file),
            output=str(single),
            num_samples=2,
            max_tokens=6,
            temp=1.0,
            top_p=1.0,
            batch_size=1,
            seed=0,
        ),
        progress=False,
    )
    _, alone = read_cache(single)
    for a, b in zip(rows, alone):
        assert a["samples"] == b["samples"]
        assert a["ref_logps"]["samples"] == pytest.approx(
            b["ref_logps"]["samples"], rel=1e-5, abs=1e-4
        )

    # Resume per shard: rank 1 lost its last record and tore the line before it.
    before = shards[1].read_bytes()
    lines = before.splitlines(keepends=True)
    shards[1].write_bytes(b"".join(lines[:2]) + lines[2][:20])
    m = json.loads((out / MANIFEST).read_text())
    m["complete"] = False
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(Exception, match="incomplete"):
        read_cache(out)
    r = _launch(tiny_model, records_file, out, 31400 + os.getpid() % 500 * 2 + 1000)
    assert r.returncode == 0, r.stdout + r.stderr
    assert shards[1].read_bytes() == before
    assert [row["id"] for row in read_cache(out)[1]] == [f"r{i}" for i in range(8)]
