"""What `mlx-d2o sample` refuses before any work: settings out of range, an --output it cannot
write, prompts that leave no room for --max-tokens within the model's context.

Each refusal is one line (`D2OError`) naming the flag, the path or the record's `file:line`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .. import ranges
from ..data import Record, prompt_tokens, with_system
from ..errors import D2OError
from .cache import writing


def check_args(args) -> None:
    """Every numeric setting of `SampleArgs` in its range (`ranges.RANGES`), the paths given,
    before anything is read or loaded."""
    ranges.check("sample", args)
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
