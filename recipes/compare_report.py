"""The sweep's analysis (recipes/compare.py --sweep): curves of harm against drift, the losses
read at equal drift, the plot and the tables. Pure functions of `mlx-d2o eval`'s report.json.

Drift is KL(π || π_ref) per token on benign prompts (the policy's own greedy answers), with its
bootstrap interval over prompts; each harm measure keeps the n and the 95 % interval eval gave it.
"Equal drift" is a KL that every loss's curve covers (`drift_levels`): each loss is read there at
its checkpoint nearest to it (measured, with its interval) and by linear interpolation along its
curve from the base (no interval: a reading aid, not a measurement).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional


def _measure_point(row: dict, m) -> dict:
    sec = row.get(m.section) or {}
    value, n = sec.get(m.key), sec.get("n")
    point = {"value": value, "ci": sec.get(f"{m.key}_ci"), "n": n}
    if m.pct and value is not None and n:
        point["k"] = round(value * n)
    return point


def _point(row: dict, step: int, measures) -> dict:
    b = row.get("benign") or {}
    return {
        "step": step,
        "name": row.get("name"),
        "kl": b.get("kl_per_token"),
        "kl_ci": b.get("kl_per_token_ci"),
        "kl_n": b.get("n"),
        "kl_tokens": b.get("tokens"),
        "measures": {_mkey(m): _measure_point(row, m) for m in measures},
    }


def _mkey(m) -> str:
    return f"{m.section}.{m.key}"


def curves(rep: dict, where: dict, measures) -> dict:
    """{"base": point, "losses": {loss: [points by step]}} from report.json's rows; WHERE maps
    an adapter path to (loss, step)."""
    rows = rep["rows"]
    out = {"base": _point(rows[0], 0, measures), "losses": {}}
    for row in rows[1:]:
        loss, step = where[row["adapter_path"]]
        out["losses"].setdefault(loss, []).append(_point(row, step, measures))
    for pts in out["losses"].values():
        pts.sort(key=lambda p: p["step"])
    return out


def x_of(c: dict, p: dict, axis: str) -> float:
    """A point's place on AXIS: "kl" (its drift), or a measure key, as how far the point is
    below the base on it (the correct-answer rate lost: base - value, floored at 0)."""
    if axis == "kl":
        return p["kl"] or 0.0
    base, v = c["base"]["measures"][axis]["value"], p["measures"][axis]["value"]
    return 0.0 if base is None or v is None else max(0.0, base - v)


def drift_levels(c: dict, axis: str = "kl") -> list:
    """The drifts at which every loss is read: the largest KL/token that every loss reached
    ("late": min over losses of their largest), and, when lower, the KL by which every loss had
    reached its first kept checkpoint ("early": max over losses of their smallest). On another
    AXIS (`x_of`) the same with its values."""
    kls = [[x_of(c, p, axis) for p in pts] for pts in c["losses"].values() if pts]
    if not kls:
        return []
    early, late = max(min(k) for k in kls), min(max(k) for k in kls)
    return [x for x in ([early, late] if early < late else [late]) if x > 0]


def interpolate(points: list, key: str, level: float, x=None) -> Optional[float]:
    """KEY's value at KL = LEVEL along POINTS (base first, then by step): linear on the first
    segment that reaches LEVEL; None where an end of that segment has no value. X maps a point
    to its place on the axis (default: its KL)."""
    x = x or (lambda p: p["kl"] or 0.0)
    for a, b in zip(points, points[1:]):
        ka, kb = x(a), x(b)
        if min(ka, kb) <= level <= max(ka, kb):
            va, vb = a["measures"][key]["value"], b["measures"][key]["value"]
            if va is None or vb is None:
                return vb if kb == level else (va if ka == level else None)
            t = 0.0 if kb == ka else (level - ka) / (kb - ka)
            return va + t * (vb - va)
    return None


def read_at(c: dict, measures, level: float, axis: str = "kl") -> dict:
    """Each loss at LEVEL (> 0) on AXIS: its nearest checkpoint (by ratio), and interpolated
    values (the KL too, on another axis)."""
    out = {"kl": level, "axis": axis, "losses": {}}
    x = lambda p: x_of(c, p, axis)  # noqa: E731
    for loss, pts in c["losses"].items():
        # nearest on a log scale: the checkpoints' drifts span decades
        near = min(pts, key=lambda p: abs(math.log(max(x(p), 1e-12) / level)))
        line = [c["base"], *pts]
        vals = {_mkey(m): interpolate(line, _mkey(m), level, x) for m in measures}
        if axis != "kl":
            vals["kl"] = _interp_kl(line, level, x)
        out["losses"][loss] = {"nearest": near, "interpolated": vals}
    return out


def _interp_kl(line: list, level: float, x) -> Optional[float]:
    for a, b in zip(line, line[1:]):
        if min(x(a), x(b)) <= level <= max(x(a), x(b)):
            t = 0.0 if x(b) == x(a) else (level - x(a)) / (x(b) - x(a))
            return (a["kl"] or 0.0) + t * ((b["kl"] or 0.0) - (a["kl"] or 0.0))
    return None


def equal_drift(c: dict, measures, axis: str = "kl") -> dict:
    """{"levels": [read_at(level) for each of `drift_levels`]} on AXIS."""
    return {"levels": [read_at(c, measures, k, axis) for k in drift_levels(c, axis)]}


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def fmt(v, pct=False, spec=".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else format(v, spec)


def fmt_ci(ci, pct=False, spec=".3f") -> str:
    if not ci:
        return ""
    return f" [{fmt(ci[0], pct, spec)}, {fmt(ci[1], pct, spec)}]"


def cell(mp: dict, pct: bool) -> str:
    """'12.5% [4.3%, 31.0%] (3/24)' or '-1.234 [-1.9, -0.6] (n 32)'."""
    if mp["n"] is None:  # not measured in this run
        return "—"
    count = f"({mp['k']}/{mp['n']})" if "k" in mp else f"(n {mp['n']})"
    return f"{fmt(mp['value'], pct)}{fmt_ci(mp['ci'], pct)} {count}"


def kl_cell(p: dict) -> str:
    return f"{fmt(p['kl'], spec='.4f')}{fmt_ci(p['kl_ci'], spec='.4f')}"


def points_table(c: dict, measures) -> str:
    head = [
        "loss",
        "step",
        "KL/token [95 % CI]",
        *(f"{m.label} ({m.better} is better)" for m in measures),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (1 + len(measures))]
    rows = [("base", c["base"])] + [(loss, p) for loss, pts in c["losses"].items() for p in pts]
    for loss, p in rows:
        cells = [cell(p["measures"][_mkey(m)], m.pct) for m in measures]
        lines.append(f"| {loss} | {p['step']} | {kl_cell(p)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drift_table(e: dict, measures) -> str:
    other = e.get("axis", "kl") != "kl"  # read at equal correct-answer rate: the KL it cost
    head = ["loss", "nearest step", "its KL/token [95 % CI]", *(["KL interpolated"] * other)]
    for m in measures:
        head += [f"{m.label}, nearest", "interpolated"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|---:|---:|" + "---:|" * (2 * len(measures) + other),
    ]
    for loss, r in e["losses"].items():
        p = r["nearest"]
        kl = f" {fmt(r['interpolated'].get('kl'), spec='.4f')} |" if other else ""
        cells = [f"| {loss} | {p['step']} | {kl_cell(p)} |{kl}"]
        for m in measures:
            cells.append(f" {cell(p['measures'][_mkey(m)], m.pct)} |")
            cells.append(f" {fmt(r['interpolated'][_mkey(m)], m.pct)} |")
        lines.append("".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------


def _err(value, ci, scale=1.0):
    if value is None or not ci:
        return [[0.0], [0.0]]
    return [[max(0.0, (value - ci[0]) * scale)], [max(0.0, (ci[1] - value) * scale)]]


MARKERS = "osD^vP"


def _xy(p: dict, key: str, scale: float, xkey: Optional[str]) -> tuple:
    """(x, y, x error, y error) of a point: x its KL, or its XKEY measure in percent."""
    mp = p["measures"][key]
    y, yerr = mp["value"] * scale, _err(mp["value"], mp["ci"], scale)
    if xkey is None:
        return p["kl"] or 0.0, y, _err(p["kl"], p["kl_ci"]), yerr
    xp = p["measures"][xkey]
    return xp["value"] * 100, y, _err(xp["value"], xp["ci"], 100.0), yerr


def _panel(ax, c: dict, m, style: dict, xkey: Optional[str] = None) -> None:
    key, scale = _mkey(m), 100.0 if m.pct else 1.0
    for loss, pts in c["losses"].items():
        line = [
            p
            for p in [c["base"], *pts]
            if p["measures"][key]["value"] is not None
            and (xkey is None or p["measures"][xkey]["value"] is not None)
        ]
        xy = [_xy(p, key, scale, xkey) for p in line]
        color, marker = style[loss]
        ax.plot([q[0] for q in xy], [q[1] for q in xy], "-", color=color, alpha=0.7, lw=1)
        for p, (x, y, xerr, yerr) in zip(line, xy):
            base = not p["step"]
            ax.errorbar(
                x, y, xerr=xerr, yerr=yerr,
                fmt="*" if base else marker, color="black" if base else color,
                ms=10 if base else 5, mfc="none" if not base else None, capsize=2, lw=0.7,
                label=None if base or p is not line[-1] else loss,
            )  # fmt: skip
            if not base:
                ax.annotate(str(p["step"]), (x, y), fontsize=6, xytext=(3, 3),
                            textcoords="offset points", color=color)  # fmt: skip
    n = c["base"]["measures"][key]["n"]
    ax.set_title(f"{m.label}{' (%)' if m.pct else ''}\nn={n} held out; {m.better} is better",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)


def tradeoff_plot(c: dict, xm, measures, title: str, path: Path) -> Optional[Path]:
    """Each measure against the correct-answer rate XM (a Measure), a line per loss from the
    base: harm bought with helpfulness, both with 95 % intervals."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = _mkey(xm)
    ms = [m for m in measures if m is not xm and c["base"]["measures"][_mkey(m)]["n"]]
    if not c["base"]["measures"][xkey]["n"] or not ms:
        return None
    style = {loss: (f"C{i}", MARKERS[i % len(MARKERS)]) for i, loss in enumerate(c["losses"])}
    fig, axes = plt.subplots(1, len(ms), figsize=(5.5 * len(ms), 4), squeeze=False)
    for ax, m in zip(axes[0], ms):
        _panel(ax, c, m, style, xkey)
        ax.set_xlabel(f"{xm.label} (%), n={c['base']['measures'][xkey]['n']}; higher is better")
    return _save(fig, axes, title, path)


