"""The sweep's training curves (recipes/compare.py --sweep): loss and rewards per step of each
run, and how steady they were.

The paper (Duan et al., 2024) claims D2O trains more steadily than NPO or gradient ascent. The
measure here is the step-to-step standard deviation of a curve: sd of x_t - x_(t-1) over the
logged steps (each step's batch differs, so it mixes batch noise and instability; the runs share
the batches, so it compares them). `rewards/margin` is β-scaled for D2O and DPO, and is the
negative's reward for NPO and GA: compare a loss's sd with its own curve's span, not across
differently scaled losses.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Optional

from mlx_d2o.adapters import read_metrics

CURVES = ("loss", "rewards/margin", "rewards/samples", "rewards/negative")


def _series(rows: list, key: str) -> tuple[list, list]:
    pts = [
        (r["step"], r[key])
        for r in rows
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    return [s for s, _ in pts], [v for _, v in pts]


def steadiness(values: list) -> Optional[float]:
    """sd of the step-to-step differences of VALUES (None under three values)."""
    if len(values) < 3:
        return None
    return statistics.stdev([b - a for a, b in zip(values, values[1:])])


def summary(run_dirs: dict) -> dict:
    """{run: {metric: {"steps", "values", "first", "last", "step_sd"}}} from each run's
    metrics.jsonl (runs without one are left out)."""
    out = {}
    for name, d in run_dirs.items():
        if not (Path(d) / "metrics.jsonl").exists():
            continue
        train, _ = read_metrics(d)
        out[name] = {}
        for key in CURVES:
            steps, values = _series(train, key)
            if values:
                out[name][key] = {
                    "steps": steps, "values": values, "first": values[0], "last": values[-1],
                    "step_sd": steadiness(values),
                }  # fmt: skip
    return out


def table(train: dict) -> str:
    """One line per run: each curve's first -> last value and its step-to-step sd."""
    keys = [k for k in CURVES if any(k in m for m in train.values())]
    head = ["run", *(f"{k}: first → last (step-to-step sd)" for k in keys)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(keys)]
    for name, m in train.items():
        cells = []
        for k in keys:
            c = m.get(k)
            sd = "—" if not c or c["step_sd"] is None else f"{c['step_sd']:.3f}"
            cells.append("—" if not c else f"{c['first']:.3f} → {c['last']:.3f} ({sd})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(train: dict, path: Path) -> Optional[Path]:
    """One panel per curve, a line per run (symlog where the losses' scales differ)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in CURVES if any(k in m for m in train.values())]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, m) in enumerate(train.items()):
            if key in m:
                sd = m[key]["step_sd"]
                label = name if sd is None else f"{name} (sd Δ {sd:.2g})"
                ax.plot(m[key]["steps"], m[key]["values"], color=f"C{i % 10}", lw=1, label=label)
        spans = [max(map(abs, m[key]["values"])) for m in train.values() if key in m]
        if spans and max(spans) > 10 * max(min(spans), 1e-3):
            ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("training curves per run (sd Δ: step-to-step standard deviation)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
