"""`mlx-d2o sample` as a library call: `sample(SampleArgs(...))` fills (or finishes) a cache.

Records are generated batch by batch (`generate.generate_samples`), scored by the reference
(`scoring.score_records`: the base, adapters switched off) and appended to the cache
(`cache.ShardWriter`); a killed run resumes where it stopped and ends with the same cache.
Under `mlx.launch` each rank samples records rank, rank+N, ... into its own shard.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import __version__
from ..adapters import ADAPTERS_FILE, adapter_layers, adapters_disabled
from ..data import Record, data_fingerprint, load_records
from ..distributed import Shard
from ..errors import D2OError
from . import cache as sample_cache
from .generate import generate_samples
from .scoring import score_records


@dataclass
class SampleArgs:
    """Settings of `mlx-d2o sample` (flag names as in `mlx_lm`, underscores for dashes).

    Args:
        model: embedded name, `.gguf`, mlx-lm directory or Hub id; also the reference π_ref.
        data: records file (`prompt`/`messages`, `rejected`, optional `chosen`).
        output: cache directory.
        adapter_path: adapter to generate with (π_r = adapted model); scoring always uses the base.
        num_samples: K, responses per prompt (the paper uses 11).
        max_tokens: most tokens of a response before its end-of-turn; longer ones are cut and
            marked `"length"` (the cached scores then cover the cut text plus end-of-turn, as
            `train` tokenizes it).
        temp, top_p: sampling parameters (`mlx_lm.sample_utils.make_sampler`).
        batch_size: prompts per generation batch (batch_size x K sequences decode together).
        seed: same seed and settings give the same samples, resumed or not.
        system_prompt: put first while generating only; the cached prompt is the record's own.
        limit: only the first `limit` records.
        overwrite: replace a cache made with other inputs instead of refusing it.
    """

    model: str
    data: str
    output: str
    adapter_path: Optional[str] = None
    num_samples: int = 11
    max_tokens: int = 256
    temp: float = 1.0
    top_p: float = 1.0
    batch_size: int = 4
    seed: int = 0
    system_prompt: Optional[str] = None
    limit: Optional[int] = None
    overwrite: bool = False


def check_args(args: SampleArgs) -> None:
    def bad(flag, msg):
        raise D2OError(f"--{flag}: {msg}")

    if args.num_samples is None or int(args.num_samples) < 1:
        bad("num-samples", f"K must be at least 1, got {args.num_samples}")
    if int(args.max_tokens) < 1:
        bad("max-tokens", f"must be at least 1, got {args.max_tokens}")
    if int(args.batch_size) < 1:
        bad("batch-size", f"must be at least 1, got {args.batch_size}")
    if float(args.temp) < 0:
        bad("temp", f"must be >= 0, got {args.temp}")
    if not 0 < float(args.top_p) <= 1:
        bad("top-p", f"must be in (0, 1], got {args.top_p}")
    if args.limit is not None and int(args.limit) < 1:
        bad("limit", f"must be at least 1, got {args.limit}")
    if not args.data:
        bad("data", "a records file is required")
    if not args.output:
        bad("output", "a cache directory is required")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        bad("output", f"{args.output} is a file, not a cache directory")


def template_hash(tokenizer) -> str:
    t = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(t.encode("utf-8")).hexdigest()[:16]


def build_manifest(
    args: SampleArgs, info, tokenizer, records: list[Record], world_size: int
) -> dict:
    from ..models import file_fingerprint

    adapter_fp = None
    if args.adapter_path is not None:
        adapter_fp = file_fingerprint(Path(args.adapter_path) / ADAPTERS_FILE)
    return {
        "format_version": sample_cache.FORMAT_VERSION,
        "tool": f"mlx-d2o {__version__}",
        "model": info.name,
        "model_path": str(info.path),
        "model_fingerprint": info.fingerprint,
        "dequantized": info.dequantized,
        "adapter_path": str(args.adapter_path) if args.adapter_path else None,
        "adapter_fingerprint": adapter_fp,
        "data": str(args.data),
        "data_fingerprint": data_fingerprint(records),
        "records": len(records),
        "limit": args.limit,
        "num_samples": int(args.num_samples),
        "max_tokens": int(args.max_tokens),
        "temp": float(args.temp),
        "top_p": float(args.top_p),
        "seed": int(args.seed),
        # Part of the identity: the batch sets each batch's seed and shapes its arithmetic.
        "batch_size": int(args.batch_size),
        "system_prompt": args.system_prompt,
        "chat_template_hash": template_hash(tokenizer),
        "eos_token_ids": sorted(int(t) for t in tokenizer.eos_token_ids),
        "world_size": world_size,
        "complete": False,
    }


def _row(record: Record, gen: dict) -> dict:
    row = {"id": record.id, "messages": record.messages, "rejected": record.rejected}
    if record.chosen is not None:
        row["chosen"] = record.chosen
    # Other fields of the record (a category, say) ride along for evaluation by group.
    row.update({k: v for k, v in record.extra.items() if k not in row})
    row.update(gen)
    return row


def summarize(
    rows: list[dict],
    seconds: float,
    generated_tokens: int,
    gen_seconds: float,
    score_seconds: float,
) -> dict:
    finishes = [f for r in rows for f in r["sample_finish"]]
    lengths = [n for r in rows for n in r["sample_tokens"]]
    tok_per_sec = round(generated_tokens / gen_seconds, 1) if gen_seconds else None
    return {
        "records": len(rows),
        "samples": len(finishes),
        "stopped_by_length": round(sum(f == "length" for f in finishes) / max(1, len(finishes)), 4),
        "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "seconds": round(seconds, 1),
        # This run's (and, under mlx.launch, rank 0's) generation; a resumed run counts only
        # its part.
        "generated_tokens": generated_tokens,
        "generated_tokens_per_sec": tok_per_sec,
        "generation_seconds": round(gen_seconds, 3),
        "scoring_seconds": round(score_seconds, 3),
    }


def _records(args: SampleArgs) -> list[Record]:
    if float(args.temp) == 0 and int(args.num_samples) > 1:
        print(
            "warning: --temp 0 is greedy decoding: the K samples of a prompt will be the same",
            file=sys.stderr,
        )
    records = load_records(args.data)
    return records if args.limit is None else records[: int(args.limit)]


def _open_cache(args: SampleArgs, out_dir: Path, manifest: dict, ranks: Shard) -> None:
    """Every rank checks the existing cache before anyone writes, and all agree to go on; rank 0
    then clears it (--overwrite) or writes the manifest of a new one. A finished cache keeps
    `complete` in MANIFEST."""
    error = None
    if not args.overwrite:
        try:
            old = sample_cache.check_manifest(out_dir, manifest)
            if old is not None and old.get("complete"):
                manifest["complete"] = True
        except D2OError as e:
            error = e
    if not ranks.all_ok(error is None):
        raise error or D2OError(f"{out_dir}: another rank refused this cache (see its message)")
    if ranks.rank == 0:
        if args.overwrite:
            sample_cache.clear_cache(out_dir)
        if not (out_dir / sample_cache.MANIFEST).exists():
            sample_cache.write_manifest(out_dir, manifest)
    ranks.all_ok(True)  # nobody opens a shard before the manifest is there (and old files are gone)


def _reference(args: SampleArgs, model):
    """The model that scores: MODEL itself (its adapters switched off while scoring) or, for a
    full fine-tune ("adapter" = whole weights, no base layer to swap back), the base loaded."""
    from ..models import load

    base_needed = args.adapter_path is not None and not adapter_layers(model)
    return load(args.model)[0] if base_needed else model


def _score(model, ref_model, tokenizer, rows: list[dict], batch_size: int, stats: dict) -> list:
    if ref_model is model:
        with adapters_disabled(model):
            return score_records(model, tokenizer, rows, batch_size, stats)
    return score_records(ref_model, tokenizer, rows, batch_size, stats)


def _fill_shard(args, model, tokenizer, batches: list, done: int, path: Path, bar) -> dict:
    """Generate, score and append BATCHES[DONE:] to the shard at PATH; returns the run's counts
    and timings (`tokens` decoded, `kept` tokens, `gen` and `score` seconds, `scored`,
    `reused`)."""
    k, bs = int(args.num_samples), int(args.batch_size)
    ref_model = _reference(args, model)
    # Without adapter or system prompt the generator *is* the reference on the training prompt:
    # its log-probs of the sampled tokens are the reference scores, so keep them.
    reuse = args.adapter_path is None and not args.system_prompt
    stats = {"tokens": 0, "kept": 0, "gen": 0.0, "score": 0.0, "scored": 0, "reused": 0}

    def on_token(n):
        stats["tokens"] += n
        el = stats["gen"] + (time.perf_counter() - stats["t_batch"])
        bar.set_postfix_str(f"{stats['tokens'] / max(el, 1e-9):.1f} tok/s", refresh=False)

    settings = dict(
        num_samples=k,
        max_tokens=int(args.max_tokens),
        temp=float(args.temp),
        top_p=float(args.top_p),
        batch_size=bs,
        seed=int(args.seed),
        system_prompt=args.system_prompt,
        on_token=on_token,
        return_logps=reuse,
    )
    with sample_cache.ShardWriter(path) as writer:
        for batch in batches[done:]:
            stats["t_batch"] = time.perf_counter()
            gens = generate_samples(model, tokenizer, batch, **settings)
            t1 = time.perf_counter()
            stats["gen"] += t1 - stats["t_batch"]
            stats["kept"] += sum(n for g in gens for n in g["sample_tokens"])
            rows = [_row(r, g) for r, g in zip(batch, gens)]
            rows = _score(model, ref_model, tokenizer, rows, bs * (k + 2), stats)
            stats["score"] += time.perf_counter() - t1
            writer.append(rows)
            bar.update(len(batch))
    return stats


def _finish(out_dir: Path, manifest: dict, t0: float, stats: dict) -> dict:
    """Rank 0, once every shard is finished: mark the cache complete; the run's summary."""
    manifest["complete"] = True
    manifest["last_run_seconds"] = round(time.perf_counter() - t0, 1)
    sample_cache.write_manifest(out_dir, manifest)
    _, all_rows = sample_cache.read_cache(out_dir)
    seconds = time.perf_counter() - t0
    out = summarize(all_rows, seconds, stats["kept"], stats["gen"], stats["score"])
    out.update(responses_scored=stats["scored"], sample_scores_from_generation=stats["reused"])
    return out


