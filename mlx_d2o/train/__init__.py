"""`mlx-d2o train`: LoRA / DoRA / full fine-tuning from a sample cache with D2O and its baselines,
split the way mlx-lm's tuner/ is:

    args.py         TrainArgs (flags as in mlx_lm.lora), DEFAULTS, the checks before any work
    examples.py     cache rows -> examples (tokens + reference log-probs) -> batches -> arrays
    trainable.py    LoRA/DoRA/full layers, gradient checkpointing, optimizer and schedule
    step.py         the loss over one forward pass, the compiled step, the reference, validation
    checkpoints.py  adapters, checkpoints, resume, metrics.jsonl kept as one run
    report.py       report windows and the TrainingCallback that writes metrics.jsonl
    refresh.py      online D2O: the policy samples again through the sample step's code
    run.py          one run's context, set up before the loop
    loop.py         train(args): the loop

Under `mlx.launch` each rank takes its share of every global batch (`distributed.Shard`).
"""

from .args import DEFAULTS, TrainArgs
from .loop import train
from .step import reference_model
from .trainable import setup_trainable

__all__ = ["DEFAULTS", "TrainArgs", "reference_model", "setup_trainable", "train"]
