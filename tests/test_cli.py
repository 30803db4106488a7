"""The CLI as a user runs it: console script, BLAS re-exec, doctor, generate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_d2o.models.blas import find_openblas

SCRIPT = shutil.which("mlx-d2o") or str(Path(sys.executable).parent / "mlx-d2o")


def _env(**kw):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "MLX_D2O_NO_BLAS_REEXEC", "MLX_D2O_BLAS_REEXEC")
    }
    env.update(kw)
    return env


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or find_openblas() is None,
    reason="needs Linux with OpenBLAS",
)
def test_doctor_uses_optimized_blas():
    r = subprocess.run(
        [SCRIPT, "doctor", "--matmul-size", "512"], capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0, r.stderr
    blas = next(x for x in r.stdout.splitlines() if x.startswith("blas"))
    assert "openblas" in blas.lower()
    gflops = float(next(x for x in r.stdout.splitlines() if x.startswith("matmul")).split()[2])
    assert gflops > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BLAS fallback")
def test_missing_blas_warns_with_fix():
    r = subprocess.run(
        [SCRIPT, "doctor", "--matmul-size", "64"],
        capture_output=True,
        text=True,
        env=_env(MLX_D2O_BLAS="/nonexistent/libopenblas.so.0"),
    )
    assert r.returncode == 0, r.stderr
    assert "reference BLAS" in r.stderr and "apt-get install libopenblas0-pthread" in r.stderr


def test_generate_on_tiny_model(tiny_model):
    r = subprocess.run(
        [SCRIPT, "generate", "--model", str(tiny_model), "--prompt", "hi", "--max-tokens", "5"],
        capture_output=True,
        text=True,
        env=_env(MLX_D2O_NO_BLAS_REEXEC="1"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() != ""


def test_unknown_model_exits_2(tmp_path):
    r = subprocess.run(
        [SCRIPT, "generate", "--model", str(tmp_path / "nope.gguf")],
        capture_output=True,
        text=True,
        env=_env(MLX_D2O_NO_BLAS_REEXEC="1"),
    )
    assert r.returncode == 2 and "nope.gguf" in r.stderr and "Traceback" not in r.stderr


# --- recipes: typos and wrong types are one-line errors naming the key ---------------------


def test_sectioned_recipe_refuses_an_unknown_top_level_key(tmp_path, capsys):
    # found: a recipe with per-command sections silently dropped unknown top-level keys
    from conftest import run_cli

    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model: smollm2-135m\nmodle: x\nsample:\n  num_samples: 2\n")
    code, _, err = run_cli(["sample", "-c", recipe, "--data", "data/train.jsonl"], capsys)
    assert code == 2 and f"{recipe}: field 'modle': unknown setting" in err
    assert len(err.strip().splitlines()) == 1


def test_recipe_value_of_the_wrong_type_is_one_line(tmp_path, capsys):
    # found: `num_samples: "four"` ended in a ValueError traceback
    from conftest import run_cli

    recipe = tmp_path / "four.yaml"
    recipe.write_text('sample:\n  num_samples: "four"\n')
    code, _, err = run_cli(["sample", "-c", recipe], capsys)
    assert code == 2 and "field 'num_samples': expected int, got 'four'" in err
    recipe.write_text("train:\n  iters: true\n")
    code, _, err = run_cli(["train", "-c", recipe], capsys)
    assert code == 2 and "field 'iters': expected int, got True" in err


@pytest.mark.parametrize("section", ["sample", "train", "eval"])
def test_shipped_recipes_merge_cleanly(section):
    from mlx_d2o.cli import common
    from mlx_d2o.evaluate import EvalArgs
    from mlx_d2o.sample import SampleArgs
    from mlx_d2o.train import TrainArgs

    cls = {"sample": SampleArgs, "train": TrainArgs, "eval": EvalArgs}[section]
    for recipe in sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml")):
        text = recipe.read_text()
        if f"\n{section}:" in text or section in recipe.stem:
            settings = common.settings_from(cls, {}, recipe, section)
            assert settings["model"] or section == "eval"


# --- help: every option explained, defaults shown, no value type on flags --------------------


def _commands():
    import typer.main

    from mlx_d2o.cli import app

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            yield from ((f"{name} {n}", c) for n, c in subs.items())
        else:
            yield name, cmd


def test_every_option_of_every_command_has_help():
    # found: --lora-rank/scale/dropout, --grad-accumulation-steps, --seed ... had no help text
    missing = [
        f"{name} {p.opts[0]}"
        for name, cmd in _commands()
        for p in cmd.params
        if p.param_type_name == "option" and not (p.help or "").strip()
    ]
    assert not missing, missing


def test_help_shows_no_value_type_on_flags(capsys):
    # found: every flag, even --help, showed a <bool> type
    from conftest import run_cli

    for name, _ in _commands():
        code, out, _ = run_cli([*name.split(), "--help"], capsys)
        assert code == 0 and "<bool>" not in out, name
