"""`mlx-d2o doctor`: what this machine will run at, measured rather than assumed."""

from __future__ import annotations

import os
import platform
import sys
import time


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    import mlx.core as mx

    a = mx.random.normal((n, n), dtype=mx.float32)
    b = mx.random.normal((n, n), dtype=mx.float32)
    mx.eval(a @ b)  # warm-up: first call pays for allocation and thread start-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _memory_gb() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return f"{total / 2**30:.1f} GB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def report(matmul_size: int = 1024) -> dict:
    import importlib.metadata as md

    import mlx.core as mx

    from .. import __version__
    from ..errors import D2OError
    from . import DEFAULT_MODEL, embedded_model_path
    from .blas import INSTALL_HINT, find_openblas, loaded_blas

    dev = mx.default_device()
    info = {}
    try:
        info = mx.device_info()
    except Exception:
        pass
    out = {
        "mlx-d2o": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "mlx": md.version("mlx"),
        "mlx-lm": md.version("mlx-lm"),
        "device": f"{dev.type.name if hasattr(dev.type, 'name') else dev} ({info.get('device_name', platform.processor() or 'cpu')})",
        "cpu cores": os.cpu_count(),
        "memory": _memory_gb(),
    }
    if sys.platform == "darwin":
        out["blas"] = "Accelerate (macOS)"
    else:
        lib = loaded_blas()
        out["blas"] = (
            lib
            if lib
            else f"reference BLAS (slow): {INSTALL_HINT}"
            if not find_openblas()
            else f"reference BLAS in this process; run through the mlx-d2o command to preload {find_openblas()}"
        )
    out["matmul float32"] = f"{matmul_gflops(matmul_size):.1f} GFLOP/s (n={matmul_size})"
    if "memory_size" in info:
        out["device memory"] = f"{info['memory_size'] / 2**30:.1f} GB"
    try:
        out["embedded model"] = f"{DEFAULT_MODEL}: {embedded_model_path(DEFAULT_MODEL)}"
    except D2OError as e:
        out["embedded model"] = f"missing ({e})"
    return out
