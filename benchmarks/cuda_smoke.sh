#!/usr/bin/env bash
# A short check of the whole pipeline on MLX's CUDA build (pip install -e ".[cuda13]" or ".[cuda]").
# Builds a random model of SmolLM2-135M's shape (30 layers, hidden 576; byte-level tokenizer),
# then sample -> train -> eval -> fuse on a slice of data/, printing each step's throughput.
#   bash benchmarks/cuda_smoke.sh [WORKDIR]
set -euo pipefail
W=${1:-/tmp/mlx-d2o-cuda-smoke}
PY=${PYTHON:-python3}
D2O="$PY -m mlx_d2o.cli"
rm -rf "$W"; mkdir -p "$W"
$PY - <<PYEOF
import mlx.core as mx
from mlx_d2o.models.doctor import matmul_gflops
from mlx_d2o.testing import make_tiny_model
print("device:", mx.default_device(), mx.device_info().get("device_name", ""))
print(f"matmul float32 n=4096: {matmul_gflops(4096):.0f} GFLOP/s")
make_tiny_model("$W/model", hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536)
PYEOF
t0=$(date +%s)
$D2O sample --model "$W/model" --data data/train.jsonl --output "$W/cache" -k 4 --max-tokens 48 --batch-size 16 --limit 64 --temp 1.0
t1=$(date +%s)
$D2O train --model "$W/model" --samples "$W/cache" --adapter-path "$W/adapters" --iters 30 --batch-size 4 \
  --learning-rate 1e-4 --num-layers 16 --steps-per-report 10
t2=$(date +%s)
$D2O eval --model "$W/model" --adapter-path "$W/adapters" --negatives data/test.jsonl --prompts data/harmful_prompts.jsonl \
  --benign data/benign.jsonl --output "$W/report" --num-prompts 16 --max-tokens 32
t3=$(date +%s)
$D2O fuse --model "$W/model" --adapter-path "$W/adapters" --save-path "$W/fused"
t4=$(date +%s)
$PY -c "import mlx_lm; m, t = mlx_lm.load('$W/fused'); print('fused generates:', repr(mlx_lm.generate(m, t, 'hi', max_tokens=8)))"
echo "wall seconds: sample $((t1-t0)), train $((t2-t1)), eval $((t3-t2)), fuse $((t4-t3))"
