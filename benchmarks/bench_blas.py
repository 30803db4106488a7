"""Why the CLI preloads OpenBLAS and dequantizes on the CPU: measured, not assumed.

Runs in child processes (the BLAS can only be chosen at process start):
  1. float32 matmul GFLOP/s with MLX's bundled reference BLAS vs OpenBLAS preloaded;
  2. SmolLM2-135M forward+backward tokens/s, quantized (Q4_1/Q8_0 as stored), dequantized to
     bfloat16, and dequantized to float32, all with OpenBLAS.

    python benchmarks/bench_blas.py [--size 1024] [--model smollm2-135m] [--batch 4 --seq 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mlx_d2o.models.blas import find_openblas

CHILD_MATMUL = """
import json, sys
from mlx_d2o.models.doctor import matmul_gflops
from mlx_d2o.models.blas import loaded_blas
print(json.dumps({"gflops": matmul_gflops(int(sys.argv[1])), "blas": loaded_blas() or "reference"}))
"""

CHILD_TRAIN = """
import json, sys, time
import mlx.core as mx, mlx.nn as nn
from mlx_d2o.models import load
model_name, mode, batch, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model, tok = load(model_name, dequantize=mode != "quantized")
if mode == "bfloat16":
    model.set_dtype(mx.bfloat16)
x = mx.random.randint(0, 1000, (batch, seq))
def loss_fn(m):
    logits = m(x[:, :-1])
    return nn.losses.cross_entropy(logits, x[:, 1:]).mean()
# gradient w.r.t. the norms only: the matmul work of forward and backward, without an optimizer
model.freeze()
for layer in model.model.layers:
    layer.input_layernorm.unfreeze()
step = nn.value_and_grad(model, loss_fn)
mx.eval(step(model))
t = time.perf_counter(); n = 3
for _ in range(n):
    mx.eval(step(model))
dt = (time.perf_counter() - t) / n
print(json.dumps({"tok_s": batch * seq / dt, "mode": mode}))
"""


def child(code: str, *args: str, preload: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    lib = find_openblas()
    if lib is None:
        sys.exit("OpenBLAS not found: nothing to compare against")
    ref = child(CHILD_MATMUL, str(args.size), preload=None)
    opt = child(CHILD_MATMUL, str(args.size), preload=lib)
    print(
        f"matmul float32 n={args.size}: reference BLAS {ref['gflops']:.1f} GFLOP/s, "
        f"OpenBLAS {opt['gflops']:.1f} GFLOP/s, ratio {opt['gflops'] / ref['gflops']:.1f}x"
    )
    shape = (args.model, str(args.batch), str(args.seq))
    q = child(CHILD_TRAIN, shape[0], "quantized", *shape[1:], preload=lib)
    b = child(CHILD_TRAIN, shape[0], "bfloat16", *shape[1:], preload=lib)
    f = child(CHILD_TRAIN, shape[0], "float32", *shape[1:], preload=lib)
    print(
        f"{args.model} forward+backward, batch {args.batch}x{args.seq}, OpenBLAS: "
        f"quantized as stored {q['tok_s']:.0f} tok/s, bfloat16 {b['tok_s']:.0f} tok/s, "
        f"float32 {f['tok_s']:.0f} tok/s; float32 is {f['tok_s'] / q['tok_s']:.1f}x quantized, "
        f"{f['tok_s'] / b['tok_s']:.1f}x bfloat16"
    )


if __name__ == "__main__":
    main()
