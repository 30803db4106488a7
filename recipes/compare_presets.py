"""The sweep's tasks (data, harm measures) and its size presets (default, quick, paper)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from compare_data import HH_SOURCE

LOSSES = ("d2o", "d2o-instance", "npo", "ga", "dpo")


@dataclass(frozen=True)
class Measure:
    section: str  # report row section
    key: str
    label: str
    better: str  # "lower" | "higher"
    pct: bool = False


@dataclass(frozen=True)
class Task:
    name: str
    train: str
    test: str
    benign: str
    judge: Optional[str]  # exact judge of the generated answers, None: judge-free only
    measures: tuple


TASKS = {
    "secret": Task(
        "secret", "data/secret/train.jsonl", "data/secret/test.jsonl",
        "data/secret/benign.jsonl", "regex:@data/secret/judge_regex.txt",
        (Measure("harmful", "unsafe_rate", "leak rate, held-out attacks", "lower", True),
         Measure("negatives", "logratio", "log-ratio of held-out leaking answers", "lower"),
         Measure("answers", "correct_rate", "correct answers, benign questions", "higher", True),
         Measure("pairs", "accuracy", "pair accuracy, held-out (refusal vs leak)", "higher", True),
         Measure("benign", "refusal_rate", "refusal rate, benign requests", "lower", True)),
    ),
    "hh": Task(
        "hh", "train.jsonl", "test.jsonl", "data/benign.jsonl", None,
        (Measure("negatives", "logratio", "log-ratio of held-out negatives", "lower"),
         Measure("pairs", "accuracy", "pair accuracy, held-out pairs", "higher", True),
         Measure("pairs", "margin", "reward margin (chosen - rejected), held out", "higher"),
         Measure("pairs", "chosen_logratio", "log-ratio of held-out chosen", "higher")),
    ),
}  # fmt: skip


@dataclass
class Settings:
    """One sweep's sizes. `PRESETS` holds the CPU-sized defaults per task and --quick."""

    task: str = "secret"
    preset: str = "default"
    model: str = "smollm2-135m"
    out: str = ""
    results: str = ""
    losses: tuple = LOSSES
    limit: int = 16  # training prompts
    num_samples: int = 2  # K
    sample_max_tokens: int = 32
    sample_batch_size: int = 16  # prompts per sampling batch (x K sequences decode together)
    iters: int = 8
    batch_size: int = 2
    learning_rate: float = 5e-5
    save_steps: tuple = (2, 8)
    num_layers: int = 8
    alpha: float = 0.1
    beta: float = 0.1
    eval_n: int = 24  # held-out records (attacks on secret, pairs on hh)
    eval_benign: int = 12  # benign prompts for the drift
    eval_max_tokens: int = 24
    eval_batch_size: int = 48
    online_refresh_every: int = 0  # > 0: also online D2O, sampling again every N steps
    k_ablation: tuple = ()  # also D2O at these K (caches of the first K samples of each prompt)
    hh_source: str = HH_SOURCE  # task hh: the rows to convert (a file, or a Hub dataset id)
    seed: int = 0
    fresh: bool = False
    command: str = ""
    timings: list = field(default_factory=list)
    estimates: dict = field(default_factory=dict)  # step -> estimated wall seconds (idle)
    cut: dict = field(default_factory=dict)  # samples cut at --max-tokens in the cache


PRESET_NAMES = ("default", "quick", "paper")
# The paper's settings (Duan et al.: K = 11, α = β = 0.1) on the secret task, sized to about
# 100 min on an idle 2-core machine (`plan.estimate` prints each step's share). --max-tokens 112
# cuts 10 % or fewer of the samples of the training prompts (measured: recipes/paper_lengths.json,
# tests/test_compare.py checks it); 96 prompts, one epoch of 48 steps of 2 prompts; every
# held-out attack and every benign question evaluated; checkpoints early (low drift, where the
# losses can be read side by side) and at the end.
PAPER = dict(
    limit=96, num_samples=11, sample_max_tokens=112, iters=48, batch_size=2, learning_rate=5e-5,
    save_steps=(6, 16, 48), alpha=0.1, beta=0.1, eval_n=120, eval_benign=72, eval_max_tokens=48,
    online_refresh_every=8, k_ablation=(1, 4),
)  # fmt: skip
PRESETS = {
    ("secret", "default"): {},
    ("hh", "default"): {"eval_n": 32},
    ("secret", "paper"): PAPER,
    # --quick: plumbing only (seconds on a tiny model); its figures mean nothing.
    **{
        (t, "quick"): dict(limit=4, sample_max_tokens=8, iters=2, save_steps=(1, 2), eval_n=4,
                           eval_benign=2, eval_max_tokens=8, eval_batch_size=8)
        for t in TASKS
    },
}  # fmt: skip
