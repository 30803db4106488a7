#!/usr/bin/env bash
# The device check for the day a GPU is lent: on one NVIDIA H100 with MLX's CUDA build
# (pip install -e ".[cuda]"), under 8 minutes. It builds a random model of Mistral-7B's shipped
# config (mlx_d2o/model_configs: 32 layers, hidden 4096, 4-bit group 64; random weights, the
# byte-level test tokenizer grown to its 32,768 tokens), samples K = 11 responses to 8 prompts of
# data/train.jsonl, then for batch 1 and 4 runs `mlx-d2o plan` and a real `mlx-d2o train` (D2O,
# LoRA, the planner's settings), and prints one line each: predicted against measured peak,
# train tok/s, sampling tok/s.
#   bash benchmarks/device_check.sh [--tiny] [WORKDIR]
# --tiny: the same on a tiny shape of that config (2 layers, hidden 256), on any device (the
# CPU here, where train dequantizes to float32 and plan plans that); tests/test_plan.py runs it.
set -euo pipefail
TINY=0
if [[ "${1:-}" == "--tiny" ]]; then TINY=1; shift; fi
W=${1:-/tmp/mlx-d2o-device-check}
PY=${PYTHON:-python3}
D2O="$PY -m mlx_d2o.cli"
if [[ $TINY == 1 ]]; then PROMPTS=4 TOKENS=16 ITERS=2; else PROMPTS=8 TOKENS=88 ITERS=3; fi
rm -rf "$W"; mkdir -p "$W"

$PY - "$W/model" "$TINY" <<'PYEOF'
import json, sys
import mlx.core as mx
from mlx_d2o.testing import make_random_model
from mlx_d2o.train.plan import CONFIGS, SHIPPED

config = json.loads((CONFIGS / SHIPPED["mistral-7b"]).read_text())
if sys.argv[2] == "1":
    config.update(num_hidden_layers=2, hidden_size=256, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=1024)
make_random_model(sys.argv[1], config)
info = mx.device_info() if hasattr(mx, "device_info") else {}
print(f"device_check: {mx.default_device()} {info.get('device_name', '')}, MLX {mx.__version__}, "
      f"mistral-7b config{' (tiny shape)' if sys.argv[2] == '1' else ''}, K = 11")
PYEOF

$D2O sample --model "$W/model" --data data/train.jsonl --output "$W/cache" -k 11 \
  --max-tokens "$TOKENS" --limit "$PROMPTS" --batch-size "$PROMPTS" --temp 1.0 > "$W/sample.log"
for B in 1 4; do
  $D2O plan --model "$W/model" --samples "$W/cache" --batch-size "$B" --json \
    > "$W/plan-$B.json"
  $D2O train --model "$W/model" --samples "$W/cache" --adapter-path "$W/adapters-$B" \
    --batch-size "$B" --iters "$ITERS" --steps-per-report 1 \
    --learning-rate 1e-5 > "$W/train-$B.log" 2>&1
done

$PY - "$W" <<'PYEOF'
import json, re, sys
from pathlib import Path

w = Path(sys.argv[1])
for b in (1, 4):
    predicted = json.loads((w / f"plan-{b}.json").read_text())["total"] / 1e9
    rows = [json.loads(ln) for ln in (w / f"adapters-{b}" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("split") == "train"]
    measured = max(r["peak_memory_gb"] for r in rows)
    err = (predicted - measured) / measured * 100
    said = re.search(r"plan: total \(peak\)\s+([\d.]+) GB", (w / f"train-{b}.log").read_text())
    print(f"peak batch {b}: predicted {predicted:.3f} GB (train's plan {said.group(1)} GB), "
          f"measured {measured:.3f} GB ({err:+.1f} %)")
    print(f"train batch {b}: {rows[-1]['tokens_per_sec']:.0f} tok/s (last of {len(rows)} steps)")
s = json.loads((w / "cache" / "summary.json").read_text())
print(f"sampling: {s['generated_tokens_per_sec']} tok/s ({s['generated_tokens']} tokens, "
      f"{s['records']} prompts x 11)")
PYEOF
