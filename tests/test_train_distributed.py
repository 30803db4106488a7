"""Data-parallel training under `mlx.launch --backend ring` on loopback: 2 real ranks, no mock."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from test_train import make_cache, metrics

from mlx_d2o.models.blas import find_openblas
from mlx_d2o.train import TrainArgs, train

BIN = Path(sys.executable).parent
LAUNCH = shutil.which("mlx.launch") or str(BIN / "mlx.launch")
SCRIPT = shutil.which("mlx-d2o") or str(BIN / "mlx-d2o")
# SGD, not Adam: Adam's first update is lr * sign(gradient), blind to a wrong gradient scale.
SETTINGS = dict(
    batch_size=4, num_layers=2, optimizer="sgd", learning_rate=0.1, steps_per_report=1, save_every=1
)


def free_port_pair() -> int:
    """A starting port P with P and P+1 free (the ring backend listens on one port per rank)."""
    for _ in range(50):
        p = random.randint(20000, 60000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def launch_cmd(model, cache, out, iters, resume=False, **settings):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SETTINGS, **settings}.items()]
    cmd = [
        LAUNCH,
        "-n",
        "2",
        "--backend",
        "ring",
        "-p",
        str(free_port_pair()),
        SCRIPT,
        "train",
        "--model",
        str(model),
        "--samples",
        str(cache),
        "--adapter-path",
        str(out),
        f"--iters={iters}",
        *flags,
    ] + (["--resume"] if resume else [])
    env = dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1")
    if sys.platform.startswith("linux") and find_openblas():
        env["LD_PRELOAD"] = find_openblas()
    return cmd, env


def launch(model, cache, out, iters, resume=False):
    cmd, env = launch_cmd(model, cache, out, iters, resume)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    # mlx.launch exits 0 even when a rank fails: judge by the ranks' own output.
    assert r.returncode == 0 and "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr[
        -3000:
    ]
    return r


def weights(path: Path) -> dict:
    return {k: np.array(v) for k, v in mx.load(str(path / "adapters.safetensors")).items()}


def test_two_ranks_equal_one_process_and_resume(tiny_model, tmp_path):
    cache = make_cache(tiny_model, tmp_path / "cache", n=8)
    one = tmp_path / "one"
    train(
        TrainArgs(
            model=str(tiny_model), samples=str(cache), adapter_path=str(one), iters=1, **SETTINGS
        ),
        log=lambda s: None,
    )
    two = tmp_path / "two"
    r = launch(tiny_model, cache, two, iters=1)
    assert r.stdout.count("trained 1 steps") == 1  # rank 0 alone reports

    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    moved = [k for k in w1 if np.abs(w1[k]).max() > 0 and k.endswith("lora_b")]
    assert moved, "the step changed nothing: the comparison would be empty"
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert metrics(two)[0]["loss"] == pytest.approx(metrics(one)[0]["loss"], rel=1e-5)

    # --resume under mlx.launch: rank 0 reads the checkpoint and hands it to rank 1.
    train(
        TrainArgs(
            model=str(tiny_model),
            samples=str(cache),
            adapter_path=str(one),
            iters=2,
            resume=True,
            **SETTINGS,
        ),
        log=lambda s: None,
    )
    launch(tiny_model, cache, two, iters=2, resume=True)
    w1, w2 = weights(one), weights(two)
    for k in w1:  # the second step compounds float32 summation-order noise: a looser bound
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-3, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(
        [line["loss"] for line in metrics(two)], [line["loss"] for line in metrics(one)], rtol=1e-5
    )
    assert [line["step"] for line in metrics(two)] == [1, 2]


def _rank_pid(out: Path, rank: int):
    """PID of the training process of RANK writing to OUT (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            str(out).encode() in cmdline
            and b"train" in cmdline
            and f"MLX_RANK={rank}".encode() in environ
        ):
            return int(proc.name)
    return None


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the rank's process through /proc"
)
def test_a_dying_rank_ends_the_run_with_a_message_and_a_usable_checkpoint(tiny_model, tmp_path):
    import signal
    import time

    cache = make_cache(tiny_model, tmp_path / "cache", n=8)
    out = tmp_path / "die"
    cmd, env = launch_cmd(tiny_model, cache, out, iters=100000, save_every=2, steps_per_report=50)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 180
        while not (out / "checkpoints" / "latest.json").exists():
            assert p.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        pid = _rank_pid(out, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert "another rank of this mlx.launch run exited" in err and "--resume" in err, err[-800:]
    # The checkpoint left behind is whole: one process resumes from it.
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    train(
        TrainArgs(
            model=str(tiny_model),
            samples=str(cache),
            adapter_path=str(out),
            iters=step + 1,
            resume=True,
            **{**SETTINGS, "save_every": 2},
        ),
        log=lambda s: None,
    )
    assert metrics(out)[-1]["step"] == step + 1
