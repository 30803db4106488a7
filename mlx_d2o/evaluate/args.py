"""The settings of `mlx-d2o eval` (`EvalArgs`) and the checks before any work.

The settings of `mlx-d2o eval` (`EvalArgs`) and every check made before any work: numbers in
range, input files readable, adapters present, the output folder writable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import ranges
from ..errors import D2OError
from ..io import check_output_dir


@dataclass
class EvalArgs:
    """Settings of one `mlx-d2o eval` run (flag names as the CLI's, with underscores).

    Args:
        model: base model (embedded name, .gguf, mlx-lm dir or Hub id); also the reference.
        adapter_paths: adapter directories to compare with the base, one table row each.
        negatives: records with `rejected` (held-out human negatives); those that also have
            `chosen` give the judge-free pair metrics.
        prompts: harmful prompts (records, `rejected` not needed).
        benign: benign prompts (records, `rejected` not needed).
        overrefusal: benign prompts that look harmful (records): refusals of them are unwanted.
        output: report directory.
        judge: `keyword`, `regex:PATTERN`, `contains:TEXT`, or a chat / guard model.
        judge_threshold: a model judge's P(unsafe) at or above which a response is unsafe.
        num_prompts: use the first N records of each file (None: all).
        max_tokens: new tokens per generated response.
        temp: sampling temperature, 0 = greedy.
        seed: seed of the sampler (the same for every model).
        batch_size: sequences generated or scored together (on a CPU, decoding 48 sequences
            together gave 1.7-2.5x the tokens/s of 16 with SmolLM2-135M; lower it for big models).
        system_prompt: system turn put before every prompt.
    """

    model: str = "smollm2-135m"
    adapter_paths: list = field(default_factory=list)
    negatives: Optional[str] = None
    prompts: Optional[str] = None
    benign: Optional[str] = None
    overrefusal: Optional[str] = None
    output: str = "report"
    judge: str = "keyword"
    judge_threshold: float = 0.5
    num_prompts: Optional[int] = 64
    max_tokens: int = 128
    temp: float = 0.0
    seed: int = 0
    batch_size: int = 32
    system_prompt: Optional[str] = None


def check_args(args: EvalArgs) -> None:
    """Every numeric setting in range (`ranges.RANGES`), or a one-line D2OError naming the flag."""
    ranges.check("eval", args)
    if not args.judge:
        raise D2OError("--judge: give keyword, regex:PATTERN, contains:TEXT or a model")


def check_output(out: str | Path) -> None:
    """A one-line D2OError, before any work, when the report folder OUT cannot be written
    (`io.check_output_dir`); nothing is created."""
    check_output_dir(out, "--output")


def _load_set(spec: Optional[str], what: str, require_rejected: bool, limit: Optional[int]):
    from ..data import load_records

    if spec is None:
        return None
    p = Path(str(spec))
    # A path to a data file that is not there is a typo, not a Hub dataset id to go and fetch.
    looks_like_file = p.suffix in (".jsonl", ".json", ".gz") or str(spec).startswith(
        (".", "/", "~")
    )
    if not p.exists() and looks_like_file:
        raise D2OError(f"{spec}: no such file ({what})")
    records = load_records(spec, require_rejected=require_rejected)
    return records[:limit] if limit else records


def load_inputs(args: EvalArgs) -> dict:
    """{"negatives": records or None, "harmful", "benign", "overrefusal": records (maybe empty)};
    every bad input and setting refused before the model is loaded."""
    check_args(args)
    n = args.num_prompts
    sets = {
        "negatives": _load_set(args.negatives, "--negatives", True, n),
        "harmful": _load_set(args.prompts, "--prompts", False, n) or [],
        "benign": _load_set(args.benign, "--benign", False, n) or [],
        "overrefusal": _load_set(args.overrefusal, "--overrefusal", False, n) or [],
    }
    if sets["negatives"] is None and not any(sets[k] for k in ("harmful", "benign", "overrefusal")):
        raise D2OError(
            "nothing to evaluate: give at least one of --negatives, --prompts, --benign, "
            "--overrefusal"
        )
    for p in args.adapter_paths:
        if not Path(p).is_dir():
            raise D2OError(f"{p}: no such adapter directory")
    check_output(args.output)
    return sets
