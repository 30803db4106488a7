"""Batched, masked sequence log-probabilities: log π(y|x) = Σ_t log π(y_t | x, y_<t).

Sequences are `prompt + response` token lists; only response tokens count (no length
normalisation, as D2O and DPO define it). One forward pass serves a whole batch; without a
gradient, `batches_by_tokens` (the one token-budget batcher: scoring, the sample step's
rescoring after shared prompts, the trainer's rescoring, eval's KL) sorts by length and chunks
so that padding and peak memory stay small.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Optional

import mlx.core as mx
import numpy as np

from . import dropout
from .shared_prompt import split_head, token_logps


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 8
) -> tuple[mx.array, mx.array]:
    """Right-pad token lists into [N, T] (T rounded up to MULTIPLE, so compiled shapes repeat)."""
    lengths = [len(s) for s in seqs]
    t = max(lengths)
    t = ((t + multiple - 1) // multiple) * multiple
    out = np.full((len(seqs), t), pad_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return mx.array(out), mx.array(lengths, dtype=mx.int32)


def sequence_logps(
    model,
    tokens: mx.array,
    prompt_lengths: mx.array,
    lengths: mx.array,
    dropout_key: Optional[mx.array] = None,
    row_ids: Optional[mx.array] = None,
) -> tuple[mx.array, mx.array]:
    """Summed log-probs of the response tokens of each row, and their counts.

    tokens [N, T] right-padded; row i's response is tokens[i, prompt_lengths[i]:lengths[i]].
    Differentiable in the model's parameters. The head and log-softmax run a bounded number of
    positions at a time (`shared_prompt.token_logps`), so [N, T, V] float32 logits never exist
    at once; models `shared_prompt` does not know run whole. DROPOUT_KEY: LoRA dropout masks
    of `dropout.KeyedDropout` at each token's row (ROW_IDS, default 0..N-1) and position, the
    same in a checkpointed layer's recomputation and in any chunk of the batch.
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    if dropout_key is not None:
        rows = mx.arange(tokens.shape[0]) if row_ids is None else row_ids
        positions = mx.broadcast_to(mx.arange(inputs.shape[1])[None], inputs.shape)
        dropout.place(dropout_key, 2 * rows + 1, positions)
    else:
        dropout.place(None)
    head = split_head(model)
    if head is None:
        logits = model(inputs).astype(mx.float32)
        # log_softmax at the target only: logit[target] - logsumexp(logits).
        picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
        per_token = picked - mx.logsumexp(logits, axis=-1)
    else:
        h = head.body(inputs)
        flat = token_logps(head, h.reshape(-1, h.shape[-1]), targets.reshape(-1))
        per_token = flat.reshape(targets.shape)
    pos = mx.arange(1, tokens.shape[1])[None, :]
    mask = (pos >= prompt_lengths[:, None]) & (pos < lengths[:, None])
    return (per_token * mask).sum(axis=-1), mask.sum(axis=-1)


def batches_by_tokens(
    lengths: Sequence[int], max_tokens_per_batch: int, max_batch: int
) -> Iterator[list[int]]:
    """Index lists of batches, longest items first, each at most MAX_BATCH items and at most
    MAX_TOKENS_PER_BATCH padded tokens (its first, longest item's length times its size; one
    item alone may exceed it).

    Longest first, so each batch pads to its own first item and the peak memory comes at once;
    ties keep input order (a stable sort), so the batches are the same from run to run.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    i = 0
    while i < len(order):
        n = max(1, min(max_batch, max_tokens_per_batch // max(1, lengths[order[i]])))
        yield order[i : i + n]
        i += n


def score(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 8,
    pad_id: int = 0,
    max_tokens_per_batch: int = 8192,
) -> tuple[list[float], list[int]]:
    """log π(response | prompt) for each (prompt_ids, response_ids) pair, without gradient.

    Pairs are scored longest first in batches capped by BATCH_SIZE rows and by
    MAX_TOKENS_PER_BATCH padded tokens (`batches_by_tokens`), then put back in input order.
    """
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    lengths = [len(p) + len(r) for p, r in pairs]
    for idx in batches_by_tokens(lengths, max_tokens_per_batch, batch_size):
        tokens, lens = pad([list(pairs[j][0]) + list(pairs[j][1]) for j in idx], pad_id)
        plens = mx.array([len(pairs[j][0]) for j in idx], dtype=mx.int32)
        lp, cnt = sequence_logps(model, tokens, plens, lens)
        mx.eval(lp, cnt)
        for j, a, c in zip(idx, lp.tolist(), cnt.tolist()):
            logps[j], counts[j] = a, c
    return logps, counts
