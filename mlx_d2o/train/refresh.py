"""Online D2O: the current policy samples the coming steps' prompts again.

Online D2O ("variable reference", Duan et al. arXiv:2403.03419): every --refresh-every steps
the current policy samples the prompts of the coming steps again (π_r := π_θ), through the
sample step's library functions and the cache's sampling settings; the unchanged reference
(`step.reference_model`) scores the new samples."""

from __future__ import annotations

from ..sample import generate_samples, score_records
from .examples import replace_samples, rescore
from .step import eval_mode, reference_model


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


def refresh_window(every: int, it: int, iters: int) -> range:
    """The steps (0-based) whose batches a refresh at step IT samples for: up to the end of IT's
    window of EVERY steps, or of the run's ITERS."""
    return range(it - 1, min(iters, (it - 1) // every * every + every))


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
            rescore(model, replace_samples(examples, rows, tokenizer, max_seq_length, "online"))
    return rows
