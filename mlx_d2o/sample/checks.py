"""What `mlx-d2o sample` refuses before any work.

What `mlx-d2o sample` refuses before any work: settings out of range, an --output it cannot
write, prompts that leave no room for --max-tokens within the model's context.

Each refusal is one line (`D2OError`) naming the flag, the path or the record's `file:line`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from ..data import Record, prompt_tokens, with_system
from ..errors import D2OError
from .cache import writing


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int(args, name: str, low: Optional[int], what: str = "") -> None:
    v = getattr(args, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise D2OError(f"{_flag(name)}: expected a whole number, got {v!r}")
    if low is not None and v < low:
        raise D2OError(f"{_flag(name)}: {what}must be at least {low}, got {v}")


def _float(args, name: str) -> float:
    v = getattr(args, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise D2OError(f"{_flag(name)}: expected a finite number, got {v!r}")
    return float(v)


def check_args(args) -> None:
    """Range checks of every numeric setting of `SampleArgs`, before anything is read or loaded."""
    _int(args, "num_samples", 1, "K ")
    _int(args, "max_tokens", 1)
    _int(args, "batch_size", 1)
    _int(args, "seed", None)
    if args.limit is not None:
        _int(args, "limit", 1)
    if _float(args, "temp") < 0:
        raise D2OError(f"--temp: must be >= 0 (0 = greedy), got {args.temp}")
    if not 0 < _float(args, "top_p") <= 1:
        raise D2OError(f"--top-p: must be in (0, 1] (1 = off), got {args.top_p}")
    if not args.data:
        raise D2OError("--data: a records file is required")
    if not args.output:
        raise D2OError("--output: a cache directory is required")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise D2OError(f"--output: {args.output} is a file, not a cache directory")


def make_output(path: Path) -> None:
    """Create the cache directory PATH, or one line saying why it cannot be."""
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()


def long_prompts(
    records: list[Record],
    tokenizer,
    context: Optional[int],
    max_tokens: int,
    system_prompt: Optional[str],
    skip: bool,
) -> tuple[list[Record], int]:
    """(the records kept, how many were skipped) given the model's CONTEXT length.

    A prompt that leaves fewer than MAX_TOKENS positions of the context (the system prompt
    included, as it is generated with) is refused, or skipped with SKIP: generating from it
    would run the model past what it was trained on, for minutes, at 0 %.
    """
    if not context:
        return records, 0
    kept = []
    for r in records:
        n = len(prompt_tokens(tokenizer, with_system(r.messages, system_prompt)))
        if n + max_tokens <= context:
            kept.append(r)
        elif not skip:
            raise D2OError(
                f"{r.where or r.id}: prompt is {n} tokens; with --max-tokens {max_tokens} it "
                f"passes the model's context of {context} tokens. Shorten it, lower "
                "--max-tokens, or pass --skip-long to skip such prompts"
            )
    return kept, len(records) - len(kept)
