#!/usr/bin/env bash
# Set up (if needed), then the main job on the embedded SmolLM2-135M and data/:
# doctor, data check, sample -> train -> eval (recipes/demo.yaml), and where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
D2O=.venv/bin/mlx-d2o
echo "==> mlx-d2o doctor"; $D2O doctor
echo "==> mlx-d2o data check data/train.jsonl"; $D2O data check data/train.jsonl
echo "==> mlx-d2o sample -c recipes/demo.yaml"; $D2O sample -c recipes/demo.yaml
echo "==> mlx-d2o train -c recipes/demo.yaml"; $D2O train -c recipes/demo.yaml
echo "==> mlx-d2o eval -c recipes/demo.yaml"; $D2O eval -c recipes/demo.yaml --adapter-path runs/demo/adapters
echo "report: runs/demo/report/report.md"
echo "next: source .venv/bin/activate   # puts mlx-d2o and mlx_lm.* on your PATH for the README's quickstart"
