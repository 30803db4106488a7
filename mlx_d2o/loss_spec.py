"""The declaration of a loss (`Loss`) and of its hyperparameters (`Param`).

The declaration of a loss (`Loss`: the rows it reads, its inputs, its hyperparameters
`Param`, its metric aliases), from which the trainer derives everything else; `losses` holds the
losses themselves and their entries."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx

from .errors import D2OError

Metrics = dict[str, mx.array]
LossOutput = tuple[mx.array, Metrics]

ROWS = ("samples", "negative", "chosen")
"""The sequences a loss can read, in the order of the rows of one forward pass: the K samples
of each prompt (``[B, K]``), the human negative (``[B]``), a human ``chosen`` response (``[B]``)."""


@dataclass(frozen=True)
class Param:
    """A loss's hyperparameter, declared once: the flag ``--NAME``, the recipe key ``NAME``
    (also inside ``train:``), its DEFAULT and HELP, and the lower bound it must be above."""

    name: str
    default: float
    help: str
    above: Optional[float] = 0.0  # values must be > this (None: any number)

    def check(self, value) -> float:
        """VALUE as a float; a one-line D2OError for a non-number or one out of range."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or (self.above is not None and value <= self.above):
            rule = f"a number above {self.above:g}" if self.above is not None else "a number"
            raise D2OError(f"--{self.name.replace('_', '-')} {value}: must be {rule}")
        return float(value)


@dataclass(frozen=True)
class Loss:
    """One entry of `LOSSES`: a loss function and what the trainer must give it.

    Attributes:
        name: the value of ``--loss``.
        fn: the loss function, returning ``(loss, metrics)``.
        rows: the sequences it needs, from `ROWS` (any order; the forward pass uses ROWS's).
        params: the hyperparameters it takes as keywords: `Param` declarations, or the names
            of declared ones (``"alpha"``, ``"beta"``); a new `Param` here is a new flag and
            recipe key of `mlx-d2o train` and lands in adapter_config.json.
        help: one line for ``--loss``'s help.
        inputs: names of FN's positional arrays: ``policy_<row>`` (summed log-probs of the
            policy, with gradient), ``ref_<row>`` (the reference's, from the cache) or
            ``tokens_<row>`` (response token counts). Default: the policy's for each row
            of `rows`, then the reference's, in the order of `rows`.
        aliases: metrics FN reports under a second name ``{copy: original}``; the copy is
            dropped inside the compiled step and put back after it (`with_aliases`).

    FN runs inside ``mx.compile(value_and_grad(...))``. There (MLX 0.32.4) an output that is a
    node of another output crashes with "_Map_base::at": two equal metrics, or a metric equal
    to an intermediate of the loss (loss ``-mean(z)`` with metric ``mean(z)``). Declare the
    first case in `aliases`; avoid the second (``ga_loss`` reports ``-loss``, which is fine).
    """

    name: str
    fn: Callable[..., LossOutput]
    rows: tuple[str, ...]
    params: tuple = ()
    help: str = ""
    inputs: Optional[tuple[str, ...]] = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise ValueError(f"loss {self.name!r}: rows must come from {ROWS}, got {self.rows}")

    def param_names(self) -> tuple[str, ...]:
        return tuple(p if isinstance(p, str) else p.name for p in self.params)

    def uses(self, row: str) -> bool:
        return row in self.rows

    def layout(self) -> tuple[str, ...]:
        """The rows of one forward pass over a batch for this loss, in `ROWS` order."""
        return tuple(r for r in ROWS if r in self.rows)

    def arguments(self) -> tuple[str, ...]:
        if self.inputs is not None:
            return self.inputs
        return tuple(f"policy_{r}" for r in self.rows) + tuple(f"ref_{r}" for r in self.rows)

    def __call__(self, arrays: Mapping[str, mx.array], **settings) -> LossOutput:
        """FN on the arrays named by `arguments`, with its `params` taken from SETTINGS; the
        `aliases` left out (two equal outputs that compile's simplification merges into one
        crash ``mx.compile``, MLX 0.32.4, "_Map_base::at")."""
        value, metrics = self.fn(
            *(arrays[n] for n in self.arguments()), **{p: settings[p] for p in self.param_names()}
        )
        return value, {k: v for k, v in metrics.items() if k not in self.aliases}

    def with_aliases(self, metrics: Mapping) -> dict:
        """METRICS with the `aliases` put back (outside the compiled step)."""
        return {**metrics, **{a: metrics[o] for a, o in self.aliases.items() if o in metrics}}

    def metric_names(self) -> list:
        """The names of the metrics the loss reports (aliases included), from one call of FN
        on one-element inputs."""
        one = mx.zeros((1,))
        arrays = {f"{kind}_{r}": one for kind in ("policy", "ref", "tokens") for r in ROWS}
        arrays.update({f"{kind}_samples": one[:, None] for kind in ("policy", "ref", "tokens")})
        _, metrics = self(arrays, **{p: 0.1 for p in self.param_names()})
        return sorted(self.with_aliases(metrics))