def sample(args: SampleArgs, progress: bool = True) -> dict:
    """Fill (or finish) the sample cache ARGS.output; returns a summary.

    Under `mlx.launch` each rank samples records rank, rank+N, ... into its own shard; rank 0
    writes the manifest and, once every rank is done, marks it complete.
    """
    from tqdm import tqdm

    from ..models import load

    check_args(args)
    t0 = time.perf_counter()
    records = _records(args)
    ranks = Shard.current()
    rank, size = ranks.rank, ranks.size
    out_dir = Path(args.output)
    model, tokenizer, info = load(args.model, adapter_path=args.adapter_path, return_info=True)
    manifest = build_manifest(args, info, tokenizer, records, size)
    _open_cache(args, out_dir, manifest, ranks)

    bs = int(args.batch_size)
    mine = [records[i] for i in sample_cache.shard_indices(len(records), rank, size)]
    batches = [mine[i : i + bs] for i in range(0, len(mine), bs)]
    shard = out_dir / sample_cache.shard_name(rank, size)
    done, dropped = sample_cache.resume_shard(shard, [[r.id for r in b] for b in batches])
    bar = tqdm(
        total=len(mine),
        initial=sum(len(b) for b in batches[:done]),
        unit="prompt",
        desc=f"sample{f' rank {rank}/{size}' if size > 1 else ''}",
        dynamic_ncols=True,
        disable=not progress or rank != 0,
    )
    stats = _fill_shard(args, model, tokenizer, batches, done, shard, bar)
    bar.close()

    ranks.all_ok(True)  # every shard is finished before rank 0 reads them
    summary = {"output": str(out_dir), "rank": rank, "world_size": size, "resumed_batches": done}
    summary["dropped_lines"] = dropped
    if rank == 0:
        summary.update(_finish(out_dir, manifest, t0, stats))
    ranks.all_ok(True)
    return summary
