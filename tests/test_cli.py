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
