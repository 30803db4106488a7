"""Where the model card's facts come from: base model, sample cache, eval report.

Where the model card's facts come from: the base model (its Hub id, how to name it, its
licence), the sample cache the adapter was trained from, and the `mlx-d2o eval` report.

Each file is read through its owner where it has one (the cache's manifest reader, eval's report
reader). Nothing here publishes a local path: local models appear by their names only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import D2OError
from ..evaluate.report import has_report, markdown_table, read_report
from ..models import gguf_source
from .card import fmt
from .hub import HUB_ID

# Hub repos of the embedded models' originals, for the card's `base_model` (the GGUF metadata
# only holds a free-text name, which the Hub would reject as a base model).
EMBEDDED_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

# ---------------------------------------------------------------------------------------------
# The base model: Hub id, how to name it, licence
# ---------------------------------------------------------------------------------------------


def _front_matter(path: Path) -> dict:
    import yaml

    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _gguf_source(path: Path, key: str):
    """KEY of what the GGUF import recorded beside the converted model (models owns that file)."""
    return gguf_source(path).get(key)


def base_model_id(model: str, path: Path) -> Optional[str]:
    """The Hub repo the base came from, when we can tell: embedded name, Hub id, Hub cache path,
    its own card."""
    if model in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[model]
    if HUB_ID.match(model) and not Path(model).exists():
        return model
    m = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", str(path))
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    bm = _front_matter(path / "README.md").get("base_model")
    if isinstance(bm, list) and len(bm) == 1:
        bm = bm[0]
    return bm if isinstance(bm, str) and HUB_ID.match(bm) else None


def base_label(model: str, path: Path) -> str:
    """How the card names the base: its Hub id, and the GGUF file when it was imported from one."""
    hub = base_model_id(model, path)
    if hub:
        label = f"`{hub}`"
    elif Path(model).exists():
        # its name only, not the user's directory layout
        label = f"the local model `{Path(model).name}`"
    else:
        label = f"`{model}`"
    gguf = _gguf_source(path, "gguf")
    if gguf:
        label += f" (imported from the GGUF file `{gguf}`)"
    return label


def base_license(path: Path) -> Optional[str]:
    lic = _gguf_source(path, "license")
    if isinstance(lic, str) and lic:
        return lic
    lic = _front_matter(path / "README.md").get("license")
    return lic if isinstance(lic, str) else None


# ---------------------------------------------------------------------------------------------
# The sample cache the adapter was trained from
# ---------------------------------------------------------------------------------------------


def sample_manifest(d2o: dict, adapter_path: Path) -> dict:
    """The sample cache's manifest the adapter was trained from, if it can still be found (its
    path as the trainer recorded it, from here or from beside the adapter); {} otherwise. Only
    shown on the card, so it is read leniently: an unreadable one is skipped, not refused."""
    from ..sample.cache import read_manifest

    samples = d2o.get("samples")
    if not isinstance(samples, str) or not samples:
        return {}
    for d in (Path(samples), adapter_path.parent / samples):
        data = read_manifest(d, strict=False)
        if data is not None:
            return data
    return {}


# ---------------------------------------------------------------------------------------------
# The eval report: found beside the adapter or named by --report, read by eval's own reader
# ---------------------------------------------------------------------------------------------


def find_report(adapter_path: Path, report: Optional[str]) -> Optional[Path]:
    """`--report DIR`, else a report beside the adapter (in it, or in its `report/` folder)."""
    if report:
        d = Path(report)
        if not d.is_dir():
            raise D2OError(f"--report {d}: no such directory")
        if not has_report(d):
            raise D2OError(
                f"--report {d}: no report.json or report.md in it (made by `mlx-d2o eval`)"
            )
        return d
    for d in (adapter_path, adapter_path / "report"):
        if has_report(d):
            return d
    return None


def _json_table(data: dict) -> Optional[str]:
    """report.json's rows through eval's own table code, and what they were measured on."""
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        return None
    try:
        table = markdown_table(data["rows"])
    except Exception:  # a report from another version: fall back to report.md / the raw numbers
        return None
    s = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    ns = ", ".join(
        f"{k} n={s[k]['n']}"
        for k in ("negatives", "prompts", "benign")
        if isinstance(s.get(k), dict) and "n" in s[k]
    )
    head = (
        f"From `mlx-d2o eval`: base `{s.get('model', '?')}` in the first row, "
        f"judge `{s.get('judge', '?')}`" + (f", {ns}" if ns else "") + "."
    )
    return head + "\n\n" + table


def _flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            yield key, v


def eval_section(report_dir: Optional[Path]) -> Optional[str]:
    """The eval table as Markdown: from report.json's rows (with report.md's notes on the
    columns), else report.md's tables, else report.json's numbers."""
    if report_dir is None:
        return None
    report = read_report(report_dir)
    data = report["json"]
    table = _json_table(data) if isinstance(data, dict) else None
    if table:
        notes = report["notes"]
        return table + "\n\n" + "\n".join(notes) if notes else table
    if report["tables"]:
        return "\n\n".join(report["tables"])
    if isinstance(data, dict):
        rows = [(k, v) for k, v in _flatten(data) if not isinstance(v, str) or len(v) < 80][:60]
        if rows:
            cells = "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows)
            return "| metric | value |\n|---|---|\n" + cells
    return None
