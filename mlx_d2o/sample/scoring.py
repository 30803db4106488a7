"""Reference scores of the cache: log π_ref(y|x) of each sample, `rejected` and `chosen`.

Scores are summed log-probabilities of the response tokens given the *training* prompt (the
record's own messages, without `--system-prompt`), over the tokens that `cache.sample_responses`
gives: exactly the tokens `train` scores with the policy (a finished sample through its
end-of-turn, a cut one as the prefix it was generated as). Scoring runs each record's prompt
once and its responses after it (`score_after_prompts`). When the generator is the reference
itself (no adapter, no system prompt: the paper's offline setting), a sample whose tokens are
exactly the generated ids (a cut one always) keeps the log-probs the generator computed anyway
(`known_score`), and the prompt caches are reused, so only `rejected`, `chosen` and the rare
re-tokenized sample cost a forward pass.

Only for a model that computes in float32, though: in bfloat16 / float16 (Metal's default for
such models, and QLoRA's), every response is scored by `score_like_training`, the forward pass
and float32 log-softmax that `train` scores the policy with, so that the step-0 policy equals
the cached reference (loss ln 2) instead of differing by up to tenths of a nat per sample.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import numpy as np

from ..data import prompt_tokens, response_tokens
from ..generation import Draw, merge_caches, prefill
from ..logprobs import batches_by_tokens, pad, score
from ..shared_prompt import fallback_note, pack, shared_logps, supports
from .cache import sample_responses


def computes_in_float32(model) -> bool:
    """Whether every floating-point parameter of MODEL is float32 (packed quantized weights
    aside), so that its logits are float32 from end to end.

    Then the generator's log-probs, a pass after a cached prompt and training's full forward
    (`logprobs.sequence_logps`) agree to float32 rounding. In bfloat16 / float16 they do not:
    mlx-lm's generator takes the log-softmax in the model's dtype (errors of hundredths of a
    nat per token), and passes of another shape may round differently; the reference is then
    scored with training's own function.
    """
    from mlx.utils import tree_flatten

    return all(
        v.dtype == mx.float32
        for _, v in tree_flatten(model.parameters())
        if mx.issubdtype(v.dtype, mx.floating)
    )


def known_score(draw: Optional[Draw], resp: list[int]) -> Optional[float]:
    """The generator's own score of RESP when RESP is exactly what it generated (a cut sample's
    prefix) or that and one end-of-turn id, else None."""
    if draw is None or resp[: len(draw.ids)] != draw.ids:
        return None
    if len(resp) == len(draw.ids):
        return sum(draw.logps)
    if len(resp) != len(draw.ids) + 1 or resp[-1] not in draw.end:
        return None
    return sum(draw.logps) + draw.end[resp[-1]]


def score_after_prompts(
    model,
    prompts: list[list[int]],
    pairs: list[tuple[int, list[int]]],
    batch_size: int,
    max_tokens_per_batch: int = 8192,
    caches: Optional[list] = None,
) -> tuple[list[float], list[int]]:
    """log π(response | prompt) for (prompt index, response tokens) PAIRS, each prompt run once.

    Like `logprobs.score`, but a record's K samples, rejected and chosen share one pass over
    its prompt: every prompt but its last token is prefilled (batched) into a KV cache, and the
    responses run after copies of it. The prompt is as long as the responses in chat data, so
    this halves the work. Prompts must be at least 2 tokens long. CACHES, when given, are those
    prompts' caches already made by MODEL (the generator's), and are not changed.
    """
    caches = prefill(model, prompts) if caches is None else caches
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    for idx in batches_by_tokens([len(r) for _, r in pairs], max_tokens_per_batch, batch_size):
        # Input = the prompt's last token then the response but its last: position t predicts
        # response[t].
        seqs = [[prompts[pairs[j][0]][-1]] + list(pairs[j][1][:-1]) for j in idx]
        # No rounding of the length: nothing is compiled here, and padding is work.
        tokens, _ = pad(seqs, 0, multiple=1)
        targets = np.zeros(tokens.shape, dtype=np.int32)
        for row, j in enumerate(idx):
            targets[row, : len(pairs[j][1])] = pairs[j][1]
        cache = merge_caches([caches[pairs[j][0]] for j in idx])
        logits = model(tokens, cache=cache).astype(mx.float32)
        picked = mx.take_along_axis(logits, mx.array(targets)[..., None], axis=-1).squeeze(-1)
        token_logps = picked - mx.logsumexp(logits, axis=-1)
        # Only the response's own tokens count: an empty response (its one input, the prompt's
        # last token, predicts nothing) scores 0, not log π(padding | prompt).
        n = mx.array([len(pairs[j][1]) for j in idx])
        mask = mx.arange(tokens.shape[1])[None, :] < n[:, None]
        lp = (token_logps * mask).sum(axis=-1)
        mx.eval(lp)
        for j, a in zip(idx, lp.tolist()):
            logps[j], counts[j] = a, len(pairs[j][1])
    return logps, counts


def score_like_training(
    model,
    prompts: list[list[int]],
    pairs: list[tuple[int, list[int]]],
    batch_size: int,
    pad_id: int = 0,
    max_tokens_per_batch: int = 8192,
) -> tuple[list[float], list[int]]:
    """log π(response | prompt) for (prompt index, response tokens) PAIRS through the very
    forward pass `train` scores the policy with: `shared_prompt.shared_logps` (each prompt
    once, float32 log-softmax at the response positions) for the models it supports, else
    `logprobs.sequence_logps` on whole sequences (`logprobs.score`).

    For models that do not compute in float32, so that the cached reference equals the step-0
    policy: the generator's log-probs and mlx-lm's cached-prompt pass round differently there.
    """
    if not supports(model):
        whole = [(prompts[i], r) for i, r in pairs]
        return score(model, whole, batch_size=batch_size, pad_id=pad_id)
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    for idx in batches_by_tokens([len(r) for _, r in pairs], max_tokens_per_batch, batch_size):
        slot = {g: n for n, g in enumerate(sorted({pairs[j][0] for j in idx}))}
        arrays = pack(
            [prompts[g] for g in slot],
            [pairs[j][1] for j in idx],
            [slot[pairs[j][0]] for j in idx],
            pad_id,
        )
        lp, _ = shared_logps(model, arrays)
        mx.eval(lp)
        for j, a in zip(idx, lp.tolist()):
            logps[j], counts[j] = a, len(pairs[j][1])
    return logps, counts


def _responses(tokenizer, rows: list[dict]) -> tuple[list, list, list, list]:
    """(prompts, pairs to score, where each pair goes, known scores) of ROWS.

    A pair is (row index, response tokens); its place is (row index, name, sample index or
    None); a known score is (place, log-prob, token count)."""
    prompts, pairs, where, known = [], [], [], []
    for i, row in enumerate(rows):
        p = prompt_tokens(tokenizer, row["messages"])
        prompts.append(p)
        draws = row.get("_draws") or [None] * len(row["samples"])
        for j, (resp, draw) in enumerate(zip(sample_responses(tokenizer, row, p), draws)):
            lp = known_score(draw, resp)
            if lp is None:
                pairs.append((i, resp))
                where.append((i, "samples", j))
            else:
                known.append(((i, "samples", j), lp, len(resp)))
        for name in ("rejected", "chosen"):
            if row.get(name) is not None:
                pairs.append((i, response_tokens(tokenizer, row["messages"], row[name], p)))
                where.append((i, name, None))
    return prompts, pairs, where, known


def _score_pairs(ref_model, tokenizer, rows, prompts, pairs, batch_size) -> tuple[list, list]:
    """Scores of PAIRS: after shared prompts when every prompt has 2 tokens or more (reusing the
    generator's prompt caches when every row has one), the model computes in float32 and its
    RoPE allows it (`shared_prompt.fallback_note`); else
    as whole sequences, through the function training scores the policy with."""
    if not pairs:
        return [], []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not computes_in_float32(ref_model):
        return score_like_training(ref_model, prompts, pairs, batch_size, pad_id)
    # (A RoPE the shared-prompt path cannot reproduce, `fallback_note`, is not run after
    # cached prompts either: dynamic NTK's base depends on the length, and takes no per-row
    # offset.)
    if all(len(p) > 1 for p in prompts) and fallback_note(ref_model) is None:
        used = sorted({i for i, _ in pairs})
        slot = {i: n for n, i in enumerate(used)}
        caches = [rows[i].get("_prompt_cache") for i in used]
        return score_after_prompts(
            ref_model,
            [prompts[i] for i in used],
            [(slot[i], r) for i, r in pairs],
            batch_size,
            caches=None if None in caches else caches,
        )
    whole = [(prompts[i], r) for i, r in pairs]
    return score(ref_model, whole, batch_size=batch_size, pad_id=pad_id)


def score_records(
    ref_model, tokenizer, rows: list[dict], batch_size: int, counts: Optional[dict] = None
) -> list[dict]:
    """Add `ref_logps` and `ref_tokens` to each row: the reference's summed log-probs and token
    counts of its K samples, its `rejected` and (when present) its `chosen`.

    Responses are the tokens of `cache.sample_responses` (samples: a cut one is its generated
    `sample_ids`, no end-of-turn) and `data.response_tokens` (rejected, chosen) after the row's
    own `messages`, so the tokens are those `train` scores with the policy. REF_MODEL is used as given: pass the
    base model, or wrap the call in `adapters_disabled(model)`.

    A row may carry `_draws` and `_prompt_cache` (from `generate_samples(..., return_logps=True)`;
    only when the samples came from REF_MODEL itself on the same prompt): a sample whose
    response is exactly the generated ids (cut) or those plus end-of-turn then takes the log-probs
    the generator already computed (the same numbers up to float rounding), only the others are
    scored again, and the prompt is not run again. Private `_` keys are removed from the rows
    returned; COUNTS, if given, gets `scored` and `reused` added.
    """
    prompts, pairs, where, known = _responses(tokenizer, rows)
    logps, ntok = _score_pairs(ref_model, tokenizer, rows, prompts, pairs, batch_size)
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
