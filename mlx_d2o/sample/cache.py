"""The sample cache: `DIR/manifest.json` and `DIR/samples.jsonl` (or one shard per rank).

    manifest.json   what made the cache (model and data fingerprints, K, sampling parameters,
                    seed, system prompt, chat template hash, ...) and `complete` once all records
                    are in. Written first, atomically, so a cache never lacks its identity.
    samples.jsonl   one line per record, in data order:
                    {"id", "messages", "rejected", ["chosen"], "samples": [K], "sample_tokens": [K],
                     "sample_finish": ["stop" | "length", ...], "sample_ids": [K lists],
                     "ref_logps": {"samples": [K], "rejected", ["chosen"]},
                     "ref_tokens": {"samples": [K], "rejected", ["chosen"]}}

Samples are scored and trained as `sample_responses` gives them: a finished one through its
end-of-turn, one cut at --max-tokens as exactly its generated `sample_ids` (D2O raises log π of
its anchors: an end-of-turn never generated would teach the model to stop where the cut was).
Format 1 gave cut samples an end-of-turn; it is refused, and `mlx-d2o sample --rescore -o DIR`
(`sample.rescore`) brings it to this format without generating again.

Under `mlx.launch` with N ranks, rank r takes records r, r+N, ... and writes
`samples.rank{r}-of-{N}.jsonl`; `read_cache` interleaves the shards back into data order.

Lines are appended a batch at a time, flushed and fsynced, so a killed run loses at most the batch
it was writing; a write that fails (disk full) is cut back to the last whole batch. On resume, lines are kept only as whole batches that match the records expected
at that place; a torn line or a half-written batch is cut off (the file is truncated), and that
batch is generated again, with the same seed, so the finished cache is the same as an
uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..data import response_tokens
from ..errors import D2OError
from ..io import place_error, write_text_atomic
from ..io import writing as io_writing
from .rows import check_row, read_rows  # noqa: F401  (re-exported: part of the cache's API)

# 2: a cut sample is a prefix (`sample_ids`, no end-of-turn); 1 scored it with one.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
SUMMARY = "summary.json"  # the last run's figures (informational; rewritten by every run)

# Manifest fields that decide what the samples are: a cache whose values differ is someone
# else's and is refused. Everything else (paths, names, tool version, timing) is informational.
IDENTITY_FIELDS = (
    "format_version",
    "model_fingerprint",
    "adapter_fingerprint",
    "data_fingerprint",
    "records",
    "num_samples",
    "max_tokens",
    "temp",
    "top_p",
    "seed",
    "batch_size",
    "system_prompt",
    "chat_template_hash",
    "world_size",
)


# A cache is append-only and resumable: after a full disk, the same command goes on.
RESUME_HINT = "free space and run the same command again to resume"


def old_format(cache_dir: str | Path, version) -> D2OError:
    """The one-line refusal of a cache in another format, with what to do about it."""
    where = f"{Path(cache_dir) / MANIFEST}: field 'format_version': {version!r}"
    if version == 1:
        return D2OError(
            f"{where} is an older sample cache (cut samples scored with an end-of-turn they "
            f"never generated); rescore it without generating again: `mlx-d2o sample --rescore "
            f"-o {cache_dir}`, or sample it again with --overwrite"
        )
    return D2OError(f"{where} is not supported (this version reads {FORMAT_VERSION})")


def sample_responses(tokenizer, row: dict, prompt: list) -> list[list[int]]:
    """The K response token lists of ROW's samples, as the reference scores and `train` trains
    them: a finished sample as `data.response_tokens` writes its text (end-of-turn included);
    a sample cut at --max-tokens is exactly its generated ids, `sample_ids[k]`, a prefix with
    nothing after it (re-tokenizing its text need not give them back: a cut inside a character,
    a template that trims)."""
    finish = row.get("sample_finish") or ["stop"] * len(row["samples"])
    ids = row.get("sample_ids")
    return [
        list(ids[k]) if f == "length" else response_tokens(tokenizer, row["messages"], text, prompt)
        for k, (text, f) in enumerate(zip(row["samples"], finish))
    ]


def writing(path):
    """`io.writing` for the cache: one line naming PATH, and how to resume on a full disk."""
    return io_writing(path, RESUME_HINT)


def shard_name(rank: int, size: int) -> str:
    return SAMPLES if size == 1 else f"samples.rank{rank}-of-{size}.jsonl"


def shard_indices(n: int, rank: int, size: int) -> range:
    """Data positions that RANK of SIZE samples: r, r+N, r+2N, ..."""
    return range(rank, n, size)


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(cache_dir: str | Path, manifest: dict) -> Path:
    """Write DIR/manifest.json through a temp file and a rename (never half-written)."""
    cache_dir = Path(cache_dir)
    with writing(cache_dir / MANIFEST):
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = write_text_atomic(
            cache_dir / MANIFEST,
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
            fsync=True,
        )
    _fsync_dir(cache_dir)
    return path


def write_summary(cache_dir: str | Path, summary: dict) -> Path:
    """DIR/summary.json, atomically: the figures `sample` printed at its end."""
    path = Path(cache_dir) / SUMMARY
    with writing(path):
        return write_text_atomic(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def read_manifest(cache_dir: str | Path, strict: bool = True) -> Optional[dict]:
    """The manifest of DIR, or None when there is none.

    STRICT (the default) refuses a manifest that is not JSON or has no `format_version` with a
    `D2OError`. Not strict (the model card, which only shows what it finds): any JSON object
    in the file, or None when it is missing, unreadable or not an object; never raises.
    """
    path = Path(cache_dir) / MANIFEST
    if not strict:
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None
        return m if isinstance(m, dict) else None
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise D2OError(f"{path}: not a valid manifest ({e})") from None
    if not isinstance(m, dict) or "format_version" not in m:
        raise D2OError(f"{path}: not an mlx-d2o sample manifest (no 'format_version')")
    return m


def manifest_differences(old: dict, new: dict) -> list[str]:
    """Identity fields whose values differ, as `field: cached X, now Y` lines."""
    out = []
    for k in IDENTITY_FIELDS:
        if old.get(k) != new.get(k):
            out.append(f"{k}: cached {old.get(k)!r}, now {new.get(k)!r}")
    return out


def check_manifest(cache_dir: str | Path, manifest: dict) -> Optional[dict]:
    """Refuse a cache in DIR made from other inputs; returns the existing manifest (or None).

    A directory with files but no manifest is refused too: it is not ours to append to.
    """
    cache_dir = Path(cache_dir)
    old = read_manifest(cache_dir)
    if old is None:
        if cache_dir.exists() and any(p.name.startswith("samples") for p in cache_dir.iterdir()):
            raise D2OError(
                f"{cache_dir}: holds samples files but no {MANIFEST}; "
                "use --overwrite to start again, or another --output"
            )
        return None
    if old.get("format_version") != manifest.get("format_version"):
        raise old_format(cache_dir, old.get("format_version"))
    diffs = manifest_differences(old, manifest)
    if diffs:
        raise D2OError(
            f"{cache_dir}: this cache was made with different inputs ({'; '.join(diffs)}). "
            "Use --overwrite to replace it, or another --output"
        )
    return old


def clear_cache(cache_dir: str | Path) -> None:
    """Remove our files from DIR (manifest, samples and shards); leave anything else alone."""
    cache_dir = Path(cache_dir)
    if not cache_dir.exists():
        return
    for p in cache_dir.iterdir():
        if p.is_file() and (
            p.name in (MANIFEST, SUMMARY)
            or (p.name.startswith("samples") and p.name.endswith(".jsonl"))
        ):
            with writing(p):
                p.unlink()


# ---------------------------------------------------------------------------------------------
# Samples: append-only writing and resume
# ---------------------------------------------------------------------------------------------


def resume_shard(path: str | Path, batches: Sequence[Sequence[str]]) -> tuple[int, int]:
    """Keep the whole batches already in PATH and cut off the rest; returns (batches kept, lines
    dropped).

    BATCHES lists the record ids of each batch in the order this shard writes them. Lines count
    only as a whole batch whose ids match, in order; anything after the last such batch (a torn
    last line from a kill, the first lines of a batch that never finished) is truncated away.
    """
    path = Path(path)
    if not path.exists():
        return 0, 0
    expected = iter([rid for ids in batches for rid in ids])
    sizes = [len(ids) for ids in batches]
    keep_bytes, done, in_batch, offset, lines, matching = 0, 0, 0, 0, 0, True
    with open(path, "rb") as f:  # streamed: a large cache need not fit in memory
        for raw in f:
            offset += len(raw)
            lines += 1
            want = next(expected, None) if matching else None
            if want is not None and raw.endswith(b"\n") and _line_id(raw) == want:
                in_batch += 1
                if in_batch == sizes[done]:
                    done, in_batch, keep_bytes = done + 1, 0, offset
            else:
                matching = False
    dropped = lines - sum(sizes[:done])
    if keep_bytes < offset:
        with writing(path), open(path, "r+b") as f:
            f.truncate(keep_bytes)
            f.flush()
            os.fsync(f.fileno())
    return done, dropped


def _line_id(line: bytes):
    try:
        obj = json.loads(line.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj.get("id") if isinstance(obj, dict) else None


class ShardWriter:
    """Append-only writer of one samples file: each batch is one write, fsynced.

    A write that fails (disk full, say) is undone: the file is cut back to its last whole
    batch and the error is one line naming it, so a rerun resumes from there.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            # One batch per write: a kill leaves whole lines or one torn tail (resume cuts it
            # off). os.write may write part of it; the rest follows, or the error.
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, size)  # frees the blocks of the half-written batch
            except OSError:
                pass  # then resume cuts the torn tail off
            err = place_error(e, self.path, RESUME_HINT)
            if err is None:
                raise
            raise err from None

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading a finished cache
# ---------------------------------------------------------------------------------------------


