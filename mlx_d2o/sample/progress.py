"""What `mlx-d2o sample` tells the user while it runs and when it ends.

Progress       a bar in prompts that moves with every decoding step (not once per batch),
               with a live tokens/s and tqdm's ETA
summarize      the run's figures (summary.json in the cache folder)
summary_text   the same for people: a few lines, and a warning when most samples are cut
"""

from __future__ import annotations

import time
from typing import Optional


class Progress:
    """A batch's sequences decode in lockstep (one token each per step) for at most
    `max_tokens + 1` steps (the last one scores end-of-turn after a cut response), so the
    share of a batch done is its steps over that bound, or all of it once every sequence has
    stopped. The bar counts prompts (fractions inside a batch) and shows generated tokens/s.
    """

    def __init__(self, bar, num_samples: int, max_tokens: int):
        self.bar, self.k, self.steps_max = bar, num_samples, max_tokens + 1
        self.tokens = 0  # decoded this run, every sequence of every step
        self.gen_seconds = 0.0
        self._t: Optional[float] = None
        self._start = self._n = self._steps = self._finished = 0

    def start_batch(self, n_prompts: int) -> None:
        self._start, self._n = self.bar.n, n_prompts
        self._steps = self._finished = 0
        self._t = time.perf_counter()

    def _move_to(self, n: float) -> None:
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def on_step(self, tokens: int, finished: int) -> None:
        """`generation.generate`'s on_step: TOKENS produced, FINISHED sequences this step."""
        self.tokens += tokens
        self._steps += 1
        self._finished += finished
        done = self._finished >= self._n * self.k
        share = 1.0 if done else min(self._steps / self.steps_max, 1.0)
        seconds = self.gen_seconds + (time.perf_counter() - self._t)
        self.bar.set_postfix_str(f"{self.tokens / max(seconds, 1e-9):.1f} tok/s", refresh=False)
        self._move_to(self._start + self._n * share)

    def generated(self) -> float:
        """The batch's generation is over (scoring follows); its seconds."""
        if self._t is None:
            return 0.0
        seconds = time.perf_counter() - self._t
        self.gen_seconds += seconds
        self._t = None
        return seconds

    def end_batch(self) -> None:
        self.generated()
        self._move_to(self._start + self._n)


def summarize(
    rows: list[dict],
    seconds: float,
    generated_tokens: int,
    gen_seconds: float,
    score_seconds: float,
) -> dict:
    """Figures of a finished cache (ROWS: all of it) and of this run (time and tokens)."""
    finishes = [f for r in rows for f in r["sample_finish"]]
    lengths = [n for r in rows for n in r["sample_tokens"]]
    tok_per_sec = round(generated_tokens / gen_seconds, 1) if gen_seconds else None
    return {
        "records": len(rows),
        "samples": len(finishes),
        "stopped_by_length": round(sum(f == "length" for f in finishes) / max(1, len(finishes)), 4),
        "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "seconds": round(seconds, 1),
        # This run's (and, under mlx.launch, rank 0's) generation; a resumed run counts only
        # its part.
        "generated_tokens": generated_tokens,
        "generated_tokens_per_sec": tok_per_sec,
        "generation_seconds": round(gen_seconds, 3),
        "scoring_seconds": round(score_seconds, 3),
    }


# Above this share of samples cut at --max-tokens, say so: the anchors are then not the model's
# answers but their beginnings.
CUT_WARNING = 0.5


def summary_text(s: dict, max_tokens: int) -> tuple[str, Optional[str]]:
    """(lines for stdout, a warning for stderr or None) from a `sample` summary S."""
    k = s["samples"] // max(1, s["records"])
    lines = [f"sampled {s['records']} prompts x {k} = {s['samples']} samples in {s['seconds']} s"]
    if s.get("generated_tokens"):
        lines.append(
            f"  this run: {s['generated_tokens']} tokens generated at "
            f"{s['generated_tokens_per_sec']} tok/s ({s['generation_seconds']:.1f} s), "
            f"reference scoring {s['scoring_seconds']:.1f} s"
        )
    if s.get("resumed_batches"):
        lines.append(f"  resumed: {s['resumed_batches']} batches were already in the cache")
    cut = s["stopped_by_length"]
    lines.append(
        f"  cut at --max-tokens {max_tokens}: {round(cut * s['samples'])} of {s['samples']} "
        f"samples ({cut:.0%}), mean length {s['mean_tokens']} tokens. A cut sample is scored "
        "and trained as the prefix it is, without end-of-turn"
    )
    if s.get("skipped_long"):
        lines.append(
            f"  skipped {s['skipped_long']} prompts with no room for --max-tokens {max_tokens} "
            "in the model's context (--skip-long)"
        )
    lines.append(f"cache: {s['output']} (summary.json there has these figures)")
    warning = None
    if cut > CUT_WARNING:
        warning = (
            f"warning: {cut:.0%} of the samples were cut at --max-tokens {max_tokens}: anchors "
            "cut mid-sentence are not the model's distribution (D2O pushes the policy toward "
            "them); raise --max-tokens"
        )
    return "\n".join(lines), warning
