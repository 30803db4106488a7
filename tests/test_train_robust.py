"""mlx-d2o train when things go wrong: damaged checkpoints, leftovers of killed runs, signals,
two runs on one folder, settings out of range, a folder that cannot be written; and the first
hour's friction (refused reruns, a finished resume, --num-layers past the model, --help)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_train import args, make_cache, metrics, run_cli

from mlx_d2o.errors import D2OError
from mlx_d2o.models.blas import find_openblas
from mlx_d2o.train import train

SCRIPT = shutil.which("mlx-d2o") or str(Path(sys.executable).parent / "mlx-d2o")


@pytest.fixture(scope="module")
def cache(tiny_model, tmp_path_factory) -> Path:
    return make_cache(tiny_model, tmp_path_factory.mktemp("cache") / "c")


@pytest.fixture(scope="module")
def straight(tiny_model, cache, tmp_path_factory) -> list:
    """The losses of 6 uninterrupted steps: what every resumed run below must repeat."""
    out = tmp_path_factory.mktemp("straight") / "a"
    train(args(tiny_model, cache, out, iters=6, save_every=2), log=lambda s: None)
    return [line["loss"] for line in metrics(out)]


def cli_argv(model, cache, out, *extra) -> list:
    return [
        "--model", str(model), "--samples", str(cache), "--adapter-path", str(out),
        "--batch-size", "2", "--num-layers", "2", "--learning-rate", "1e-3",
        "--steps-per-report", "1", *extra,
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Resume from the newest whole checkpoint
# --------------------------------------------------------------------------------------------


def _damage(out: Path, how: str) -> None:
    ck = out / "checkpoints"
    if how == "truncated-optimizer":
        with open(ck / "0000004" / "optimizer.safetensors", "r+b") as f:
            f.truncate(100)
    elif how == "torn-latest":
        (ck / "latest.json").write_text('{"step": 4, "di')
    elif how == "missing-adapters":
        (ck / "0000004" / "adapters.safetensors").unlink()
    elif how == "latest-names-a-missing-folder":
        shutil.rmtree(ck / "0000004")
    elif how == "torn-state":
        (ck / "0000004" / "state.json").write_text('{"step": 4, "samp')
    elif how == "torn-metrics-line":  # killed while writing the line of step 5
        with open(out / "metrics.jsonl", "a") as f:
            f.write('{"step": 5, "split": "train", "lo')


@pytest.mark.parametrize(
    "how, resumed_at, why",
    [
        ("truncated-optimizer", 2, "0000004 is not whole"),
        ("torn-latest", 4, "latest.json"),
        ("missing-adapters", 2, "adapters.safetensors is missing"),
        ("latest-names-a-missing-folder", 2, "0000004, which is missing"),
        ("torn-state", 2, "state.json"),
        ("torn-metrics-line", 4, None),
    ],
)
def test_resume_takes_the_newest_whole_checkpoint(
    tiny_model, cache, straight, tmp_path, how, resumed_at, why
):
    out = tmp_path / "r"
    train(args(tiny_model, cache, out, iters=4, save_every=2), log=lambda s: None)
    _damage(out, how)
    said = []
    train(args(tiny_model, cache, out, iters=6, save_every=2, resume=True), log=said.append)
    line = next(s for s in said if s.startswith("resuming"))
    assert f"checkpoints/{resumed_at:07d} at step {resumed_at}" in line, said
    if why:
        assert why in line, line
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(1, 7))
    np.testing.assert_allclose([m["loss"] for m in lines], straight, rtol=1e-5, atol=1e-6)


def test_no_whole_checkpoint_is_a_one_line_error(tiny_model, cache, tmp_path):
    out = tmp_path / "r"
    train(args(tiny_model, cache, out, iters=4, save_every=2), log=lambda s: None)
    for step in ("0000002", "0000004"):
        (out / "checkpoints" / step / "adapters.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(D2OError) as e:
        train(args(tiny_model, cache, out, iters=6, resume=True), log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "no whole checkpoint" in msg and "0000002" in msg, msg


def test_leftovers_of_killed_checkpoint_writes_are_removed_at_the_next_start(
    tiny_model, cache, tmp_path
):
    out = tmp_path / "r"
    train(args(tiny_model, cache, out, iters=2, save_every=2), log=lambda s: None)
    ck = out / "checkpoints"
    (ck / ".0000004.tmp-abc").mkdir()
    (ck / ".0000004.tmp-abc" / "optimizer.safetensors").write_bytes(b"x" * 1_500_000)
    (ck / ".latest.json.k2j").write_text("{")
    (out / ".adapters.safetensors.x1y.safetensors").write_bytes(b"x" * 500_000)
    said = []
    train(args(tiny_model, cache, out, iters=4, save_every=2, resume=True), log=said.append)
    assert not list(out.glob(".adapters*")) and not list(ck.glob(".0*"))
    assert not list(ck.glob(".latest*"))
    assert any("3 temp files" in s and "2.0 MB" in s for s in said), said


# --------------------------------------------------------------------------------------------
# Signals, and two runs on one folder
# --------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1")
    if sys.platform.startswith("linux") and find_openblas():
        env["LD_PRELOAD"] = find_openblas()
    return env


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_resume_continues_the_curve(
    tiny_model, cache, tmp_path, sig
):
    out = tmp_path / "s"
    argv = ["train", *cli_argv(tiny_model, cache, out)]
    argv += ["--iters", "100000", "--save-every", "0", "--grad-accumulation-steps", "2"]
    p = subprocess.Popen([SCRIPT, *argv], stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() or len(metrics(out)) < 3:
            assert p.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(0.05)
        if sig == signal.SIGINT:
            # A second run on the same adapter path is refused at once, naming the first.
            code, text = run_cli(*argv[1:], "--resume")
            assert code == 2 and f"pid {p.pid}" in text and "writing here" in text, text
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "Traceback" not in err, err[-2000:]
    assert f"resume with: {shlex.join(['mlx-d2o', *argv, '--resume'])}" in last, last
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert step >= 3 and step % 2 == 0  # an update is finished, never cut in the middle
    if sig == signal.SIGTERM:
        return
    kw = dict(grad_accumulation_steps=2, save_every=0, iters=step + 4)
    train(args(tiny_model, cache, out, resume=True, **kw), log=lambda s: None)
    full = tmp_path / "full"
    train(args(tiny_model, cache, full, **kw), log=lambda s: None)
    a, b = metrics(full), metrics(out)
    assert [m["step"] for m in b] == list(range(1, step + 5))
    np.testing.assert_allclose([m["loss"] for m in b], [m["loss"] for m in a], rtol=1e-5)


PEER = """
import sys
from mlx_d2o.distributed import Shard, peer_exit
with peer_exit(Shard(None, int(sys.argv[1]), 2), lambda cause: f"a peer is gone ({cause})"):
    raise RuntimeError(sys.argv[2])
