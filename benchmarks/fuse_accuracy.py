"""How far a fused model is from the adapter it came from, on SmolLM2-135M Q4_1.

Baseline: the base dequantized to float32 with the adapter on top, which is how `mlx-d2o train`
and `mlx-d2o eval` run it on the CPU. Against it, on the chat-formatted prompts of
data/valid.jsonl (prompt + rejected response):
- Q4 base + adapter (mlx-lm's QLoRA-style forward, no fusing): the base's own quantization
- fused, --dequantize (float16, the GGUF scales' type)
- fused, kept quantized (default): W + ΔW rounded back onto the base's Q4 grid
- what `mlx_lm fuse` gives kept quantized: W + ΔW quantized afresh
- fused, --quantize --q-bits 8 --q-group-size 64
- the base alone, without the adapter: the size of the adapter's own effect, for scale
Figures: max and mean |Δ logit|, mean KL(baseline || variant) per token, and how often the
greedy next token agrees with the baseline's.

    python benchmarks/fuse_accuracy.py [--adapter-path A] [--n 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--adapter-path",
        default=None,
        help="A trained adapter; default: a random LoRA (rank 8, 30 layers)",
    )
    ap.add_argument("--n", type=int, default=16, help="Records of data/valid.jsonl to score")
    args = ap.parse_args()

    import mlx.core as mx
    import numpy as np
    from fuse_bench import make_adapter
    from mlx.utils import tree_unflatten
    from mlx_lm import load as mlx_load

    from mlx_d2o.data import load_records, prompt_tokens, response_tokens
    from mlx_d2o.export import FuseArgs, fuse
    from mlx_d2o.logprobs import pad
    from mlx_d2o.models import load, model_dir

    base = model_dir("smollm2-135m")
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="fuse-acc-") as tmp:
        tmp = Path(tmp)
        adapter = (
            Path(args.adapter_path)
            if args.adapter_path
            else make_adapter(base, tmp / "adapter", 30, 8)
        )
        variants = {}
        for name, kw in (
            ("fused --dequantize", {"dequantize": True}),
            ("fused (kept Q4)", {}),
            ("fused --quantize 8-bit/64", {"quantize": True, "q_bits": 8, "q_group_size": 64}),
        ):
            out = tmp / name.replace(" ", "_").replace("/", "_")
            fuse(
                FuseArgs(model="smollm2-135m", adapter_path=str(adapter), save_path=str(out), **kw),
                log=lambda s: None,
            )
            variants[name] = out

        # float32 + adapter, as trained
        ref_net, tok = load("smollm2-135m", adapter_path=str(adapter))
        records = load_records(str(repo / "data" / "valid.jsonl"))[: args.n]
        seqs = []
        for r in records:
            p = prompt_tokens(tok, r.messages)
            seqs.append(p + response_tokens(tok, r.messages, r.rejected, p))
        tokens, _ = pad(seqs, tok.pad_token_id or 0)
        lengths = [len(s) for s in seqs]
        mask = np.zeros(tokens.shape, bool)
        for i, n in enumerate(lengths):
            mask[i, :n] = True

        def run(net):
            out = []
            for i in range(0, tokens.shape[0], 4):
                out.append(np.array(net(tokens[i : i + 4]).astype(mx.float32)))
            return np.concatenate(out)

        ref = run(ref_net)
        del ref_net
        results = {
            "Q4 base + adapter (unfused)": run(mlx_load(str(base), adapter_path=str(adapter))[0])
        }
        # what `mlx_lm fuse` writes, kept quantized: every fused layer quantized afresh
        theirs = mlx_load(str(base), adapter_path=str(adapter))[0]
        theirs.update_modules(
            tree_unflatten([(n, m.fuse()) for n, m in theirs.named_modules() if hasattr(m, "fuse")])
        )
        results["mlx_lm fuse (kept Q4)"] = run(theirs)
        del theirs
        for name, path in variants.items():
            results[name] = run(mlx_load(str(path))[0])
        results["base alone (no adapter)"] = run(load("smollm2-135m")[0])

        def logsoftmax(x):
            x = x - x.max(-1, keepdims=True)
            return x - np.log(np.exp(x).sum(-1, keepdims=True))

        lp_ref = logsoftmax(ref)[mask]
        print(
            f"SmolLM2-135M-Instruct Q4_1, {len(seqs)} sequences, {int(mask.sum())} tokens; adapter: "
            f"{adapter if args.adapter_path else 'random LoRA rank 8, 30 layers'}"
        )
        print("baseline: float32 dequantized base + adapter (as trained and evaluated on the CPU)")
        print(
            f"{'variant':<30} {'max|Δlogit|':>12} {'mean|Δlogit|':>13} {'KL/token':>10} {'argmax agree':>13}"
        )
        for name, x in results.items():
            d = np.abs(x - ref)[mask]
            lp = logsoftmax(x)[mask]
            kl = float((np.exp(lp_ref) * (lp_ref - lp)).sum(-1).mean())
            agree = float((lp.argmax(-1) == lp_ref.argmax(-1)).mean())
            print(f"{name:<30} {d.max():>12.4f} {d.mean():>13.5f} {kl:>10.2e} {agree:>12.1%}")


if __name__ == "__main__":
    main()
