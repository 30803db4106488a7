#!/usr/bin/env bash
# Set up (if needed), then the main job on the embedded SmolLM2-135M and data/:
# doctor, data check, then `mlx-d2o run`: sample -> train -> eval -> fuse (recipes/demo.yaml),
# each step skipped when its output is whole and made from the same inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
D2O=.venv/bin/mlx-d2o
echo "==> mlx-d2o doctor"; $D2O doctor
echo "==> mlx-d2o data check data/train.jsonl"; $D2O data check data/train.jsonl
echo "==> mlx-d2o run -c recipes/demo.yaml"; $D2O run -c recipes/demo.yaml
echo "next: source .venv/bin/activate   # puts mlx-d2o and mlx_lm.* on your PATH for the README's quickstart"
