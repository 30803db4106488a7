"""How long are the model's own answers to a task's training prompts? The cut share at each
`--max-tokens`, for sizing `recipes/compare.py --preset paper` (issue 19: at most 10 % cut).

Runs `mlx-d2o sample` (the library function it calls) on the first --limit training prompts at
K samples each and a generous --cap, so that almost no sample is cut there; a sample whose
answer has L tokens (end-of-turn not counted) is cut at `--max-tokens M` exactly when L >= M.
Writes the lengths and the cut share on a grid of M to --out (JSON), which the preset's test
reads (tests/test_compare.py). The baseline is the cap itself: the share cut at --cap is printed
beside every other M (a sample cut there is counted as cut at every smaller M too).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/sample_lengths.py

Two options try what `sample` does not ship, to see what would end the samples (README, Results):
--system-suffix TEXT appends TEXT to each record's system turn (a temporary copy of --data) and
--repetition-penalty R puts mlx-lm's repetition penalty in the generator (samples then no longer
come from π_ref alone; the cache's scores are still the reference's).
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


def with_system_suffix(data: str, suffix: str, dst: Path) -> str:
    """DATA, or a copy at DST whose system turns end with SUFFIX."""
    if not suffix:
        return data
    rows = [json.loads(x) for x in Path(data).read_text(encoding="utf-8").splitlines()]
    for r in rows:
        for m in r["messages"]:
            if m["role"] == "system":
                m["content"] += suffix
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(dst)


def with_penalty(penalty: float, context: int = 64) -> None:
    """Every BatchGenerator of `mlx_d2o.generation` gets mlx-lm's repetition penalty."""
    from mlx_lm.sample_utils import make_logits_processors

    import mlx_d2o.generation as generation

    api = generation._batch_api

    def patched():
        batch_generator, prompt_batch = api()

        class Penalised(batch_generator):
            def __init__(self, *args, **kw):
                procs = make_logits_processors(
                    repetition_penalty=penalty, repetition_context_size=context
                )
                super().__init__(*args, logits_processors=procs, **kw)

        return Penalised, prompt_batch

    generation._batch_api = patched


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="data/secret/train.jsonl")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--num-samples", type=int, default=11)
    p.add_argument("--cap", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temp", type=float, default=1.0, help="Sampling temperature (sample's).")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--system-suffix", default="", help="Appended to each system turn.")
    p.add_argument("--repetition-penalty", type=float, default=0.0, help="0: none (sample's).")
    p.add_argument("--out", default="recipes/paper_lengths.json")
    a = p.parse_args()
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from mlx_d2o.sample import SampleArgs, sample
    from mlx_d2o.sample.cache import read_cache

    if a.repetition_penalty:
        with_penalty(a.repetition_penalty)
    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        data = with_system_suffix(a.data, a.system_suffix, Path(tmp) / "data.jsonl")
        args = SampleArgs(
            model=a.model, data=data, output=str(Path(tmp) / "cache"), num_samples=a.num_samples,
            max_tokens=a.cap, batch_size=a.batch_size, seed=a.seed, limit=a.limit,
            temp=a.temp, top_p=a.top_p,
        )  # fmt: skip
        sample(args, progress=False)
        _, rows = read_cache(args.output)
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
        "cap": a.cap, "temp": args.temp, "top_p": args.top_p, "seed": a.seed, "seconds": round(wall, 1),
        "system_suffix": a.system_suffix, "repetition_penalty": a.repetition_penalty,
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
