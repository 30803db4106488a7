"""Where the comparison runs: the `mlx-d2o` command, the machine, its load (recipes/compare.py
and recipes/compare_sweep.py both use these; neither imports the other's internals)."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path


def cli() -> list[str]:
    """The `mlx-d2o` beside this Python (a venv's bin/), else on PATH, else `python -m`."""
    here = Path(sys.executable).parent / "mlx-d2o"
    if here.exists():
        return [str(here)]
    found = shutil.which("mlx-d2o")
    return [found] if found else [sys.executable, "-m", "mlx_d2o.cli"]


def machine() -> str:
    import mlx.core as mx

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
        f"MLX {mx.__version__} ({mx.default_device()})"
    )


def load_avg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"
