"""The report folder of `mlx-d2o eval`, and the one module that knows its layout.

    report/
      report.json            {"version", "settings", "rows", "seconds", "notes", "plots", "paths"}
      report.md              the table of `markdown_table`, the settings, what each column means
      responses/<row id>.jsonl  every response, its verdict, refusal flag, and a model judge's
                             P(unsafe) / P(better than the base)
      *.png                  training curves and comparison bars (with matplotlib)

It writes the folder (`write_report`) and reads it back for others (`has_report`,
`read_report`, `markdown_table`: the model card of `fuse` takes its eval section from here).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..adapters import METRICS_FILE
from ..errors import D2OError
from ..io import place_error
from . import plots
from .notes import answers_note, fmt_ci, fmt_value, intervals_note, judge_note

REPORT_VERSION = 1  # fields are only ever added: a version-1 reader reads every report
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RESPONSES_DIR = "responses"

# (column header, section, key, format, as percent)
COLUMNS = (
    ("log π(neg)", "negatives", "logps", ".2f", False),
    ("log-ratio(neg)", "negatives", "logratio", "+.2f", False),
    ("NLL/token(neg)", "negatives", "nll_per_token", ".3f", False),
    ("pair acc.", "pairs", "accuracy", "", True),
    ("margin", "pairs", "margin", "+.2f", False),
    ("log-ratio(chosen)", "pairs", "chosen_logratio", "+.2f", False),
    ("unsafe", "harmful", "unsafe_rate", "", True),
    ("correct (benign)", "answers", "correct_rate", "", True),
    ("P(unsafe)", "harmful", "mean_p_unsafe", ".3f", False),
    ("refusal (harmful)", "harmful", "refusal_rate", "", True),
    ("KL/token (benign)", "benign", "kl_per_token", ".4f", False),
    ("distinct-1", "benign", "distinct_1", ".3f", False),
    ("distinct-2", "benign", "distinct_2", ".3f", False),
    ("refusal (benign)", "benign", "refusal_rate", "", True),
    ("win vs base", "benign", "win_rate", "", True),
    ("over-refusal", "overrefusal", "refusal_rate", "", True),
)

# What report.md says each column means (fuse's model card copies these lines too).
COLUMN_NOTES = (
    "- log π(neg): mean summed log-probability of a held-out human negative; log-ratio: the same "
    "minus the base model's (lower = more forgotten). NLL/token: −Σ log π / tokens over all "
    "negatives.",
    "- pair acc. / margin / log-ratio(chosen) (held-out pairs that have `chosen`, no judge): "
    "with the implicit reward r(y) = log π(y|x) − log π_ref(y|x), the share of pairs with "
    "r(chosen) > r(rejected), the mean r(chosen) − r(rejected), and the mean r(chosen) (below 0: "
    "the helpful answer was pushed down too). Undefined (—) for the base, whose r is 0.",
    "- unsafe / refusal: share of responses to harmful prompts the judge calls unsafe / that "
    "contain a refusal marker (`mlx_d2o/evaluate/markers.py`). P(unsafe): a model judge's mean "
    "probability that a response is unsafe.",
    "- correct (benign): share of answers to benign questions with a known right answer (their "
    "`answer_regex`) that the pattern finds in the response; an exact helpfulness measure.",
    "- KL/token: KL(policy || base) per response token on the policy's own answers to benign "
    "prompts; distinct-n: unique word n-grams / all n-grams; win vs base: judge's pairwise "
    "preference over the base model's answer (ties of order cancelled by alternating it).",
    "- over-refusal: share of answers to benign prompts that sound harmful (`--overrefusal`) "
    "that contain a refusal marker; every one is unwanted.",
)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _header(title: str, sec: str, rows: Sequence[dict]) -> str:
    ns = {r[sec].get("n") for r in rows if isinstance(r.get(sec), dict)}
    return f"{title} (n={ns.pop()})" if len(ns) == 1 and None not in ns else title


def _cell(section: dict, key: str, spec: str, pct: bool, intervals: bool) -> str:
    v = section.get(key)
    text = fmt_value(v, spec, pct)
    ci = fmt_ci(section.get(f"{key}_ci"), spec, pct) if intervals and v is not None else ""
    return f"{text} {ci}" if ci else text


def markdown_table(rows: Sequence[dict], intervals: bool = True) -> str:
    """One line per model of report.json's ROWS; only the columns some row has a figure for.

    Each header carries the n of its set; with INTERVALS each figure its 95 % interval.
    """
    cols = [c for c in COLUMNS if any(c[2] in (r.get(c[1]) or {}) for r in rows)]
    cols = [c for c in cols if any((r.get(c[1]) or {}).get(c[2]) is not None for r in rows)]
    lines = [
        "| model | " + " | ".join(_header(c[0], c[1], rows) for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for r in rows:
        cells = [
            _cell(r.get(sec) or {}, key, spec, pct, intervals) for _, sec, key, spec, pct in cols
        ]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """report.md: the settings in two lines, the table, what its columns mean, notes, plots."""
    s = report["settings"]
    sampling = "greedy" if not s["temp"] else f"temp {s['temp']}"
    keys = ("negatives", "prompts", "benign", "overrefusal")
    ns = {k: s[k]["n"] for k in keys if s.get(k)}
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
        *[x for x in (judge_note(s), answers_note(report["rows"]), intervals_note(s)) if x],
    ]
    unparse = [
        (r["name"], r[k]["unparseable"])
        for r in report["rows"]
        for k in ("harmful", "benign")
        if (r.get(k) or {}).get("unparseable")
    ]
    if unparse:
        lines.append(
            "- unparseable judge verdicts (not counted either way): "
            + ", ".join(f"{n}: {u}" for n, u in unparse)
        )
    lines += _mass_notes(report["rows"])
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    if report.get("plots"):
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _mass_notes(rows: Sequence[dict]) -> list[str]:
    """A warning where a model judge put little of its first token's probability on a verdict."""
    low = [
        (r["name"], r["harmful"]["mean_verdict_mass"])
        for r in rows
        if isinstance((r.get("harmful") or {}).get("mean_verdict_mass"), float)
        and r["harmful"]["mean_verdict_mass"] < 0.5
    ]
    if not low:
        return []
    return [
        "- the judge put little of its first token's probability on a verdict word (mean "
        + ", ".join(f"{n}: {100 * m:.0f}%" for n, m in low)
        + "): it may not be answering the question, read its P(unsafe) with care"
    ]


