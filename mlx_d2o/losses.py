"""Preference losses on summed sequence log-probabilities.

Every loss here is a pure function of ``mx.array`` inputs and returns
``(loss, metrics)``: ``loss`` is a scalar array, ``metrics`` a dict of scalar
arrays named as in TRL's DPO trainer (``rewards/...``, ``logps/...``), with
``samples`` for the K self-generated responses and ``negative`` for the
human-labelled one.

Shapes convention:

- ``*_negative_logps``, ``*_chosen_logps``, ``*_rejected_logps``: ``[B]``, one
  summed log-probability log pi(y|x) per prompt (sum over response tokens,
  no length normalisation).
- ``*_samples_logps``: ``[B, K]``, the K responses sampled for each prompt.
- ``policy_*`` come from the model being trained, ``ref_*`` from the frozen
  reference model; only ``policy_*`` carry gradient.

No function branches on array values or calls ``.item()``, so each one can be
used inside ``mx.compile`` and ``mx.value_and_grad`` (the gradient is taken
with respect to ``loss``; ``metrics`` are wrapped in ``mx.stop_gradient``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from .errors import D2OError

Metrics = dict[str, mx.array]
LossOutput = tuple[mx.array, Metrics]


def _detached(metrics: Metrics) -> Metrics:
    # Metrics are for logging only; cutting them from the graph keeps
    # value_and_grad from differentiating through them.
    return {name: mx.stop_gradient(value) for name, value in metrics.items()}


def _positive_share(margins: mx.array) -> mx.array:
    # Counted per element (prompt or prompt/sample pair), not on the mean margin.
    return mx.mean((margins > 0).astype(mx.float32))


def d2o_loss(
    policy_samples_logps: mx.array,
    policy_negative_logps: mx.array,
    ref_samples_logps: mx.array,
    ref_negative_logps: mx.array,
    beta: float = 0.1,
    alpha: float = 0.1,
) -> LossOutput:
    r"""Distributional Dispreference Optimization (D2O) loss.

    Duan et al., "Negating Negatives: Alignment with Human Negative Samples via
    Distributional Dispreference Optimization", arXiv:2403.03419.

    For each prompt x with human negative y_l and K samples y_1..y_K from pi_r:

    .. math::
        z = \frac{\beta}{K}\sum_k \log\frac{\pi_\theta(y_k|x)}{\pi_{ref}(y_k|x)}
            - \alpha \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)},
        \qquad L = -\mathbb{E}_x \log\sigma(z)

    The mean over K sits inside the sigmoid (one logit per prompt), which is
    what makes the objective distributional.

    Args:
        policy_samples_logps: ``[B, K]`` policy log-probs of the samples.
        policy_negative_logps: ``[B]`` policy log-probs of the negatives.
        ref_samples_logps: ``[B, K]`` reference log-probs of the samples.
        ref_negative_logps: ``[B]`` reference log-probs of the negatives.
        beta: weight of the samples' implicit reward.
        alpha: weight of the negative's implicit reward.

    Returns:
        ``(loss, metrics)`` with metrics ``rewards/samples``,
        ``rewards/negative``, ``rewards/margin``, ``accuracy`` (share of
        prompts with z > 0), ``logps/samples``, ``logps/negative``.
    """
    samples_rewards = beta * mx.mean(policy_samples_logps - ref_samples_logps, axis=-1)
    negative_rewards = alpha * (policy_negative_logps - ref_negative_logps)
    margins = samples_rewards - negative_rewards
    loss = -mx.mean(nn.log_sigmoid(margins))
    metrics = {
        "rewards/samples": mx.mean(samples_rewards),
        "rewards/negative": mx.mean(negative_rewards),
        "rewards/margin": mx.mean(margins),
        "accuracy": _positive_share(margins),
        "logps/samples": mx.mean(policy_samples_logps),
        "logps/negative": mx.mean(policy_negative_logps),
    }
    return loss, _detached(metrics)


def d2o_instance_loss(
    policy_samples_logps: mx.array,
    policy_negative_logps: mx.array,
    ref_samples_logps: mx.array,
    ref_negative_logps: mx.array,
    beta: float = 0.1,
    alpha: float = 0.1,
) -> LossOutput:
    r"""Instance-level ablation of D2O: the mean of K pairwise DPO-style losses.

    Duan et al., arXiv:2403.03419 (the instance-level variant it compares to).

    .. math::
        z_k = \beta \log\frac{\pi_\theta(y_k|x)}{\pi_{ref}(y_k|x)}
              - \alpha \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)},
        \qquad L = -\mathbb{E}_x \frac{1}{K}\sum_k \log\sigma(z_k)

    -log sigmoid is convex, so by Jensen ``d2o_loss <= d2o_instance_loss``.

    Arguments are those of :func:`d2o_loss`. Metrics are the same names;
    ``accuracy`` is the share of (prompt, sample) pairs with z_k > 0.
    """
    samples_rewards = beta * (policy_samples_logps - ref_samples_logps)
    negative_rewards = alpha * (policy_negative_logps - ref_negative_logps)
    margins = samples_rewards - negative_rewards[:, None]
    loss = -mx.mean(nn.log_sigmoid(margins))
    metrics = {
        "rewards/samples": mx.mean(samples_rewards),
        "rewards/negative": mx.mean(negative_rewards),
        "rewards/margin": mx.mean(margins),
        "accuracy": _positive_share(margins),
        "logps/samples": mx.mean(policy_samples_logps),
        "logps/negative": mx.mean(policy_negative_logps),
    }
    return loss, _detached(metrics)


def dpo_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array,
    ref_rejected_logps: mx.array,
    beta: float = 0.1,
) -> LossOutput:
    r"""Direct Preference Optimization (sigmoid) loss.

    Rafailov et al., "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model", arXiv:2305.18290.

    .. math::
        L = -\mathbb{E} \log\sigma\Big(\beta\big[
            \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
            - \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\big]\Big)

    All inputs are ``[B]``. Metrics: ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margin``, ``accuracy``, ``logps/chosen``, ``logps/rejected``,
    and ``rewards/negative`` (= ``rewards/rejected``) so that every loss
    reports the negative's reward under one name.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    margins = chosen_rewards - rejected_rewards
    loss = -mx.mean(nn.log_sigmoid(margins))
    metrics = {
        "rewards/chosen": mx.mean(chosen_rewards),
        "rewards/rejected": mx.mean(rejected_rewards),
        "rewards/negative": mx.mean(rejected_rewards),
        "rewards/margin": mx.mean(margins),
        "accuracy": _positive_share(margins),
        "logps/chosen": mx.mean(policy_chosen_logps),
        "logps/rejected": mx.mean(policy_rejected_logps),
    }
    return loss, _detached(metrics)


