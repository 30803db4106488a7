"""Converters from public preference sets (HH-RLHF, PKU-SafeRLHF) to negatives-only records."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import D2OError, where
from .records import _check_str, read_json_rows, resolve_data, write_jsonl_atomic

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def hh_turns(text: str) -> list[dict]:
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    turns = []
    for role, content in zip(parts[1::2], parts[2::2]):
        turns.append(
            {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        )
    return turns


def convert_hh_rlhf(row: dict, path, line) -> list[dict]:
    """HH-RLHF: the dialogue before the last assistant turn is the prompt; that turn of `rejected`
    is the negative (and the one of `chosen`, when the dialogues share the prompt, the positive)."""
    rej = _check_str(row.get("rejected") if isinstance(row, dict) else None, path, line, "rejected")
    try:
        turns = hh_turns(rej)
    except ValueError as e:
        raise D2OError(f"{where(path, line, 'rejected')}: not an HH-RLHF dialogue ({e})") from None
    if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
        raise D2OError(
            f"{where(path, line, 'rejected')}: must end with a Human turn then an Assistant turn"
        )
    if not turns[-1]["content"]:
        raise D2OError(f"{where(path, line, 'rejected')}: the last Assistant turn is empty")
    out = {
        "id": str(row.get("id", f"hh-{line}")),
        "messages": turns[:-1],
        "rejected": turns[-1]["content"],
    }
    if isinstance(row.get("chosen"), str):
        try:
            ch = hh_turns(row["chosen"])
        except ValueError:
            ch = []
        if (
            len(ch) == len(turns)
            and ch[:-1] == turns[:-1]
            and ch[-1]["role"] == "assistant"
            and ch[-1]["content"]
        ):
            out["chosen"] = ch[-1]["content"]
    return [out]


def convert_pku_saferlhf(row: dict, path, line) -> list[dict]:
    """PKU-SafeRLHF: one record per response marked unsafe; a safe sibling becomes `chosen`."""
    if not isinstance(row, dict):
        raise D2OError(f"{where(path, line)}: each row must be a JSON object")
    prompt = _check_str(row.get("prompt"), path, line, "prompt")
    out = []
    for i in (0, 1):
        resp = _check_str(row.get(f"response_{i}"), path, line, f"response_{i}", nonempty=False)
        safe = row.get(f"is_response_{i}_safe")
        if not isinstance(safe, bool):
            raise D2OError(f"{where(path, line, f'is_response_{i}_safe')}: must be true or false")
        if safe or not resp.strip():
            continue
        rec = {"id": f"{row.get('id', f'pku-{line}')}-{i}", "prompt": prompt, "rejected": resp}
        other = row.get(f"response_{1 - i}")
        if (
            row.get(f"is_response_{1 - i}_safe") is True
            and isinstance(other, str)
            and other.strip()
        ):
            rec["chosen"] = other
        out.append(rec)
    return out


CONVERTERS = {"hh-rlhf": convert_hh_rlhf, "pku-saferlhf": convert_pku_saferlhf}


def convert(fmt: str, src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Convert a source dataset to records; returns (rows read, records written)."""
    if fmt not in CONVERTERS:
        raise D2OError(f"unknown format {fmt!r} (expected one of {', '.join(CONVERTERS)})")
    conv = CONVERTERS[fmt]
    path = resolve_data(src)
    rows, out = 0, []
    for line, obj in read_json_rows(path):
        rows += 1
        out.extend(conv(obj, path, line))
    if not out:
        raise D2OError(f"{path}: no records came out of {rows} rows")
    return rows, write_jsonl_atomic(dst, out)
