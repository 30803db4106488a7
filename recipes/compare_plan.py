"""What a sweep (recipes/compare.py --sweep) trains and what each step should cost.

- `Run`: one training run of the sweep: a loss, the K of the cache it reads, and, for online
  D2O, `--refresh-every`. `runs(s)` lists them: every loss of `s.losses` at K, online D2O when
  `s.online_refresh_every`, D2O at each K of `s.k_ablation`.
- `subset_cache`: a cache of the first k of each prompt's K samples. Samples of one prompt are
  independent draws from π_r, so the first k of them are k such draws: the K-ablation costs no
  sampling. Every per-sample list of a row (length K) is cut, whatever its field.
- `estimate`: each step's wall time from measured rates (`RATES`), printed before it runs.
- `measured_cut_share`: the share of samples cut at a `--max-tokens`, from a measurement file
  of `benchmarks/sample_lengths.py`; `cache_cut_share`: the share cut in a made cache.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LENGTHS_FILE = Path(__file__).resolve().parent / "paper_lengths.json"
CUT_LIMIT = 0.10  # at most this share of samples cut at --max-tokens (issue 19)

# Measured rates (idle 2-core machine, MLX CPU + OpenBLAS, SmolLM2-135M float32):
RATES = {
    # `mlx-d2o sample`, 32 HH prompts, K = 4: 43.6 tok/s generated; reference scoring +37 %
    "sample_tok_s": 44.0,
    "score_overhead": 0.37,
    # one K = 11 D2O step of 2 HH-length prompts: ~17 CPU-s for its 2 x 12 sequences
    "train_cpu_s_per_seq": 17.0 / 24,
    # CPU-s per wall-s of the `mlx-d2o` processes (results/sweep-secret: train 0.6-1.0, eval 1.6)
    "train_cpu_per_wall": 0.8,
    "eval_cpu_per_wall": 1.6,
    # the base row of `mlx-d2o eval` on all 120 held-out attacks (+ their 120 pairs scored) and
    # the 72 benign questions, 48 tokens, greedy: 581 CPU-s (load 10-25): ~3.0 CPU-s per
    # generated prompt; an adapter row adds the benign KL (two more passes over 72 answers)
    "eval_cpu_s_per_prompt_row": 581.0 / 192,
    "eval_ref_tokens": 48,
    "eval_adapter_extra": 0.15,
    # eval with the system turn once per batch (`shared_prefix`) against whole prompts, the
    # secret task: median 186 s vs 488 s (benchmarks/bench_eval_prefix.py, load 1.4-2.0)
    "eval_shared_prefix_speedup": 2.62,
}


@dataclass(frozen=True)
class Run:
    name: str  # folder and curve name
    loss: str
    k: int  # the K of the cache it trains on
    refresh_every: int = 0  # online D2O: sample again every N steps


def runs(s) -> list[Run]:
    """Every training run of sweep settings S, the losses first."""
    out = [Run(loss, loss, s.num_samples) for loss in s.losses]
    if s.online_refresh_every:
        out.append(Run("d2o-online", "d2o", s.num_samples, s.online_refresh_every))
    out += [Run(f"d2o-k{k}", "d2o", k) for k in s.k_ablation if k != s.num_samples]
    return out


def run_steps(s, run: Run) -> tuple:
    """The checkpoints kept of RUN: the sweep's, or only the last for a K-ablation run (its
    question is the effect of K at the end, not a curve)."""
    return (s.iters,) if run.name.startswith("d2o-k") else tuple(s.save_steps)


def subset_cache(src: Path, dst: Path, k: int) -> None:
    """DST: the cache SRC with the first K samples of each prompt (manifest num_samples = K)."""
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    big = manifest["num_samples"]
    if k > big:
        raise SystemExit(f"error: a K={k} cache cannot be cut from one of K={big}")

    def cut(obj):
        if isinstance(obj, dict):
            return {key: cut(v) for key, v in obj.items()}
        return obj[:k] if isinstance(obj, list) and len(obj) == big else obj

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lines = (src / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [cut({key: v for key, v in json.loads(x).items() if key != "messages"}) for x in lines]
    for row, x in zip(rows, lines):
        row["messages"] = json.loads(x)["messages"]  # a 1-message prompt is not cut
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (tmp / "samples.jsonl").write_text(text, encoding="utf-8")
    manifest = {**manifest, "num_samples": k, "subset_of": str(src)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def read_lengths(path: Path = LENGTHS_FILE) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measured_cut_share(max_tokens: int, path: Path = LENGTHS_FILE) -> Optional[tuple]:
    """(share cut at MAX_TOKENS, samples, prompts) from the measurement file; None without it.
    A sample of L answer tokens is cut at M when L >= M (or when it was cut at the cap)."""
    m = read_lengths(path)
    if not m or max_tokens > m["cap"]:
        return None
    cut = sum(n >= max_tokens or not f for n, f in zip(m["lengths"], m["finished"]))
    return cut / len(m["lengths"]), len(m["lengths"]), m["prompts"]


def mean_length(max_tokens: int, path: Path = LENGTHS_FILE) -> float:
    """Mean sample length at MAX_TOKENS (measured; half of it without a measurement)."""
    m = read_lengths(path)
    if not m:
        return max_tokens / 2
    return sum(min(n, max_tokens) for n in m["lengths"]) / len(m["lengths"])


def cache_cut_share(cache: Path) -> tuple:
    """(cut, samples) in a made cache: samples that ended at --max-tokens."""
    finish = [
        f
        for x in (cache / "samples.jsonl").read_text(encoding="utf-8").splitlines()
        for f in json.loads(x)["sample_finish"]
    ]
    return sum(f == "length" for f in finish), len(finish)


def _train_sequences(run: Run, batch: int) -> int:
    """Sequences scored per step: K samples + the negative (D2O), negative (+ chosen: DPO)."""
    if run.loss.startswith("d2o"):
        return batch * (run.k + 1)
    return batch * (2 if run.loss == "dpo" else 1)


def estimate(s, n_eval_prompts: int, n_rows: int) -> dict:
    """{step name: estimated wall seconds} of sweep settings S on an idle machine."""
    r = RATES
    length = mean_length(s.sample_max_tokens)
    per_sample = length / r["sample_tok_s"] * (1 + r["score_overhead"])
    out = {"sample": s.limit * s.num_samples * per_sample}
    for run in runs(s):
        cpu = s.iters * _train_sequences(run, s.batch_size) * r["train_cpu_s_per_seq"]
        wall = cpu / r["train_cpu_per_wall"]
        if run.refresh_every:  # online: the prompts of every step sampled again
            wall += s.iters * s.batch_size * run.k * per_sample
        out[f"train {run.name}"] = wall
    per_row = r["eval_cpu_s_per_prompt_row"] * max(1.0, s.eval_max_tokens / r["eval_ref_tokens"])
    rows = 1 + (n_rows - 1) * (1 + r["eval_adapter_extra"])
    out["eval"] = rows * n_eval_prompts * per_row / r["eval_cpu_per_wall"]
    out["eval"] /= r["eval_shared_prefix_speedup"]
    return out
