"""How much of a step runs at once: this run's memory plan (`plan`, from the loaded model's
config, the loss's rows and the cache's real lengths), printed at the start, and the chunk size
it picks under --memory-limit (`step`'s exact chunking makes any size give the same gradient).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from ..errors import D2OError
from ..shared_prompt import supports
from .plan import GB, ModelShape, PlanInputs, choose_chunk_size, plan


def model_shape(run) -> ModelShape:
    """The shape of the model as it trains: float32 when it was dequantized for the CPU."""
    shape = ModelShape.from_config(run.info.config, run.args.model)
    if run.info.dequantized:
        shape = replace(shape, bits=None, dtype_bytes=4)
    return shape


def batch_lengths(run) -> list:
    """(longest prompt, longest response) of each batch, only those no other batch exceeds in
    both: the steps that can peak."""
    rows = run.loss.layout()
    pairs = set()
    for batch in run.batches:
        exs = [run.examples[i] for i in batch]
        prompt = max(len(e.prompt) for e in exs)
        response = max(len(r) for e in exs for row in rows for r in e.responses(row))
        pairs.add((prompt, max(response, 1)))
    return [
        (p, r)
        for p, r in pairs
        if not any(q >= p and s >= r and (q, s) != (p, r) for q, s in pairs)
    ]


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


def plan_memory(run) -> Optional[int]:
    """The chunk size of this run's steps (None: all sequences in one pass): --chunk-size, or
    the largest whose predicted peak fits --memory-limit GB (default: the device's recommended
    working set). Says the plan of the step that peaks; D2OError, with its numbers, when the
    run cannot fit."""
    args = run.args
    limit = args.memory_limit * GB if args.memory_limit else None
    pairs = batch_lengths(run)
    chunk = args.chunk_size
    if chunk is None:
        chunk = min(choose_chunk_size(plan_inputs(run, p, r, None), limit) for p, r in pairs)
    peak = max(
        (plan(plan_inputs(run, p, r, chunk), limit) for p, r in pairs), key=lambda x: x.total
    )
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
    return None if chunk >= peak.inputs.sequences else chunk
