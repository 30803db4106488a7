"""Eval's passes over prompts that all begin alike (a system prompt), that beginning run once.

Every prompt of an eval set is usually the same system turn, then a short user turn: on the
secret task 137 of 160 prompt tokens are common to all 192 prompts. Scoring a response, the KL
of a response and generating one each ran that beginning again for every row of every adapter.

Here the longest common token prefix of a batch's prompts (`common_prefix`) runs once, as the
one "prompt" of a `shared_prompt.pack`, and each row continues it with the rest of its own
prompt, then its response; only the response's tokens are scored (`pack`'s ``counted``).
Positions, masks and RoPE are those of the full sequence (`shared_prompt`), so the results
equal `logprobs.score` and `evaluate.metrics.sequence_kl` to float32 rounding. Generation
(`generation.generate(share_prefix=True)`) starts every sequence from one KV cache of the
prefix and prefills only the rest. A model `shared_prompt.supports` does not know, or prompts that share fewer than
`MIN_PREFIX` tokens, take the full-sequence path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Optional

import mlx.core as mx
from tqdm import tqdm

from .logprobs import batches_by_tokens
from .shared_prompt import hidden_states, pack, shared_logps, split_head, supports

MIN_PREFIX = 16  # shorter: the saving is less than the cost of the extra pass


def common_prefix(prompts: Sequence[Sequence[int]], keep: int = 0) -> int:
    """Length of the longest token prefix all PROMPTS share, leaving at least KEEP tokens of
    the shortest one outside it (generation needs one token of each prompt to prefill)."""
    if not prompts:
        return 0
    n = len(os.path.commonprefix([list(p) for p in prompts]))
    return max(0, min(n, min(len(p) for p in prompts) - keep))


def usable(model, prompts: Sequence[Sequence[int]], keep: int = 0) -> int:
    """The prefix length to share for MODEL and PROMPTS, or 0 for the full-sequence path."""
    n = common_prefix(prompts, keep)
    return n if n >= MIN_PREFIX and supports(model) else 0


def _arrays(pairs: Sequence[tuple], n: int, pad_id: int) -> dict:
    """A `pack` of PAIRS (prompt, response) whose prompts share their first N tokens."""
    prefix = list(pairs[0][0][:n])
    rests = [list(p[n:]) + list(r) for p, r in pairs]
    return pack([prefix], rests, [0] * len(pairs), pad_id, counted=[len(r) for _, r in pairs])


def _batches(pairs: Sequence[tuple], n: int, batch_size: int, max_tokens: int):
    """Index lists of PAIRS in batches by the length of what follows the prefix."""
    return batches_by_tokens([len(p) - n + len(r) for p, r in pairs], max_tokens, batch_size)


def score_after_prefix(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 8,
    pad_id: int = 0,
    max_tokens_per_batch: int = 8192,
) -> Optional[tuple[list[float], list[int]]]:
    """log π(response | prompt) of each (prompt, response) pair, as `logprobs.score`, with the
    prompts' common prefix run once per batch; None when `usable` says the full path."""
    n = usable(model, [p for p, _ in pairs])
    if not n:
        return None
    logps, counts = [0.0] * len(pairs), [0] * len(pairs)
    for idx in _batches(pairs, n, batch_size, max_tokens_per_batch):
        lp, cnt = shared_logps(model, _arrays([pairs[j] for j in idx], n, pad_id))
        mx.eval(lp, cnt)
        for j, a, c in zip(idx, lp.tolist(), cnt.tolist()):
            logps[j], counts[j] = a, c
    return logps, counts


def _response_log_softmax(model, arrays: dict) -> mx.array:
    """[M, V] float32 log π(· | x, y_<t) at every scored position of ARRAYS."""
    head = split_head(model)
    h = hidden_states(head.body, arrays)
    h = h.reshape(-1, h.shape[-1])[arrays["select"]]
    logits = head.fn(h).astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def kl_after_prefix(
    adapter,
    pairs: Sequence[tuple],
    batch_size: int = 8,
    pad_id: int = 0,
    max_tokens_per_batch: int = 1024,
    desc: Optional[str] = None,
) -> Optional[tuple[list[float], list[int]]]:
    """Σ_t KL(π(·|x, y_<t) || π_ref(·|x, y_<t)) over each response's tokens and their counts, as
    `evaluate.metrics.sequence_kl`: π is ADAPTER's model, π_ref the same with the adapter off
    (`Adapter.disabled`). The common prefix runs once per batch; None: the full path."""
    model = adapter.model
    n = usable(model, [p for p, _ in pairs])
    if not n:
        return None
    kls, counts = [0.0] * len(pairs), [0] * len(pairs)
    bar = tqdm(total=len(pairs), desc=desc, file=sys.stderr, disable=desc is None, leave=False)
    for idx in _batches(pairs, n, batch_size, max_tokens_per_batch):
        arrays = _arrays([pairs[j] for j in idx], n, pad_id)
        logp = _response_log_softmax(model, arrays)
        # Built inside the block, the graph holds the base weights (MLX is lazy).
        with adapter.disabled() as base:
            logq = _response_log_softmax(base, arrays)
        kl = (mx.exp(logp) * (logp - logq)).sum(axis=-1)  # [M]
        onehot = arrays["owner"][None] == mx.arange(len(idx))[:, None]
        total = (onehot.astype(kl.dtype) * kl[None]).sum(axis=-1)
        mx.eval(total)
        for j, a, c in zip(idx, total.tolist(), arrays["counts"].tolist()):
            kls[j], counts[j] = a, c
        bar.update(len(idx))
    bar.close()
    return kls, counts
