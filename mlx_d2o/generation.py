"""One generation core over mlx-lm's `BatchGenerator`, for sample, eval and judges.

mlx-lm's `BatchGenerator` does continuous batching.

    generate(model, tokenizer, prompts, max_tokens, sampler, *, num_samples=1, batch_size=None,
             prefill_batch_size=None, share_prompts=False, share_prefix=False, logprobs=False,
             on_step=None)
        -> (draws: list[Draw], prompt_caches: Optional[list])

    prompts             token-id lists (already chat-templated).
    max_tokens          most generated tokens of a response before its end-of-turn.
    sampler             logprobs [B, V] -> tokens [B]: `make_keyed_sampler` (sample: its own key,
                        the caller's random state untouched) or mlx-lm's `make_sampler`.
    num_samples         K responses per prompt; `draws` is prompt-major (prompt i's K draws are
                        draws[i*K:(i+1)*K]).
    batch_size          sequences decoded together (`completion_batch_size`); None = all of them.
    prefill_batch_size  prompts prefilled together; None = min(batch_size, 8), mlx-lm's default.
    share_prompts       prefill each prompt once (all but its last token, one batched pass) and
                        start its K sequences from copies of that KV cache, instead of prefilling
                        it K times; `prompt_caches` are then those caches (prompt order), which
                        scoring can reuse. Needs prompts of 2 tokens or more: with a shorter one
                        every sequence is prefilled by the generator and `prompt_caches` is None.
    share_prefix        (one response per prompt) prefill the longest token prefix all prompts
                        share (a system prompt) once and start every sequence from that KV
                        cache, prefilling only the rest of its prompt (`shared_prefix.usable`
                        says when: a known architecture, 16 shared tokens or more).
    logprobs            keep the generating model's log-prob of each generated token
                        (`Draw.logps`) and of every end-of-turn id after the last one
                        (`Draw.end`). The generator then runs one step past MAX_TOKENS: the
                        distribution after the last kept token is known, so a cut response's
                        score, end-of-turn included, needs no second pass (and a response that
                        ends exactly at MAX_TOKENS counts as stopped).
    on_step             called after each decoding step with (tokens produced, responses finished).

Two front-ends: `generate_tokens` (eval, judges: one response per prompt, greedy or `temp`
from MLX's global random state seeded with SEED, a progress bar) and the sample step's
`generate_samples` (K per prompt, keyed sampler per batch, log-probs kept).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx

from .errors import D2OError
from .shared_prefix import usable


@dataclass
class Draw:
    """One response as the generator made it."""

    ids: list = field(default_factory=list)  # generated tokens, the stop token excluded
    logps: list = field(default_factory=list)  # with `logprobs`: the model's log-probs of `ids`
    end: Optional[dict] = None  # with `logprobs`: {end-of-turn id: its log-prob right after `ids`}
    finish: Optional[str] = None  # "stop" (an end-of-turn token) or "length"
    stop: Optional[int] = None  # the end-of-turn token it stopped on

    @property
    def tokens(self) -> list:
        """The generated tokens, the end-of-turn token it stopped on included."""
        return self.ids + ([self.stop] if self.stop is not None else [])


def make_keyed_sampler(temp: float, top_p: float, key: mx.array) -> Callable[[mx.array], mx.array]:
    """`make_sampler(temp, top_p)` drawing from its own key instead of MLX's global one.

    An explicit key keeps generation from moving the caller's random state (the trainer's
    online sampling must not change its dropout or data order) and makes a batch's samples a
    function of its seed alone.
    """
    from mlx_lm.sample_utils import apply_top_p, greedy_sampler

    if temp == 0:
        return greedy_sampler
    state = [key]

    def sampler(logprobs: mx.array) -> mx.array:
        if 0 < top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        state[0], sub = mx.random.split(state[0])
        return mx.random.categorical(logprobs * (1.0 / temp), key=sub)

    return sampler


def _batch_api():
    """mlx-lm's batch generation classes as refactored in mlx-lm 0.32 (prompt caches per
    sequence, `next_generated`); older versions get a clear message, not an AttributeError."""
    try:
        from mlx_lm.generate import BatchGenerator, PromptProcessingBatch
    except ImportError:
        BatchGenerator = None
    if BatchGenerator is None or not hasattr(BatchGenerator, "next_generated"):
        import mlx_lm

        version = getattr(mlx_lm, "__version__", "?")
        raise D2OError(f"mlx-d2o needs mlx-lm >= 0.32 (this is {version}): pip install -U mlx-lm")
    return BatchGenerator, PromptProcessingBatch


def prefill(model, prompts: list[list[int]]) -> list:
    """KV caches of each prompt but its last token, one batched forward pass for all prompts."""
    _, PromptProcessingBatch = _batch_api()
    from mlx_lm.models.cache import make_prompt_cache

    caches = [make_prompt_cache(model) for _ in prompts]
    batch = PromptProcessingBatch(model, list(range(len(prompts))), caches)
    batch.prompt([p[:-1] for p in prompts])
    return [batch.extract_cache(i) for i in range(len(prompts))]


def merge_caches(caches: list) -> list:
    """Per-sequence prompt caches -> one batch cache per layer (left-padded), as BatchGenerator
    does; the caches given are not changed."""
    return [layer[0].merge(list(layer)) for layer in zip(*caches)]


def _insert(
    gen, model, prompts: list, k: int, limit: int, share: bool, prefix: bool
) -> tuple[list, Optional[list]]:
    """Put K sequences per prompt into GEN; returns (their uids, prompt-major; prompt caches)."""
    if share and all(len(p) > 1 for p in prompts):
        # Prefill each prompt once and start its K sequences from copies of that cache
        # (BatchGenerator merges them into its batch cache), rather than prefilling it K times.
        caches = prefill(model, prompts)
        uids = gen.insert(
            [p[-1:] for p in prompts for _ in range(k)],
            [limit] * (len(prompts) * k),
            caches=[c for c in caches for _ in range(k)],
            all_tokens=[list(p[:-1]) for p in prompts for _ in range(k)],
        )
        return uids, caches
    if prefix and k == 1 and (n := usable(model, prompts, keep=1)):
        # One KV cache of the prompts' common beginning (a system prompt), shared by every
        # sequence: only the rest of each prompt is prefilled (`shared_prefix`).
        (cache,) = prefill(model, [prompts[0][: n + 1]])
        uids = gen.insert(
            [p[n:] for p in prompts], [limit] * len(prompts), caches=[cache] * len(prompts),
            all_tokens=[p[:n] for p in prompts],
        )  # fmt: skip
        return uids, None
    return gen.insert(
        [list(p) for p in prompts for _ in range(k)], [limit] * (len(prompts) * k)
    ), None


def _take(d: Draw, r, max_tokens: int, logprobs: bool, eot: mx.array) -> Optional[mx.array]:
    """Record response R of one step in D; returns the log-prob array to evaluate, if any."""
    if r.finish_reason == "stop" or (logprobs and len(d.ids) == max_tokens):
        d.finish = "stop" if r.finish_reason == "stop" else "length"
        d.stop = r.token if r.finish_reason == "stop" else None
        if logprobs:
            d.end = r.logprobs[eot]
        return d.end
    d.ids.append(r.token)
    if r.finish_reason == "length":
        d.finish = "length"
    if logprobs:
        d.logps.append(r.logprobs[r.token])
        return d.logps[-1]
    return None


def generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    sampler: Callable[[mx.array], mx.array],
    *,
    num_samples: int = 1,
    batch_size: Optional[int] = None,
    prefill_batch_size: Optional[int] = None,
    share_prompts: bool = False,
    share_prefix: bool = False,
    logprobs: bool = False,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> tuple[list[Draw], Optional[list]]:
    """NUM_SAMPLES responses per prompt (prompt-major) and, with SHARE_PROMPTS, the prompts' KV
    caches. The arguments are described in the module docstring."""
    BatchGenerator, _ = _batch_api()
    prompts = [list(p) for p in prompts]
    n = len(prompts) * num_samples
    if n == 0:
        return [], None
    eot = sorted(tokenizer.eos_token_ids)
    batch_size = batch_size or n
    gen = BatchGenerator(
        model,
        stop_tokens=[[t] for t in eot],
        sampler=sampler,
        completion_batch_size=batch_size,
        prefill_batch_size=prefill_batch_size or min(batch_size, 8),
    )
    limit = max_tokens + 1 if logprobs else max_tokens
    eot_arr = mx.array(eot)
    try:
        uids, caches = _insert(gen, model, prompts, num_samples, limit, share_prompts, share_prefix)
        draws = {u: Draw() for u in uids}
        while responses := gen.next_generated():
            step = [_take(draws[r.uid], r, max_tokens, logprobs, eot_arr) for r in responses]
            if logprobs:
                # Evaluate now: a pending index would keep the step's whole [vocab] row alive.
                mx.eval(step)
            if on_step is not None:
                on_step(len(responses), sum(r.finish_reason is not None for r in responses))
    finally:
        gen.close()
    out = [draws[u] for u in uids]
    if logprobs:
        for d in out:
            d.logps = [x.item() for x in d.logps]
            d.end = dict(zip(eot, d.end.tolist()))
    return out, caches


def generate_tokens(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    temp: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    desc: Optional[str] = "generating",
) -> list[list[int]]:
    """Token ids of one response to each prompt (eval, judges): greedy, or at TEMP from MLX's
    global random state seeded with SEED; a progress bar on stderr unless DESC is None.

    A response that ended on an end-of-turn token keeps it (mlx-lm's `batch_generate` drops it),
    because the policy chose to stop there and its KL at that position counts.
    """
    from mlx_lm.sample_utils import make_sampler
    from tqdm import tqdm

    if not prompts:
        return []
    mx.random.seed(seed)
    with tqdm(
        total=len(prompts), desc=desc, file=sys.stderr, disable=desc is None, leave=False
    ) as bar:
        draws, _ = generate(
            model,
            tokenizer,
            prompts,
            max_tokens,
            make_sampler(temp=temp),
            batch_size=batch_size,
            share_prefix=True,
            on_step=lambda tokens, finished: bar.update(finished),
        )
    return [d.tokens for d in draws]
