"""How long are the model's own answers to a task's training prompts? The cut share at each
`--max-tokens`, for sizing `recipes/compare.py --preset paper` (issue 19: at most 10 % cut).

Runs `mlx-d2o sample` (the library function it calls) on the first --limit training prompts at
K samples each and a generous --cap, so that almost no sample is cut there; a sample whose
answer has L tokens (end-of-turn not counted) is cut at `--max-tokens M` exactly when L >= M.
Writes the lengths and the cut share on a grid of M to --out (JSON), which the preset's test
reads (tests/test_compare.py). The baseline is the cap itself: the share cut at --cap is printed
beside every other M (a sample cut there is counted as cut at every smaller M too).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/sample_lengths.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRID = (48, 64, 80, 96, 112, 128, 160, 192, 224, 256)


def cut_share(lengths: list[int], finished: list[bool], m: int) -> float:
    """Share of samples cut at max-tokens M: answers of M tokens or more, or cut already."""
    return sum(n >= m or not f for n, f in zip(lengths, finished)) / len(lengths)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="data/secret/train.jsonl")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--num-samples", type=int, default=11)
    p.add_argument("--cap", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="recipes/paper_lengths.json")
    a = p.parse_args()
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from mlx_d2o.sample import SampleArgs, sample
    from mlx_d2o.sample.cache import read_cache

    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        args = SampleArgs(
            model=a.model, data=a.data, output=tmp, num_samples=a.num_samples,
            max_tokens=a.cap, batch_size=a.batch_size, seed=a.seed, limit=a.limit,
        )  # fmt: skip
        sample(args, progress=False)
        _, rows = read_cache(tmp)
    wall = time.time() - t0
    finished = [f == "stop" for r in rows for f in r["sample_finish"]]
    # sample_tokens counts the end-of-turn of a finished sample: the answer is one shorter
    lengths = [
        n - f
        for r in rows
        for n, f in zip(r["sample_tokens"], map("stop".__eq__, r["sample_finish"]))
    ]
    by_m = {m: cut_share(lengths, finished, m) for m in GRID if m <= a.cap}
    out = {
        "command": "python benchmarks/sample_lengths.py " + " ".join(sys.argv[1:]),
        "model": a.model, "data": a.data, "prompts": len(rows),
        "data_sha256": hashlib.sha256(Path(a.data).read_bytes()).hexdigest(), "num_samples": a.num_samples,
        "cap": a.cap, "temp": args.temp, "seed": a.seed, "seconds": round(wall, 1),
        "load": "/".join(f"{x:.1f}" for x in (*load0[:1], os.getloadavg()[0])),
        "lengths": lengths, "finished": finished,
        "cut_share": {str(m): round(v, 4) for m, v in by_m.items()},
    }  # fmt: skip
    Path(a.out).write_text(json.dumps(out) + "\n", encoding="utf-8")
    q = statistics.quantiles(lengths, n=10)
    print(f"{len(lengths)} samples of {len(rows)} prompts, {wall:.0f} s, load {out['load']}")
    print(f"tokens: median {statistics.median(lengths):.0f}, p90 {q[-1]:.0f}, max {max(lengths)}")
    for m, v in by_m.items():
        print(f"--max-tokens {m}: {100 * v:.1f} % cut (at the cap {a.cap}: "
              f"{100 * by_m[max(by_m)]:.1f} %)")  # fmt: skip
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
