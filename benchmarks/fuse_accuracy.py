"""Which way of storing a fused adapter keeps what the adapter does, at what size, on SmolLM2-135M Q4_1.

Reference: base + adapter, as `mlx-d2o eval --adapter-path` runs it. Against it, each fused
model written by `mlx-d2o fuse` (every `--adapted-layers` setting, `--dequantize`,
`--quantize --q-bits 8`) and by mlx-lm's own `python -m mlx_lm fuse` (which quantizes each
fused layer afresh at the base's bits), and the base alone (the adapter's whole effect, for
scale). Figures:
- size on disk of the fused directory's weights (*.safetensors);
- KL/token: KL(base + adapter ‖ fused) per response token over the full vocabulary, teacher-
  forced over responses that base + adapter sampled (temperature 1, seed 0, 32 tokens) to the
  prompts of data/benign.jsonl (`mlx_d2o.export.fidelity`, as `fuse --fidelity-prompts`);
- the KL/token `fuse` itself printed (its 6 built-in benign exchanges);
- held-out mean log π(negative) on data/test.jsonl (what `mlx-d2o eval --negatives` reports),
  and its gap to base + adapter's in % (the issue's bar: within 2 %).

    python benchmarks/fuse_accuracy.py --adapter-path runs/demo/adapters [--num-prompts 32]

Without --adapter-path a random LoRA (rank 8, 30 layers) is used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parent.parent

SETTINGS = [
    ("fuse (default: --adapted-layers 8bit)", {}),
    ("fuse --adapted-layers float", {"adapted_layers": "float"}),
    ("fuse --adapted-layers requant", {"adapted_layers": "requant"}),
    ("fuse --adapted-layers grid (old default)", {"adapted_layers": "grid"}),
    ("fuse --dequantize", {"dequantize": True}),
    ("fuse --quantize --q-bits 8 --q-group-size 64", {"quantize": True, "q_bits": 8}),
]


def neg_logps(net, tok, records) -> float:
    """Mean log π(rejected | prompt) over RECORDS, as `mlx-d2o eval` scores negatives."""
    from mlx_d2o.data import prompt_tokens, response_tokens
    from mlx_d2o.logprobs import score

    pairs = []
    for r in records:
        p = prompt_tokens(tok, r.messages)
        pairs.append((p, response_tokens(tok, r.messages, r.rejected, p)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    logps, _ = score(net, pairs, batch_size=8, pad_id=pad)
    return sum(logps) / len(logps)


def weights_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def make_variants(adapter: Path, tmp: Path) -> dict:
    """{name: (fused dir, fuse's own KL/token or None, seconds)} for every setting."""
    from mlx_d2o.export import FuseArgs, fuse

    out = {}
    for i, (name, kw) in enumerate(SETTINGS):
        path, tic = tmp / f"v{i}", time.perf_counter()
        res = fuse(
            FuseArgs(model="smollm2-135m", adapter_path=str(adapter), save_path=str(path), **kw),
            log=lambda s: None,
        )
        kl = res.fidelity["kl_per_token"] if res.fidelity else None
        out[name] = (path, kl, time.perf_counter() - tic)
    from mlx_d2o.models import model_dir

    path, tic = tmp / "mlx_lm", time.perf_counter()
    cmd = [sys.executable, "-m", "mlx_lm", "fuse", "--model", str(model_dir("smollm2-135m"))]
    cmd += ["--adapter-path", str(adapter), "--save-path", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    out["python -m mlx_lm fuse"] = (path, None, time.perf_counter() - tic)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter-path", default=None, help="default: a random LoRA, rank 8")
    ap.add_argument("--benign", default=str(REPO / "data" / "benign.jsonl"))
    ap.add_argument("--negatives", default=str(REPO / "data" / "test.jsonl"))
    ap.add_argument("--num-prompts", type=int, default=32, help="records of --negatives")
    args = ap.parse_args()

    from fuse_bench import make_adapter

    from mlx_d2o.data import load_records
    from mlx_d2o.export import kl_per_token, make_probe
    from mlx_d2o.models import load, model_dir

    records = load_records(args.negatives)[: args.num_prompts]
    with tempfile.TemporaryDirectory(prefix="fuse-acc-") as tmp:
        tmp = Path(tmp)
        adapter = (
            Path(args.adapter_path)
            if args.adapter_path
            else make_adapter(model_dir("smollm2-135m"), tmp / "adapter", 30, 8)
        )
        ref_net, tok = load("smollm2-135m", adapter_path=str(adapter))
        probe = make_probe(ref_net, tok, args.benign)
        ref_neg = neg_logps(ref_net, tok, records)
        del ref_net
        variants = make_variants(adapter, tmp)
        rows = [("base + adapter (reference)", None, None, 0.0, None, ref_neg)]
        for name, (path, own_kl, secs) in variants.items():
            net, _ = load(str(path))
            kl, neg = kl_per_token(net, probe), neg_logps(net, tok, records)
            rows.append((name, weights_size(path), secs, kl, own_kl, neg))
            del net
        base, _ = load("smollm2-135m")
        base_size = weights_size(model_dir("smollm2-135m"))
        rows.append(("base alone", base_size, None, kl_per_token(base, probe), None, neg_logps(base, tok, records)))  # fmt: skip

    print(
        f"SmolLM2-135M-Instruct Q4_1 (GGUF import), adapter: {args.adapter_path or 'random LoRA'}"
        f"; KL/token over {probe.tokens} tokens of {probe.source}; log π(negative): mean over "
        f"{len(records)} records of {Path(args.negatives).name}\n"
    )
    print("| setting | weights on disk | fuse time | KL/token | fuse's own KL | log π(neg) | vs adapter |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, size, secs, kl, own, neg in rows:
        mb = f"{size / 2**20:.1f} MB" if size else "-"
        t = f"{secs:.0f} s" if secs else "-"
        own = f"{own:.2g}" if own is not None else "-"
        gap = f"{(neg - ref_neg) / abs(ref_neg):+.1%}"
        print(f"| {name} | {mb} | {t} | {kl:.2g} | {own} | {neg:.2f} | {gap} |")


if __name__ == "__main__":
    main()
