"""The sweep's analysis (recipes/compare.py --sweep): curves of harm against drift, the losses
read at equal drift, the plot and the tables. Pure functions of `mlx-d2o eval`'s report.json.

Drift is KL(π || π_ref) per token on benign prompts (the policy's own greedy answers), with its
bootstrap interval over prompts; each harm measure keeps the n and the 95 % interval eval gave it.
"Equal drift" is a KL that every loss's curve covers (`drift_levels`): each loss is read there at
its checkpoint nearest to it (measured, with its interval) and by linear interpolation along its
curve from the base (no interval: a reading aid, not a measurement).
"""

from __future__ import annotations

import json
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


def drift_levels(c: dict) -> list:
    """The drifts at which every loss is read: the largest KL/token that every loss reached
    ("late": min over losses of their largest), and, when lower, the KL by which every loss had
    reached its first kept checkpoint ("early": max over losses of their smallest)."""
    kls = [[p["kl"] or 0.0 for p in pts] for pts in c["losses"].values() if pts]
    if not kls:
        return []
    early, late = max(min(k) for k in kls), min(max(k) for k in kls)
    return [x for x in ([early, late] if early < late else [late]) if x > 0]


def interpolate(points: list, key: str, level: float) -> Optional[float]:
    """KEY's value at KL = LEVEL along POINTS (base first, then by step): linear on the first
    segment that reaches LEVEL; None where an end of that segment has no value."""
    for a, b in zip(points, points[1:]):
        ka, kb = a["kl"] or 0.0, b["kl"] or 0.0
        if min(ka, kb) <= level <= max(ka, kb):
            va, vb = a["measures"][key]["value"], b["measures"][key]["value"]
            if va is None or vb is None:
                return vb if kb == level else (va if ka == level else None)
            t = 0.0 if kb == ka else (level - ka) / (kb - ka)
            return va + t * (vb - va)
    return None


def read_at(c: dict, measures, level: float) -> dict:
    """Each loss at KL/token = LEVEL (> 0): its nearest checkpoint (by ratio), and interpolated
    values."""
    out = {"kl": level, "losses": {}}
    for loss, pts in c["losses"].items():
        # nearest on a log scale: the checkpoints' drifts span decades
        near = min(pts, key=lambda p: abs(math.log(max(p["kl"] or 0.0, 1e-12) / level)))
        line = [c["base"], *pts]
        out["losses"][loss] = {
            "nearest": near,
            "interpolated": {_mkey(m): interpolate(line, _mkey(m), level) for m in measures},
        }
    return out


def equal_drift(c: dict, measures) -> dict:
    """{"levels": [read_at(level) for each of `drift_levels`]}."""
    return {"levels": [read_at(c, measures, k) for k in drift_levels(c)]}


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
    head = ["loss", "nearest step", "its KL/token [95 % CI]"]
    for m in measures:
        head += [f"{m.label}, nearest", "interpolated"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * (2 * len(measures))]
    for loss, r in e["losses"].items():
        p = r["nearest"]
        cells = [f"| {loss} | {p['step']} | {kl_cell(p)} |"]
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


