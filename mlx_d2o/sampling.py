"""`mlx-d2o sample`: K self-generated responses per prompt (D2O's π_r anchors), scored by the
reference model, cached to disk so that training never runs a reference forward pass.

Generation uses mlx-lm's `BatchGenerator` (continuous batching). Each prompt is prefilled once
and its KV cache handed to its K sequences, instead of prefilling the same prompt K times.

Reference scores are summed log-probabilities of the response tokens given the *training*
prompt (the record's own messages, without `--system-prompt`), over the tokens that
`data.response_tokens` gives for the decoded text: exactly the tokens `train` scores with the
policy, end-of-turn included. Scoring runs each record's prompt once and its responses after it
(`score_after_prompts`). When the generator is the reference itself (no adapter, no system
prompt: the paper's offline setting), a sample whose re-tokenization is exactly the generated
ids keeps the log-probs the generator computed anyway, and the prompt caches are reused, so
only `rejected`, `chosen` and the rare re-tokenized sample cost a forward pass.
"""

from __future__ import annotations

import hashlib
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import mlx.core as mx

from . import __version__
from . import cache as sample_cache
from .data import Record, data_fingerprint, load_records, prompt_tokens, response_tokens, with_system
from .errors import D2OError
from .logprobs import batches_by_tokens, pad, score
from .generation import Draw as _Draw, generate, make_keyed_sampler, merge_caches as _merge, prefill as _prefill
from .models import adapter_layers


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


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def batch_seed(seed: int, ids: Sequence[str]) -> int:
    """A batch's seed from the run's seed and its record ids: the same batch draws the same
    samples wherever it falls, so a resumed run repeats an uninterrupted one."""
    h = hashlib.sha256(f"{seed}\n".encode() + "\n".join(map(str, ids)).encode())
    return int.from_bytes(h.digest()[:4], "little")


def _messages(r) -> list:
    return r.messages if isinstance(r, Record) else r["messages"]


def generate_samples(model, tokenizer, records, num_samples: int, max_tokens: int, temp: float, top_p: float,
                     batch_size: int, seed: int, system_prompt: Optional[str] = None,
                     on_token: Optional[Callable[[int], None]] = None, return_logps: bool = False) -> list[dict]:
    """K responses per record from MODEL, batch_size records at a time.

    Args:
        records: `Record`s or dicts with `messages`.
        system_prompt: put first for generation only (the `with_system` rule).
        on_token: called with the number of tokens each decoding step produced (progress).
        return_logps: also return `_draws`, the generated ids and MODEL's log-probs of them, and
            `_prompt_cache`, the prompt's KV cache (`score_records` reuses both when MODEL is
            the reference and the prompt the same).

    Returns:
        One dict per record: `samples` (K texts), `sample_tokens` (K counts of generated tokens,
        the stop token included), `sample_finish` (K of `"stop"` / `"length"`).
    """
    out = []
    for start in range(0, len(records), batch_size):
        chunk = records[start: start + batch_size]
        ids = [r.id if isinstance(r, Record) else r.get("id", start + i) for i, r in enumerate(chunk)]
        sampler = make_keyed_sampler(temp, top_p, mx.random.key(batch_seed(seed, ids)))
        prompts = [prompt_tokens(tokenizer, with_system(_messages(r), system_prompt)) for r in chunk]
        n = len(prompts) * num_samples
        draws, caches = generate(model, tokenizer, prompts, max_tokens, sampler, num_samples=num_samples,
                                 batch_size=n, prefill_batch_size=n, share_prompts=True, logprobs=True,
                                 on_step=None if on_token is None else (lambda t, f: on_token(t)))
        for i in range(len(chunk)):
            mine = draws[i * num_samples: (i + 1) * num_samples]
            g = {
                "samples": [tokenizer.decode(d.ids) for d in mine],
                "sample_tokens": [len(d.ids) + (d.finish == "stop") for d in mine],
                "sample_finish": [d.finish for d in mine],
            }
            if return_logps:
                g["_draws"] = mine
                if caches is not None:
                    g["_prompt_cache"] = caches[i]
            out.append(g)
    return out


# ---------------------------------------------------------------------------------------------
# Reference scoring
# ---------------------------------------------------------------------------------------------

