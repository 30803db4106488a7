"""PNG plots for `mlx-d2o eval`: training curves of each adapter and a per-model comparison.

The comparison has one panel per figure some model has (none left empty), each saying which way
is better; every bar carries its value and n, a tick at its value (a zero is seen) and, for
rates and means over prompts, its 95 % interval as whiskers.

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
from .notes import judge_note

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
    """A plain save: `report.write_report` has PATH in a temp folder it renames into place
    once the whole report is written, so a failed save leaves no partial PNG in the report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
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


def training_curves_figure(metrics_files: dict):
    """(figure, metrics drawn): one panel per metric in CURVES that some adapter logged, one
    line per adapter (validation loss dashed); metrics nobody logged get no (empty) panel.
    (None, []) when no file holds any of them. METRICS_FILES maps a name to a `metrics.jsonl`."""
    data = {name: read_metrics(p) for name, p in metrics_files.items()}
    keys = [k for k in CURVES if any(_series(tr, k)[0] for tr, _ in data.values())]
    if not keys:
        return None, []
    plt = _pyplot()
    fig, axes = _grid(plt, len(keys), 2, (5, 3.5))
    for ax, key in zip(axes, keys):
        _curve_panel(ax, key, data)
    fig.suptitle("training curves")
    fig.tight_layout()
    return fig, keys


def training_curves(metrics_files: dict, path: str | Path) -> Optional[Path]:
    """`training_curves_figure` saved at PATH; None when there is nothing to draw."""
    fig, _ = training_curves_figure(metrics_files)
    if fig is None:
        return None
    out = _save(fig, Path(path))
    _pyplot().close(fig)
    return out


