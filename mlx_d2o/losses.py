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

import mlx.core as mx
import mlx.nn as nn

from .errors import D2OError
from .loss_spec import ROWS, Loss, LossOutput, Metrics, Param

__all__ = ["LOSSES", "PARAMS", "ROWS", "Loss", "Param", "get", "register", "settings"]


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
        ``rewards/negative``, ``rewards/margins``, ``rewards/accuracies``
        (share of prompts with z > 0), ``logps/samples``, ``logps/negative``.
    """
    samples_rewards = beta * mx.mean(policy_samples_logps - ref_samples_logps, axis=-1)
    negative_rewards = alpha * (policy_negative_logps - ref_negative_logps)
    margins = samples_rewards - negative_rewards
    loss = -mx.mean(nn.log_sigmoid(margins))
    metrics = {
        "rewards/samples": mx.mean(samples_rewards),
        "rewards/negative": mx.mean(negative_rewards),
        "rewards/margins": mx.mean(margins),
        "rewards/accuracies": _positive_share(margins),
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
    ``rewards/accuracies`` is the share of (prompt, sample) pairs with z_k > 0.
    """
    samples_rewards = beta * (policy_samples_logps - ref_samples_logps)
    negative_rewards = alpha * (policy_negative_logps - ref_negative_logps)
    margins = samples_rewards - negative_rewards[:, None]
    loss = -mx.mean(nn.log_sigmoid(margins))
    metrics = {
        "rewards/samples": mx.mean(samples_rewards),
        "rewards/negative": mx.mean(negative_rewards),
        "rewards/margins": mx.mean(margins),
        "rewards/accuracies": _positive_share(margins),
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
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``,
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
        "rewards/margins": mx.mean(margins),
        "rewards/accuracies": _positive_share(margins),
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

PARAMS: dict[str, Param] = {}
"""Every loss hyperparameter by name; `register` adds a loss's own (`Loss.params`)."""

BETA = Param("beta", 0.1, "Weight of the samples' log-ratio (D2O), DPO/NPO temperature.")
ALPHA = Param("alpha", 0.1, "Weight of the negative's log-ratio (D2O).")

LOSSES: dict[str, Loss] = {}
"""Every loss `mlx-d2o train --loss` knows, by name, in the order the help lists them."""


def register(loss: Loss) -> Loss:
    """Add LOSS to `LOSSES` (replacing an entry of the same name), its own `Param`s to `PARAMS`."""
    LOSSES[loss.name] = loss
    PARAMS.update({p.name: p for p in loss.params if isinstance(p, Param)})
    return loss


def params() -> dict[str, Param]:
    """Every declared hyperparameter, those of losses put into `LOSSES` directly included."""
    out = dict(PARAMS)
    for loss in LOSSES.values():
        out.update({p.name: p for p in loss.params if isinstance(p, Param)})
    return out


def settings(loss: Loss, values) -> dict:
    """{name: value} of LOSS's hyperparameters, each checked: VALUES' attribute of that name
    (a `TrainArgs`' alpha, beta) or its ``loss_params`` entry, else the declared default."""
    declared, extra = params(), getattr(values, "loss_params", None) or {}
    out = {}
    for name in loss.param_names():
        value = getattr(values, name, None)
        value = extra.get(name, declared[name].default) if value is None else value
        out[name] = declared[name].check(value)
    return out


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
        params=(BETA, ALPHA),
        help="the K samples' mean against the negative",
    )
)
register(
    Loss(
        "d2o-instance",
        d2o_instance_loss,
        rows=("samples", "negative"),
        params=(BETA, ALPHA),
        help="K pairwise losses (the ablation)",
    )
)
register(
    Loss(
        "dpo",
        dpo_loss,
        rows=("chosen", "negative"),
        params=(BETA,),
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
        params=(BETA,),
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