@contextmanager
def adapters_disabled(model):
    """Run MODEL as its base: swap each LoRA/DoRA wrapper for the layer it wraps, then back.

    The reference π_ref is the base without adapter. Swapping layers in the one loaded model
    gives it exactly (no `scale = 0` rounding, and DoRA's rescaling is gone too) without loading
    the weights twice, which a 7B model on a 16 GB Mac cannot afford.
    """
    from mlx.utils import tree_unflatten

    layers = adapter_layers(model)
    if not layers:
        yield model
        return
    model.update_modules(tree_unflatten([(n, base) for n, _, base in layers]))
    try:
        yield model
    finally:
        model.update_modules(tree_unflatten([(n, wrapper) for n, wrapper, _ in layers]))


def _known_score(draw: Optional[_Draw], resp: list[int]) -> Optional[float]:
    """The generator's own score of RESP when RESP is exactly what it generated, else None."""
    if draw is None or len(resp) != len(draw.ids) + 1 or resp[:-1] != draw.ids or resp[-1] not in draw.end:
        return None
    return sum(draw.logps) + draw.end[resp[-1]]


def _merge(caches: list) -> list:
    """Per-sequence prompt caches -> one batch cache per layer (left-padded), as BatchGenerator does."""
    return [layer[0].merge(list(layer)) for layer in zip(*caches)]


def score_after_prompts(model, prompts: list[list[int]], pairs: list[tuple[int, list[int]]], batch_size: int,
                        max_tokens_per_batch: int = 8192, caches: Optional[list] = None) -> tuple[list[float], list[int]]:
    """log π(response | prompt) for (prompt index, response tokens) PAIRS, each prompt run once.

    Like `logprobs.score`, but a record's K samples, rejected and chosen share one pass over
    its prompt: every prompt but its last token is prefilled (batched) into a KV cache, and the
    responses run after copies of it. The prompt is as long as the responses in chat data, so
    this halves the work. Prompts must be at least 2 tokens long. CACHES, when given, are those
    prompts' caches already made by MODEL (the generator's), and are not changed.
    """
    caches = _prefill(model, prompts) if caches is None else caches
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    for idx in batches_by_tokens([len(r) for _, r in pairs], max_tokens_per_batch, batch_size):
        # Input = the prompt's last token then the response but its last: position t predicts response[t].
        seqs = [[prompts[pairs[j][0]][-1]] + list(pairs[j][1][:-1]) for j in idx]
        # No rounding of the length: nothing is compiled here, and padding is work.
        tokens, lengths = pad(seqs, 0, multiple=1)
        targets = pad([list(pairs[j][1]) for j in idx], 0, multiple=1)[0]
        logits = model(tokens, cache=_merge([caches[pairs[j][0]] for j in idx])).astype(mx.float32)
        token_logps = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1) - mx.logsumexp(logits, axis=-1)
        mask = mx.arange(tokens.shape[1])[None, :] < lengths[:, None]
        lp = (token_logps * mask).sum(axis=-1)
        mx.eval(lp)
        for j, a in zip(idx, lp.tolist()):
            logps[j], counts[j] = a, len(pairs[j][1])
    return logps, counts


