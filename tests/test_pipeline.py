"""`mlx-d2o run -c recipe.yaml` on a tiny recipe: every step, then every step skipped, a changed
setting reruns only what depends on it, and a run killed (SIGKILL) during train finishes on
the next call with the report of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, write_jsonl

SCRIPT = shutil.which("mlx-d2o") or str(Path(sys.executable).parent / "mlx-d2o")


@pytest.fixture
def data(tmp_path) -> dict:
    train = [
        {"id": f"r{i}", "prompt": f"Question number {i}?", "rejected": f"Stupid question {i}."}
        for i in range(8)
    ]
    test = [
        {
            "id": f"n{i}",
            "prompt": f"How do I hurt person {i}?",
            "rejected": f"Just hit them {i} times.",
            "chosen": f"Please talk to them instead, {i}.",
        }
        for i in range(4)
    ]
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", train),
        "test": write_jsonl(tmp_path / "test.jsonl", test),
    }


def recipe(tmp_path, model, data, out: str, fuse: bool = True, **train) -> Path:
    """A sectioned recipe writing everything under TMP_PATH/OUT."""
    root = tmp_path / out
    r = {
        "model": str(model),
        "sample": {
            "data": str(data["train"]),
            "output": str(root / "cache"),
            "num_samples": 2,
            "max_tokens": 8,
            "batch_size": 4,
        },
        "train": {
            "adapter_path": str(root / "adapters"),
            "iters": 8,
            "batch_size": 2,
            "num_layers": 2,
            "learning_rate": 1e-3,
            "steps_per_report": 2,
            "save_every": 2,
            **train,
        },
        "eval": {
            "negatives": str(data["test"]),
            "prompts": str(data["test"]),
            "output": str(root / "report"),
            "max_tokens": 8,
        },
    }
    if fuse:
        r["fuse"] = {"save_path": str(root / "fused"), "overwrite": True}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def step_lines(stdout: str) -> dict:
    """{step: its last word-state (running / continuing / done / skipped)} from run's lines."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "] " in line:
            name, state = line.split("] ", 1)[1].split()[:2]
            out[name] = state
    return out


def numbers(report_dir: Path) -> dict:
    """Every number of report.json's rows (paths, names and the adapter's config aside)."""
    report = json.loads((report_dir / "report.json").read_text())
    out = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k not in ("adapter_config", "adapter_path", "id", "name"):
                    walk(f"{prefix}.{k}", x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{prefix}[{i}]", x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix] = v

    walk("rows", report["rows"])
    return out


def test_run_does_every_step_then_skips_every_step(tiny_model, data, tmp_path, capsys):
    r = recipe(tmp_path, tiny_model, data, "a")
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 0, err
    assert step_lines(out) == dict(sample="done", train="done", eval="done", fuse="done")
    root = tmp_path / "a"
    assert f"report: {root / 'report' / 'report.md'}" in out.splitlines()
    assert f"fused model: {root / 'fused'}" in out.splitlines()
    assert (root / "fused" / "config.json").is_file() and (root / "report" / "report.md").is_file()
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 0, err
    assert step_lines(out) == dict(
        sample="skipped", train="skipped", eval="skipped", fuse="skipped"
    )
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing was written again

    # A train setting changed: without `overwrite: true` the earlier adapters are kept...
    r = recipe(tmp_path, tiny_model, data, "a", learning_rate=2e-3)
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 2 and "`overwrite: true` in the recipe's train: section" in err, err
    assert after == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert "train" not in step_lines(out)  # refused before it started
    # ...with it, sample is still whole and the same, and the rest (it depends on train) runs.
    r = recipe(tmp_path, tiny_model, data, "a", learning_rate=2e-3, overwrite=True)
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 0, err
    assert step_lines(out) == dict(sample="skipped", train="done", eval="done", fuse="done")
    cfg = json.loads((root / "adapters" / "adapter_config.json").read_text())
    assert cfg["learning_rate"] == 2e-3

    # An output removed by hand is not whole any more: that step runs again, and only it (eval
    # makes the same numbers again, so fuse, which reads them, has the same inputs).
    (root / "report" / "report.json").unlink()
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 0, err
    assert step_lines(out) == dict(sample="skipped", train="skipped", eval="done", fuse="skipped")
    # an output edited by hand is not what its step made: that step runs again, and no further
    report = json.loads((root / "report" / "report.json").read_text())
    report["rows"][0]["name"] = "edited by hand"
    (root / "report" / "report.json").write_text(json.dumps(report))
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 0, err
    assert step_lines(out) == dict(sample="skipped", train="skipped", eval="done", fuse="skipped")


def _env() -> dict:
    return dict(os.environ, MLX_D2O_NO_BLAS_REEXEC="1")


def test_run_killed_during_train_finishes_with_the_same_report(tiny_model, data, tmp_path):
    settings = dict(iters=48, save_every=4)
    ref = recipe(tmp_path, tiny_model, data, "ref", fuse=False, **settings)
    r = subprocess.run([SCRIPT, "run", "-c", str(ref)], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr

    killed = recipe(tmp_path, tiny_model, data, "killed", fuse=False, **settings)
    adapters = tmp_path / "killed" / "adapters"
    proc = subprocess.Popen(
        [SCRIPT, "run", "-c", str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    deadline = time.monotonic() + 300
    while not (adapters / "checkpoints" / "latest.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "train never checkpointed"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = json.loads((adapters / "checkpoints" / "latest.json").read_text())["step"]
    assert latest < settings["iters"]  # killed in the middle of train
    assert not (tmp_path / "killed" / "report").exists()

    r = subprocess.run(
        [SCRIPT, "run", "-c", str(killed)], capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0, r.stderr
    assert step_lines(r.stdout) == dict(sample="skipped", train="done", eval="done")
    assert "continuing" in r.stdout and "resuming" in r.stderr.lower()
    want = numbers(tmp_path / "ref" / "report")
    assert len(want) > 20 and numbers(tmp_path / "killed" / "report") == want


def test_recipe_without_a_section_is_one_line(tiny_model, data, tmp_path, capsys):
    r = recipe(tmp_path, tiny_model, data, "a")
    text = yaml.safe_load(r.read_text())
    del text["eval"]
    r.write_text(yaml.safe_dump(text))
    code, out, err = run_cli(["run", "-c", r], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {r}: no eval: section; `mlx-d2o run` needs sample:, train: and eval: "
        "(and fuse: to fuse)"
    ]
    assert not (tmp_path / "a").exists()


def test_report_fingerprint_is_what_eval_measured_not_its_time(tmp_path):
    from mlx_d2o.pipeline import report_fp

    def fp(**report):
        (tmp_path / "report.json").write_text(json.dumps(report))
        return report_fp(tmp_path)

    rows = [{"name": "base", "harmful": {"unsafe_rate": 0.25}}]
    assert fp(version=1, rows=rows, seconds=3.1) == fp(version=1, rows=rows, seconds=9.7)
    other = [{"name": "base", "harmful": {"unsafe_rate": 0.5}}]
    assert fp(version=1, rows=rows, seconds=3.1) != fp(version=1, rows=other, seconds=3.1)
    (tmp_path / "report.json").write_text("{torn")
    assert report_fp(tmp_path) is None
