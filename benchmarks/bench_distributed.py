"""`mlx-d2o sample` and `train` in one process vs two ranks under `mlx.launch --backend ring`.

The same commands, the same work, alternated (1 process, 2 ranks, 1 process, ...), medians.
On one machine both ranks share its cores, so this measures the cost of running distributed
(sharding, the gradient all-reduce), not a speed-up; on N machines expect close to N times the
prompts or tokens per hour, less that cost.

    python benchmarks/bench_distributed.py [--prompts 16 -k 4 --max-tokens 48 --iters 5 --repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
D2O = shutil.which("mlx-d2o") or str(BIN / "mlx-d2o")
LAUNCH = shutil.which("mlx.launch") or str(BIN / "mlx.launch")


def run(cmd: list[str], ranks: int) -> float:
    if ranks > 1:
        cmd = [LAUNCH, "-n", str(ranks), "--backend", "ring", D2O, *cmd]
    else:
        cmd = [D2O, *cmd]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
    return time.perf_counter() - t


def sample_cmd(out: Path, a) -> list[str]:
    return ["sample", "--model", a.model, "--data", str(REPO / "data" / "train.jsonl"),
            "--output", str(out), "-k", str(a.k), "--max-tokens", str(a.max_tokens),
            "--limit", str(a.prompts), "--batch-size", "8", "--seed", "0"]  # fmt: skip


def train_cmd(cache: Path, out: Path, a) -> list[str]:
    return ["train", "--model", a.model, "--samples", str(cache), "--adapter-path", str(out),
            "--iters", str(a.iters), "--batch-size", "4", "--num-layers", "8",
            "--steps-per-report", str(a.iters), "--seed", "0"]  # fmt: skip


def train_tok_s(adapters: Path) -> float:
    """Training throughput as the run reports it (metrics.jsonl's last training row)."""
    rows = [json.loads(x) for x in (adapters / "metrics.jsonl").read_text().splitlines() if x]
    return [r for r in rows if r.get("split") == "train"][-1]["tokens_per_sec"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    times = {("sample", 1): [], ("sample", 2): [], ("train", 1): [], ("train", 2): []}
    tok_s = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(a.repeats):
            for ranks in (1, 2):
                cache = tmp / f"cache-{ranks}-{rep}"
                times["sample", ranks].append(run(sample_cmd(cache, a), ranks))
                out = tmp / f"adapters-{ranks}-{rep}"
                times["train", ranks].append(run(train_cmd(cache, out, a), ranks))
                tok_s[ranks].append(train_tok_s(out))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.model}; sample {a.prompts} prompts, K = {a.k}, {a.max_tokens} tokens; "
          f"train {a.iters} steps of 4 prompts; {a.repeats} repeat(s), medians")  # fmt: skip
    print(f"sample: 1 process {med['sample', 1]:.1f} s, 2 ranks {med['sample', 2]:.1f} s")
    print(f"train:  1 process {med['train', 1]:.1f} s ({statistics.median(tok_s[1]):.1f} tok/s "
          f"in the steps), 2 ranks {med['train', 2]:.1f} s ({statistics.median(tok_s[2]):.1f} tok/s)")  # fmt: skip


if __name__ == "__main__":
    main()