def _panel(ax, c: dict, m, style: dict) -> None:
    key, scale = _mkey(m), 100.0 if m.pct else 1.0
    for loss, pts in c["losses"].items():
        line = [p for p in [c["base"], *pts] if p["measures"][key]["value"] is not None]
        xs = [p["kl"] or 0.0 for p in line]
        ys = [p["measures"][key]["value"] * scale for p in line]
        color, marker = style[loss]
        ax.plot(xs, ys, "-", color=color, alpha=0.7, lw=1)
        for p, x, y in zip(line, xs, ys):
            mp, base = p["measures"][key], not p["step"]
            ax.errorbar(
                x, y, xerr=_err(p["kl"], p["kl_ci"]), yerr=_err(mp["value"], mp["ci"], scale),
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
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# sweep.md / sweep.json
# ---------------------------------------------------------------------------------------------


def _timing_lines(info: dict) -> list:
    steps = info["steps"]
    wall = sum(t["seconds"] for t in steps)
    cpu = sum(t["cpu_seconds"] for t in steps)
    reused = sum(bool(t.get("reused")) for t in steps)
    again = (
        f" ({reused} of the {len(steps)} steps were made by an earlier invocation of the same "
        f"commands and reused by this one, which took {info['wall_seconds'] / 60:.1f} min; their "
        "times are those of the run that made them)"
        if reused
        else ""
    )
    lines = [
        f"Wall time: {wall / 60:.1f} min, the steps' times summed ({cpu / 60:.1f} min of CPU "
        f"time in the `mlx-d2o` processes){again}. The machine was shared with other jobs: "
        f"each step's load average at its start is below. Machine: {info['machine']}.",
        "",
        "Commands (each step through the `mlx-d2o` CLI; wall / CPU seconds, load average at "
        "its start):",
        "",
        "```",
        info["command"],
    ]
    for t in steps:
        load = f", load {t['load_at_start']}" if t.get("load_at_start") else ""
        lines.append(
            f"{t['command']}    # {t['seconds']:.0f} s / {t['cpu_seconds']:.0f} s CPU{load}"
        )
    return lines + ["```"]


def markdown(task, c: dict, e: dict, info: dict, png: Optional[Path]) -> str:
    s = info["settings"]
    lines = [
        f"# Losses at equal drift: task `{task.name}` (recipes/compare.py --sweep)",
        "",
        f"Each loss trained once ({s['iters']} steps of {s['batch_size']} prompts, "
        f"{s['limit']} training prompts, K={s['num_samples']} samples of at most "
        f"{s['sample_max_tokens']} tokens, lr {s['learning_rate']:g}, LoRA on "
        f"{s['num_layers']} layers, α={s['alpha']:g} β={s['beta']:g}, seed {s['seed']}); "
        f"checkpoints of steps {', '.join(map(str, s['save_steps']))} evaluated on "
        f"held-out data with greedy answers of at most {s['eval_max_tokens']} tokens. "
        f"Model: `{s['model']}`.",
        "",
        info.get("data", ""),
        "",
    ]
    if png is not None:
        lines += [f"![harm against drift]({png.name})", ""]
    for i, r in enumerate(e["levels"]):
        which = "the largest every loss reached" if i == len(e["levels"]) - 1 else (
            "every loss past its first kept checkpoint")  # fmt: skip
        lines += [f"## At equal drift: KL/token = {fmt(r['kl'], spec='.4f')} ({which})", ""]
        lines += [drift_table(r, task.measures), ""]
    lines += [
        "## Every point",
        "",
        points_table(c, task.measures),
        "",
        "95 % intervals: Wilson for rates, percentile bootstrap over prompts for means and "
        "the KL (report.json). The interpolated values have no interval.",
        "",
        *_timing_lines(info),
    ]
    return "\n".join(lines) + "\n"


def write(results: Path, task, c: dict, rep: dict, info: dict) -> dict:
    """RESULTS/sweep.png, sweep.md, sweep.json; returns sweep.json's content plus the markdown."""
    e = equal_drift(c, task.measures)
    title = (
        f"{task.name}: held-out harm against drift, per loss "
        f"(mlx-d2o, {info['settings']['model']}; 95 % intervals)"
    )
    png = plot(c, e, task.measures, title, results / "sweep.png")
    md = markdown(task, c, e, info, png)
    data = {**info, "curves": c, "equal_drift": e, "report_settings": rep.get("settings")}
    results.mkdir(parents=True, exist_ok=True)
    (results / "sweep.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (results / "sweep.md").write_text(md, encoding="utf-8")
    print(
        f"written: {results / 'sweep.md'}, {results / 'sweep.json'}" + (f", {png}" if png else "")
    )
    return {**data, "markdown": md}
