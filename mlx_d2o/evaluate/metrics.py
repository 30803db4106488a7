"""The figures of `mlx-d2o eval`, as pure functions of responses, token ids and models.

- distinct-n (Li et al., 2016, "A Diversity-Promoting Objective Function for Neural
  Conversation Models"): unique n-grams / all n-grams of the responses;
- per-token KL(π || π_ref) on the policy's own responses, over the full vocabulary at each
  response position (`sequence_kl`);
- rates and means that are None, not 0, when there is nothing to count;
- 95 % intervals: Wilson score intervals for rates (k of n; Wilson, 1927, "Probable inference,
  the law of succession, and statistical inference"), percentile bootstrap intervals for means
  and per-token ratios over prompts (Efron & Tibshirani, 1993, "An Introduction to the
  Bootstrap"; `BOOTSTRAP_RESAMPLES` resamples of the prompts, seeded, so a report is
  reproducible to the digit).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Optional

import mlx.core as mx
import numpy as np
from tqdm import tqdm

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 %
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# What report.json's settings and report.md's legend say about the intervals.
INTERVALS = {
    "level": LEVEL,
    "rates": "Wilson score interval",
    "means": f"percentile bootstrap over prompts, {BOOTSTRAP_RESAMPLES} resamples, "
    f"seed {BOOTSTRAP_SEED}",
}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams, pooled over TEXTS.

    Words are lower-cased, whitespace-separated tokens, so the figure does not depend on the
    model's tokenizer. 0.0 when the texts hold no n-gram at all.
    """
    seen, total = set(), 0
    for t in texts:
        words = t.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def rate(k: int, n: int) -> Optional[float]:
    """K of N as a fraction; None when N is 0 (no items: no rate, not a rate of 0)."""
    return k / n if n else None


def mean(xs: Sequence[float]) -> Optional[float]:
    """The mean of XS; None when XS is empty."""
    return sum(xs) / len(xs) if xs else None


def wilson(k: int, n: int, z: float = Z) -> Optional[list]:
    """The Wilson score interval [lo, hi] of the rate K/N (95 % by default); None when N is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not [0, 0] at K = 0: one
    unsafe answer of 32 is 3.1 % [0.6 %, 15.7 %], and none of 32 is 0 % [0 %, 10.7 %].
    """
    if not n:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_ci(
    columns: Sequence[Sequence[float]],
    stat: Callable[..., np.ndarray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> Optional[list]:
    """Percentile bootstrap interval [lo, hi] of STAT over items; None when there are none.

    COLUMNS are per-item values of equal length (one per prompt); each resample draws items with
    replacement, the same items from every column (so a ratio of two sums stays paired), and
    STAT maps the resampled columns, each [RESAMPLES, n], to [RESAMPLES] statistics.
    """
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    n = len(cols[0]) if cols else 0
    if n == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    stats = stat(*[c[idx] for c in cols])
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return [float(lo), float(hi)]


def mean_ci(xs: Sequence[float]) -> Optional[list]:
    """Bootstrap interval of the mean of XS (None when empty)."""
    return bootstrap_ci([xs], lambda x: x.mean(axis=1))


def ratio_ci(num: Sequence[float], den: Sequence[float]) -> Optional[list]:
    """Bootstrap interval of Σ NUM / Σ DEN over items (a per-token figure over prompts)."""
    return bootstrap_ci([num, den], lambda a, b: a.sum(axis=1) / np.maximum(b.sum(axis=1), 1))


def with_ci(name: str, xs: Sequence[float]) -> dict:
    """{NAME: mean of XS, NAME_ci: its bootstrap interval}."""
    return {name: mean(xs), f"{name}_ci": mean_ci(xs)}


def rate_ci(name: str, k: int, n: int) -> dict:
    """{NAME: K/N, NAME_ci: its Wilson interval}."""
    return {name: rate(k, n), f"{name}_ci": wilson(k, n)}


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def sequence_kl(
    policy: Callable,
    reference: Callable,
    pairs: Sequence[tuple],
    batch_size: int = 8,
    pad_id: int = 0,
    max_tokens_per_batch: int = 1024,
    desc: Optional[str] = None,
) -> tuple[list[float], list[int]]:
    """Σ_t KL(π(·|x, y_<t) || π_ref(·|x, y_<t)) over each response's tokens, and the token counts.

    POLICY and REFERENCE map tokens [N, T] to logits [N, T, V] (a model, or a model with its
    adapter switched off). PAIRS are (prompt_ids, response_ids). The KL at a position is over the
    full vocabulary, Σ_v π(v) (log π(v) − log π_ref(v)); positions are those that predict a
    response token, as in `logprobs.sequence_logps`. Batches are capped by
    MAX_TOKENS_PER_BATCH padded tokens (`logprobs.batches_by_tokens`), since two [N, T, V] logit tensors are alive at once.
    """
    from ..logprobs import batches_by_tokens, pad

    kls, counts = [0.0] * len(pairs), [0] * len(pairs)
    bar = tqdm(total=len(pairs), desc=desc, file=sys.stderr, disable=desc is None, leave=False)
    lengths = [len(p) + len(r) for p, r in pairs]
    for idx in batches_by_tokens(lengths, max_tokens_per_batch, batch_size):
        tokens, lens = pad([list(pairs[j][0]) + list(pairs[j][1]) for j in idx], pad_id)
        plens = mx.array([len(pairs[j][0]) for j in idx], dtype=mx.int32)
        inputs = tokens[:, :-1]
        logp, logq = _log_softmax(policy(inputs)), _log_softmax(reference(inputs))
        kl = (mx.exp(logp) * (logp - logq)).sum(axis=-1)
        pos = mx.arange(1, tokens.shape[1])[None, :]
        mask = (pos >= plens[:, None]) & (pos < lens[:, None])
        total, cnt = (kl * mask).sum(axis=-1), mask.sum(axis=-1)
        mx.eval(total, cnt)
        for j, a, c in zip(idx, total.tolist(), cnt.tolist()):
            kls[j], counts[j] = a, c
        bar.update(len(idx))
    bar.close()
    return kls, counts
