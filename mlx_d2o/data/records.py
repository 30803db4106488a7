"""Negatives-only records: schema, loading (file or Hub), validation, fingerprints.

A record is one prompt (a dialogue ending with a user turn) with one human-labelled dispreferred
response; `chosen` is optional and only the DPO baseline uses it:

    {"id"?: str, "prompt": str | "messages": [{"role", "content"}, ...],
     "rejected": str, "chosen"?: str}

Every problem is reported as `file:line: field '...': what is wrong`, and raised as `D2OError`
(exit code 2 in the CLI).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import D2OError, where
from ..io import atomic_path

ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    id: str
    messages: list  # the prompt: [{"role", "content"}, ...], ending with a user turn
    rejected: Optional[str] = None
    chosen: Optional[str] = None
    extra: dict = field(default_factory=dict)
    # "file:line" it was read from, for messages; not part of the record (nor its fingerprint)
    where: str = field(default="", compare=False, repr=False)

    def to_json(self) -> dict:
        d = {"id": self.id, "messages": self.messages}
        if self.rejected is not None:
            d["rejected"] = self.rejected
        if self.chosen is not None:
            d["chosen"] = self.chosen
        d.update(self.extra)
        return d


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _open_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError) as e:
        raise D2OError(f"{path}: cannot read ({e})") from e


def read_json_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, object) for each row of a .jsonl / .jsonl.gz / .json file; malformed input names file:line."""
    path = Path(path)
    if not path.exists():
        raise D2OError(f"{path}: no such file")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".json"):
        raw = b"".join(line for _, line in _open_lines(path))
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise D2OError(f"{where(path, line)}: invalid UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise D2OError(f"{where(path, e.lineno)}: malformed JSON ({e.msg})") from None
        rows = obj.get("data", obj.get("rows")) if isinstance(obj, dict) else obj
        if not isinstance(rows, list):
            raise D2OError(
                f'{path}: a .json data file must hold a list of objects (or {{"data": [...]}})'
            )
        yield from enumerate(rows, 1)
        return
    for lineno, raw in _open_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise D2OError(
                f"{where(path, lineno)}: invalid UTF-8 at byte {e.start} ({e.reason})"
            ) from None
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as e:
            raise D2OError(
                f"{where(path, lineno)}: malformed JSON ({e.msg} at column {e.colno})"
            ) from None


def _check_str(value, path, line, name, *, required=True, nonempty=True) -> Optional[str]:
    if value is None:
        if required:
            raise D2OError(f"{where(path, line, name)}: missing")
        return None
    if not isinstance(value, str):
        raise D2OError(f"{where(path, line, name)}: must be a string, got {type(value).__name__}")
    if nonempty and not value.strip():
        raise D2OError(f"{where(path, line, name)}: empty")
    return value


def parse_messages(value, path, line, name="messages") -> list:
    if not isinstance(value, list) or not value:
        raise D2OError(
            f"{where(path, line, name)}: must be a non-empty list of {{role, content}} objects"
        )
    out = []
    for j, m in enumerate(value):
        f = f"{name}[{j}]"
        if not isinstance(m, dict):
            raise D2OError(f"{where(path, line, f)}: must be an object with 'role' and 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise D2OError(
                f"{where(path, line, f + '.role')}: unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        content = _check_str(
            m.get("content"), path, line, f + ".content", nonempty=role != "system"
        )
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise D2OError(
            f"{where(path, line, name)}: the prompt must end with a user turn, not {out[-1]['role']!r}"
        )
    return out


def parse_record(obj, path, line, require_rejected: bool = True) -> Record:
    if not isinstance(obj, dict):
        raise D2OError(
            f"{where(path, line)}: each row must be a JSON object, got {type(obj).__name__}"
        )
    if "messages" in obj:
        messages = parse_messages(obj["messages"], path, line)
    elif "prompt" in obj:
        messages = [{"role": "user", "content": _check_str(obj["prompt"], path, line, "prompt")}]
    else:
        raise D2OError(f"{where(path, line)}: needs a 'prompt' string or a 'messages' list")
    rid = obj.get("id", f"{Path(path).name}:{line}")
    if not isinstance(rid, (str, int)):
        raise D2OError(f"{where(path, line, 'id')}: must be a string, got {type(rid).__name__}")
    rejected = _check_str(obj.get("rejected"), path, line, "rejected", required=require_rejected)
    chosen = _check_str(obj.get("chosen"), path, line, "chosen", required=False)
    known = {"id", "messages", "prompt", "rejected", "chosen"}
    return Record(
        str(rid), messages, rejected, chosen, {k: v for k, v in obj.items() if k not in known}
    )


_LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")


def is_hub_dataset(spec: str) -> bool:
    """`org/name[:split]` that is not a local path. A missing `data/x.jsonl` is a typo to report,
    not a Hub id to fetch, so names with a data-file suffix never go to the network."""
    p = Path(spec)
    if p.exists() or spec.startswith((".", "/", "~")) or spec.endswith(_LOCAL_SUFFIXES):
        return False
    return re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", spec) is not None


def hub_data_file(spec: str) -> Path:
    """Download the JSON(L) file of a Hub dataset repo: `org/name` or `org/name:split`."""
    from huggingface_hub import HfApi, hf_hub_download

    repo, _, split = spec.partition(":")
    split = split or "train"
    try:
        files = HfApi().list_repo_files(repo, repo_type="dataset")
        cands = [
            f
            for f in files
            if f.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")) and split in Path(f).name
        ]
        if not cands:
            raise D2OError(
                f"dataset {repo} has no JSON/JSONL file for split '{split}' (files: {', '.join(files[:20])})"
            )
        return Path(hf_hub_download(repo, sorted(cands)[0], repo_type="dataset"))
    except D2OError:
        raise
    except Exception as e:
        raise D2OError(
            f"could not fetch dataset '{repo}' from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Offline? Pass a local .jsonl file instead."
        ) from e


def resolve_data(spec: str | Path) -> Path:
    spec = str(spec)
    return hub_data_file(spec) if is_hub_dataset(spec) else Path(spec)


def load_records(spec: str | Path, require_rejected: bool = True) -> list[Record]:
    """Read and validate all records of a file (or Hub dataset); duplicate ids are an error."""
    path = resolve_data(spec)
    records, seen = [], {}
    for line, obj in read_json_rows(path):
        r = parse_record(obj, path, line, require_rejected)
        r.where = where(path, line)
        if r.id in seen:
            raise D2OError(
                f"{where(path, line, 'id')}: duplicate id {r.id!r} (first on line {seen[r.id]})"
            )
        seen[r.id] = line
        records.append(r)
    if not records:
        raise D2OError(f"{path}: no records")
    return records


def data_fingerprint(records: Iterable[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows to PATH through a temp file and a rename: a failure leaves no partial file."""
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with (
            gzip.open(tmp, "wt", encoding="utf-8")
            if path.suffix == ".gz"
            else open(tmp, "w", encoding="utf-8")
        ) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n
