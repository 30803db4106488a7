"""eval's generation with a progress bar whose ETA is shown only once it means something.

`generation.generate` decodes with continuous batching: the first responses finish only after a
batch's prefill and many decoding steps, then they finish in bursts. An ETA from the first
finished responses (tqdm's default) read 38 minutes on the demo's first bar (issue 13). So the
bar counts responses and shows the tokens/s as they are produced (refreshed twice a second), and
no ETA until a first batch's worth of responses has finished; from then on the ETA is the
average rate since the start (no smoothing), which the bursts do not throw off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Optional

import mlx.core as mx

BEFORE = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}, ETA after the first batch]"
AFTER = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class ResponseBar:
    """A tqdm bar over TOTAL responses for `generation.generate`'s `on_step`."""

    def __init__(self, total: int, first_batch: int, desc: Optional[str]):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, desc=desc, file=sys.stderr, leave=False, smoothing=0,
            bar_format=BEFORE, disable=desc is None,
        )  # fmt: skip
        self.bar.set_postfix_str("prefilling the prompts")  # no step ends before that
        self.first_batch = max(1, min(first_batch, total))
        self.tokens, self.t0, self.shown = 0, time.perf_counter(), 0.0

    def step(self, tokens: int, finished: int) -> None:
        self.tokens += tokens
        now = time.perf_counter()
        if self.bar.bar_format == BEFORE and self.bar.n + finished >= self.first_batch:
            self.bar.bar_format = AFTER
        self.bar.set_postfix_str(f"{self.tokens / max(now - self.t0, 1e-9):.0f} tok/s", False)
        if finished:
            self.bar.update(finished)
            self.shown = now
        elif now - self.shown >= 0.5:  # tokens flow long before a response is finished
            self.bar.refresh()
            self.shown = now

    def close(self) -> None:
        self.bar.close()


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    temp: float,
    seed: int,
    batch_size: int,
    desc: Optional[str],
) -> list[list[int]]:
    """One response (token ids, the end-of-turn token kept) to each prompt, greedy or at TEMP
    from MLX's global random state seeded with SEED: `generation.generate_tokens` with the bar
    above, the prompts' common beginning (a system prompt) prefilled once (`share_prefix`)."""
    from mlx_lm.sample_utils import make_sampler

    from ..generation import generate

    if not prompts:
        return []
    mx.random.seed(seed)
    bar = ResponseBar(len(prompts), batch_size, desc)
    try:
        draws, _ = generate(
            model, tokenizer, prompts, max_tokens, make_sampler(temp=temp),
            batch_size=batch_size, share_prefix=True, on_step=bar.step,
        )  # fmt: skip
    finally:
        bar.close()
    return [d.tokens for d in draws]
