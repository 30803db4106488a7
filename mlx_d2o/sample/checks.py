"""What `mlx-d2o sample` refuses before any work.

What `mlx-d2o sample` refuses before any work: settings out of range, an --output it cannot
write, prompts that leave no room for --max-tokens within the model's context.

Each refusal is one line (`D2OError`) naming the flag, the path or the record's `file:line`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .. import ranges
from ..data import Record, prompt_tokens, with_system
from ..errors import D2OError
from ..io import RunLock
from ..models import model_dir
from ..train.plan import GB, default_memory_limit
from ..train.shape import ModelShape
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


def leftovers_to_remove(out: Path) -> list[Path]:
    """What a run on OUT will create that a refused run must take away again: OUT itself
    when it is not there yet, else its lock file when there is none."""
    if not out.exists():
        return [out / RunLock.NAME, out]
    return [] if (out / RunLock.NAME).exists() else [out / RunLock.NAME]


def remove_if_only(out: Path, made: list[Path]) -> None:
    """Remove MADE (from `leftovers_to_remove`) when OUT holds nothing else: no manifest, no
    shard, nothing of the user's."""
    if not made or not out.is_dir() or {p.name for p in out.iterdir()} - {RunLock.NAME}:
        return
    for p in made:
        try:  # another rank of the same run may be removing them too
            p.rmdir() if p.is_dir() else p.unlink(missing_ok=True)
        except OSError:
            pass


def check_memory(args, tokenizer, records: list[Record]) -> None:
    """Refuse, before any weight is loaded, a batch whose decoding cannot fit in memory: the
    planner's arithmetic (`train.plan`) on the model's config, at the least the keys and
    values of B x K sequences of --max-tokens plus their float32 log-probabilities over the
    vocabulary. A `-k 1000000000` is one line here, not a MemoryError in the allocator."""
    config = json.loads((model_dir(args.model) / "config.json").read_text(encoding="utf-8"))
    shape = ModelShape.from_config(config, str(args.model))
    n = int(args.num_samples) * min(int(args.batch_size), len(records))
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim * shape.dtype_bytes
    need = n * (int(args.max_tokens) * kv + shape.vocab * 4)
    limit, source = default_memory_limit()
    if need > limit:
        raise D2OError(
            f"--num-samples {args.num_samples} x --batch-size {args.batch_size}: decoding "
            f"{n} sequences together needs at least {need / GB:.1f} GB, more than the "
            f"{limit / GB:.1f} GB here {source}; lower -k or --batch-size"
        )


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
