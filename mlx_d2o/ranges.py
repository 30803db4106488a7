"""The one table of every command's numeric settings and their ranges, and the names a choice
setting may take, checked before any work: a value out of range is one line naming the flag
(or the recipe's key), not a run that trains the wrong way (`--learning-rate -1` raises the
loss), a traceback minutes later, or a planner that loops for ever (`plan -k 1000000000`).

The CLI checks through `check(command, settings, recipe, from_recipe)` as soon as flags and
recipe are merged (`cli.common`); the library's entry points (`train.check_args`,
`sample.check_args`, `evaluate.check_args`) call the same `check`, naming flags.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import losses
from .errors import D2OError

# The shortest --max-seq-length that holds a chat-formatted prompt and some of a response.
MIN_SEQ_LENGTH = 16
# The most sequences one step holds (K x batch size): more is not a step any machine trains,
# and the planner's search over chunk sizes is linear in it.
MAX_SEQUENCES = 16384
# D2O's α and β weigh log-ratios inside a sigmoid (the paper: 0.1); at 1e30 every gradient
# is inf or 0 and the loss stays log 2.
MAX_WEIGHT = 100.0

OPTIMIZERS = ("adam", "adamw", "sgd")
FINE_TUNE_TYPES = ("lora", "dora", "full")
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class Rule:
    ok: Callable[[float], bool]
    says: str
    whole: bool = True  # a whole number (else any finite number)


def _at_least(low: int, says: str = "") -> Rule:
    return Rule(lambda v: v >= low, says or f"must be at least {low}")


_COUNT = _at_least(1)
_POSITIVE = Rule(lambda v: v > 0, "must be greater than 0", whole=False)
_GB = Rule(lambda v: v > 0, "must be a number of GB above 0", whole=False)
_WEIGHT = Rule(
    lambda v: 0 < v <= MAX_WEIGHT, f"must be greater than 0 and at most {MAX_WEIGHT:g}", False
)
_LAYERS = Rule(lambda v: v == -1 or v >= 1, "must be -1 (every layer) or at least 1")
_SEQ = _at_least(
    MIN_SEQ_LENGTH, f"must be at least {MIN_SEQ_LENGTH} (room for a chat prompt and a response)"
)
_TEMP = Rule(lambda v: v >= 0, "must be >= 0 (0 = greedy)", whole=False)

_TRAIN = {
    "learning_rate": _POSITIVE,
    "alpha": _WEIGHT,
    "beta": _WEIGHT,
    "epochs": _POSITIVE,
    "iters": _COUNT,
    "batch_size": _COUNT,
    "grad_accumulation_steps": _COUNT,
    "steps_per_report": _COUNT,
    "lora_rank": _COUNT,
    "lora_scale": _POSITIVE,
    "lora_dropout": Rule(lambda v: 0 <= v < 1, "must be at least 0 and less than 1", False),
    "num_layers": _LAYERS,
    "warmup": _at_least(0, "must be 0 (none) or a number of updates"),
    "save_every": _at_least(0, "must be 0 (only at the end) or a number of steps"),
    "steps_per_eval": _at_least(0, "must be 0 (no validation) or a number of steps"),
    "refresh_every": _at_least(0, "must be 0 (offline) or a number of steps"),
    "seed": _at_least(0, "must be 0 or more"),
    "max_seq_length": _SEQ,
    "memory_limit": _GB,
    "chunk_size": _COUNT,
}
_PLAN_OWN = {
    "k": _COUNT,
    "q_bits": _at_least(0, "must be 0 (float weights) or a number of bits"),
    "prompt_tokens": _COUNT,
    "response_tokens": _COUNT,
    "ram": _GB,
}

# command -> setting -> its rule; None values are "not given" and are not checked
RANGES: dict[str, dict[str, Rule]] = {
    "train": _TRAIN,
    "plan": {**_TRAIN, **_PLAN_OWN},
    "sample": {
        "num_samples": _at_least(1, "K must be at least 1"),
        "max_tokens": _COUNT,
        "batch_size": _COUNT,
        "seed": Rule(lambda v: True, ""),
        "limit": _COUNT,
        "temp": _TEMP,
        "top_p": Rule(lambda v: 0 < v <= 1, "must be in (0, 1] (1 = off)", whole=False),
    },
    "eval": {
        "num_prompts": _at_least(0, "must be >= 0 (0 = all)"),
        "max_tokens": _COUNT,
        "batch_size": _COUNT,
        "temp": _TEMP,
        "seed": _at_least(0, "must be >= 0"),
        "judge_threshold": Rule(
            lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)", whole=False
        ),
    },
    "fuse": {"q_bits": _COUNT, "q_group_size": _COUNT},
    "generate": {"max_tokens": _COUNT, "temp": _TEMP},
    "doctor": {"matmul_size": _COUNT},
    "data": {"max_seq_length": _COUNT},
}

# command -> setting -> the names it takes (a loss is any registered in `losses`)
CHOICES: dict[str, dict[str, tuple]] = {
    "train": {
        "optimizer": OPTIMIZERS,
        "fine_tune_type": FINE_TUNE_TYPES,
        "lr_schedule": LR_SCHEDULES,  # or mlx-lm's {name, arguments, warmup}
    },
    "plan": {"fine_tune_type": FINE_TUNE_TYPES},
}
_LOSS = ("train", "plan")


def _get(settings, name: str):
    return settings.get(name) if isinstance(settings, dict) else getattr(settings, name, None)


def source(name: str, recipe=None, from_recipe=()) -> str:
    """How the user gave setting NAME: the recipe file's key (FROM_RECIPE: the names it gave,
    or a mapping name -> its key there), else the flag."""
    if recipe is not None and name in from_recipe:
        key = from_recipe[name] if isinstance(from_recipe, dict) else name
        return f"{recipe}: field '{key}'"
    return "-k" if name == "k" else "--" + name.replace("_", "-")


def check_value(name: str, value, rule: Rule, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        want = "a whole number" if rule.whole else "a number"
        raise D2OError(f"{where}: expected {want}, got {value!r}")
    if rule.whole and not isinstance(value, int):
        raise D2OError(f"{where} {value}: expected a whole number")
    if not math.isfinite(value) or not rule.ok(value):
        raise D2OError(f"{where} {value}: {rule.says or 'out of range'}")


def check(command: str, settings, recipe=None, from_recipe=()) -> None:
    """D2OError naming the first setting of SETTINGS (a dict or an args dataclass) of COMMAND
    out of its range or not one of its names; FROM_RECIPE: the names RECIPE gave."""
    for name, rule in RANGES.get(command, {}).items():
        value = _get(settings, name)
        if value is not None:
            check_value(name, value, rule, source(name, recipe, from_recipe))
    for name, known in CHOICES.get(command, {}).items():
        value = _get(settings, name)
        if value is None or (name == "lr_schedule" and isinstance(value, dict)):
            continue
        if value not in known:
            where = source(name, recipe, from_recipe)
            raise D2OError(f"{where} {value}: unknown (expected {', '.join(known)})")
    loss = _get(settings, "loss") if command in _LOSS else None
    if loss is not None and "loss" in from_recipe and loss not in losses.LOSSES:
        raise D2OError(
            f"{source('loss', recipe, from_recipe)} {loss}: unknown (expected one of "
            f"{', '.join(losses.LOSSES)})"
        )
    if loss is not None:
        losses.get(loss)
    _check_sequences(command, settings, recipe, from_recipe)


def _check_sequences(command: str, settings, recipe, from_recipe) -> None:
    k = _get(settings, "k" if command == "plan" else "num_samples")
    b = _get(settings, "batch_size")
    if command not in ("plan", "sample") or k is None or b is None or k * b <= MAX_SEQUENCES:
        return
    flag = source("k" if command == "plan" else "num_samples", recipe, from_recipe)
    raise D2OError(
        f"{flag} {k} x {source('batch_size', recipe, from_recipe)} {b} = {k * b} sequences in "
        f"one step: at most {MAX_SEQUENCES} can be planned, sampled or trained together"
    )


def check_flag(command: str, name: str, value) -> None:
    """Check one flag of COMMAND that no args dataclass holds (doctor's, generate's)."""
    if value is not None:
        check_value(name, value, RANGES[command][name], source(name))
