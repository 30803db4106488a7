"""Batched, masked sequence log-probabilities: log π(y|x) = Σ_t log π(y_t | x, y_<t).

Sequences are `prompt + response` token lists; only response tokens count (no length
normalisation, as D2O and DPO define it). One forward pass serves a whole batch; `score`
sorts by length and chunks so padding and peak memory stay small when no gradient is needed.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np


def pad(seqs: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 8) -> tuple[mx.array, mx.array]:
    """Right-pad token lists into [N, T] (T rounded up to MULTIPLE, so compiled shapes repeat)."""
    lengths = [len(s) for s in seqs]
    t = max(lengths)
    t = ((t + multiple - 1) // multiple) * multiple
    out = np.full((len(seqs), t), pad_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return mx.array(out), mx.array(lengths, dtype=mx.int32)


def sequence_logps(model, tokens: mx.array, prompt_lengths: mx.array, lengths: mx.array) -> tuple[mx.array, mx.array]:
    """Summed log-probs of the response tokens of each row, and their counts.

    tokens [N, T] right-padded; row i's response is tokens[i, prompt_lengths[i]:lengths[i]].
    Differentiable in the model's parameters (the trainer takes its gradient).
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs).astype(mx.float32)
    # log_softmax at the target only: logit[target] - logsumexp(logits), never the full [N,T,V] log-softmax
    token_logps = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1) - mx.logsumexp(logits, axis=-1)
    pos = mx.arange(1, tokens.shape[1])[None, :]
    mask = (pos >= prompt_lengths[:, None]) & (pos < lengths[:, None])
    return (token_logps * mask).sum(axis=-1), mask.sum(axis=-1)


def score(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8, pad_id: int = 0,
          max_tokens_per_batch: int = 8192) -> tuple[list[float], list[int]]:
    """log π(response | prompt) for each (prompt_ids, response_ids) pair, without gradient.

    Pairs are scored longest first in batches capped by BATCH_SIZE rows and by
    MAX_TOKENS_PER_BATCH padded tokens, then put back in input order.
    """
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    i = 0
    while i < len(order):
        longest = len(pairs[order[i]][0]) + len(pairs[order[i]][1])
        n = max(1, min(batch_size, max_tokens_per_batch // max(1, longest)))
        idx = order[i : i + n]
        seqs = [list(pairs[j][0]) + list(pairs[j][1]) for j in idx]
        tokens, lengths = pad(seqs, pad_id)
        plens = mx.array([len(pairs[j][0]) for j in idx], dtype=mx.int32)
        lp, cnt = sequence_logps(model, tokens, plens, lengths)
        mx.eval(lp, cnt)
        for j, a, c in zip(idx, lp.tolist(), cnt.tolist()):
            logps[j], counts[j] = a, c
        i += n
    return logps, counts