"""


@pytest.mark.parametrize("rank", [0, 1])
def test_under_mlx_launch_only_a_failed_collective_reads_as_a_lost_peer(rank):
    def run(message):
        cmd = [sys.executable, "-c", PEER, str(rank), message]
        return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)

    lost = run("[ring] connection to a peer was lost")
    assert lost.returncode == 3, lost.stderr
    assert ("error: a peer is gone" in lost.stderr) == (rank == 0), lost.stderr
    real = run("[matmul] Last dimension of first input with shape (2,3) must match (4,5).")
    assert real.returncode == 1 and "a peer is gone" not in real.stderr, real.stderr
    assert "RuntimeError: [matmul] Last dimension" in real.stderr, real.stderr


# --------------------------------------------------------------------------------------------
# Settings and the adapter path, checked before any work
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--learning-rate", "-1"), ("--learning-rate", "nan"), ("--epochs", "-1"),
        ("--epochs", "0"), ("--save-every", "-1"), ("--lora-rank", "0"), ("--num-layers", "0"),
        ("--num-layers", "-5"), ("--lora-dropout", "1.5"), ("--lora-dropout", "-0.1"),
        ("--lora-scale", "0"), ("--warmup", "-5"), ("--batch-size", "0"), ("--iters", "0"),
        ("--grad-accumulation-steps", "0"), ("--alpha", "0"), ("--beta", "-0.1"),
        ("--max-seq-length", "4"), ("--steps-per-report", "0"), ("--steps-per-eval", "-1"),
        ("--refresh-every", "-2"), ("--seed", "-1"),
    ],
)  # fmt: skip
def test_settings_out_of_range_are_refused_before_any_work(cache, tmp_path, flag, value):
    out = tmp_path / "o"
    # A model that does not exist: any work before the check would fail with another message.
    code, text = run_cli(*cli_argv(tmp_path / "no-model", cache, out), flag, value)
    assert code == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} {value}"), text
    assert not out.exists()


def test_adapter_path_under_a_file_is_one_line(tiny_model, cache, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"
    code, text = run_cli(*cli_argv(tiny_model, cache, out), "--iters", "2")
    assert code == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "afile" in lines[0] and "Not a directory" in lines[0], text


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only); skipped where mount is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(*options):
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(mnt)],
            capture_output=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        return mnt

    yield mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_leaves_nothing_half_written_and_resumes(
    tiny_model, cache, tmp_path, small_disk
):
    mnt = small_disk()
    # Room for the metrics, not for a checkpoint (68 KB of adapters, 137 KB of optimizer state).
    (mnt / "filler").write_bytes(b"x" * (1024 * 1024 - 120_000))
    out = mnt / "a"
    code, text = run_cli(*cli_argv(tiny_model, cache, out), "--iters", "4", "--save-every", "2")
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(out) in errors[0], text
    assert "space" in errors[0] or "disk full" in errors[0], text
    assert "Traceback" not in text
    left = [p.name for p in out.rglob(".*") if p.name != ".lock"]
    assert left == [], left
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only
    (mnt / "filler").unlink()  # space freed: the same command runs (no checkpoint to resume)
    code, text = run_cli(*cli_argv(tiny_model, cache, out), "--iters", "4", "--save-every", "2")
    assert code == 0, text


def test_a_read_only_adapter_path_is_one_line(tiny_model, cache, small_disk):
    mnt = small_disk("ro")
    out = mnt / "a"
    code, text = run_cli(*cli_argv(tiny_model, cache, out), "--iters", "2")
    assert code == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "Read-only" in lines[0], text


# --------------------------------------------------------------------------------------------
# Reruns, finished runs, --num-layers, --help, progress
# --------------------------------------------------------------------------------------------


def test_rerun_into_an_earlier_run_is_refused_unless_overwrite_or_resume(
    tiny_model, cache, tmp_path
):
    out = tmp_path / "o"
    base = cli_argv(tiny_model, cache, out, "--iters", "2", "--save-every", "2")
    assert run_cli(*base)[0] == 0
    before = (out / "adapters.safetensors").read_bytes()
    code, text = run_cli(*base)
    assert code == 2 and "--resume" in text and "--overwrite" in text, text
    assert (out / "checkpoints" / "0000002").is_dir()
    assert (out / "adapters.safetensors").read_bytes() == before
    code, text = run_cli(*base, "--overwrite", "--learning-rate", "1e-2")
    assert code == 0, text
    assert (out / "adapters.safetensors").read_bytes() != before


def test_resume_of_a_finished_run_says_it_is_finished(tiny_model, cache, tmp_path):
    out = tmp_path / "o"
    base = cli_argv(tiny_model, cache, out, "--iters", "2", "--save-every", "2")
    assert run_cli(*base)[0] == 0
    code, text = run_cli(*base, "--resume")
    assert code == 0, text
    assert "already finished" in text and "nan" not in text, text


def test_num_layers_past_the_model_is_clamped(tiny_model, cache, tmp_path):
    out = tmp_path / "o"
    said = []
    train(args(tiny_model, cache, out, num_layers=16, iters=1), log=said.append)
    assert any("--num-layers 16" in s and "2 layers" in s for s in said), said
    assert json.loads((out / "adapter_config.json").read_text())["num_layers"] == 2


def test_help_has_text_and_default_for_every_option():
    import typer.main

    from mlx_d2o.cli import app
    from mlx_d2o.train import DEFAULTS

    command = typer.main.get_command(app).commands["train"]
    for p in command.params:
        help_text = p.help or ""
        assert help_text, f"{p.opts} has no help"
        assert "default" in help_text, f"{p.opts}: no default shown ({help_text})"
        name = p.name
        if name in DEFAULTS and DEFAULTS[name] is not None and not isinstance(DEFAULTS[name], bool):
            assert f"(default: {DEFAULTS[name]})" in help_text, (p.opts, help_text)


def test_progress_says_compiling_saving_and_probing(tiny_model, cache, tmp_path):
    said = []
    train(args(tiny_model, cache, tmp_path / "o", iters=2), log=said.append)
    text = "\n".join(said)
    assert "compiling the step" in text, text
    assert text.index("saving") < text.index("measuring") < text.index("before"), text
