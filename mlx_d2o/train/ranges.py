"""The ranges of train's numeric settings, checked before any work (`args.check_args` calls
`check_ranges` first): a value out of range is one line naming the flag, not a run that trains
the wrong way (`--learning-rate -1` raises the loss) or a traceback minutes later."""

from __future__ import annotations

import math

from ..errors import D2OError

# The shortest --max-seq-length that holds a chat-formatted prompt and some of a response.
MIN_SEQ_LENGTH = 16

_POSITIVE = "must be greater than 0"
_COUNT = "must be at least 1"

# (setting, the test a value must pass, what the message says); None values are not checked
# (they mean "not set": --iters / --epochs, the other one decides).
RULES = (
    ("learning_rate", lambda v: v > 0, _POSITIVE),
    ("alpha", lambda v: v > 0, _POSITIVE),
    ("beta", lambda v: v > 0, _POSITIVE),
    ("epochs", lambda v: v > 0, _POSITIVE),
    ("iters", lambda v: v >= 1, _COUNT),
    ("batch_size", lambda v: v >= 1, _COUNT),
    ("grad_accumulation_steps", lambda v: v >= 1, _COUNT),
    ("steps_per_report", lambda v: v >= 1, _COUNT),
    ("lora_rank", lambda v: v >= 1, _COUNT),
    ("lora_scale", lambda v: v > 0, _POSITIVE),
    ("lora_dropout", lambda v: 0 <= v < 1, "must be at least 0 and less than 1"),
    ("num_layers", lambda v: v == -1 or v >= 1, "must be -1 (every layer) or at least 1"),
    ("warmup", lambda v: v >= 0, "must be 0 (none) or a number of updates"),
    ("save_every", lambda v: v >= 0, "must be 0 (only at the end) or a number of steps"),
    ("steps_per_eval", lambda v: v >= 0, "must be 0 (no validation) or a number of steps"),
    ("refresh_every", lambda v: v >= 0, "must be 0 (offline) or a number of steps"),
    ("seed", lambda v: v >= 0, "must be 0 or more"),
    (
        "max_seq_length",
        lambda v: v >= MIN_SEQ_LENGTH,
        f"must be at least {MIN_SEQ_LENGTH} (room for a chat prompt and a response)",
    ),
)


def check_ranges(args) -> None:
    """D2OError naming the first setting of ARGS (a `TrainArgs`) that is out of its range."""
    for name, ok, rule in RULES:
        value = getattr(args, name)
        if value is None:
            continue
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise D2OError(f"--{name.replace('_', '-')} {value}: {rule}")
    _check_names(args)


def _check_names(args) -> None:
    """The settings that name a choice, also before any work (they were checked after loading)."""
    from .args import LR_SCHEDULES
    from .trainable import FINE_TUNE_TYPES, OPTIMIZERS

    for flag, value, known in (
        ("--optimizer", args.optimizer, tuple(OPTIMIZERS)),
        ("--fine-tune-type", args.fine_tune_type, FINE_TUNE_TYPES),
        ("--lr-schedule", args.lr_schedule, (None, *LR_SCHEDULES)),
    ):
        if value not in known and not (flag == "--lr-schedule" and isinstance(value, dict)):
            choices = ", ".join(k for k in known if k)
            raise D2OError(f"{flag} {value}: unknown (expected {choices})")
