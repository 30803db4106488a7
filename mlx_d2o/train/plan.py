"""The memory plan of a training step, from a model's config.json alone (no weights loaded).

Peak = weights + adapter and optimizer state + activations kept for the backward pass + logits
+ the shared prompts' cache + a margin (`STEP_MARGIN` of those three): `plan(inputs)` predicts
each in bytes, `Plan.suggest()` the smallest change that fits (chunk size, checkpointing, batch
size); `train --memory-limit` calls `choose_chunk_size`. Two step shapes (`PlanInputs.step`):
    full    the step before issue 11: all B·R sequences (R = K + 1 per prompt for D2O), prompt
            + response, in one forward and backward, float32 logits at every position.
    shared  `train.step`: each prompt runs once, its R continuations attend to its keys and
            values, CHUNK_SIZE sequences are back-propagated at a time (after a pass without
            gradient), the LM head runs at response positions, LOGIT_CHUNK at a time.
Activations and logits are elements per token times constants fitted to `mx.get_peak_memory()`
on MLX's CPU (`CALIBRATION`, benchmarks/bench_plan.py --calibrate).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Optional

from ..errors import D2OError
from .shape import (  # noqa: F401  (re-exported: plan is where callers have read them from)
    CONFIGS,
    DTYPE_BYTES,
    SHIPPED,
    ModelShape,
    load_shape,
    read_config,
    stored_shape,
    weights_dtype,
)

GB = 1e9  # decimal gigabytes, as metrics.jsonl's peak_memory_gb
# Added to the step's own memory (activations, logits, prompt cache): the same step peaks a few
# percent apart from run to run and from its first to its second call, and the constants are
# fitted, not derived. With it the 7B-width rows of bench_plan.py are predicted at or above
# their measured peak; `fits` (so --memory-limit's chunk size, `suggest`) counts it.
STEP_MARGIN = 0.12

# Elements per token (per trained layer for layer_*), by step: non-negative least squares on
# measured peak - (weights + adapter + optimizer) over random llama shapes (bench_plan.py
# --calibrate: hidden 256-1024, intermediate 512-2048, vocab 8k-64k, 2-8 trained layers; MLX
# 0.32.4 CPU, float32; largest error 2.6 % (full), 5.7 % (shared) of the peak). layer_*: what a
# trained layer keeps for the backward pass (inputs, projections, MLP intermediates, attention
# probabilities: heads x context); work_*: the backward's working set besides; *logit_copies:
# float32 logits, softmax and gradient (x vocab); ckpt_*: with checkpointing (a layer keeps
# its input); chunked_*: the shared step below all sequences at once.
# The shared step's work_i, work_scores, ckpt_work_i and ckpt_work_scores are not identifiable on
# those small shapes (an intermediate of at most 2048): they were under by up to 23 % of the peak
# at a 7B model's width (issue 17). There, the backward of a layer holds the cotangents of its
# MLP intermediates and attention probabilities: A x (layer_i, layer_scores) more, with A = 0.69
# (1.73 checkpointed, on top of the recomputed layer: from its second call on, a compiled
# checkpointed step peaks 10 % above its first) fitted on bench_plan.py (c) (Mistral-7B's widths,
# 2 layers, 49k vocabulary, K = 11, HH lengths, the larger peak of two steps).
# fmt: off
CALIBRATION = {
    "full": {
        "layer_h": 5.20, "layer_i": 5.34, "layer_scores": 1.27, "work_h": 21.6, "work_i": 2.15,
        "work_scores": 0.0, "logit_copies": 3.0, "ckpt_layer_h": 1.32, "ckpt_work_h": 12.96,
        "ckpt_work_i": 11.88, "ckpt_work_scores": 1.16, "ckpt_logit_copies": 2.0,
    },
    "shared": {  # layer_*, ckpt_layer_h, ckpt_work_scores held at the full step's values
        "layer_h": 5.20, "layer_i": 5.34, "layer_scores": 1.27, "work_h": 2.51, "work_i": 3.70,
        "work_scores": 0.88, "logit_copies": 3.24, "ckpt_layer_h": 1.32, "ckpt_work_h": 18.11,
        "ckpt_work_i": 9.92, "ckpt_work_scores": 3.36, "ckpt_logit_copies": 2.22,
        "chunked_logit_copies": 2.07,
    },
}
# fmt: on


@dataclass(frozen=True)
class PlanInputs:
    """The settings a step's memory depends on (names as in `TrainArgs`)."""

    shape: ModelShape
    k: int = 11
    batch_size: int = 1  # prompts per step on this device (after accumulation and ranks)
    prompt_tokens: int = 143  # the longest prompt of the step that peaks
    response_tokens: int = 48  # its longest response
    rows: int = 0  # sequences per prompt; 0: K + 1 (D2O: K samples and the negative)
    fine_tune_type: str = "lora"
    lora_rank: int = 8
    num_layers: int = 16  # trained (last) layers; -1: all
    grad_checkpoint: bool = False
    chunk_size: Optional[int] = None  # sequences back-propagated at once; None: all
    step: str = "shared"
    grad_accumulation_steps: int = 1
    logit_chunk: int = 512  # shared step: response positions whose logits live at once

    @property
    def sequences(self) -> int:
        return self.batch_size * (self.rows or self.k + 1)

    @property
    def trained_layers(self) -> int:
        n = self.shape.layers if self.num_layers < 0 else self.num_layers
        return min(n, self.shape.layers)

    @property
    def chunk(self) -> int:
        """Sequences back-propagated at once: all of them in the full step."""
        if self.step == "full" or not self.chunk_size:
            return self.sequences
        return max(1, min(self.chunk_size, self.sequences))