def score_records(ref_model, tokenizer, rows: list[dict], batch_size: int, counts: Optional[dict] = None) -> list[dict]:
    """Add `ref_logps` and `ref_tokens` to each row: the reference's summed log-probs and token
    counts of its K samples, its `rejected` and (when present) its `chosen`.

    Responses are re-tokenized with `data.response_tokens` after the row's own `messages`, so
    the tokens are those `train` scores with the policy. REF_MODEL is used as given: pass the
    base model, or wrap the call in `adapters_disabled(model)`.

    A row may carry `_draws` and `_prompt_cache` (from `generate_samples(..., return_logps=True)`;
    only when the samples came from REF_MODEL itself on the same prompt): a sample whose
    re-tokenized response is exactly the generated ids plus end-of-turn then takes the log-probs
    the generator already computed (the same numbers up to float rounding), only the others are
    scored again, and the prompt is not run again. Private `_` keys are removed from the rows
    returned; COUNTS, if given, gets `scored` and `reused` added.
    """
    prompts, pairs, where, known = [], [], [], []
    for i, row in enumerate(rows):
        p = prompt_tokens(tokenizer, row["messages"])
        prompts.append(p)
        draws = row.get("_draws") or [None] * len(row["samples"])
        for j, (text, draw) in enumerate(zip(row["samples"], draws)):
            resp = response_tokens(tokenizer, row["messages"], text, p)
            lp = _known_score(draw, resp)
            if lp is None:
                pairs.append((i, resp))
                where.append((i, "samples", j))
            else:
                known.append(((i, "samples", j), lp, len(resp)))
        for name in ("rejected", "chosen"):
            if row.get(name) is not None:
                pairs.append((i, response_tokens(tokenizer, row["messages"], row[name], p)))
                where.append((i, name, None))
    if not pairs:
        logps, ntok = [], []
    elif all(len(p) > 1 for p in prompts):
        used = sorted({i for i, _ in pairs})
        slot = {i: n for n, i in enumerate(used)}
        caches = [rows[i].get("_prompt_cache") for i in used]
        logps, ntok = score_after_prompts(ref_model, [prompts[i] for i in used], [(slot[i], r) for i, r in pairs],
                                          batch_size, caches=None if None in caches else caches)
    else:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        logps, ntok = score(ref_model, [(prompts[i], r) for i, r in pairs], batch_size=batch_size, pad_id=pad_id)
    if counts is not None:
        counts["scored"] = counts.get("scored", 0) + len(pairs)
        counts["reused"] = counts.get("reused", 0) + len(known)
    out = []
    for row in rows:
        k = len(row["samples"])
        row = {key: v for key, v in row.items() if not key.startswith("_")}
        out.append({**row, "ref_logps": {"samples": [0.0] * k}, "ref_tokens": {"samples": [0] * k}})
    for (i, name, j), lp, n in list(zip(where, logps, ntok)) + known:
        if j is None:
            out[i]["ref_logps"][name], out[i]["ref_tokens"][name] = lp, n
        else:
            out[i]["ref_logps"]["samples"][j], out[i]["ref_tokens"]["samples"][j] = lp, n
    return out


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def template_hash(tokenizer) -> str:
    t = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(t.encode("utf-8")).hexdigest()[:16]


def build_manifest(args: SampleArgs, info, tokenizer, records: list[Record], world_size: int) -> dict:
    from .models import file_fingerprint

    adapter_fp = None
    if args.adapter_path is not None:
        adapter_fp = file_fingerprint(Path(args.adapter_path) / "adapters.safetensors")
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


def _barrier(group) -> mx.array:
    return mx.distributed.all_sum(mx.array(1.0), group=group, stream=mx.cpu)


def _all_ok(group, ok: bool) -> bool:
    """True when every rank says OK (one all_sum; also a barrier)."""
    if group is None or group.size() == 1:
        return ok
    bad = mx.distributed.all_sum(mx.array(0.0 if ok else 1.0), group=group, stream=mx.cpu)
    return bad.item() == 0


def _distributed_group():
    """The `mlx.launch` group, or None when running alone."""
    if not mx.distributed.is_available():
        return None
    group = mx.distributed.init()
    return group if group.size() > 1 else None


def summarize(rows: list[dict], seconds: float, generated_tokens: int, gen_seconds: float,
              score_seconds: float) -> dict:
    finishes = [f for r in rows for f in r["sample_finish"]]
    lengths = [n for r in rows for n in r["sample_tokens"]]
    return {
        "records": len(rows),
        "samples": len(finishes),
        "stopped_by_length": round(sum(f == "length" for f in finishes) / max(1, len(finishes)), 4),
        "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "seconds": round(seconds, 1),
        # This run's (and, under mlx.launch, rank 0's) generation; a resumed run counts only its part.
        "generated_tokens": generated_tokens,
        "generated_tokens_per_sec": round(generated_tokens / gen_seconds, 1) if gen_seconds else None,
        "generation_seconds": round(gen_seconds, 3),
        "scoring_seconds": round(score_seconds, 3),
    }


