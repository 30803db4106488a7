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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import __version__, adapters
from ..adapters import ADAPTERS_FILE, Adapter, as_reference
from ..data import Record, data_fingerprint, load_records
from ..distributed import Shard
from ..errors import D2OError
from ..io import RunLock
from ..signals import Interrupted, Stop, graceful_stop
from . import cache as sample_cache
from .checks import (
    check_args,
    check_memory,
    leftovers_to_remove,
    long_prompts,
    make_output,
    remove_if_only,
)
from .generate import generate_samples
from .progress import Progress, summarize
from .scoring import computes_in_float32, score_records


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
            marked `"length"` (scored and trained as the prefix generated, without
            end-of-turn: `cache.sample_responses`).
        temp, top_p: sampling parameters (`mlx_lm.sample_utils.make_sampler`).
        batch_size: prompts per generation batch (batch_size x K sequences decode together).
        seed: same seed and settings give the same samples, resumed or not.
        system_prompt: put first while generating only; the cached prompt is the record's own.
        limit: only the first `limit` records.
        overwrite: replace a cache made with other inputs instead of refusing it.
        skip_long: skip (and count) prompts that leave no room for MAX_TOKENS in the model's
            context, instead of refusing the data.
        dequantize: None = on the CPU yes (as `load`); False keeps a quantized or half-precision
            model as it is (as `train --keep-quantized` will train it, so that the cached
            reference matches the step-0 policy).
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
    skip_long: bool = False
    dequantize: Optional[bool] = None


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


def _records(args: SampleArgs) -> list[Record]:
    if float(args.temp) == 0 and int(args.num_samples) > 1:
        print(
            "warning: --temp 0 is greedy decoding: the K samples of a prompt will be the same",
            file=sys.stderr,
        )
    records = load_records(args.data)
    return records if args.limit is None else records[: int(args.limit)]


def _open_cache(args: SampleArgs, out_dir: Path, manifest: dict, shard: Shard) -> None:
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
    if not shard.all_ok(error is None):
        raise error or D2OError(f"{out_dir}: another rank refused this cache (see its message)")
    if shard.rank == 0:
        if args.overwrite:
            sample_cache.clear_cache(out_dir)
        if not (out_dir / sample_cache.MANIFEST).exists():
            sample_cache.write_manifest(out_dir, manifest)
    shard.all_ok(True)  # nobody opens a shard before the manifest is there (and old files are gone)


def _reference(adapter: Optional[Adapter], model):
    """The block in which MODEL scores as the reference (`adapters.as_reference`): its adapter
    switched off, a full fine-tune's base weights put back; the policy's own weights, so the
    reference has the precision --dequantize gave the generator."""
    return adapter.disabled() if adapter is not None else as_reference(model)


def _score(model, adapter, tokenizer, rows: list[dict], batch_size: int, stats: dict) -> list:
    with _reference(adapter, model):
        return score_records(model, tokenizer, rows, batch_size, stats)


class _Stopped(Exception):
    """Raised inside the decoding loop once a stop is requested: the batch is dropped."""


def _settings(args, on_step, reuse: bool) -> dict:
    return dict(
        num_samples=int(args.num_samples),
        max_tokens=int(args.max_tokens),
        temp=float(args.temp),
        top_p=float(args.top_p),
        batch_size=int(args.batch_size),
        seed=int(args.seed),
        system_prompt=args.system_prompt,
        on_step=on_step,
        return_logps=reuse,
    )


def _fill_shard(
    args, model, adapter, tokenizer, batches, done, path: Path, prog: Progress, stop
) -> dict:
    """Generate, score and append BATCHES[DONE:] to the shard at PATH; returns the run's counts
    and timings (`kept` tokens, `gen` and `score` seconds, `scored`, `reused`, and `batches`
    in the shard). On a stop request the batch being generated is dropped; one being scored
    is written first."""
    k, bs = int(args.num_samples), int(args.batch_size)
    # Without adapter or system prompt the generator *is* the reference on the training prompt:
    # its log-probs of the sampled tokens are the reference scores, so keep them; in float32
    # only: in bf16 / fp16 mlx-lm's generator takes its log-softmax in the model's dtype, not
    # over float32 logits as training does, and differs by up to tenths of a nat per sample.
    reuse = args.adapter_path is None and not args.system_prompt and computes_in_float32(model)
    stats = {"kept": 0, "gen": 0.0, "score": 0.0, "scored": 0, "reused": 0, "batches": done}

    def on_step(tokens, finished):
        if stop.requested:
            raise _Stopped
        prog.on_step(tokens, finished)

    settings = _settings(args, on_step, reuse)
    with sample_cache.ShardWriter(path) as writer:
        for batch in batches[done:]:
            prog.start_batch(len(batch))
            try:
                gens = generate_samples(model, tokenizer, batch, **settings)
            except _Stopped:
                stats["dropped"] = True
                break
            stats["gen"] += prog.generated()
            t1 = time.perf_counter()
            stats["kept"] += sum(n for g in gens for n in g["sample_tokens"])
            rows = [_row(r, g) for r, g in zip(batch, gens)]
            rows = _score(model, adapter, tokenizer, rows, bs * (k + 2), stats)
            stats["score"] += time.perf_counter() - t1
            writer.append(rows)
            prog.end_batch()
            stats["batches"] += 1
            if stop.requested:
                break
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


