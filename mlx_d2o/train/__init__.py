"""`mlx-d2o train`: LoRA / DoRA / full fine-tuning with D2O and its baselines.

`mlx-d2o train`: LoRA / DoRA / full fine-tuning from a sample cache with D2O and its baselines,
split the way mlx-lm's tuner/ is:

    args.py         TrainArgs (flags as in mlx_lm.lora), DEFAULTS, the checks before any work
                    (ranges and names from the package's one table, `mlx_d2o.ranges`)
    examples.py     cache rows -> examples (tokens + reference log-probs) -> batches -> arrays
    trainable.py    LoRA/DoRA/full layers, gradient checkpointing, optimizer and schedule
    step.py         the loss over one forward pass, the compiled step, the reference, validation
    checkpoints.py  adapters, checkpoints, resume from the newest whole one, metrics.jsonl
    output.py       the adapter folder: one run at a time, earlier runs kept, leftovers removed
    report.py       report windows and the TrainingCallback that writes metrics.jsonl
    refresh.py      online D2O: the policy samples again through the sample step's code
    plan.py         the memory plan of a step, from config.json alone (also `mlx-d2o plan`)
    memory.py       this run's memory plan and the chunk size it trains with (measured)
    run.py          one run's context (`Run`), decided whole and frozen before the loop
    loop.py         train(args): the loop

Under `mlx.launch` each rank takes its share of every global batch (`distributed.Shard`).

The names below are imported when first used, so that `mlx-d2o train --help` (which reads
`DEFAULTS`) does not load mlx-lm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .args import DEFAULTS, TrainArgs
    from .loop import train
    from .step import reference_model
    from .trainable import setup_trainable

_HOME = {
    "DEFAULTS": "args",
    "TrainArgs": "args",
    "train": "loop",
    "reference_model": "step",
    "setup_trainable": "trainable",
}

__all__ = ["DEFAULTS", "TrainArgs", "reference_model", "setup_trainable", "train"]


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