def npo_loss(
    policy_negative_logps: mx.array,
    ref_negative_logps: mx.array,
    beta: float = 0.1,
) -> LossOutput:
    r"""Negative Preference Optimization loss.

    Zhang et al., "Negative Preference Optimization: From Catastrophic Collapse
    to Effective Unlearning", arXiv:2404.05868.

    .. math::
        L = -\frac{2}{\beta}\,\mathbb{E}\log\sigma\Big(-\beta
            \log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)

    The 2/beta scale makes the gradient match gradient ascent's as beta -> 0
    while bounding it as the negative's likelihood falls.

    Inputs are ``[B]``. Metrics: ``rewards/negative`` (mean of
    beta * log-ratio), ``logps/negative``.
    """
    negative_rewards = beta * (policy_negative_logps - ref_negative_logps)
    loss = -(2.0 / beta) * mx.mean(nn.log_sigmoid(-negative_rewards))
    metrics = {
        "rewards/negative": mx.mean(negative_rewards),
        "logps/negative": mx.mean(policy_negative_logps),
    }
    return loss, _detached(metrics)


def ga_loss(policy_negative_logps: mx.array, negative_tokens: mx.array) -> LossOutput:
    r"""Gradient ascent on the negatives' likelihood.

    The unlearning baseline used in D2O (arXiv:2403.03419) and NPO
    (arXiv:2404.05868): minimize the per-token log-likelihood of the negative,
    i.e. ascend its NLL.

    .. math::
        L = \mathbb{E}\,\frac{\log\pi_\theta(y_l|x)}{|y_l|}

    Args:
        policy_negative_logps: ``[B]`` summed log-probs of the negatives.
        negative_tokens: ``[B]`` number of response tokens of each negative.

    Metrics: ``logps/negative`` (mean summed log-prob), ``nll/negative``
    (mean per-token NLL, i.e. ``-loss``).
    """
    # Clamp so that an empty response gives 0 rather than NaN; the division
    # must not be guarded by a Python branch, which would break mx.compile.
    tokens = mx.maximum(negative_tokens.astype(policy_negative_logps.dtype), 1.0)
    per_token_logps = policy_negative_logps / tokens
    loss = mx.mean(per_token_logps)
    metrics = {
        "logps/negative": mx.mean(policy_negative_logps),
        "nll/negative": -mx.mean(per_token_logps),
    }
    return loss, _detached(metrics)


