"""Benchmark `mlx-d2o eval` with the prompts' common beginning run once (`shared_prefix`) against
running every prompt whole, on the secret task, and check that both give the same report.

Same model, adapter, prompts, judge and settings as the paper sweep's eval (recipes/compare.py
--preset paper: held-out attacks answered and judged, their rejected and chosen answers scored,
benign questions answered, judged for the right answer and their KL taken):

  baseline   `evaluate.evaluate` with `shared_prefix.MIN_PREFIX` out of reach: every prompt,
             system turn included, prefilled and scored whole (eval before issue 19)
  ours       `evaluate.evaluate` as shipped: the system turn once per batch

Both rows are evaluated (the base, and one random LoRA adapter on 8 layers, as the sweep's).
Runs alternate (baseline, ours, baseline, ...) so that load from other processes falls on both;
medians are printed with `uptime`'s load.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_eval_prefix.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FIGURES = (
    ("harmful", "unsafe_rate"), ("answers", "correct_rate"), ("benign", "kl_per_token"),
    ("negatives", "logratio"), ("pairs", "margin"),
)  # fmt: skip


def parse():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--attacks", type=int, default=24, help="Held-out attacks (of 120).")
    p.add_argument("--benign", type=int, default=24, help="Benign questions (of 72).")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2)
    return p.parse_args()


def write_subset(src: Path, n: int, dst: Path) -> str:
    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(dst)


def run_eval(a, tmp: Path, adapter: Path, shared: bool, out: str) -> tuple[dict, float]:
    from mlx_d2o import shared_prefix
    from mlx_d2o.evaluate import EvalArgs, evaluate

    saved = shared_prefix.MIN_PREFIX
    shared_prefix.MIN_PREFIX = saved if shared else 10**9
    test = write_subset(REPO / "data/secret/test.jsonl", a.attacks, tmp / "test.jsonl")
    benign = write_subset(REPO / "data/secret/benign.jsonl", a.benign, tmp / "benign.jsonl")
    args = EvalArgs(
        model=a.model, adapter_paths=[str(adapter)], negatives=test, prompts=test, benign=benign,
        judge="regex:@" + str(REPO / "data/secret/judge_regex.txt"), num_prompts=None,
        max_tokens=a.max_tokens, batch_size=a.batch_size, output=str(tmp / out),
    )  # fmt: skip
    try:
        t = time.perf_counter()
        report = evaluate(args)
        return report, time.perf_counter() - t
    finally:
        shared_prefix.MIN_PREFIX = saved


def figures(report: dict) -> list:
    return [[row.get(s, {}).get(k) for s, k in FIGURES] for row in report["rows"]]


def main() -> int:
    a = parse()
    os.chdir(REPO)
    from bench_eval import make_lora

    from mlx_d2o.models import model_dir

    load0 = os.getloadavg()[0]
    times = {"baseline (whole prompts)": [], "ours (shared prefix)": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapter = make_lora(model_dir(a.model), tmp / "lora", num_layers=8)
        reports = {}
        for r in range(a.rounds):
            for name, shared in zip(times, (False, True)):
                rep, t = run_eval(a, tmp, adapter, shared, f"report-{r}-{shared}")
                times[name].append(t)
                reports[name] = figures(rep)
                print(f"round {r + 1}: {name}: {t:.1f} s", flush=True)
    base, ours = (statistics.median(v) for v in times.values())
    print(f"\n{a.model}, {a.attacks} attacks + {a.benign} benign, {a.max_tokens} tokens, base + "
          f"1 adapter row, batch {a.batch_size}; load {load0:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"baseline (whole prompts): median {base:.1f} s")
    print(f"ours (shared prefix):     median {ours:.1f} s -> {base / ours:.2f}x")
    b, o = reports.values()
    print("figures (leak, correct, KL/token, log-ratio, margin) per row:")
    for name, rows in reports.items():
        print(f"  {name}: {json.dumps(rows)}")
    same = all(
        (x is None and y is None) or abs(x - y) <= 1e-3 * max(1.0, abs(x))
        for rb, ro in zip(b, o) for x, y in zip(rb, ro)
    )  # fmt: skip
    print("same figures: " + ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