def read_cache(cache_dir: str | Path, require_complete: bool = True) -> tuple[dict, list[dict]]:
    """(manifest, rows) of a sample cache, rows in data order; per-rank shards are merged.

    Raises `D2OError` when the cache is missing, unfinished (`require_complete`), or a row lacks
    its samples or reference scores.
    """
    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    if manifest is None:
        raise D2OError(
            f"{cache_dir}: no sample cache here ({MANIFEST} is missing); "
            "make one with `mlx-d2o sample`"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise old_format(cache_dir, manifest.get("format_version"))
    if require_complete and not manifest.get("complete"):
        raise D2OError(
            f"{cache_dir}: the sample cache is incomplete (the run did not finish); "
            "run `mlx-d2o sample` again with the same arguments to finish it"
        )
    size, n, k = (
        int(manifest.get("world_size", 1)),
        int(manifest["records"]),
        int(manifest["num_samples"]),
    )
    shards = []
    for r in range(size):
        path = cache_dir / shard_name(r, size)
        rows = read_rows(path) if path.exists() else []
        expected = len(shard_indices(n, r, size))
        if require_complete and len(rows) != expected:
            raise D2OError(
                f"{path}: holds {len(rows)} records, expected {expected}; the cache is incomplete"
            )
        for i, row in enumerate(rows, 1):
            check_row(row, k, path, i)
        shards.append(rows)
    # Rank r holds data positions r, r+N, ...: interleave the shards back into data order.
    out = []
    for i in range(max((len(s) for s in shards), default=0)):
        for s in shards:
            if i < len(s):
                out.append(s[i])
    seen = set()
    for row in out:
        if row.get("id") in seen:
            raise D2OError(f"{cache_dir}: record {row.get('id')!r} appears twice")
        seen.add(row.get("id"))
    return manifest, out
