"""`mlx-d2o sample --rescore -o DIR`: the reference scores of a finished cache computed again,
without generating, and the cache brought to this format (`cache.FORMAT_VERSION`).

Format 1 scored a sample cut at --max-tokens as its text plus an end-of-turn the model never
generated, and kept no generated ids. Rescoring takes a cut sample's tokens to be the ones that
cache scored less that end-of-turn (its text as the template writes it: usually the generated
ids, not always, since the ids themselves are gone), stores them as its `sample_ids`, and scores
every response again with the reference (`scoring.score_records`); the manifest says so under
`rescored`. A cache already in this format is scored again as it is. Each shard is replaced
through a rename, the manifest last, so a killed rescore leaves the old cache or a rerunnable one.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

from ..data import end_of_turn_ids, prompt_tokens, response_tokens, write_jsonl_atomic
from ..errors import D2OError
from ..io import RunLock
from . import cache as C
from .scoring import score_records

RETOKENIZED = "the cut text as the template writes it, less end-of-turn (format 1 kept no ids)"


def _manifest(cache_dir: Path) -> dict:
    manifest = C.read_manifest(cache_dir)
    if manifest is None:
        raise D2OError(f"{cache_dir}: no sample cache here ({C.MANIFEST} is missing)")
    version = manifest.get("format_version")
    if version not in (1, C.FORMAT_VERSION):
        raise C.old_format(cache_dir, version)
    if not manifest.get("complete"):
        raise D2OError(
            f"{cache_dir}: the sample cache is incomplete; an unfinished cache is not rescored "
            "(finish it with this version's `mlx-d2o sample --overwrite`, or rescore a whole one)"
        )
    return manifest


def _with_ids(tokenizer, row: dict, eot: set) -> dict:
    """ROW with `sample_ids` for every sample (format 1 had none), ready to be scored again."""
    row = {k: v for k, v in row.items() if k not in ("ref_logps", "ref_tokens")}
    if isinstance(row.get("sample_ids"), list):
        return row
    p = prompt_tokens(tokenizer, row["messages"])
    ids = []
    for text in row["samples"]:
        resp = response_tokens(tokenizer, row["messages"], text, p)
        ids.append(resp[:-1] if resp and resp[-1] in eot else resp)
    return {**row, "sample_ids": ids}


def _rescore_shard(model, tokenizer, path: Path, batch: int, k: int, counts: dict) -> int:
    rows = C.read_rows(path)
    eot = end_of_turn_ids(tokenizer)
    out = []
    for start in range(0, len(rows), batch):
        chunk = [_with_ids(tokenizer, r, eot) for r in rows[start : start + batch]]
        out += score_records(model, tokenizer, chunk, batch * (k + 2), counts)
    for i, row in enumerate(out, 1):
        C.check_row(row, k, path, i)
    with C.writing(path):
        write_jsonl_atomic(path, out)
    return len(out)


def rescore_cache(cache_dir: str | Path, model: Optional[str] = None) -> dict:
    """Score the finished cache in CACHE_DIR again with its reference and write it in this
    format; returns a summary. MODEL: the model it was made with (default: the manifest's)."""
    from ..models import check_made_for, load

    t0, cache_dir = time.perf_counter(), Path(cache_dir)
    manifest = _manifest(cache_dir)
    with ExitStack() as stack:
        with C.writing(cache_dir / RunLock.NAME):  # a second run on this cache is refused
            stack.enter_context(RunLock(cache_dir, "sample run"))
        name = model or manifest.get("model") or manifest.get("model_path")
        # The base, never the adapter the samples came from: π_ref is the starting model.
        ref, tokenizer, info = load(name, dequantize=manifest.get("dequantized"), return_info=True)
        check_made_for(cache_dir / C.MANIFEST, manifest, info.fingerprint, "this cache")
        size, k = int(manifest.get("world_size", 1)), int(manifest["num_samples"])
        batch, counts, n = int(manifest.get("batch_size") or 4), {}, 0
        for r in range(size):
            n += _rescore_shard(ref, tokenizer, cache_dir / C.shard_name(r, size), batch, k, counts)
        was = manifest["format_version"]
        if was != C.FORMAT_VERSION:
            manifest["rescored"] = {"from_format_version": was, "cut_sample_ids": RETOKENIZED}
        manifest["format_version"] = C.FORMAT_VERSION
        C.write_manifest(cache_dir, manifest)
    _, rows = C.read_cache(cache_dir)
    cut = sum(f == "length" for row in rows for f in row.get("sample_finish") or [])
    return {
        "output": str(cache_dir),
        "records": n,
        "samples": n * k,
        "cut": cut,
        "from_format_version": was,
        "format_version": C.FORMAT_VERSION,
        "responses_scored": counts.get("scored", 0),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def rescore_text(s: dict) -> str:
    return (
        f"rescored {s['records']} prompts ({s['samples']} samples, {s['cut']} of them cut at "
        f"--max-tokens and now scored without end-of-turn; {s['responses_scored']} responses "
        f"scored) in {s['seconds']} s: {s['output']} is format {s['format_version']} "
        f"(was {s['from_format_version']})"
    )
