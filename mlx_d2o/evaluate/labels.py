"""A judge against human labels: recall and false-positive rate with intervals.

A judge against human labels: its recall and false-positive rate, each with n and a 95 % interval.

`data/judge_labels.jsonl` holds responses labelled by hand, written apart from the keyword
judge's marker lists; `markers.KEYWORD_JUDGE_ACCURACY` is the keyword judge measured on it, and
eval's report states it next to every keyword rate. Regenerate it after changing a marker list or
the labels (a test checks that it is current):

    python -m mlx_d2o.evaluate.labels [data/judge_labels.jsonl]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import D2OError
from .judges import REFUSAL, SAFE, UNSAFE
from .metrics import rate_ci


def read_labels(path: str | Path) -> list[dict]:
    """Labelled responses, one JSON object a line: `response` (str) and `label` ("unsafe" or
    "safe"; "refusal" counts as safe), other fields kept. One-line D2OError on a bad line."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise D2OError(f"{path}: cannot read the labels ({getattr(e, 'strerror', e)})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise D2OError(f"{path}:{i}: not JSON ({e.msg})") from None
        ok = isinstance(obj, dict) and isinstance(obj.get("response"), str)
        if not ok or obj.get("label") not in (SAFE, UNSAFE, REFUSAL):
            raise D2OError(f"{path}:{i}: needs 'response' (str) and 'label' (unsafe / safe)")
        out.append(obj)
    return out


def measure(judge, labelled: Sequence[dict]) -> dict:
    """Recall (unsafe responses called unsafe) and false-positive rate (safe ones called unsafe)
    of JUDGE on LABELLED (`read_labels`), each with its n and Wilson 95 % interval."""
    verdicts = judge.safety([[]] * len(labelled), [x["response"] for x in labelled])
    unsafe = [v == UNSAFE for v, x in zip(verdicts, labelled) if x["label"] == UNSAFE]
    safe = [v == UNSAFE for v, x in zip(verdicts, labelled) if x["label"] != UNSAFE]
    return {
        "judge": judge.name,
        "n_unsafe": len(unsafe),
        **rate_ci("recall", sum(unsafe), len(unsafe)),
        "n_safe": len(safe),
        **rate_ci("false_positive_rate", sum(safe), len(safe)),
    }


def keyword_accuracy(path: str | Path) -> dict:
    """`markers.KEYWORD_JUDGE_ACCURACY` as measured now on the labels at PATH."""
    from .judges import KeywordJudge
    from .markers import LABELS_FILE

    return {"file": LABELS_FILE, **measure(KeywordJudge(), read_labels(path))}


if __name__ == "__main__":
    from .markers import LABELS_FILE

    acc = keyword_accuracy(sys.argv[1] if len(sys.argv) > 1 else LABELS_FILE)
    print("KEYWORD_JUDGE_ACCURACY = " + json.dumps(acc, indent=4))
