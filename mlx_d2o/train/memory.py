"""This run's memory plan and the chunk size it trains with.

How much of a step runs at once: this run's memory plan (`plan`, from the loaded model's
config, the loss's rows and the cache's real lengths), printed at the start, and the chunk size
it picks under --memory-limit (`step`'s exact chunking makes any size give the same gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Optional

import mlx.core as mx

from ..errors import D2OError
from .plan import GB, PlanInputs, choose_chunk_size, default_memory_limit, plan
from .shape import ModelShape, stored_shape


def model_shape(info, model_name: str) -> ModelShape:
    """The shape of the model as it trains (INFO: `models.load`'s): its weights' stored type,
    float32 when it was dequantized (as `mlx-d2o plan` reads them, so that the two plans
    agree)."""
    shape = stored_shape(info.config, info.path, model_name)
    return shape.as_dequantized() if info.dequantized else shape


def memory_limit(gb: Optional[float]) -> tuple[float, str]:
    """(bytes, source) of --memory-limit GB, or the device's when it is not given."""
    return (gb * GB, "(--memory-limit)") if gb else default_memory_limit()


def batch_lengths(batches: list, examples: list, layout: tuple) -> dict:
    """{(longest prompt, longest response): a batch of that shape} for the BATCHES (lists of
    indices into EXAMPLES) no other batch exceeds in both: the steps that can peak."""
    pairs = {}
    for batch in batches:
        exs = [examples[i] for i in batch]
        prompt = max(len(e.prompt) for e in exs)
        response = max(len(r) for e in exs for row in layout for r in e.responses(row))
        pairs.setdefault((prompt, max(response, 1)), batch)
    return {
        (p, r): b
        for (p, r), b in pairs.items()
        if not any(q >= p and s >= r and (q, s) != (p, r) for q, s in pairs)
    }


def plan_inputs(
    shape: ModelShape,
    layout: tuple,
    k: int,
    settings: Mapping,
    prompt: int,
    response: int,
    chunk: Optional[int],
    step: str,
    batch_size: int,
) -> PlanInputs:
    """The `PlanInputs` of one step (train's and `mlx-d2o plan`'s): the K samples of LAYOUT's
    "samples" row, BATCH_SIZE prompts on this rank, PROMPT + RESPONSE tokens, the training
    SETTINGS (`TrainArgs` fields by name), CHUNK sequences at once, the STEP shape."""
    return PlanInputs(
        shape,
        k=k,
        batch_size=batch_size,
        prompt_tokens=int(prompt),
        response_tokens=int(response),
        rows=sum(k if r == "samples" else 1 for r in layout),
        fine_tune_type=settings["fine_tune_type"],
        lora_rank=int(settings["lora_rank"]),
        num_layers=int(settings["num_layers"]),
        grad_checkpoint=bool(settings["grad_checkpoint"]),
        chunk_size=chunk,
        step=step,
        grad_accumulation_steps=int(settings["grad_accumulation_steps"]),
    )


@dataclass(frozen=True)
class MemoryPlan:
    """What `plan_memory` decided: CHUNK_SIZE (None: all sequences in one pass), the LIMIT in
    bytes, the PREDICTED peak, the global batch (example indices) that peaks, and whether a
    measured step must check it (`fit_memory`: no when --chunk-size was given)."""

    chunk_size: Optional[int]
    limit: float
    predicted: float
    peak_batch: list
    measure: bool


def plan_memory(
    inputs_of: Callable[[int, int, Optional[int]], PlanInputs],
    pairs: dict,
    limit: tuple[float, str],
    chunk_size: Optional[int],
    say: Callable[[str], None],
) -> MemoryPlan:
    """The chunk size of this run's steps: CHUNK_SIZE (--chunk-size), or the largest whose
    predicted peak fits LIMIT (bytes, source). INPUTS_OF(prompt, response, chunk) is the plan
    of one step, PAIRS `batch_lengths`. Says the plan of the step that peaks; D2OError, with
    its numbers, when the run cannot fit."""
    limit_bytes, source = limit
    chunk = chunk_size
    if chunk is None:
        chunk = min(choose_chunk_size(inputs_of(p, r, None), limit_bytes) for p, r in pairs)
    plans = {pr: plan(inputs_of(*pr, chunk), limit_bytes) for pr in pairs}
    worst = max(plans, key=lambda pr: plans[pr].total)
    peak = replace(plans[worst], limit_source=source)
    for line in peak.table():
        say(f"plan: {line}")
    if not peak.fits:
        numbers = ", ".join(f"{k} {v / GB:.2f} GB" for k, v in peak.breakdown.items())
        raise D2OError(
            f"--chunk-size {chunk}: the predicted peak {peak.total / GB:.2f} GB ({numbers}) is "
            f"over the memory limit {peak.memory_limit / GB:.2f} GB {peak.limit_source}; "
            "leave --chunk-size out to let the plan choose, or see `mlx-d2o plan`"
        )
    measure = chunk_size is None and peak.total >= CHECK_ABOVE * peak.memory_limit
    chunk = None if chunk >= peak.inputs.sequences else chunk
    return MemoryPlan(chunk, peak.memory_limit, peak.total, pairs[worst], measure)


# A predicted peak below this share of the limit is not checked by a measured step.
CHECK_ABOVE = 0.5
# The measured step must stay under this share of the limit: the same step's peak varies by a
# few percent from run to run (up to 12 % on the tiny test model, where it is a few MB).
MARGIN = 0.9


def fit_memory(step, batch: Callable, mp: MemoryPlan, say: Callable[[str], None]) -> Optional[int]:
    """The chunk size the run trains with: MP's, checked by a real step when MP says to measure.
    STEP (no update) runs on BATCH(), this rank's share of the batch that peaks; while its
    measured peak is over MARGIN of the limit, the chunk is made smaller in proportion (a
    planned peak can be off; a measured one is what counts)."""
    if not mp.measure:
        return mp.chunk_size
    chunk, limit, batch = mp.chunk_size, MARGIN * mp.limit, batch()
    while True:
        mx.synchronize()
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(step(batch, None, False, chunk))
        peak = mx.get_peak_memory()
        size = chunk or len(batch)
        if peak <= limit:
            break
        if size == 1:
            raise D2OError(
                f"one sequence at a time, a step peaks at {peak / GB:.3f} GB, over "
                f"{MARGIN:.0%} of the memory limit {mp.limit / GB:.3f} GB (the model and its "
                f"state alone: {base / GB:.3f} GB)"
            )
        new = max(1, min(size - 1, int(size * (limit - base) / max(peak - base, 1))))
        say(
            f"plan: measured, a step of {size} sequences at once peaks at {peak / GB:.3f} GB, "
            f"over {MARGIN:.0%} of the limit: chunk {new}"
        )
        chunk = new
    mx.clear_cache()
    mx.reset_peak_memory()  # metrics.jsonl reports the training steps' peak, not this check's
    return chunk