# ---------------------------------------------------------------------------------------------
# The declaration: what each loss needs. The trainer derives its row layout, metric names and
# the `--loss` help from these entries, so a new loss is one function and one entry here.
# ---------------------------------------------------------------------------------------------

ROWS = ("samples", "negative", "chosen")
"""The sequences a loss can read, in the order of the rows of one forward pass: the K samples
of each prompt (``[B, K]``), the human negative (``[B]``), a human ``chosen`` response (``[B]``)."""


@dataclass(frozen=True)
class Loss:
    """One entry of `LOSSES`: a loss function and what the trainer must give it.

    Attributes:
        name: the value of ``--loss``.
        fn: the loss function, returning ``(loss, metrics)``.
        rows: the sequences it needs, from `ROWS` (any order; the forward pass uses ROWS's).
        params: the settings it takes as keywords (``"alpha"``, ``"beta"``).
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
    params: tuple[str, ...] = ()
    help: str = ""
    inputs: Optional[tuple[str, ...]] = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows:
            raise ValueError(f"loss {self.name!r}: rows must come from {ROWS}, got {self.rows}")

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
            *(arrays[n] for n in self.arguments()), **{p: settings[p] for p in self.params}
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
        _, metrics = self(arrays, **{p: 0.1 for p in self.params})
        return sorted(self.with_aliases(metrics))


LOSSES: dict[str, Loss] = {}
"""Every loss `mlx-d2o train --loss` knows, by name, in the order the help lists them."""


def register(loss: Loss) -> Loss:
    """Add LOSS to `LOSSES` (replacing an entry of the same name)."""
    LOSSES[loss.name] = loss
    return loss


def get(name: str) -> Loss:
    """The entry of --loss NAME; a one-line D2OError for an unknown name."""
    if name not in LOSSES:
        raise D2OError(f"unknown --loss {name!r} (expected one of {', '.join(LOSSES)})")
    return LOSSES[name]


def cli_help() -> str:
    """The help of ``--loss``: one line per loss."""
    return "; ".join(f"{n}: {loss.help}" for n, loss in LOSSES.items()) + "."


register(
    Loss(
        "d2o",
        d2o_loss,
        rows=("samples", "negative"),
        params=("beta", "alpha"),
        help="the K samples' mean against the negative",
    )
)
register(
    Loss(
        "d2o-instance",
        d2o_instance_loss,
        rows=("samples", "negative"),
        params=("beta", "alpha"),
        help="K pairwise losses (the ablation)",
    )
)
register(
    Loss(
        "dpo",
        dpo_loss,
        rows=("chosen", "negative"),
        params=("beta",),
        help="needs a 'chosen' response",
        # dpo_loss reports the negative's reward under both names (see its docstring).
        aliases={"rewards/negative": "rewards/rejected"},
    )
)
register(
    Loss(
        "npo",
        npo_loss,
        rows=("negative",),
        params=("beta",),
        help="the negative only",
    )
)
register(
    Loss(
        "ga",
        ga_loss,
        rows=("negative",),
        help="gradient ascent on the negative",
        inputs=("policy_negative", "tokens_negative"),
    )
)