def _save(fig, axes, title: str, path: Path) -> Path:
    """The legend, the title, and FIG written to PATH (PNG), closed."""
    import matplotlib.pyplot as plt

    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot(c: dict, e: dict, measures, title: str, path: Path) -> Optional[Path]:
    """One panel per measure: value against KL/token (symlog: the checkpoints span decades),
    a line per loss from the base (black star), open markers labelled by step, 95 % intervals as
    error bars both ways, equal-drift levels dotted."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {loss: (f"C{i}", MARKERS[i % len(MARKERS)]) for i, loss in enumerate(c["losses"])}
    measures = [m for m in measures if c["base"]["measures"][_mkey(m)]["n"]]  # no empty panel
    if not measures:
        return None
    cols = min(2, len(measures))
    rows = math.ceil(len(measures) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    kls = [p["kl"] for pts in c["losses"].values() for p in pts if p["kl"]]
    for ax, m in zip(axes.flat, measures):
        _panel(ax, c, m, style)
        for r in e["levels"]:
            ax.axvline(r["kl"], color="grey", ls=":", lw=1)
        if kls:
            ax.set_xscale("symlog", linthresh=min(kls) / 2)
            ax.set_xlim(left=-min(kls) / 4)  # no negative decades: a KL is >= 0
        ax.set_xlabel(f"drift: KL(π‖π_ref)/token on {c['base']['kl_n']} benign prompts")
    for ax in list(axes.flat)[len(measures) :]:
        fig.delaxes(ax)
    return _save(fig, axes, title, path)