@dataclass
class Plan:
    """A predicted peak, its breakdown in bytes, and whether it fits MEMORY_LIMIT."""

    inputs: PlanInputs
    breakdown: dict
    memory_limit: float
    limit_source: str = ""
    calibration: dict = field(default_factory=lambda: CALIBRATION, repr=False)  # per step

    @property
    def total(self) -> float:
        return sum(self.breakdown.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.memory_limit

    def suggest(self) -> Optional[dict]:
        """Settings that fit, smallest change first ({} when it fits as it is, None when
        nothing here fits): a chunk size, then checkpointing, then a smaller batch with
        gradient accumulation keeping the batch the update sees."""
        if self.fits:
            return {}
        base, B = self.inputs, self.inputs.batch_size
        for ckpt in dict.fromkeys((base.grad_checkpoint, True)):
            for b in [d for d in range(B, 0, -1) if B % d == 0]:
                acc = base.grad_accumulation_steps * B // b
                inputs = replace(
                    base, grad_checkpoint=ckpt, batch_size=b, grad_accumulation_steps=acc
                )
                chunk = _largest_chunk(inputs, self.memory_limit, self.calibration)
                if chunk is not None:
                    chunk = base.chunk_size if chunk == inputs.sequences else chunk
                    change = {"grad_checkpoint": ckpt, "batch_size": b, "chunk_size": chunk}
                    change["grad_accumulation_steps"] = acc
                    return {k: v for k, v in change.items() if v != getattr(base, k)}
        return None

    def table(self) -> list[str]:
        """The breakdown as lines of text, for the terminal and the README."""
        i, s = self.inputs, self.inputs.shape
        ft = {"lora": f"LoRA r{i.lora_rank}", "dora": f"DoRA r{i.lora_rank}"}
        lines = [
            f"model                {s.describe()}",
            f"dtype                {8 * s.dtype_bytes}-bit ({s.dtype_source})",
            f"step                 {i.step}: K={i.k}, batch {i.batch_size} -> {i.sequences} "
            f"sequences of {i.prompt_tokens} prompt + {i.response_tokens} response tokens",
            f"training             {ft.get(i.fine_tune_type, 'full')} on {i.trained_layers} "
            f"layers, checkpointing {'on' if i.grad_checkpoint else 'off'}, chunk {i.chunk}",
        ]
        lines += [f"{k:<20} {v / GB:8.2f} GB" for k, v in self.breakdown.items()]
        lines.append(f"{'total (peak)':<20} {self.total / GB:8.2f} GB")
        lines.append(f"{'memory limit':<20} {self.memory_limit / GB:8.2f} GB  {self.limit_source}")
        lines.append(f"{'fits':<20} {'yes' if self.fits else 'NO'}")
        return lines


def weight_bytes(s: ModelShape) -> float:
    """Quantized linears and embeddings: bits/8 a weight + a float scale and bias a group."""
    linear = s.layers * sum(a * b for a, b in s.layer_linears())
    embed = s.vocab * s.hidden * (1 if s.tie_word_embeddings else 2)
    norms = (2 * s.layers + 1) * s.hidden
    if s.bits:
        per = s.bits / 8 + 2 * s.dtype_bytes / s.group_size
        return (linear + embed) * per + norms * s.dtype_bytes
    return (linear + embed + norms) * s.dtype_bytes


def trainable_params(i: PlanInputs) -> int:
    """LoRA/DoRA: rank x (in + out) per linear of each trained block (mlx-lm's default keys:
    every linear), DoRA adds a magnitude per output; full: the trained blocks' weights."""
    lin = i.shape.layer_linears()
    if i.fine_tune_type == "full":
        per = sum(a * b for a, b in lin) + 2 * i.shape.hidden
    else:
        per = sum(i.lora_rank * (a + b) for a, b in lin)
        per += sum(b for _, b in lin) if i.fine_tune_type == "dora" else 0
    return per * i.trained_layers


def adapter_bytes(i: PlanInputs) -> float:
    """LoRA/DoRA: float32 parameters, gradient and Adam's two moments (16 bytes each), plus an
    accumulated gradient; full: gradient and moments in the model's dtype (weights counted)."""
    n, acc = trainable_params(i), i.grad_accumulation_steps > 1
    if i.fine_tune_type == "full":
        return n * i.shape.dtype_bytes * (3 + acc)
    return n * 4 * (4 + acc)


def _layer(s: ModelShape, c: dict, ctx: int) -> float:
    return (
        c["layer_h"] * s.hidden + c["layer_i"] * s.intermediate + c["layer_scores"] * s.heads * ctx
    )


def _work(s: ModelShape, c: dict, ctx: int, ckpt: bool) -> float:
    """Elements per token beyond the saved layers: the backward's working set."""
    if not ckpt:
        return (
            c["work_h"] * s.hidden + c["work_i"] * s.intermediate + c["work_scores"] * s.heads * ctx
        )
    return (
        c["ckpt_work_h"] * s.hidden
        + c["ckpt_work_i"] * s.intermediate
        + c["ckpt_work_scores"] * s.heads * ctx
    )


def _saved(i: PlanInputs, c: dict, ctx: int) -> float:
    """Elements per token that all trained layers keep for the backward pass."""
    if i.grad_checkpoint:
        return i.trained_layers * c["ckpt_layer_h"] * i.shape.hidden
    return i.trained_layers * _layer(i.shape, c, ctx)


def _chunk_prompts(i: PlanInputs) -> int:
    """The most prompts a chunk of the prompt-major sequences answers (it runs them again)."""
    rows, n, c = i.sequences // i.batch_size, i.sequences, i.chunk
    # chunk j spans prompts j*c // rows .. (end - 1) // rows; whole chunks repeat their
    # offsets within a prompt every rows / gcd(rows, c) chunks, so those and the last suffice
    starts = range(0, min(n, c * (rows // math.gcd(rows, c))), c)
    return max((min(j + c, n) - 1) // rows - j // rows + 1 for j in [*starts, (n - 1) // c * c])


def step_terms(i: PlanInputs, c: dict) -> dict:
    """Activations, logits and prompt cache of one step, in bytes; C: the step's constants
    (`CALIBRATION[i.step]`), each term linear in them."""
    s, ab = i.shape, i.shape.dtype_bytes
    P, R = i.prompt_tokens, i.response_tokens
    copies = c["ckpt_logit_copies" if i.grad_checkpoint else "logit_copies"]
    if i.step == "full":
        T = -(-(P + R) // 8) * 8  # collate pads to a multiple of 8
        tokens = i.sequences * T
        acts = tokens * (_saved(i, c, T) + _work(s, c, T, i.grad_checkpoint)) * ab
        return {"activations": acts, "logits": tokens * s.vocab * 4 * copies, "prompt cache": 0.0}
    tp, tc, ctx = _chunk_prompts(i) * P, i.chunk * R, P + R
    copies = c["chunked_logit_copies"] if i.chunk < i.sequences else copies
    kv = 2 * s.kv_heads * s.head_dim
    # each continuation's attention reads a copy of its prompt's keys and values
    concat = (1 if i.grad_checkpoint else i.trained_layers) * i.chunk * ctx * kv
    acts = tp * (_saved(i, c, P) + _work(s, c, P, i.grad_checkpoint))
    acts += tc * (_saved(i, c, ctx) + _work(s, c, ctx, i.grad_checkpoint)) + concat
    logits = min(tc, i.logit_chunk) * s.vocab * 4 * copies
    cache = tp * kv * s.layers * ab  # every layer's keys and values of the chunk's prompts
    return {"activations": acts * ab, "logits": logits, "prompt cache": cache}


def plan(
    inputs: PlanInputs, memory_limit: Optional[float] = None, calibration: Optional[dict] = None
) -> Plan:
    """The predicted peak of one step of INPUTS against MEMORY_LIMIT bytes (default: this
    device's, `default_memory_limit`)."""
    c = {step: {**v, **(calibration or {}).get(step, {})} for step, v in CALIBRATION.items()}
    if inputs.step not in c:
        raise D2OError(f"--step {inputs.step}: expected one of {', '.join(c)}")
    if inputs.fine_tune_type == "full" and inputs.shape.bits:
        raise D2OError("--fine-tune-type full trains float weights: plan it with --q-bits 0")
    if min(inputs.k, inputs.batch_size, inputs.prompt_tokens, inputs.response_tokens) < 1:
        raise D2OError("K, batch size and token lengths must be at least 1")
    memory_limit, source = default_memory_limit() if memory_limit is None else (memory_limit, "")
    terms = step_terms(inputs, c[inputs.step])
    breakdown = {
        "weights": weight_bytes(inputs.shape),
        "adapter + optimizer": adapter_bytes(inputs),
        **terms,
        "margin": STEP_MARGIN * sum(terms.values()),
    }
    return Plan(inputs, breakdown, float(memory_limit), source, c)


def _largest_chunk(inputs: PlanInputs, limit: float, c: dict) -> Optional[int]:
    """The largest chunk size whose step fits LIMIT (all sequences in the full step), or None."""
    sizes = [inputs.sequences] if inputs.step == "full" else range(inputs.sequences, 0, -1)
    for n in sizes:
        if plan(replace(inputs, chunk_size=n), limit, c).fits:
            return n
    return None


def choose_chunk_size(inputs: PlanInputs, memory_limit: Optional[float] = None) -> int:
    """The most sequences a step can back-propagate at once under MEMORY_LIMIT bytes (default:
    the device's); D2OError with the plan's numbers when not even one fits."""
    p = plan(replace(inputs, chunk_size=1), memory_limit)
    n = _largest_chunk(inputs, p.memory_limit, p.calibration)
    if n is None:
        raise D2OError(
            f"one step does not fit in {p.memory_limit / GB:.2f} GB even one sequence at a time: "
            + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in p.breakdown.items())
        )
    return n


def default_memory_limit() -> tuple[float, str]:
    """(bytes, source): Metal's recommended working set, else 2/3 of a Mac's RAM, else RAM."""
    import mlx.core as mx

    info = mx.device_info() if hasattr(mx, "device_info") else {}
    if info.get("max_recommended_working_set_size"):
        return float(info["max_recommended_working_set_size"]), "(device's recommended working set)"
    ram = float(info.get("memory_size") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if sys.platform == "darwin":
        return ram * 2 / 3, "(2/3 of RAM)"
    return ram, "(RAM)"
