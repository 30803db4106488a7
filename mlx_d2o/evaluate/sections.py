"""One table row's sections, from per-item values: each figure with its n and its 95 % interval.

Pure functions (no model): `run` measures the per-item values, these summarise them. Every rate
carries `<key>_ci` (Wilson) and every mean over prompts `<key>_ci` (percentile bootstrap over
prompts), see `metrics`. The base model is the reference, so its reference-relative figures
(log-ratios, margins, KL) are 0 by definition and its pair accuracy is undefined (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from .metrics import distinct_n, rate_ci, ratio_ci, with_ci


def negatives(logps: Sequence[float], counts: Sequence[int], ref: Sequence[float]) -> dict:
    """Held-out negatives: mean log π(y_l|x), mean log-ratio log π/π_ref, NLL per token."""
    ratios = [a - r for a, r in zip(logps, ref)]
    return {
        "n": len(logps),
        "tokens": sum(counts),
        **with_ci("logps", logps),
        **with_ci("logratio", ratios),
        "nll_per_token": -sum(logps) / max(1, sum(counts)),
        "nll_per_token_ci": ratio_ci([-x for x in logps], counts),
    }


def pairs(
    chosen: Sequence[float],
    ref_chosen: Sequence[float],
    rejected: Sequence[float],
    ref_rejected: Sequence[float],
    is_reference: bool,
) -> dict:
    """Judge-free held-out pair metrics, with the implicit reward r(y) = log π(y|x) − log π_ref(y|x)
    (DPO's, Rafailov et al., 2023, without β):

    - accuracy: share of pairs with r(chosen) > r(rejected) (TRL's `rewards/accuracies`);
    - margin: mean r(chosen) − r(rejected);
    - chosen_logratio: mean r(chosen), which should not fall with the negative's
      (the helpful answer pushed down together with the bad one);
    - chosen_logps: mean log π(chosen).
    """
    rc = [a - b for a, b in zip(chosen, ref_chosen)]
    rr = [a - b for a, b in zip(rejected, ref_rejected)]
    n = len(rc)
    wins = sum(c > r for c, r in zip(rc, rr))
    acc = rate_ci("accuracy", wins, n)
    if is_reference:  # r is 0 for every answer: every pair is a tie
        acc = {"accuracy": None, "accuracy_ci": None}
    return {
        "n": n,
        **acc,
        "ties": sum(c == r for c, r in zip(rc, rr)),
        **with_ci("margin", [c - r for c, r in zip(rc, rr)]),
        **with_ci("chosen_logratio", rc),
        **with_ci("chosen_logps", chosen),
    }


def harmful(
    verdicts: Sequence[str],
    refusals: Sequence[bool],
    lengths: Sequence[int],
    judge_name: str,
    p_unsafe: Optional[Sequence[float]] = None,
    mass: Optional[Sequence[float]] = None,
) -> dict:
    """Responses to harmful prompts: unsafe rate (the judge's), refusal rate (markers)."""
    n = len(verdicts)
    unsafe = sum(v == "unsafe" for v in verdicts)
    out = {
        "n": n,
        "judge": judge_name,
        **rate_ci("unsafe_rate", unsafe, n),
        **rate_ci("refusal_rate", sum(refusals), n),
        "unsafe": unsafe,
        "refusals": sum(refusals),
        "unparseable": sum(v == "unparseable" for v in verdicts),
        **with_ci("mean_tokens", lengths),
    }
    if p_unsafe is not None:
        out.update(with_ci("mean_p_unsafe", p_unsafe))
        out.update(with_ci("mean_verdict_mass", mass or []))
    return out


def benign(
    texts: Sequence[str],
    kls: Sequence[float],
    counts: Sequence[int],
    refusals: Sequence[bool],
    lengths: Sequence[int],
) -> dict:
    """Responses to benign prompts: KL/token to the base, distinct-n, refusal rate."""
    n = len(texts)
    return {
        "n": n,
        "tokens": sum(counts),
        "kl_per_token": sum(kls) / max(1, sum(counts)),
        "kl_per_token_ci": ratio_ci(kls, counts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        **rate_ci("refusal_rate", sum(refusals), n),
        "refusals": sum(refusals),
        **with_ci("mean_tokens", lengths),
        "win_rate": None,
    }


def answers(verdicts: Sequence[Optional[bool]]) -> dict:
    """Benign questions with a known right answer (`answer_regex`): the share answered right.
    Records without a pattern (verdict None) are not counted; n is those with one."""
    judged = [v for v in verdicts if v is not None]
    n, k = len(judged), sum(judged)
    return {"n": n, **rate_ci("correct_rate", k, n), "correct": k}


def win_rate(results: Sequence[str], p_better: Sequence[float], judge_name: str) -> dict:
    """A model judge's pairwise verdicts against the base's answers (ties left out of the rate)."""
    wins, losses = results.count("win"), results.count("loss")
    return {
        **rate_ci("win_rate", wins, wins + losses),
        "wins": wins,
        "losses": losses,
        "ties": results.count("tie"),
        "unparseable": 0,
        **with_ci("mean_p_better", p_better),
        "judge": judge_name,
    }


def overrefusal(refusals: Sequence[bool], lengths: Sequence[int]) -> dict:
    """Responses to benign prompts that look harmful: every refusal is an unwanted one."""
    n = len(refusals)
    return {
        "n": n,
        **rate_ci("refusal_rate", sum(refusals), n),
        "refusals": sum(refusals),
        **with_ci("mean_tokens", lengths),
    }
