"""How much of a step runs at once: this run's memory plan (`plan`, from the loaded model's
config, the loss's rows and the cache's real lengths), printed at the start, and the chunk size
it picks under --memory-limit (`step`'s exact chunking makes any size give the same gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from ..errors import D2OError
from ..shared_prompt import supports
from .examples import collate
from .plan import GB, ModelShape, PlanInputs, choose_chunk_size, plan, stored_shape


def model_shape(run) -> ModelShape:
    """The shape of the model as it trains: its weights' stored type, float32 when it was
    dequantized (as `mlx-d2o plan` reads them, so that the two plans agree)."""
    shape = stored_shape(run.info.config, run.info.path, run.args.model)
    return shape.as_dequantized() if run.info.dequantized else shape


def batch_lengths(run) -> dict:
    """{(longest prompt, longest response): a batch of that shape} for the batches no other
    batch exceeds in both: the steps that can peak."""
    rows = run.loss.layout()
    pairs = {}
    for batch in run.batches:
        exs = [run.examples[i] for i in batch]
        prompt = max(len(e.prompt) for e in exs)
        response = max(len(r) for e in exs for row in rows for r in e.responses(row))
        pairs.setdefault((prompt, max(response, 1)), batch)
    return {
        (p, r): b
        for (p, r), b in pairs.items()
        if not any(q >= p and s >= r and (q, s) != (p, r) for q, s in pairs)
    }


def plan_inputs(run, prompt: int, response: int, chunk: Optional[int]) -> PlanInputs:
    args, loss = run.args, run.loss
    K = len(run.examples[0].samples) if loss.uses("samples") else 1
    return PlanInputs(
        model_shape(run),
        k=K,
        batch_size=args.batch_size // run.shard.size,
        prompt_tokens=prompt,
        response_tokens=response,
        rows=sum(K if r == "samples" else 1 for r in loss.layout()),
        fine_tune_type=args.fine_tune_type,
        lora_rank=args.lora_rank,
        num_layers=args.num_layers,
        grad_checkpoint=args.grad_checkpoint,
        chunk_size=chunk,
        step="shared" if supports(run.model) else "full",
        grad_accumulation_steps=args.grad_accumulation_steps,
    )


@dataclass
class MemoryPlan:
    """What `plan_memory` decided: CHUNK_SIZE (None: all sequences in one pass), the LIMIT and
    the PREDICTED peak in bytes, and the global batch (example indices) that peaks."""

    chunk_size: Optional[int]
    limit: float
    predicted: float
    peak_batch: list


def plan_memory(run) -> MemoryPlan:
    """The chunk size of this run's steps: --chunk-size, or the largest whose predicted peak
    fits --memory-limit GB (default: the device's recommended working set). Says the plan of
    the step that peaks; D2OError, with its numbers, when the run cannot fit."""
    args = run.args
    limit = args.memory_limit * GB if args.memory_limit else None
    pairs = batch_lengths(run)
    chunk = args.chunk_size
    if chunk is None:
        chunk = min(choose_chunk_size(plan_inputs(run, p, r, None), limit) for p, r in pairs)
    plans = {pr: plan(plan_inputs(run, *pr, chunk), limit) for pr in pairs}
    worst = max(plans, key=lambda pr: plans[pr].total)
    peak = plans[worst]
    if args.memory_limit:
        peak.limit_source = "(--memory-limit)"
    for line in peak.table():
        run.say(f"plan: {line}")
    if not peak.fits:
        numbers = ", ".join(f"{k} {v / GB:.2f} GB" for k, v in peak.breakdown.items())
        raise D2OError(
            f"--chunk-size {chunk}: the predicted peak {peak.total / GB:.2f} GB ({numbers}) is "
            f"over the memory limit {peak.memory_limit / GB:.2f} GB {peak.limit_source}; "
            "leave --chunk-size out to let the plan choose, or see `mlx-d2o plan`"
        )
    chunk = None if chunk >= peak.inputs.sequences else chunk
    return MemoryPlan(chunk, peak.memory_limit, peak.total, pairs[worst])


# A predicted peak below this share of the limit is not checked by a measured step.
CHECK_ABOVE = 0.5
# The measured step must stay under this share of the limit: the same step's peak varies by a
# few percent from run to run (up to 12 % on the tiny test model, where it is a few MB).
MARGIN = 0.9


def fit_memory(run, step) -> None:
    """Check the plan with a real step: run STEP (no update) on this rank's share of the batch
    that peaks, and while its measured peak is over MARGIN of the limit, make
    `step.chunk_size` smaller in proportion (a planned peak can be off; a measured one is what
    counts). Skipped when the plan predicts less than CHECK_ABOVE of the limit, or when
    --chunk-size was given."""
    mp = run.memory
    if run.args.chunk_size or mp.predicted < CHECK_ABOVE * mp.limit:
        return
    exs = [run.examples[i] for i in run.shard.local(mp.peak_batch)]
    batch = collate(exs, run.loss.layout(), run.pad_id)[0]
    limit = MARGIN * mp.limit
    while True:
        mx.synchronize()
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(step(batch, None, False))
        peak = mx.get_peak_memory()
        size = step.chunk_size or len(batch)
        if peak <= limit:
            break
        if size == 1:
            raise D2OError(
                f"one sequence at a time, a step peaks at {peak / GB:.3f} GB, over "
                f"{MARGIN:.0%} of the memory limit {mp.limit / GB:.3f} GB (the model and its "
                f"state alone: {base / GB:.3f} GB)"
            )
        new = max(1, min(size - 1, int(size * (limit - base) / max(peak - base, 1))))
        run.say(
            f"plan: measured, a step of {size} sequences at once peaks at {peak / GB:.3f} GB, "
            f"over {MARGIN:.0%} of the limit: chunk {new}"
        )
        step.chunk_size = new
    mx.clear_cache()
    mx.reset_peak_memory()  # metrics.jsonl reports the training steps' peak, not this check's
