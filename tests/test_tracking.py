"""`mlx-d2o train --report-to`: the trackers' own files hold what metrics.jsonl holds.

The console script runs in a subprocess (wandb and TensorBoard write files when their runs end,
as they do when a user's run ends). The wandb run is read back from its offline transaction log
with wandb's own protobuf records; the TensorBoard events with TensorBoard's own reader.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import make_cache

SCRIPT = shutil.which("mlx-d2o") or str(Path(sys.executable).parent / "mlx-d2o")
REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **kw) -> dict:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", MLX_D2O_NO_BLAS_REEXEC="1")
    env["WANDB_CONFIG_DIR"] = env["WANDB_CACHE_DIR"] = str(tmp_path / "wandb-home")
    env.update(kw)
    return env


def _train(model, cache, out, tmp_path, *extra, **env):
    cmd = [SCRIPT, "train", "--model", str(model), "--samples", str(cache)]
    cmd += ["--adapter-path", str(out), "--batch-size", "2", "--num-layers", "2"]
    cmd += ["--learning-rate", "1e-3", "--iters", "4", "--steps-per-report", "2"]
    cmd += ["--save-every", "0", "--val-samples", str(cache), "--steps-per-eval", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path, **env))


def _metrics(out: Path) -> dict:
    """{(TRL name, step): value} of metrics.jsonl, the names as the trackers show them."""
    got = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        prefix = {"train": "train/", "val": "eval/"}[d["split"]]
        for k, v in d.items():
            if k not in ("step", "split") and isinstance(v, (int, float)):
                got[(prefix + k, d["step"])] = float(v)
    return got


def _wandb_history(run_file: Path) -> tuple[dict, dict]:
    """({(key, step): value}, config) of an offline run's .wandb file: a 7-byte header (":W&B",
    magic, version), then LevelDB log records (crc32c, length, type; 32 KiB blocks) whose
    payloads are wandb's `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payloads, part = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            payloads.append(part)
            part = b""
    history, config = {}, {}
    for p in payloads:
        rec = pb.Record()
        rec.ParseFromString(p)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item
            }
            step = items.pop("_step", rec.history.step.num)
            history.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
        elif kind in ("run", "config"):  # the config of wandb.init, then any later update
            update = rec.run.config.update if kind == "run" else rec.config.update
            config.update({i.key: json.loads(i.value_json) for i in update})
    return history, config


def _tensorboard_scalars(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p for p in log_dir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    acc = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    return {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def test_wandb_and_tensorboard_hold_the_metrics(tiny_model, tmp_path):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboardX")
    pytest.importorskip("tensorboard")
    cache = make_cache(tiny_model, tmp_path / "cache")
    out = tmp_path / "adapters"
    r = _train(tiny_model, cache, out, tmp_path, "--report-to", "wandb,tensorboard")
    assert r.returncode == 0, r.stderr
    want = _metrics(out)
    assert {k for k, _ in want} >= {"train/loss", "eval/loss", "train/rewards/margins"}
    assert {s for _, s in want} == {0, 2, 4}  # validation at 0, reports at 2 and 4

    tb = _tensorboard_scalars(out / "tensorboard")
    assert tb.keys() == want.keys()
    for k, v in want.items():
        assert tb[k] == pytest.approx(v, rel=1e-6), k  # float32 in the event file

    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = _wandb_history(run_file)
    assert {k: v for k, v in history.items() if k[0] != "iteration"} == pytest.approx(want)
    assert config["loss"] == "d2o" and config["iters"] == 4 and config["batch_size"] == 2


# Hides a package as if it were not installed: `import NAME` raises ImportError.
HIDE = """
import importlib.abc, os, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in os.environ["HIDE_MODULES"].split(","):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, _Hide())
"""


@pytest.mark.parametrize("tracker,package", [("tensorboard", "tensorboardX"), ("wandb", "wandb")])
def test_uninstalled_tracker_is_one_line_before_any_work(tiny_model, tmp_path, tracker, package):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE)
    cache = make_cache(tiny_model, tmp_path / "cache", n=2)
    out = tmp_path / "adapters"
    path = os.pathsep.join([str(shim), str(REPO), os.environ.get("PYTHONPATH", "")])
    r = _train(
        tiny_model, cache, out, tmp_path, "--report-to", f"swanlab,{tracker}",
        PYTHONPATH=path, HIDE_MODULES=package,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install {package}" in lines[0], r.stderr
    assert not out.exists()  # refused before the folder was claimed or the model loaded


def test_unknown_tracker_is_one_line(tiny_model, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache", n=2)
    r = _train(tiny_model, cache, tmp_path / "a", tmp_path, "--report-to", "wandb,mlflow")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --report-to mlflow: unknown tracker (known: wandb, swanlab, tensorboard)"
    ]


def test_tracker_that_cannot_start_is_one_line(tiny_model, tmp_path):
    """SwanLab without a login and without a TTY (CI) cannot start its run: one line, exit 2,
    before step 1."""
    pytest.importorskip("swanlab")
    cache = make_cache(tiny_model, tmp_path / "cache", n=2)
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith("SWANLAB")}
    home = tmp_path / "home"
    home.mkdir()
    cmd = [SCRIPT, "train", "--model", str(tiny_model), "--samples", str(cache)]
    cmd += ["--adapter-path", str(tmp_path / "a"), "--iters", "2", "--batch-size", "2"]
    cmd += ["--report-to", "swanlab"]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**env, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --report-to swanlab: the tracker could not start its run")
    assert "Traceback" not in r.stderr and not (tmp_path / "a" / "metrics.jsonl").exists()


def test_only_rank_0_reports_under_mlx_launch(tiny_model, tmp_path):
    """Two real ranks (`mlx.launch --backend ring`): one TensorBoard run, holding metrics.jsonl."""
    pytest.importorskip("tensorboardX")
    pytest.importorskip("tensorboard")
    from test_train_distributed import launch_cmd

    cache = make_cache(tiny_model, tmp_path / "cache")
    out = tmp_path / "adapters"
    cmd, env = launch_cmd(tiny_model, cache, out, 2, report_to="tensorboard")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    tb = _tensorboard_scalars(out / "tensorboard")  # asserts a single run folder
    want = _metrics(out)
    assert {s for _, s in want} == {1, 2} and tb.keys() == want.keys()
    assert all(tb[k] == pytest.approx(v, rel=1e-6) for k, v in want.items())
