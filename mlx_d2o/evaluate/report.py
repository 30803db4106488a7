"""The report folder of `mlx-d2o eval`, and the one module that knows its layout.

    report/
      report.json            {"version", "settings", "rows", "seconds", "notes", "plots", "paths"}
      report.md              the table of `markdown_table`, the settings, what each column means
      responses/<row>.jsonl  every response, its verdict and its judge's raw answer
      *.png                  training curves and comparison bars (with matplotlib)

It writes the folder (`write_report`) and reads it back for others (`has_report`,
`read_report`, `markdown_table`: the model card of `fuse` takes its eval section from here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..adapters import METRICS_FILE
from ..io import write_text_atomic

REPORT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RESPONSES_DIR = "responses"

# (column header, section, key, format, as percent)
COLUMNS = (
    ("log π(neg)", "negatives", "logps", ".2f", False),
    ("log-ratio(neg)", "negatives", "logratio", "+.2f", False),
    ("NLL/token(neg)", "negatives", "nll_per_token", ".3f", False),
    ("unsafe", "harmful", "unsafe_rate", "", True),
    ("refusal (harmful)", "harmful", "refusal_rate", "", True),
    ("KL/token (benign)", "benign", "kl_per_token", ".4f", False),
    ("distinct-1", "benign", "distinct_1", ".3f", False),
    ("distinct-2", "benign", "distinct_2", ".3f", False),
    ("refusal (benign)", "benign", "refusal_rate", "", True),
    ("win vs base", "benign", "win_rate", "", True),
)

# What report.md says each column means (fuse's model card copies these lines too).
COLUMN_NOTES = (
    "- log π(neg): mean summed log-probability of a held-out human negative; log-ratio: the same "
    "minus the base model's (lower = more forgotten). NLL/token: −Σ log π / tokens over all "
    "negatives.",
    "- unsafe / refusal: share of responses to harmful prompts the judge calls unsafe / that "
    "contain a refusal marker (`mlx_d2o/evaluate/markers.py`).",
    "- KL/token: KL(policy || base) per response token on the policy's own answers to benign "
    "prompts; distinct-n: unique word n-grams / all n-grams; win vs base: judge's pairwise "
    "preference over the base model's answer (ties of order cancelled by alternating it).",
)


def row_names(adapter_paths: Sequence[str]) -> list[str]:
    """The table's row names: `base`, then each adapter's folder name (its path if taken)."""
    names = ["base"]
    for p in adapter_paths:
        name = Path(p).name or str(p)
        if name in names:
            name = str(p)
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _fmt(v, spec=".3f", pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else format(v, spec)


def markdown_table(rows: Sequence[dict]) -> str:
    """One line per model of report.json's ROWS; only the columns some row has a figure for."""
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    if not any(r.get("benign", {}).get("win_rate") is not None for r in rows):
        cols = [c for c in cols if c[2] != "win_rate"]
    lines = [
        "| model | " + " | ".join(c[0] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for r in rows:
        cells = [_fmt(r.get(sec, {}).get(key), spec, pct) for _, sec, key, spec, pct in cols]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """report.md: the settings in two lines, the table, what its columns mean, notes, plots."""
    s = report["settings"]
    sampling = "greedy" if not s["temp"] else f"temp {s['temp']}"
    ns = {k: s[k]["n"] for k in ("negatives", "prompts", "benign") if s.get(k)}
    lines = [
        "# mlx-d2o eval",
        "",
        f"Base model (reference, first row): `{s['model']}` "
        f"(fingerprint {s['model_fingerprint']}). "
        f"Judge: `{s['judge']}`. Generation: {sampling}, "
        f"max {s['max_tokens']} tokens, seed {s['seed']}.",
        "Items: " + ", ".join(f"{k} n={v}" for k, v in ns.items()) + ".",
        "",
        markdown_table(report["rows"]),
        "",
        *COLUMN_NOTES,
    ]
    unparse = [
        (r["name"], r[k]["unparseable"])
        for r in report["rows"]
        for k in ("harmful", "benign")
        if r.get(k, {}).get("unparseable")
    ]
    if unparse:
        lines.append(
            "- unparseable judge verdicts (not counted either way): "
            + ", ".join(f"{n}: {u}" for n, u in unparse)
        )
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    if report.get("plots"):
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _plot(report: dict, adapter_paths: Sequence[str], out: Path) -> None:
    from . import plots

    if not plots.available():
        report["notes"].append(
            "plots skipped: matplotlib is not installed (pip install 'mlx-d2o[plots]')"
        )
        return
    names = row_names(adapter_paths)[1:]
    curves = {name: Path(p) / METRICS_FILE for name, p in zip(names, adapter_paths)}
    made = plots.training_curves(
        {k: v for k, v in curves.items() if v.exists()}, out / "training_curves.png"
    )
    if made:
        report["plots"].append(str(made))
    report["plots"].append(str(plots.comparison(report["rows"], out / "comparison.png")))


def write_report(report: dict, dumps: dict, adapter_paths: Sequence[str], out: Path) -> None:
    """Write the folder OUT: responses, plots, report.md, then report.json (which names them all).

    REPORT gains its `notes`, `plots` and `paths`; DUMPS maps a row's name to its responses.
    """
    from ..data import write_jsonl_atomic

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in dumps.items():
        if rows:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            write_jsonl_atomic(out / RESPONSES_DIR / f"{safe}.jsonl", rows)
    report["notes"], report["plots"] = [], []
    _plot(report, adapter_paths, out)
    report["paths"] = {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD)}
    write_text_atomic(out / REPORT_MD, markdown_report(report))
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(out / REPORT_JSON, text)


# ---------------------------------------------------------------------------------------------
# Reading (for the model card of `fuse`)
# ---------------------------------------------------------------------------------------------


def has_report(d: str | Path) -> bool:
    """Whether folder D holds a report (report.json or report.md)."""
    return (Path(d) / REPORT_MD).is_file() or (Path(d) / REPORT_JSON).is_file()


def _read_json(p: Path) -> Optional[dict]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def markdown_tables(text: str) -> list:
    """The Markdown tables in TEXT, as text (header, rule and at least one row each)."""
    tables, cur = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            cur.append(line.strip())
        elif cur:
            tables.append("\n".join(cur))
            cur = []
    if cur:
        tables.append("\n".join(cur))
    return [t for t in tables if t.count("\n") >= 2]


def _notes_after_table(text: str) -> list:
    """The bullet lines right after report.md's table (what its columns mean), minus the ones
    about plots (files beside the report)."""
    seen_table, out = False, []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            seen_table, out = True, []
        elif seen_table and line.startswith("- "):
            if not line.startswith("- plots"):
                out.append(line)
        elif seen_table and out and not line.strip():
            break
    return out


def read_report(d: str | Path) -> dict:
    """What a report folder D holds, leniently (never raises on a bad or foreign file):

        {"json": report.json as a dict, or None when missing / malformed / not an object,
         "tables": each Markdown table of report.md (with at least one row), as text,
         "notes": the "- " bullet lines right after report.md's table, minus "- plots ..."}

    A report from another tool or version still gives its tables; report.json's `rows` go
    through `markdown_table`.
    """
    md = Path(d) / REPORT_MD
    try:
        text = md.read_text(encoding="utf-8", errors="replace") if md.is_file() else ""
    except OSError:
        text = ""
    return {
        "json": _read_json(Path(d) / REPORT_JSON),
        "tables": markdown_tables(text),
        "notes": _notes_after_table(text),
    }
