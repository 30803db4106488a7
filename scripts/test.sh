#!/usr/bin/env bash
# Set up (if needed), check style (ruff lint + format), then run the test suite.
# Extra arguments go to pytest; MLX_D2O_SKIP_LINT=1 skips the style check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${MLX_D2O_SKIP_LINT:-0}" != "1" ]; then
  echo "==> ruff check, ruff format --check"
  .venv/bin/ruff check --quiet .
  .venv/bin/ruff format --check --quiet .
fi
# Tests run MLX in the pytest process itself, so the faster BLAS is preloaded here
# (the mlx-d2o command does this by itself).
for lib in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0; do
  if [ -e "$lib" ]; then export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"; break; fi
done
exec .venv/bin/python -m pytest -q -ra "$@"