def _lock(stack: ExitStack, out_dir: Path, shard: Shard) -> None:
    """Make the cache folder and, on rank 0, hold its lock for the run (a second run on the
    same cache is refused at once, naming the first); every rank learns of a refusal."""
    error = None
    try:
        make_output(out_dir)
        if shard.rank == 0:
            with sample_cache.writing(out_dir / RunLock.NAME):
                stack.enter_context(RunLock(out_dir, "sample run"))
    except D2OError as e:
        error = e
    if not shard.all_ok(error is None):
        raise error or D2OError(
            f"{out_dir}: another rank could not open this cache (see its message)"
        )


def _bar(total: int, initial: int, shard: Shard, progress: bool):
    from tqdm import tqdm

    rank, size = shard.rank, shard.size
    return tqdm(
        total=total,
        initial=initial,
        desc=f"sample{f' rank {rank}/{size}' if size > 1 else ''}",
        # Fractions of a prompt: the bar moves with every decoding step of a batch.
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} prompts "
        "[{elapsed}<{remaining}{postfix}]",
        dynamic_ncols=True,
        disable=not progress or rank != 0,
    )


def sample(args: SampleArgs, progress: bool = True) -> dict:
    """Fill (or finish) the sample cache ARGS.output; returns a summary (also written to
    `summary.json` there).

    Under `mlx.launch` each rank samples records rank, rank+N, ... into its own shard; rank 0
    writes the manifest and, once every rank is done, marks it complete. A second run on the
    same cache is refused; SIGINT / SIGTERM stop after the batch in progress (`Interrupted`),
    and the same call again resumes.
    """
    check_args(args)
    t0 = time.perf_counter()
    records = _records(args)
    shard = Shard.current()
    out_dir = Path(args.output)
    made = leftovers_to_remove(out_dir)
    try:
        with ExitStack() as stack:
            _lock(stack, out_dir, shard)
            stop = stack.enter_context(graceful_stop())
            return _run(args, records, shard, out_dir, stop, progress, t0)
    except D2OError:
        remove_if_only(out_dir, made)  # a run refused before writing leaves nothing behind
        raise


def _load(args: SampleArgs, records: list[Record], size: int):
    """(model, tokenizer, manifest, records kept): prompts too long for the context are refused
    (or skipped) from the tokenizer alone, before the weights are loaded."""
    from ..models import load, load_tokenizer, precision

    if args.adapter_path is not None:  # its files first: a mistake there is one line, no work
        adapters.check_files(args.adapter_path)
    tokenizer, context = load_tokenizer(args.model)
    kept, skipped = long_prompts(
        records, tokenizer, context, int(args.max_tokens), args.system_prompt, args.skip_long
    )
    if not kept:
        raise D2OError(f"{args.data}: every prompt is too long for --max-tokens {args.max_tokens}")
    check_memory(args, tokenizer, kept)
    model, tokenizer, info = load(args.model, dequantize=args.dequantize, return_info=True)
    manifest = build_manifest(args, info, tokenizer, records, size)
    # The reference is this base, before the adapter goes on (`_reference`): its precision is
    # what train compares the policy's with.
    manifest.update(records=len(kept), skipped_long=skipped, reference_precision=precision(model))
    # The adapter goes on the loaded base in place (as eval puts it), so that switching it off
    # gives the reference in the generator's precision, with no second model.
    adapter = Adapter(model, args.adapter_path) if args.adapter_path is not None else None
    return model, adapter, tokenizer, manifest, kept


def _run(args, records, shard: Shard, out_dir: Path, stop: Stop, progress: bool, t0) -> dict:
    rank, size = shard.rank, shard.size
    model, adapter, tokenizer, manifest, records = _load(args, records, size)
    _open_cache(args, out_dir, manifest, shard)

    bs = int(args.batch_size)
    mine = [records[i] for i in sample_cache.shard_indices(len(records), rank, size)]
    batches = [mine[i : i + bs] for i in range(0, len(mine), bs)]
    shard_file = out_dir / sample_cache.shard_name(rank, size)
    done, dropped = sample_cache.resume_shard(shard_file, [[r.id for r in b] for b in batches])
    bar = _bar(len(mine), sum(len(b) for b in batches[:done]), shard, progress)
    try:
        prog = Progress(bar, int(args.num_samples), int(args.max_tokens))
        stats = _fill_shard(args, model, adapter, tokenizer, batches, done, shard_file, prog, stop)
    finally:
        bar.close()
    if stats["batches"] < len(batches):
        saved = sum(len(b) for b in batches[: stats["batches"]])
        dropped_batch = " (the batch in progress was dropped)" if stats.get("dropped") else ""
        raise Interrupted(
            f"{stop.signal_name}: stopped with {saved} of {len(mine)} prompts in {out_dir}"
            f"{dropped_batch}; run the same command again to resume"
        )

    shard.all_ok(True)  # every shard is finished before rank 0 reads them
    summary = {"output": str(out_dir), "rank": rank, "world_size": size, "resumed_batches": done}
    summary.update(dropped_lines=dropped, skipped_long=manifest["skipped_long"])
    if rank == 0:
        summary.update(_finish(out_dir, manifest, t0, stats))
        sample_cache.write_summary(out_dir, summary)
    shard.all_ok(True)
    return summary
