"""Benchmark `mlx-d2o sample` against plain mlx-lm batch generation on the same work.

Same model, prompts (the chat-templated prompts of the first --num-prompts records), K,
max tokens, sampler and batch (--batch-size prompts x K sequences):

  baseline   `mlx_lm.batch_generate` on each prompt repeated K times
  ours       `sample.sample` (what `mlx-d2o sample` runs): generation, reference scoring,
             cache writing; its generation and scoring are timed separately
  reference  scoring all K + 2 responses per record with `logprobs.score`, the straightforward
             way, for scale

Runs alternate (baseline, ours, baseline, ours, ...) so that load from other processes falls on
both. Prints generated tokens/s of each, ours / baseline, and scoring time as % of generation
time. Goals (issue 3): ratio >= 0.9, scoring <= 25 %.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_sample.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(REPO / "data" / "train.jsonl"))
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("-k", "--num-samples", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument(
        "--batch-size", type=int, default=16, help="prompts per batch (recipes/sample-cpu.yaml: 16)"
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def baseline(model, tok, prompts, args) -> tuple[int, float]:
    """Plain mlx-lm: each prompt K times through batch_generate, batch by batch."""
    import mlx.core as mx
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(args.seed)
    n, k, bs = 0, args.num_samples, args.batch_size
    t = time.perf_counter()
    for i in range(0, len(prompts), bs):
        chunk = [p for p in prompts[i : i + bs] for _ in range(k)]
        r = batch_generate(
            model,
            tok,
            chunk,
            max_tokens=args.max_tokens,
            sampler=make_sampler(args.temp, args.top_p),
            completion_batch_size=len(chunk),
            prefill_batch_size=len(chunk),
        )
        n += r.stats.generation_tokens  # every generated token, the stop token included
    return n, time.perf_counter() - t


def ours(args, out: Path) -> dict:
    from mlx_d2o.sample import SampleArgs, sample

    return sample(
        SampleArgs(
            model=args.model,
            data=args.data,
            output=str(out),
            num_samples=args.num_samples,
            max_tokens=args.max_tokens,
            temp=args.temp,
            top_p=args.top_p,
            batch_size=args.batch_size,
            seed=args.seed,
            limit=args.num_prompts,
        ),
        progress=False,
    )


def full_scoring(model, tok, out: Path, args) -> float:
    """All K + 2 responses per record scored with logprobs.score, nothing reused."""
    from mlx_d2o.data import prompt_tokens, response_tokens
    from mlx_d2o.logprobs import score
    from mlx_d2o.sample.cache import read_cache, sample_responses

    _, rows = read_cache(out)
    t = time.perf_counter()
    pairs = []
    for row in rows:
        p = prompt_tokens(tok, row["messages"])
        # The samples as the cache scores them (a cut one without end-of-turn).
        pairs += [(p, r) for r in sample_responses(tok, row, p)]
        for text in [row["rejected"]] + ([row["chosen"]] if row.get("chosen") else []):
            pairs.append((p, response_tokens(tok, row["messages"], text, p)))
    score(
        model,
        pairs,
        batch_size=args.batch_size * (args.num_samples + 2),
        pad_id=tok.pad_token_id or 0,
    )
    return time.perf_counter() - t


def main():
    args = parse()
    sys.path.insert(0, str(REPO))
    import os

    from mlx_d2o.data import load_records, prompt_tokens
    from mlx_d2o.models import load

    model, tok = load(args.model)
    records = load_records(args.data)[: args.num_prompts]
    prompts = [prompt_tokens(tok, r.messages) for r in records]
    print(
        f"model {args.model}, {len(prompts)} prompts x K={args.num_samples}, max {args.max_tokens} tokens, "
        f"temp {args.temp}, top-p {args.top_p}, batch {args.batch_size} prompts; LD_PRELOAD={os.environ.get('LD_PRELOAD') or '(none: MLX uses its slow reference BLAS)'}"
    )
    # Warm-up: first calls pay for allocation and kernel set-up.
    warm = argparse.Namespace(**{**vars(args), "max_tokens": 4})
    baseline(model, tok, prompts[: args.batch_size], warm)

    base_tps, our_tps, score_pct, full_pct = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            n, dt = baseline(model, tok, prompts, args)
            base_tps.append(n / dt)
            out = Path(tmp) / f"cache{rep}"
            s = ours(args, out)
            our_tps.append(s["generated_tokens"] / s["generation_seconds"])
            score_pct.append(100 * s["scoring_seconds"] / s["generation_seconds"])
            full = full_scoring(model, tok, out, args)
            full_pct.append(100 * full / s["generation_seconds"])
            print(
                f"run {rep + 1}: baseline {n} tok in {dt:.1f}s = {n / dt:.1f} tok/s | ours {s['generated_tokens']} tok "
                f"in {s['generation_seconds']:.1f}s = {our_tps[-1]:.1f} tok/s, scoring {s['scoring_seconds']:.1f}s "
                f"({s['sample_scores_from_generation']} sample scores from generation, {s['responses_scored']} scored) "
                f"| full logprobs.score of all responses {full:.1f}s"
            )
    med = statistics.median
    print()
    print(f"plain mlx_lm batch_generate : {med(base_tps):8.1f} generated tok/s")
    print(f"mlx-d2o sample (generation) : {med(our_tps):8.1f} generated tok/s")
    print(f"ratio ours / baseline       : {med(our_tps) / med(base_tps):8.2f}x   (goal >= 0.9x)")
    print(f"scoring / generation time   : {med(score_pct):8.1f} %   (goal <= 25 %)")
    print(f"  without reuse (logprobs.score of all K+2 responses): {med(full_pct):.1f} %")


if __name__ == "__main__":
    main()
