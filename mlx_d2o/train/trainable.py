"""What trains: LoRA/DoRA layers or the last layers, gradient checkpointing, the optimizer."""

from __future__ import annotations

from contextlib import contextmanager

import mlx.optimizers as optim

from ..dropout import use_keyed_dropout
from ..errors import D2OError
from .args import LR_SCHEDULES, TrainArgs

OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}
FINE_TUNE_TYPES = ("lora", "dora", "full")


def setup_trainable(model, args: TrainArgs) -> None:
    """Freeze the base, then add LoRA/DoRA layers (mlx-lm's own) or unfreeze the last layers."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers)
    if args.num_layers > n_layers:
        raise D2OError(f"--num-layers {args.num_layers}: the model has only {n_layers} layers")
    model.freeze()
    if args.fine_tune_type == "full":
        for layer in model.layers[-max(args.num_layers, 0) :]:
            layer.unfreeze()
    elif args.fine_tune_type in ("lora", "dora"):
        linear_to_lora_layers(
            model,
            args.num_layers,
            args.lora_parameters(),
            use_dora=args.fine_tune_type == "dora",
        )
        use_keyed_dropout(model)  # the same masks in every pass of a step (`dropout`)
    else:
        raise D2OError(
            f"unknown --fine-tune-type {args.fine_tune_type!r} (expected lora, dora or full)"
        )


@contextmanager
def checkpointed_layers(model, enabled: bool):
    """mlx-lm's grad_checkpoint patches the layer class for the whole process; undo it afterwards
    so that one training run does not change the next one's model in the same process."""
    if not enabled:
        yield
        return
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(model.layers[0])
    original = cls.__call__
    grad_checkpoint(model.layers[0])
    try:
        yield
    finally:
        cls.__call__ = original


def learning_rate(args: TrainArgs, total_updates: int):
    """The learning rate: a number, or a schedule over TOTAL_UPDATES (mlx-lm's for a dict)."""
    from mlx_lm.tuner.utils import build_schedule

    lr, sched = args.learning_rate, args.lr_schedule
    if isinstance(sched, dict):
        return build_schedule(sched)
    warmup = optim.linear_schedule(0.0, lr, args.warmup) if args.warmup else None
    if sched in (None, "constant"):
        if warmup is None:
            return lr
        return optim.join_schedules([warmup, lambda _: lr], [args.warmup])
    if sched not in LR_SCHEDULES:
        raise D2OError(f"unknown --lr-schedule {sched!r} (expected {', '.join(LR_SCHEDULES)})")
    decay = max(1, total_updates - args.warmup)
    main = (
        optim.cosine_decay(lr, decay)
        if sched == "cosine"
        else optim.linear_schedule(lr, 0.0, decay)
    )
    return main if warmup is None else optim.join_schedules([warmup, main], [args.warmup])


def build_optimizer(args: TrainArgs, total_updates: int):
    lr = learning_rate(args, total_updates)
    if args.optimizer not in OPTIMIZERS:
        raise D2OError(f"unknown --optimizer {args.optimizer!r} (expected {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[args.optimizer](learning_rate=lr)
