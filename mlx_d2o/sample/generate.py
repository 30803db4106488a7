"""K self-generated responses per prompt (D2O's π_r anchors), through `generation.generate`.

Each prompt is prefilled once and its KV cache handed to its K sequences, instead of prefilling
the same prompt K times. A batch draws from its own key, made from the run's seed and its
record ids, so a batch's samples do not depend on where it falls (resume, ranks) nor move the
caller's random state (the trainer's online refresh samples through here too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Optional

import mlx.core as mx

from ..data import Record, prompt_tokens, with_system
from ..generation import generate, make_keyed_sampler


def batch_seed(seed: int, ids: Sequence[str]) -> int:
    """A batch's seed from the run's seed and its record ids: the same batch draws the same
    samples wherever it falls, so a resumed run repeats an uninterrupted one."""
    h = hashlib.sha256(f"{seed}\n".encode() + "\n".join(map(str, ids)).encode())
    return int.from_bytes(h.digest()[:4], "little")


def _messages(r) -> list:
    return r.messages if isinstance(r, Record) else r["messages"]


def _rows(tokenizer, draws: list, caches: Optional[list], k: int, return_logps: bool) -> list:
    """One dict per prompt from its K draws (prompt-major)."""
    out = []
    for i in range(len(draws) // k):
        mine = draws[i * k : (i + 1) * k]
        g = {
            "samples": [tokenizer.decode(d.ids) for d in mine],
            "sample_tokens": [len(d.ids) + (d.finish == "stop") for d in mine],
            "sample_finish": [d.finish for d in mine],
            # The generated ids (stop token excluded): a cut sample is trained on exactly these.
            "sample_ids": [list(d.ids) for d in mine],
        }
        if return_logps:
            g["_draws"] = mine
            if caches is not None:
                g["_prompt_cache"] = caches[i]
        out.append(g)
    return out


def _record_ids(chunk, start: int) -> list:
    """The ids a batch's seed is keyed on: each record's id, else its position in the data."""
    return [r.id if isinstance(r, Record) else r.get("id", start + i) for i, r in enumerate(chunk)]


def generate_samples(
    model,
    tokenizer,
    records,
    num_samples: int,
    max_tokens: int,
    temp: float,
    top_p: float,
    batch_size: int,
    seed: int,
    system_prompt: Optional[str] = None,
    on_token: Optional[Callable[[int], None]] = None,
    return_logps: bool = False,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> list[dict]:
    """K responses per record from MODEL, batch_size records at a time.

    Args:
        records: `Record`s or dicts with `messages`.
        system_prompt: put first for generation only (the `with_system` rule).
        on_token: called with the number of tokens each decoding step produced (progress).
        on_step: instead of ON_TOKEN, (tokens produced, sequences finished) after each step;
            an exception it raises stops the batch (nothing of it is returned).
        return_logps: also return `_draws` (`generation.Draw`s: the generated ids and MODEL's
            log-probs of them), and `_prompt_cache`, the prompt's KV cache (`score_records`
            reuses both when MODEL is the reference and the prompt the same).

    Returns:
        One dict per record: `samples` (K texts), `sample_tokens` (K counts of generated tokens,
        the stop token included), `sample_finish` (K of `"stop"` / `"length"`), `sample_ids`
        (K lists of the generated token ids, the stop token excluded).
    """
    if on_step is None and on_token is not None:
        on_step = lambda tokens, finished: on_token(tokens)  # noqa: E731
    out = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        key = mx.random.key(batch_seed(seed, _record_ids(chunk, start)))
        sampler = make_keyed_sampler(temp, top_p, key)
        prompts = [
            prompt_tokens(tokenizer, with_system(_messages(r), system_prompt)) for r in chunk
        ]
        # The whole batch (prompts x K) decodes together, as one prefill and one completion batch.
        n = len(prompts) * num_samples
        draws, caches = generate(
            model,
            tokenizer,
            prompts,
            max_tokens,
            sampler,
            num_samples=num_samples,
            batch_size=n,
            prefill_batch_size=n,
            share_prompts=True,
            logprobs=True,
            on_step=on_step,
        )
        out.extend(_rows(tokenizer, draws, caches, num_samples, return_logps))
    return out
