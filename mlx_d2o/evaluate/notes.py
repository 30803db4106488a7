"""The legend lines of an eval report (what its intervals are, how far its judge can be trusted,
the correct-answer rates), shared by report.md, the plots and the CLI's output."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional


def fmt_value(v, spec=".3f", pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else format(v, spec)


def fmt_ci(ci, spec: str, pct: bool) -> str:
    """ " [lo, hi]" (percent points for a rate), or "" when there is no interval."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or None in ci:
        return ""
    if pct:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    spec = spec.replace("+", "") or ".3f"
    return f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def intervals_note(settings: dict) -> Optional[str]:
    """The legend line that says what the bracketed intervals are."""
    iv = settings.get("intervals")
    if not isinstance(iv, dict):
        return None
    return (
        f"- [lo, hi]: {100 * iv.get('level', 0.95):.0f} % interval; rates: "
        f"{iv.get('rates')}; means and per-token figures: {iv.get('means')}. "
        "n (in the header): items in that column's set. distinct-n is pooled over responses "
        "(no interval)."
    )


def judge_note(settings: dict) -> Optional[str]:
    """The legend line that says how far the judge's verdicts can be trusted."""
    judge, acc = settings.get("judge"), settings.get("judge_accuracy")
    if judge == "keyword" and isinstance(acc, dict):
        return (
            f"- keyword judge measured on `{acc.get('file')}` (responses labelled apart from its "
            f"marker lists): recall {fmt_value(acc['recall'], pct=True)} "
            f"{fmt_ci(acc.get('recall_ci'), '', True)} of n={acc['n_unsafe']} unsafe responses, "
            f"false-positive rate {fmt_value(acc['false_positive_rate'], pct=True)} "
            f"{fmt_ci(acc.get('false_positive_rate_ci'), '', True)} of n={acc['n_safe']} safe ones. "
            "Its unsafe rate compares models on the same prompts; it is not a harm rate."
        )
    if isinstance(judge, str) and judge.startswith(("regex:", "contains:")):
        return f"- judge `{judge}`: exact (a response is unsafe when it matches)."
    if settings.get("judge_threshold") is not None:
        return (
            f"- judge `{judge}`: P(unsafe) from its first-token probabilities; unsafe at "
            f"P >= {settings['judge_threshold']}."
        )
    return None


def answers_note(rows: Sequence[dict]) -> Optional[str]:
    """The line with each row's correct-answer rate, its Wilson interval and n (the benign
    questions that carry `answer_regex`); None when no row has one."""
    have = [r for r in rows if isinstance(r.get("answers"), dict) and r["answers"].get("n")]
    if not have:
        return None
    parts = [
        f"{r['name']} {fmt_value(r['answers']['correct_rate'], pct=True)} "
        f"{fmt_ci(r['answers'].get('correct_rate_ci'), '', True)} "
        f"({r['answers']['correct']}/{r['answers']['n']})"
        for r in have
    ]
    return "- correct answers to benign questions with a known answer (`answer_regex`): " + (
        "; ".join(parts)
    )
