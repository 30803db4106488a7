"""The sweep's results folder (recipes/compare.py --sweep): RESULTS/sweep.md, sweep.json and the
plots, from the curves of `compare_report` and the training curves of `compare_training`.

    RESULTS/sweep.png       each held-out measure against the drift (KL/token), per run
    RESULTS/tradeoff.png    the harm measures against the correct-answer rate (task secret)
    RESULTS/training.png    loss and rewards per step, with their step-to-step sd
    RESULTS/sweep.md        settings, readings at equal drift and at equal correct-answer rate,
                            the effect of K, the training table, every point, the commands with
                            wall / CPU time, estimate and load
    RESULTS/sweep.json      all of it as data
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import compare_report as report
import compare_training as training

ANSWERS = "answers.correct_rate"


def _timing_lines(info: dict) -> list:
    steps = info["steps"]
    wall = sum(t["seconds"] for t in steps)
    cpu = sum(t["cpu_seconds"] for t in steps)
    est = sum(t.get("estimate_seconds") or 0 for t in steps)
    reused = sum(bool(t.get("reused")) for t in steps)
    again = (
        f" ({reused} of the {len(steps)} steps were made by an earlier invocation of the same "
        f"commands and reused by this one, which took {info['wall_seconds'] / 60:.1f} min; their "
        "times are those of the run that made them)"
        if reused
        else ""
    )
    estimated = f"; estimated beforehand for an idle machine: {est / 60:.1f} min" if est else ""
    lines = [
        f"Wall time: {wall / 60:.1f} min, the steps' times summed ({cpu / 60:.1f} min of CPU "
        f"time in the `mlx-d2o` processes{estimated}){again}. The machine was shared with "
        f"other jobs: each step's load average at its start is below. Machine: "
        f"{info['machine']}.",
        "",
        "Commands (each step through the `mlx-d2o` CLI; wall / CPU seconds, estimate, load "
        "average at its start):",
        "",
        "```",
        info["command"],
    ]
    for t in steps:
        load = f", load {t['load_at_start']}" if t.get("load_at_start") else ""
        e = f", est. {t['estimate_seconds']:.0f} s" if t.get("estimate_seconds") else ""
        lines.append(
            f"{t['command']}    # {t['seconds']:.0f} s / {t['cpu_seconds']:.0f} s CPU{e}{load}"
        )
    return lines + ["```"]


def _settings_line(info: dict) -> str:
    s = info["settings"]
    extra = []
    if s.get("online_refresh_every"):
        extra.append(
            f"online D2O (`d2o-online`) samples again every {s['online_refresh_every']} steps"
        )
    if s.get("k_ablation"):
        ks = ", ".join(f"`d2o-k{k}`" for k in s["k_ablation"])
        extra.append(
            f"{ks}: D2O on the first k of each prompt's {s['num_samples']} samples, last step only"
        )
    cut = s.get("cut") or {}
    if cut.get("samples"):
        extra.append(
            f"{cut['cut']} of {cut['samples']} samples ({cut['cut'] / cut['samples']:.1%}) "
            f"cut at {cut['max_tokens']} tokens"
        )
    return (
        f"Each run trained once ({s['iters']} steps of {s['batch_size']} prompts, "
        f"{s['limit']} training prompts, K={s['num_samples']} samples of at most "
        f"{s['sample_max_tokens']} tokens, lr {s['learning_rate']:g}, LoRA on "
        f"{s['num_layers']} layers, α={s['alpha']:g} β={s['beta']:g}, seed {s['seed']}); "
        f"checkpoints of steps {', '.join(map(str, s['save_steps']))} evaluated on "
        f"held-out data with greedy answers of at most {s['eval_max_tokens']} tokens. "
        f"Model: `{s['model']}`." + "".join(f" {x[0].upper()}{x[1:]}." for x in extra)
    )


def k_table(c: dict, measures, info: dict) -> Optional[str]:
    """D2O at each K, at its last step (same prompts, steps, lr, seed)."""
    s = info["settings"]
    names = [f"d2o-k{k}" for k in s.get("k_ablation") or () if k != s["num_samples"]] + ["d2o"]
    have = [n for n in names if c["losses"].get(n)]
    if len(have) < 2:
        return None
    head = ["run", "K", "step", "KL/token [95 % CI]", *(m.label for m in measures)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * (1 + len(measures))]
    for n in have:
        p = c["losses"][n][-1]
        k = info["runs"][n]["k"]
        cells = [report.cell(p["measures"][f"{m.section}.{m.key}"], m.pct) for m in measures]
        lines.append(f"| {n} | {k} | {p['step']} | {report.kl_cell(p)} | " + " | ".join(cells))
    return "\n".join(lines)


def _level_sections(task, e: dict, title: str, what) -> list:
    lines = []
    for i, r in enumerate(e["levels"]):
        which = "the largest every run reached" if i == len(e["levels"]) - 1 else (
            "every run past its first kept checkpoint")  # fmt: skip
        lines += [
            f"## {title} {what(r['kl'])} ({which})",
            "",
            report.drift_table(r, task.measures),
            "",
        ]
    return lines


def markdown(task, c: dict, e: dict, ea: dict, info: dict, pngs: dict) -> str:
    base = c["base"]["measures"].get(ANSWERS, {}).get("value")
    lines = [
        f"# Losses at equal drift: task `{task.name}` (recipes/compare.py --sweep"
        + (f" --preset {info['preset']}" if info.get("preset") not in (None, "default") else "")
        + ")",
        "",
        _settings_line(info),
        "",
        info.get("data", ""),
        "",
    ]
    lines += [f"![{k}]({p.name})" for k, p in pngs.items() if p is not None] + [""]
    lines += _level_sections(
        task, e, "At equal drift:", lambda x: f"KL/token = {report.fmt(x, spec='.4f')}"
    )
    if base is not None:
        lines += _level_sections(
            task, ea, "At equal correct-answer rate:",
            lambda x: f"{report.fmt(base - x, pct=True)} (the base's {report.fmt(base, pct=True)} "
            f"minus {report.fmt(x, pct=True)})",
        )  # fmt: skip
    kt = k_table(c, task.measures, info)
    if kt:
        lines += ["## The effect of K (D2O, last step)", "", kt, ""]
    if info.get("training"):
        lines += ["## Training curves", "", training.table(info["training"]), "",
                  training.__doc__.split("\n\n")[1].replace("\n", " "), ""]  # fmt: skip
    lines += [
        "## Every point",
        "",
        report.points_table(c, task.measures),
        "",
        "95 % intervals: Wilson for rates, percentile bootstrap over prompts for means and "
        "the KL (report.json). The interpolated values have no interval.",
        "",
        *_timing_lines(info),
    ]
    return "\n".join(lines) + "\n"


def write(results: Path, task, c: dict, rep: dict, info: dict) -> dict:
    """RESULTS/sweep.png, tradeoff.png, training.png, sweep.md, sweep.json; returns sweep.json's
    content plus the markdown."""
    e = report.equal_drift(c, task.measures)
    has_answers = any(f"{m.section}.{m.key}" == ANSWERS for m in task.measures)
    ea = report.equal_drift(c, task.measures, ANSWERS) if has_answers else {"levels": []}
    model = info["settings"]["model"]
    pngs = {
        "harm against drift": report.plot(
            c, e, task.measures,
            f"{task.name}: held-out measures against drift, per run (mlx-d2o, {model}; 95 % "
            "intervals)", results / "sweep.png",
        ),
    }  # fmt: skip
    if has_answers:
        xm = next(m for m in task.measures if f"{m.section}.{m.key}" == ANSWERS)
        pngs["harm against helpfulness"] = report.tradeoff_plot(
            c, xm, [m for m in task.measures if m.section in ("harmful", "negatives")],
            f"{task.name}: harm against correct answers, per run (95 % intervals)",
            results / "tradeoff.png",
        )  # fmt: skip
    if info.get("training"):
        pngs["training curves"] = training.plot(info["training"], results / "training.png")
    md = markdown(task, c, e, ea, info, pngs)
    data = {
        **info, "curves": c, "equal_drift": e, "equal_correct_rate": ea,
        "report_settings": rep.get("settings"),
    }  # fmt: skip
    results.mkdir(parents=True, exist_ok=True)
    (results / "sweep.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (results / "sweep.md").write_text(md, encoding="utf-8")
    made = ", ".join(str(p) for p in pngs.values() if p is not None)
    print(
        f"written: {results / 'sweep.md'}, {results / 'sweep.json'}" + (f", {made}" if made else "")
    )
    return {**data, "markdown": md}
