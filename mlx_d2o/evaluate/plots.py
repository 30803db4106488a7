"""PNG plots for `mlx-d2o eval`: training curves of each adapter and a per-model comparison.

matplotlib is an optional extra (`pip install 'mlx-d2o[plots]'`); without it `available()` is
False and the report says the plots were skipped. The Agg backend is used, so no display is
needed and nothing opens a window. The curves come from each adapter's `metrics.jsonl`, read
through `adapters.read_metrics` (the one reader of that file).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..adapters import read_metrics
from ..io import atomic_path

# Training metrics the curves show, in TRL's names as the trainer writes them.
CURVES = ("loss", "rewards/margin", "rewards/samples", "rewards/negative")


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save through a temp file and a rename, so a failed save leaves no partial PNG."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def _curve_panel(ax, key: str, data: dict) -> None:
    """One metric KEY, one line per adapter in DATA (name -> (train rows, val rows))."""
    for i, (name, (train, val)) in enumerate(data.items()):
        color = f"C{i % 10}"
        xs, ys = _series(train, key)
        if xs:
            ax.plot(xs, ys, color=color, label=name, marker="." if len(xs) < 30 else None)
        if key == "loss":
            vx, vy = _series(val, "val_loss")
            if vx:
                style = dict(linestyle="--", marker="o", markersize=3)
                ax.plot(vx, vy, color=color, label=f"{name} (val)", **style)
    ax.set_title(key)
    spans = [max(abs(y) for y in line.get_ydata()) for line in ax.lines if len(line.get_ydata())]
    if spans and max(spans) > 10 * max(min(spans), 1e-3):
        # NPO's loss sits near 10, D2O's near 0.7 and GA's below 0: one linear axis flattens
        # all but one.
        ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def training_curves(metrics_files: dict, path: str | Path) -> Optional[Path]:
    """One panel per metric in CURVES, one line per adapter (validation loss dashed).

    METRICS_FILES maps an adapter's name to its `metrics.jsonl`. Returns None when no file holds
    any of the metrics.
    """
    data = {name: read_metrics(p) for name, p in metrics_files.items()}
    if not any(_series(tr, k)[0] for tr, _ in data.values() for k in CURVES):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, key in zip(axes.flat, CURVES):
        _curve_panel(ax, key, data)
    fig.suptitle("training curves")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


# (title, section, key, scale) of the comparison's panels
BARS = (
    ("unsafe rate, harmful prompts (%)", "harmful", "unsafe_rate", 100),
    ("refusal rate, harmful prompts (%)", "harmful", "refusal_rate", 100),
    ("log-ratio of held-out negatives", "negatives", "logratio", 1),
    ("KL(policy || base) per token, benign", "benign", "kl_per_token", 1),
    ("distinct-2, benign", "benign", "distinct_2", 1),
    ("refusal rate, benign prompts (%)", "benign", "refusal_rate", 100),
    ("win rate vs base, benign (%)", "benign", "win_rate", 100),
)


def comparison(rows: Sequence[dict], path: str | Path) -> Path:
    """Bars per model: harmfulness (unsafe, refusals, negatives' log-ratio) and helpfulness."""
    panels = [
        b for b in BARS if any(isinstance(r.get(b[1], {}).get(b[2]), (int, float)) for r in rows)
    ]
    plt = _pyplot()
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False)
    names = [r["name"] for r in rows]
    for ax, (title, sec, key, scale) in zip(axes.flat, panels):
        vals = [r.get(sec, {}).get(key) for r in rows]
        heights = [v * scale if isinstance(v, (int, float)) else 0.0 for v in vals]
        ax.bar(range(len(names)), heights, color=[f"C{i % 10}" for i in range(len(names))])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("harmfulness and helpfulness per model")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