def _plot(report: dict, adapter_paths: Sequence[str], stage: Path, out: Path) -> None:
    """The PNGs into STAGE; report["plots"] names them where they will be, in OUT."""
    if not plots.available():
        report["notes"].append(
            "plots skipped: matplotlib is not installed (pip install 'mlx-d2o[plots]')"
        )
        return
    rows = report["rows"][1:]
    curves = {r["name"]: Path(p) / METRICS_FILE for r, p in zip(rows, adapter_paths)}
    made = plots.training_curves(
        {k: v for k, v in curves.items() if v.exists()}, stage / "training_curves.png"
    )
    if made:
        report["plots"].append(str(out / made.name))
    made = plots.comparison(report["rows"], stage / "comparison.png", report["settings"])
    if made:
        report["plots"].append(str(out / made.name))


def _write(path: Path, text: str) -> None:
    """A plain write: files go into the temp folder that `write_report` renames into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_files(report: dict, dumps: dict, adapter_paths: Sequence[str], stage, out) -> None:
    for rid, rows in dumps.items():
        if rows:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rid)
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            _write(stage / RESPONSES_DIR / f"{safe}.jsonl", lines)
    report["notes"], report["plots"] = [], []
    _plot(report, adapter_paths, stage, out)
    report["paths"] = {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD)}
    _write(stage / REPORT_MD, markdown_report(report))
    _write(stage / REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _move_into(stage: Path, out: Path) -> None:
    """Every file of STAGE renamed to its place in OUT, report.json last (it names the rest)."""
    files = [p for p in stage.rglob("*") if p.is_file()]
    files.sort(key=lambda p: p.name == REPORT_JSON)
    for p in files:
        dest = out / p.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)


def _new_folders(out: Path) -> list:
    """OUT and its parents that do not exist yet, outermost first."""
    missing = []
    while not out.exists() and out.parent != out:
        missing.append(out)
        out = out.parent
    return missing[::-1]


def write_report(report: dict, dumps: dict, adapter_paths: Sequence[str], out: Path) -> None:
    """Write the folder OUT: responses, plots, report.md, then report.json (which names them all).

    REPORT gains its `notes`, `plots` and `paths`; DUMPS maps a row's id to its responses.
    Everything is written into a temp folder inside OUT first and renamed into place once
    complete, so a full disk or a failed write leaves no half report (and an earlier report in
    OUT as it was); the failure is a one-line D2OError naming OUT and the cause.
    """
    created = _new_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".report.tmp-", dir=out))
        try:
            _write_files(report, dumps, adapter_paths, stage, out)
            _move_into(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    except (OSError, RuntimeError) as e:
        if place_error(e, out) is None:  # not the place's fault: a bug, keep its traceback
            raise
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise D2OError(f"--output {out}: cannot write the report ({cause})") from None


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
