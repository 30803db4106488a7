"""Optimized BLAS for MLX's Linux CPU build.

The `mlx-cpu` wheel links netlib's reference BLAS: float32 matmul runs at ~6 GFLOP/s on two
cores, against ~200 with OpenBLAS. The library can only be swapped before the process starts
(LD_PRELOAD), so the CLI re-executes itself once with it preloaded. macOS uses Accelerate and
needs none of this.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Debian/Ubuntu (libopenblas0-pthread, libopenblas0-openmp), Fedora, Arch, conda-ish layouts.
CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]
INSTALL_HINT = (
    "install OpenBLAS (Debian/Ubuntu: sudo apt-get install libopenblas0-pthread; "
    "Fedora: sudo dnf install openblas) and run again, or set MLX_D2O_BLAS=/path/to/libopenblas.so.0"
)
_GUARD = "MLX_D2O_BLAS_REEXEC"


def find_openblas() -> str | None:
    env = os.environ.get("MLX_D2O_BLAS")
    if env:
        return env if Path(env).exists() else None
    return next((c for c in CANDIDATES if Path(c).exists()), None)


def loaded_blas() -> str | None:
    """The optimized BLAS mapped into this process, if any (Linux: /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        if "openblas" in line.lower() or "libmkl" in line.lower() or "blis" in line.lower():
            return line.split()[-1]
    return None


def ensure_optimized_blas(argv: list[str] | None = None) -> None:
    """Re-exec this process with OpenBLAS preloaded when on Linux and not already so.

    Does nothing on macOS, when MLX_D2O_NO_BLAS_REEXEC is set, or after one attempt (the guard
    variable stops loops). When no OpenBLAS exists, warns with the fix and carries on.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MLX_D2O_NO_BLAS_REEXEC"):
        return
    if loaded_blas() or os.environ.get(_GUARD):
        return
    lib = find_openblas()
    if lib is None:
        print(
            f"warning: MLX on this Linux CPU uses the reference BLAS (~30x slower matmul); {INSTALL_HINT}",
            file=sys.stderr,
        )
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[_GUARD] = "1"
    # orig_argv keeps `-m pkg` and interpreter flags, so a module run re-runs as a module.
    argv = (
        list(getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]) if argv is None else argv
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)