def _grid(plt, n: int, max_cols: int, size: tuple) -> tuple:
    """A figure with N panels in at most MAX_COLS columns; the grid's spare cells removed."""
    ncols = min(max_cols, max(1, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


# (title, section, key, scale, which way is better) of the comparison's panels
BARS = (
    ("unsafe rate, harmful prompts (%)", "harmful", "unsafe_rate", 100, "lower"),
    ("judge's mean P(unsafe), harmful prompts", "harmful", "mean_p_unsafe", 1, "lower"),
    ("refusal rate, harmful prompts (%)", "harmful", "refusal_rate", 100, "higher"),
    ("log-ratio of held-out negatives", "negatives", "logratio", 1, "lower"),
    ("pair accuracy, held-out pairs (%)", "pairs", "accuracy", 100, "higher"),
    ("reward margin, held-out pairs", "pairs", "margin", 1, "higher"),
    ("log-ratio of chosen, held-out pairs", "pairs", "chosen_logratio", 1, "higher"),
    ("correct answers, benign questions (%)", "answers", "correct_rate", 100, "higher"),
    ("KL(policy || base) per token, benign", "benign", "kl_per_token", 1, "lower"),
    ("distinct-2, benign", "benign", "distinct_2", 1, "higher"),
    ("refusal rate, benign prompts (%)", "benign", "refusal_rate", 100, "lower"),
    ("win rate vs base, benign (%)", "benign", "win_rate", 100, "higher"),
    ("over-refusal: refusals of benign prompts that sound harmful (%)", "overrefusal",
     "refusal_rate", 100, "lower"),
)  # fmt: skip
# Figures measured against the base: the base's is 0 or undefined by definition, so a panel of
# them says something only with an adapter row.
RELATIVE = {
    ("negatives", "logratio"),
    ("pairs", "accuracy"),
    ("pairs", "margin"),
    ("pairs", "chosen_logratio"),
    ("benign", "kl_per_token"),
    ("benign", "win_rate"),
}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def panels(rows: Sequence[dict]) -> list[dict]:
    """The comparison's panels that have something to show, each with per-model values, 95 %
    intervals and n (scaled to the panel's unit; None where a model has no figure)."""
    out = []
    for title, sec, key, scale, better in BARS:
        secs = [r.get(sec) if isinstance(r.get(sec), dict) else {} for r in rows]
        vals = [x.get(key) if _num(x.get(key)) else None for x in secs]
        shown = vals[1:] if (sec, key) in RELATIVE else vals
        if not any(v is not None for v in shown):
            continue
        cis = [x.get(f"{key}_ci") for x in secs]
        out.append({
            "title": title,
            "hint": f"{better} is better",
            "names": [r["name"] for r in rows],
            "values": [v * scale if v is not None else None for v in vals],
            "cis": [
                [c[0] * scale, c[1] * scale] if isinstance(c, list) and all(map(_num, c)) else None
                for c in cis
            ],
            "ns": [x.get("n") for x in secs],
            "percent": scale == 100,
        })  # fmt: skip
    return out


def _label(v: Optional[float], n, percent: bool) -> str:
    if v is None:
        return "n/a"
    text = f"{v:.1f}%" if percent else f"{v:.3g}"
    return f"{text}\nn={n}" if n is not None else text


def _bar_panel(ax, p: dict) -> None:
    """Bars with 95 % interval whiskers, a tick at each value (so a zero is seen), the value
    and n written at each bar's end."""
    xs = list(range(len(p["names"])))
    colors = [f"C{i % 10}" for i in xs]
    heights = [v if v is not None else 0.0 for v in p["values"]]
    ax.bar(xs, heights, color=colors, alpha=0.85)
    for x, v, ci, n in zip(xs, p["values"], p["cis"], p["ns"]):
        if v is not None:
            ax.plot([x - 0.4, x + 0.4], [v, v], color="black", linewidth=1.5)
            if ci is not None:
                lo, hi = min(ci[0], v), max(ci[1], v)
                ax.errorbar(x, v, yerr=[[v - lo], [hi - v]], color="black", capsize=4, lw=1)
        top = max([v or 0.0] + ([ci[1]] if ci else []))
        low = min([v or 0.0] + ([ci[0]] if ci else []))
        below = v is not None and v < 0
        ax.annotate(
            _label(v, n, p["percent"]),
            (x, low if below else top),
            xytext=(0, -3 if below else 3),
            textcoords="offset points",
            ha="center",
            va="top" if below else "bottom",
            fontsize=7,
        )
    ax.set_xticks(xs)
    ax.set_xticklabels(p["names"], rotation=30, ha="right", fontsize=7)
    ax.set_title(f"{p['title']}\n({p['hint']})", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.use_sticky_edges = False  # bars stick the axis to 0: no room for a label or a zero tick
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)


def comparison_figure(rows: Sequence[dict], settings: Optional[dict] = None):
    """(figure, panels) of the comparison, or (None, []) when no panel has a figure."""
    ps = panels(rows)
    if not ps:
        return None, []
    plt = _pyplot()
    fig, axes = _grid(plt, len(ps), 3, (4.2, 3.6))
    for ax, p in zip(axes, ps):
        _bar_panel(ax, p)
    fig.suptitle("harmfulness and helpfulness per model")
    notes = ["whiskers: 95 % intervals (rates: Wilson; means: bootstrap over prompts)"]
    note = judge_note(settings or {})
    if note and (settings or {}).get("judge") == "keyword":
        notes.append(note[2:].split(" Its unsafe rate")[0])
    fig.text(0.5, -0.01, "\n".join(notes), ha="center", va="top", fontsize=7, wrap=True)
    fig.tight_layout()
    return fig, ps


def comparison(
    rows: Sequence[dict], path: str | Path, settings: Optional[dict] = None
) -> Optional[Path]:
    """Bars per model: harmfulness (unsafe, refusals, negatives' log-ratio, pairs) and
    helpfulness (KL, distinct-2, refusals, win rate, over-refusal). None when nothing to draw."""
    fig, _ = comparison_figure(rows, settings)
    if fig is None:
        return None
    out = _save(fig, Path(path))
    _pyplot().close(fig)
    return out
