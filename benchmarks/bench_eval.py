"""How `mlx-d2o eval` spends its time on SmolLM2-135M, and what its two design choices save.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_eval.py

1. Adapters: switching a LoRA adapter on one loaded base (`evaluate.Adapter`) against the
   baseline of loading base + adapter again for each adapter (`models.load(adapter_path=...)`).
2. Generation: the harmful and the benign prompts in one batched call (what eval does) against
   the baseline of one call per set, at batch 16 and with every prompt in one batch.
3. KL(policy || ref) and negative scoring throughput (the work done per adapter besides generation).
4. The report's extras: bootstrap intervals, and a model judge read by its first-token
   probabilities (one forward pass per response) against generating a 12-token verdict and
   parsing it (the judge before issue 14). `--only 4` runs this part alone.

Figures are wall-clock seconds on whatever else the machine is running: run it twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_lora(base_dir: Path, out: Path, num_layers: int = 16, seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from mlx_d2o.models import load

    net, _ = load(str(base_dir))
    lora = {"rank": 8, "scale": 20.0, "dropout": 0.0}
    net.freeze()
    linear_to_lora_layers(net, num_layers, lora)
    mx.random.seed(seed)
    w = {
        k: (mx.random.normal(v.shape) * 0.01 if k.endswith("lora_b") else v)
        for k, v in tree_flatten(net.trainable_parameters())
    }
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), w)
    (out / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": lora})
    )
    return out


def timed(fn, *a, **k):
    t = time.perf_counter()
    r = fn(*a, **k)
    return r, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=16, help="Prompts per set (harmful, benign).")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", type=int, choices=(4,), help="Run only this part.")
    a = p.parse_args()
    if a.only == 4:
        return extras(a)

    import mlx.core as mx

    from mlx_d2o.adapters import Adapter
    from mlx_d2o.data import load_records, prompt_tokens, response_tokens
    from mlx_d2o.evaluate import sequence_kl
    from mlx_d2o.evaluate.run import _Reference
    from mlx_d2o.generation import generate_tokens as generate
    from mlx_d2o.logprobs import score
    from mlx_d2o.models import load, model_dir

    print(
        f"model {a.model}, device {mx.default_device()}, {a.prompts}+{a.prompts} prompts x {a.max_tokens} new tokens"
    )
    base_dir = model_dir(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        ad = make_lora(base_dir, Path(tmp) / "lora")

        # 1. adapters
        (net, tok), t_load = timed(load, a.model)
        _, t_reload = timed(load, a.model, adapter_path=str(ad))
        adapter, t_on = timed(Adapter, net, ad)
        _, t_off = timed(adapter.remove)
        print(
            f"\n[1] per adapter: reload base+adapter {t_reload:.2f} s (baseline) vs switch on one base "
            f"{t_on + t_off:.3f} s -> {t_reload / max(t_on + t_off, 1e-9):.0f}x less (base load alone {t_load:.2f} s)"
        )

        harm = load_records(REPO / "data" / "harmful_prompts.jsonl", require_rejected=False)[
            : a.prompts
        ]
        ben = load_records(REPO / "data" / "benign.jsonl", require_rejected=False)[: a.prompts]
        hp = [prompt_tokens(tok, r.messages) for r in harm]
        bp = [prompt_tokens(tok, r.messages) for r in ben]

        # 2. generation: the three ways alternate, ROUNDS times, and the median counts, since
        # other jobs on a shared machine swing a single timing by 2x.
        def gen(ps, bs):
            return generate(net, tok, ps, a.max_tokens, batch_size=bs, desc=None)

        gen(hp[:2], 2)  # warm-up
        ways = {
            "one call per set, batch 16 (baseline)": lambda: gen(hp, 16) + gen(bp, 16),
            "one call for both sets, batch 16": lambda: gen(hp + bp, 16),
            f"one call for both sets, batch {2 * a.prompts}": lambda: gen(hp + bp, 2 * a.prompts),
        }
        rates = {k: [] for k in ways}
        for _ in range(a.rounds):
            for k, fn in ways.items():
                out, t = timed(fn)
                rates[k].append(sum(map(len, out)) / t)
        med = {k: statistics.median(v) for k, v in rates.items()}
        base_rate = next(iter(med.values()))
        print(
            f"[2] generation, {2 * a.prompts} prompts x {a.max_tokens} tokens, median of {a.rounds} alternating rounds:"
        )
        for k, v in med.items():
            print(
                f"    {k}: {v:.1f} tok/s ({', '.join(f'{x:.0f}' for x in rates[k])}) -> {v / base_rate:.2f}x"
            )
        both = gen(hp + bp, 16)

        # 3. per-adapter scoring work
        adapter = Adapter(net, ad)
        pairs = list(zip(bp, both[len(hp) :]))
        (kls, cnt), t_kl = timed(sequence_kl, net, _Reference(adapter), pairs, 16, 0)
        ntok = sum(len(p) + len(r) for p, r in pairs)
        print(
            f"[3] KL(policy || ref) over {len(pairs)} responses ({ntok} tokens, two forward passes): {t_kl:.2f} s, "
            f"{ntok / t_kl:.0f} tok/s; KL/token {sum(kls) / max(1, sum(cnt)):.4f}"
        )
        adapter.remove()
        negs = load_records(REPO / "data" / "test.jsonl")
        npairs = []
        for r in negs:
            pt = prompt_tokens(tok, r.messages)
            npairs.append((pt, response_tokens(tok, r.messages, r.rejected, pt)))
        _, t_score = timed(score, net, npairs, 16)
        print(
            f"    scoring {len(npairs)} negatives: {t_score:.2f} s (the reference's share is done once per run, not per adapter)"
        )


def extras(a) -> None:
    """[4] What n and intervals cost, and a model judge by first-token probabilities."""
    from mlx_d2o.data import load_records
    from mlx_d2o.evaluate.guard import ModelJudge
    from mlx_d2o.evaluate.metrics import mean_ci, ratio_ci
    from mlx_d2o.generation import generate_tokens

    xs = [float(i % 7) for i in range(64)]
    _, t_ci = timed(lambda: [mean_ci(xs) or ratio_ci(xs, xs) for _ in range(10)])
    print(f"[4] 20 bootstrap intervals over 64 prompts (1000 resamples each): {t_ci:.3f} s")
    judge = ModelJudge(a.model)
    recs = load_records(REPO / "data" / "test.jsonl")[: a.prompts]
    convs, texts = [r.messages for r in recs], [r.rejected for r in recs]
    judge.p_unsafe(convs[:2], texts[:2])  # warm-up
    _, t_p = timed(judge.p_unsafe, convs, texts)
    prompts = [judge.safety_prompts(c, t)[0] for c, t in zip(convs, texts)]
    tok = judge.tokenizer
    _, t_g = timed(generate_tokens, judge.model, tok, prompts, 12, batch_size=16, desc=None)
    print(
        f"    judge {a.model} (chat prompt) on {len(texts)} negatives: first-token P(unsafe) "
        f"{t_p:.2f} s vs a generated 12-token verdict {t_g:.2f} s -> {t_g / t_p:.1f}x; "
        f"mean mass on the verdict words {sum(judge.last_mass) / len(texts):.2f}"
    )


if __name__ == "__main__":
    main()
