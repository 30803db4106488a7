"""The rows of a samples file: reading its lines, checking each row (the format is `cache`'s)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import D2OError


def read_rows(path: Path) -> list[dict]:
    """The rows of one samples file; a torn or malformed line is one line naming it."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                raise D2OError(
                    f"{path}:{lineno}: torn last line (the run was interrupted); "
                    "run `mlx-d2o sample` again with the same arguments to finish it"
                )
            try:
                rows.append(json.loads(raw.decode("utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise D2OError(f"{path}:{lineno}: malformed line ({e})") from None
    return rows


def check_row(row: dict, k: int, path: Path, lineno: int) -> None:
    """Refuse a row without its K samples, reference scores, or a cut sample's ids."""
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("samples"), list)
        or len(row["samples"]) != k
    ):
        raise D2OError(f"{path}:{lineno}: field 'samples': expected a list of {k} responses")
    lp, nt = row.get("ref_logps"), row.get("ref_tokens")
    if not isinstance(lp, dict) or not isinstance(nt, dict):
        raise D2OError(
            f"{path}:{lineno}: field 'ref_logps': missing (a cache without reference scores)"
        )
    if not isinstance(lp.get("samples"), list) or len(lp["samples"]) != k or "rejected" not in lp:
        raise D2OError(
            f"{path}:{lineno}: field 'ref_logps': needs 'samples' ({k} values) and 'rejected'"
        )
    if not isinstance(nt.get("samples"), list) or len(nt["samples"]) != k or "rejected" not in nt:
        raise D2OError(
            f"{path}:{lineno}: field 'ref_tokens': needs 'samples' ({k} values) and 'rejected'"
        )
    _check_cut(row, k, path, lineno)


def _check_cut(row: dict, k: int, path: Path, lineno: int) -> None:
    """A cut sample is trained on its generated ids: they must be there, as many as scored."""
    finish, ids = row.get("sample_finish") or [], row.get("sample_ids")
    for j, f in enumerate(finish[:k]):
        if f != "length":
            continue
        if not isinstance(ids, list) or len(ids) != k or not isinstance(ids[j], list):
            raise D2OError(
                f"{path}:{lineno}: field 'sample_ids': sample {j} was cut at --max-tokens and "
                f"needs its generated token ids ({k} lists)"
            )
        if len(ids[j]) != row["ref_tokens"]["samples"][j]:
            raise D2OError(
                f"{path}:{lineno}: field 'sample_ids[{j}]': {len(ids[j])} ids, but the "
                f"reference scored {row['ref_tokens']['samples'][j]} tokens"
            )
