"""Online D2O ("variable reference", Duan et al. arXiv:2403.03419): every --refresh-every steps
the current policy samples the prompts of the coming steps again (π_r := π_θ), through the
sample step's library functions and the cache's sampling settings; the unchanged reference
(`step.reference_model`) scores the new samples."""

from __future__ import annotations

from .. import data as D
from ..sample import generate_samples, score_records
from ..sample.cache import sample_responses
from .examples import batch_at, rescore
from .step import eval_mode, reference_model, step_seed


def refresh_due(every: int, it: int, start: int) -> bool:
    """True at the first step of each refresh window, and at the first step of a resumed run
    (which may start inside a window)."""
    return bool(every) and ((it - 1) % every == 0 or it == start + 1)


def refresh_note(every: int, start: int, say) -> None:
    """A run resumed inside a refresh window samples the rest of that window again."""
    if every and start % every:
        say(
            "note: resuming between two refreshes; samples for the rest of this window are "
            "generated again (the curve matches an uninterrupted run exactly when --save-every "
            "is a multiple of --refresh-every)"
        )


def refresh_window(run, it: int) -> None:
    """Sample again, with the policy of step IT, for this rank's share of the batches up to the
    end of IT's refresh window; rank 0 keeps its rows in OUT/online/ for inspection."""
    args, shard, every = run.args, run.shard, run.args.refresh_every
    upto = min(run.iters, (it - 1) // every * every + every)
    mine = {
        i for j in range(it - 1, upto) for i in shard.local(batch_at(run.batches, j, args.seed))
    }
    examples = [run.examples[i] for i in sorted(mine)]
    seed = step_seed(args.seed, it, shard.rank)
    fresh = refresh_samples(
        run.model, run.tokenizer, examples, run.manifest, seed, run.ref_params, args.max_seq_length
    )
    if shard.rank == 0:  # what the policy sampled (rank 0's share under mlx.launch)
        D.write_jsonl_atomic(run.out / "online" / f"samples-step{it:07d}.jsonl", fresh)


def refresh_samples(
    model, tokenizer, examples: list, manifest: dict, seed: int, ref_params, max_seq_length: int
) -> list:
    """New samples from the current MODEL for EXAMPLES, scored by the reference; updates
    EXAMPLES in place and returns the new rows (the cache's format)."""
    if not examples:
        return []
    batch = int(manifest.get("batch_size") or 8)
    with eval_mode(model):
        new = generate_samples(
            model,
            tokenizer,
            [e.row for e in examples],
            num_samples=len(examples[0].samples),
            max_tokens=int(manifest.get("max_tokens") or 256),
            temp=float(manifest.get("temp", 1.0)),
            top_p=float(manifest.get("top_p", 1.0)),
            batch_size=batch,
            seed=seed,
            system_prompt=manifest.get("system_prompt"),
        )
        keep = ("id", "messages", "rejected", "chosen")
        rows = [{**{k: e.row[k] for k in keep if k in e.row}, **g} for e, g in zip(examples, new)]
        with reference_model(model, ref_params):
            rows = score_records(model, tokenizer, rows, batch)
            cut = [
                c
                for e, row in zip(examples, rows)
                for c in _take(e, row, tokenizer, max_seq_length)
            ]
            rescore(model, cut)
    return rows


def _take(ex, row: dict, tokenizer, max_seq_length: int) -> list:
    """Put ROW's samples and their reference scores into EX; returns the samples cut to
    --max-seq-length, whose scores are for the whole response (to `rescore`)."""
    room = max_seq_length - len(ex.prompt)
    ex.samples, ex.ref_samples, cut = [], [], []
    # The tokens `score_records` scored: a sample cut at --max-tokens without end-of-turn.
    for k, ids in enumerate(sample_responses(tokenizer, row, ex.prompt)):
        ex.samples.append(ids[:room])
        ex.ref_samples.append(float(row["ref_logps"]["samples"][k]))
        if len(ids) > room:
            cut.append((ex, "samples", k))
    ex.row = {**ex.row, **row}
    return cut
