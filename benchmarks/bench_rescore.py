"""Benchmark `mlx-d2o sample --rescore` against sampling the cache again, and measure what the
end-of-turn that format 1 gave a cut sample was worth.

Same model, prompts (the first --num-prompts records), K, max tokens, sampler and batch:

  baseline   `sample.sample` with overwrite: generation, reference scoring, cache writing
             (what "sample it again with --overwrite" costs)
  ours       `sample.rescore.rescore_cache` on that cache: reference scoring only

Both load the model, as the commands do. Runs alternate (baseline, ours, baseline, ...) so that
load from other processes falls on both; medians are printed with `uptime`'s load. Then, on the
cut samples of the cache: log π_ref(end-of-turn | prompt, cut sample), the term format 1 added
to each cut anchor's score (and that D2O then raised).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_rescore.py
"""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("-k", "--num-samples", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args()


def resample(args, out: Path) -> float:
    from mlx_d2o.sample import SampleArgs, sample

    t = time.perf_counter()
    sample(
        SampleArgs(
            model=args.model,
            data=args.data,
            output=str(out),
            num_samples=args.num_samples,
            max_tokens=args.max_tokens,
            temp=1.0,
            batch_size=args.batch_size,
            limit=args.num_prompts,
            overwrite=True,
        ),
        progress=False,
    )
    return time.perf_counter() - t


def rescore(out: Path) -> float:
    from mlx_d2o.sample.rescore import rescore_cache

    t = time.perf_counter()
    rescore_cache(out)
    return time.perf_counter() - t


def end_of_turn_logps(args, out: Path) -> list[float]:
    """log π_ref(end-of-turn | prompt, cut sample) of every cut sample in the cache at OUT."""
    from mlx_d2o.data import end_of_turn_id, prompt_tokens
    from mlx_d2o.logprobs import score
    from mlx_d2o.models import load
    from mlx_d2o.sample.cache import read_cache

    model, tok = load(args.model)
    eot = end_of_turn_id(tok)
    _, rows = read_cache(out)
    pairs = []
    for row in rows:
        p = prompt_tokens(tok, row["messages"])
        for ids, f in zip(row["sample_ids"], row["sample_finish"]):
            if f == "length":
                pairs += [(p, ids), (p, ids + [eot])]
    lp, _ = score(model, pairs, batch_size=8)
    return [b - a for a, b in zip(lp[0::2], lp[1::2])]


def main():
    args = parse()
    sys.path.insert(0, str(REPO))
    print(f"load before: {os.getloadavg()[0]:.1f}")
    base, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cache"
        for _ in range(args.repeats):
            base.append(resample(args, out))
            ours.append(rescore(out))
            print(f"sample again {base[-1]:.1f} s, rescore {ours[-1]:.1f} s", flush=True)
        eot = end_of_turn_logps(args, out)
    b, o = statistics.median(base), statistics.median(ours)
    print(
        f"{args.num_prompts} prompts x K={args.num_samples}, --max-tokens {args.max_tokens}: "
        f"sample again (baseline) {b:.1f} s, --rescore {o:.1f} s (median of {args.repeats}): "
        f"{b / o:.2f}x cheaper"
    )
    if eot:
        print(
            f"cut samples: {len(eot)}; log π_ref(end-of-turn | cut sample): median "
            f"{statistics.median(eot):.2f} nats (min {min(eot):.2f}, max {max(eot):.2f})"
        )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
