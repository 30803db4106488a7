"""`mlx-d2o fuse` against its baseline, `mlx_lm fuse` (mlx-lm's own script), on SmolLM2-135M Q4_1.

Both fuse the same random LoRA adapter (rank 8, all 30 blocks, every linear layer of mlx-lm's
default keys) into the GGUF-imported base, once keeping it quantized and once with --dequantize.
Each run is a fresh process: the figures are wall time and the process's peak RSS. Outputs:
with --dequantize both should be bit-identical (same fuse code). Kept quantized, mlx-lm
quantizes every fused weight afresh at 4 bits, while mlx-d2o's default stores the adapted layers
at 8 bits (`--adapted-layers 8bit`) and also measures the fidelity to base + adapter (its
`fidelity:` line; `--no-fidelity` skips it); the figure is each one's RMS distance to the exact
float fused weights (mlx_lm's --dequantize output). Sizes and KL/token of every setting:
benchmarks/fuse_accuracy.py.

    python benchmarks/fuse_bench.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"


def make_adapter(base: Path, out: Path, num_layers: int, rank: int) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(base))
    model.freeze()
    params = {"rank": rank, "scale": 20.0, "dropout": 0.0}
    mx.random.seed(0)
    linear_to_lora_layers(model, num_layers, params)
    w = {
        k: (0.01 * mx.random.normal(v.shape) if k.endswith("lora_b") else v)
        for k, v in tree_flatten(model.trainable_parameters())
    }
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), w)
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "fine_tune_type": "lora",
                "num_layers": num_layers,
                "lora_parameters": params,
                "d2o": {"loss": "d2o", "alpha": 0.1, "beta": 0.1, "K": 11, "iters": 1},
            }
        )
    )
    return out


def timed(cmd: list, env: dict) -> tuple:
    """(seconds, peak RSS in MB) of one child process."""
    tic = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr.read().decode()[-2000:]}")
    return secs, usage.ru_maxrss / 1024


def rms_to_float(quantized: Path, reference: Path) -> float:
    """RMS over all quantized linear weights of (dequantized QUANTIZED - float REFERENCE)."""
    import mlx.core as mx

    q, ref = (
        mx.load(str(quantized / "model.safetensors")),
        mx.load(str(reference / "model.safetensors")),
    )
    cfg = json.loads((quantized / "config.json").read_text())["quantization"]
    se = n = 0.0
    for k in q:
        if not k.endswith(".scales") or "embed" in k:
            continue
        m = k[: -len(".scales")]
        c = cfg.get(m, cfg)
        w = mx.dequantize(
            q[m + ".weight"], q[k], q[m + ".biases"], group_size=c["group_size"], bits=c["bits"]
        )
        se += float(mx.square(w.astype(mx.float32) - ref[m + ".weight"].astype(mx.float32)).sum())
        n += w.size
    return (se / n) ** 0.5


def max_weight_diff(a: Path, b: Path) -> float:
    import mlx.core as mx

    wa, wb = mx.load(str(a / "model.safetensors")), mx.load(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys(), "different tensors"
    return max(float(mx.abs(wa[k].astype(mx.float32) - wb[k].astype(mx.float32)).max()) for k in wa)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()

    from mlx_d2o.models import model_dir

    base = model_dir("smollm2-135m")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLX_D2O_NO_BLAS_REEXEC": "1", "HF_HUB_OFFLINE": "1"}
    if Path(BLAS).exists():
        env["LD_PRELOAD"] = BLAS  # same BLAS for both
    with tempfile.TemporaryDirectory(prefix="fuse-bench-") as tmp:
        tmp = Path(tmp)
        adapter = make_adapter(base, tmp / "adapter", num_layers=30, rank=args.rank)
        print(
            f"base: SmolLM2-135M-Instruct Q4_1 (GGUF import, {base}); adapter: LoRA rank {args.rank}, 30 layers"
        )
        print(f"{'mode':<12} {'tool':<14} {'best s':>8} {'peak RSS MB':>12}")
        for mode, flags in (("dequantize", ["--dequantize"]), ("quantized", [])):
            results = {}
            for tool in ("mlx_lm fuse", "mlx-d2o fuse"):
                out = tmp / f"{tool.split()[0]}-{mode}"
                runs = []
                for _ in range(args.repeats):
                    shutil.rmtree(out, ignore_errors=True)
                    if tool == "mlx_lm fuse":
                        cmd = [sys.executable, "-m", "mlx_lm", "fuse", "--model", str(base)]
                    else:
                        cmd = [str(bindir / "mlx-d2o"), "fuse", "--model", "smollm2-135m"]
                    cmd += ["--adapter-path", str(adapter), "--save-path", str(out), *flags]
                    runs.append(timed(cmd, env))
                secs, rss = min(r[0] for r in runs), max(r[1] for r in runs)
                results[tool] = (secs, rss, out)
                print(f"{mode:<12} {tool:<14} {secs:>8.2f} {rss:>12.0f}")
            (b_s, b_rss, b_out), (o_s, o_rss, o_out) = (
                results["mlx_lm fuse"],
                results["mlx-d2o fuse"],
            )
            if mode == "dequantize":
                exact = b_out
                check = f"max |weight difference| = {max_weight_diff(b_out, o_out):.3g}"
            else:
                check = (
                    f"RMS to exact fused weights: mlx_lm {rms_to_float(b_out, exact):.3e}, "
                    f"mlx-d2o {rms_to_float(o_out, exact):.3e}"
                )
            print(f"{mode:<12} {'ratio':<14} {o_s / b_s:>7.2f}x {o_rss / b_rss:>11.2f}x   {check}")


if __name__ == "__main__":
    main()
