#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded SmolLM2-135M and data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
D2O=.venv/bin/mlx-d2o
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
echo "==> mlx-d2o doctor"; $D2O doctor
echo "==> mlx-d2o data check data/train.jsonl"; $D2O data check data/train.jsonl
echo "==> mlx-d2o generate"; $D2O generate --prompt "What is the capital of France?" --max-tokens 32