def sample(args: SampleArgs, progress: bool = True) -> dict:
    """Fill (or finish) the sample cache ARGS.output; returns a summary.

    Under `mlx.launch` each rank samples records rank, rank+N, ... into its own shard; rank 0
    writes the manifest and, once every rank is done, marks it complete.
    """
    from tqdm import tqdm

    from .models import load

    check_args(args)
    if float(args.temp) == 0 and int(args.num_samples) > 1:
        print("warning: --temp 0 is greedy decoding: the K samples of a prompt will be the same", file=sys.stderr)
    t0 = time.perf_counter()
    records = load_records(args.data)
    if args.limit is not None:
        records = records[: int(args.limit)]
    group = _distributed_group()
    rank, size = (group.rank(), group.size()) if group is not None else (0, 1)
    out_dir = Path(args.output)

    model, tokenizer, info = load(args.model, adapter_path=args.adapter_path, return_info=True)
    manifest = build_manifest(args, info, tokenizer, records, size)

    # Every rank checks the existing cache before anyone writes, and all agree to go on.
    error = None
    if not args.overwrite:
        try:
            old = sample_cache.check_manifest(out_dir, manifest)
            if old is not None and old.get("complete"):
                manifest["complete"] = True
        except D2OError as e:
            error = e
    if not _all_ok(group, error is None):
        raise error or D2OError(f"{out_dir}: another rank refused this cache (see its message)")
    if rank == 0:
        if args.overwrite:
            sample_cache.clear_cache(out_dir)
        if not (out_dir / sample_cache.MANIFEST).exists():
            sample_cache.write_manifest(out_dir, manifest)
    _all_ok(group, True)  # nobody opens a shard before the manifest is there (and old files are gone)

    k, bs = int(args.num_samples), int(args.batch_size)
    mine = [records[i] for i in sample_cache.shard_indices(len(records), rank, size)]
    batches = [mine[i: i + bs] for i in range(0, len(mine), bs)]
    shard = out_dir / sample_cache.shard_name(rank, size)
    done, dropped = sample_cache.resume_shard(shard, [[r.id for r in b] for b in batches])

    base_needed = args.adapter_path is not None and not adapter_layers(model)
    # A full fine-tune ("adapter" = whole weights) has no base layer to swap back: load it.
    ref_model = load(args.model)[0] if base_needed else model
    # Without adapter or system prompt the generator *is* the reference on the training prompt:
    # its log-probs of the sampled tokens are the reference scores, so keep them.
    reuse = args.adapter_path is None and not args.system_prompt

    stats = {"tokens": 0, "kept": 0, "gen": 0.0, "score": 0.0, "scored": 0, "reused": 0}
    bar = tqdm(total=len(mine), initial=sum(len(b) for b in batches[:done]), unit="prompt",
               desc=f"sample{f' rank {rank}/{size}' if size > 1 else ''}", dynamic_ncols=True,
               disable=not progress or rank != 0)

    def on_token(n):
        stats["tokens"] += n
        el = stats["gen"] + (time.perf_counter() - stats["t_batch"])
        bar.set_postfix_str(f"{stats['tokens'] / max(el, 1e-9):.1f} tok/s", refresh=False)

    with sample_cache.ShardWriter(shard) as writer:
        for batch in batches[done:]:
            stats["t_batch"] = time.perf_counter()
            gens = generate_samples(model, tokenizer, batch, k, int(args.max_tokens), float(args.temp),
                                    float(args.top_p), bs, int(args.seed), args.system_prompt, on_token,
                                    return_logps=reuse)
            t1 = time.perf_counter()
            stats["gen"] += t1 - stats["t_batch"]
            stats["kept"] += sum(n for g in gens for n in g["sample_tokens"])
            rows = [_row(r, g) for r, g in zip(batch, gens)]
            if ref_model is model:
                with adapters_disabled(model):
                    rows = score_records(model, tokenizer, rows, bs * (k + 2), stats)
            else:
                rows = score_records(ref_model, tokenizer, rows, bs * (k + 2), stats)
            stats["score"] += time.perf_counter() - t1
            writer.append(rows)
            bar.update(len(batch))
    bar.close()

    _all_ok(group, True)  # every shard is finished before rank 0 reads them
    summary = {"output": str(out_dir), "rank": rank, "world_size": size, "resumed_batches": done,
               "dropped_lines": dropped}
    if rank == 0:
        manifest["complete"] = True
        manifest["last_run_seconds"] = round(time.perf_counter() - t0, 1)
        sample_cache.write_manifest(out_dir, manifest)
        _, all_rows = sample_cache.read_cache(out_dir)
        summary.update(summarize(all_rows, time.perf_counter() - t0, stats["kept"], stats["gen"], stats["score"]))
        summary.update(responses_scored=stats["scored"], sample_scores_from_generation=stats["reused"])
    _all_ok(group, True)
    return summary
