"""One training step, and the forward passes without gradient (validation, the reference).

The step follows mlx-lm's tuner/trainer.py: compiled functions over model + optimizer + RNG
state, gradient accumulation, `average_gradients` across ranks. A batch (`examples.Batch`) holds
each prompt once and the sequences its loss reads after it; the forward pass runs each prompt
once and its continuations after it (`shared_prompt`), for models that allow it, else the whole
sequences (`logprobs.sequence_logps`). Reference log-probs come from the cache.

Exact chunking. Every loss here is L(ℓ) of the sequences' summed log-probs ℓ_i = log π(y_i|x),
so ∇_θ L = Σ_i w_i ∇_θ ℓ_i with w_i = ∂L/∂ℓ_i. For D2O (Duan et al., arXiv:2403.03419) with
z = (β/K) Σ_k log(π/π_ref)(y_k) − α log(π/π_ref)(y_l) per prompt and L = −mean log σ(z), the
descent direction is σ(−z)·∇[(β/K) Σ_k log π(y_k) − α log π(y_l)]: w = −σ(−z)·β/K for a sample
and σ(−z)·α for the negative (over B prompts); the other losses likewise (`Objective.weights`).
With CHUNK_SIZE below the batch's sequences, one pass without gradient gives ℓ, hence L, its
metrics and w; then each chunk back-propagates Σ_{i in chunk} w_i ℓ_i and the gradients add up:
the sum is ∇_θ L exactly, and the peak holds one chunk's activations. At or above the batch's
sequences, one forward and backward as before, with no extra pass. LoRA dropout draws its masks
from one key per step at each token's place in the batch (`dropout`), so the pass without
gradient and every chunk see the unchunked step's masks: the sum is exact with dropout too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map

from ..adapters import as_reference
from ..distributed import Shard
from ..dropout import KeyedDropout, draw_key, place
from ..logprobs import sequence_logps
from ..losses import ROWS, Loss
from ..shared_prompt import shared_logps, supports
from .examples import Batch, collate


def forward(model, inputs: dict, checkpoint: bool = False) -> tuple[mx.array, mx.array]:
    """(summed response log-probs [N], response token counts [N]) of `Batch.inputs`: shared
    prompts when INPUTS is a `shared_prompt.pack`, whole sequences otherwise. CHECKPOINT:
    gradient checkpointing of every layer (the whole-sequence path gets it from mlx-lm's
    patched layers, `trainable.checkpointed_layers`)."""
    if "prompts" in inputs:
        return shared_logps(model, inputs, checkpoint)
    return sequence_logps(
        model,
        inputs["tokens"],
        inputs["prompt_lengths"],
        inputs["lengths"],
        inputs.get("dropout_key"),
        inputs.get("row_ids"),
    )


@dataclass
class Objective:
    """What a step minimises: LOSS with its SETTINGS (alpha, beta) on the policy's log-probs
    of a batch whose sequences follow LAYOUT (`losses.Loss.layout`)."""

    loss: Loss
    settings: dict
    layout: tuple
    checkpoint: bool = False

    def arrays(self, logps: mx.array, counts: mx.array, refs: tuple) -> dict:
        """The arrays a loss names (`losses.Loss.inputs`), LOGPS and COUNTS split by the layout:
        `policy_<row>` (with gradient), `tokens_<row>` and `ref_<row>` (from the cache)."""
        arrays, at = {}, 0
        for row, ref in zip(self.layout, refs):
            n = ref.size
            arrays[f"policy_{row}"] = logps[at : at + n].reshape(ref.shape)
            arrays[f"tokens_{row}"] = counts[at : at + n].reshape(ref.shape)
            arrays[f"ref_{row}"] = ref
            at += n
        return arrays

    def value(self, logps: mx.array, counts: mx.array, refs: tuple):
        return self.loss(self.arrays(logps, counts, refs), **self.settings)

    def __call__(self, model, inputs: dict, refs: tuple):
        """(loss, metrics) of one forward pass over INPUTS (`Batch.inputs`)."""
        return self.value(*forward(model, inputs, self.checkpoint), refs)

    def weights(self, logps: mx.array, counts: mx.array, refs: tuple):
        """(loss, metrics, ∂loss/∂logps): each sequence's weight in the gradient."""
        fn = mx.value_and_grad(lambda lp: self.value(lp, counts, refs))
        (lvalue, metrics), w = fn(logps)
        return lvalue, metrics, w


def make_loss_fn(loss: Loss, settings: dict, grad_checkpoint: bool = False) -> Objective:
    """The `Objective` of LOSS for a batch collated with `loss.layout()`: called as
    loss_fn(model, inputs, refs) -> (loss, metrics); SETTINGS holds alpha and beta."""
    return Objective(loss, settings, loss.layout(), grad_checkpoint)


def make_step(
    model,
    optimizer,
    loss_fn: Objective,
    accumulation: int,
    chunk_size: Optional[int] = None,
    shared: Optional[bool] = None,
):
    """(step, state): step(batch, prev_grad, do_update) -> (loss, metrics, grad_norm, grad)
    over an `examples.Batch`; STATE (model, optimizer and RNG state) is what the compiled parts
    change: evaluate it after each call.

    Gradients add up over ACCUMULATION micro-batches; the update divides by their number, so
    it equals one step on the whole batch. CHUNK_SIZE: sequences back-propagated at once (None:
    all, one pass); SHARED: each prompt computed once (default: when the model allows it)."""
    shared = supports(model) if shared is None else shared
    state = [model.state, optimizer.state, mx.random.state]
    compiled = partial(mx.compile, inputs=state, outputs=state)

    def finish(grad, prev_grad, do_update):
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        grad_norm = mx.array(0.0)
        if do_update:
            grad = nn.average_gradients(grad)
            if accumulation > 1:
                grad = tree_map(lambda g: g / accumulation, grad)
            squares = (mx.sum(g.astype(mx.float32) ** 2) for _, g in tree_flatten(grad))
            grad_norm = mx.sqrt(sum(squares))
            optimizer.update(model, grad)
            grad = None
        return grad_norm, grad

    loss_value_and_grad = nn.value_and_grad(model, loss_fn)

    @compiled
    def whole(inputs, refs, prev_grad, do_update):
        (lvalue, metrics), grad = loss_value_and_grad(model, inputs, refs)
        return (lvalue, metrics, *finish(grad, prev_grad, do_update))

    chunk = _Chunked(model, loss_fn, compiled, finish)

    keyed = any(isinstance(m, KeyedDropout) and m.p > 0 for m in model.modules())

    def step(batch: Batch, prev_grad, do_update):
        size = step.chunk_size
        # One dropout key per step: every pass of it (a checkpoint's recomputation, the weights
        # pass, each chunk) draws the masks of the one unchunked forward (`dropout`).
        key = draw_key() if keyed else None
        try:
            if not size or size >= len(batch):
                return whole(_keyed(batch.inputs(shared), key), batch.refs, prev_grad, do_update)
            return chunk(batch, batch.chunks(size), shared, key, prev_grad, do_update)
        finally:
            # The compiled step has traced its passes, recomputations included: no later call
            # of the model may see this step's placed (traced) tokens.
            place(None)

    step.chunk_size = chunk_size  # may change between steps: any size gives the same gradient
    return step, state


class _Chunked:
    """The chunked step (see the module's docstring): a pass without gradient, then one
    backward per chunk of sequences, weighted by ∂loss/∂logps; compiled like the whole step."""

    def __init__(self, model, loss_fn: Objective, compiled: Callable, finish: Callable):
        self.loss_fn = loss_fn
        surrogate = nn.value_and_grad(
            model, lambda m, inputs, w: (forward(m, inputs, loss_fn.checkpoint)[0] * w).sum()
        )

        @compiled
        def logps(inputs):
            return forward(model, inputs)[0]

        @compiled
        def grad(inputs, w, prev_grad):
            g = surrogate(model, inputs, w)[1]
            return g if prev_grad is None else tree_map(lambda a, b: a + b, g, prev_grad)

        @compiled
        def update(grad, do_update):
            return finish(grad, None, do_update)

        self.logps, self.grad, self.update = logps, grad, update

    def __call__(self, batch: Batch, chunks: list, shared: bool, key, prev_grad, do_update):
        inputs = [_keyed(batch.inputs(shared, idx), key) for idx in chunks]
        parts = []
        for x in inputs:
            parts.append(self.logps(x))
            mx.eval(parts[-1])  # one chunk's activations at a time
        inverse = mx.array(np.argsort(np.concatenate(chunks)), dtype=mx.int32)
        logps = mx.concatenate(parts)[inverse]
        lvalue, metrics, w = self.loss_fn.weights(logps, batch.counts(), batch.refs)
        mx.eval(lvalue, metrics, w)
        grad = prev_grad
        for x, idx in zip(inputs, chunks):
            grad = self.grad(x, w[mx.array(idx, dtype=mx.int32)], grad)
            mx.eval(grad)
        return (lvalue, metrics, *self.update(grad, do_update))


def _keyed(inputs: dict, key) -> dict:
    return inputs if key is None else {**inputs, "dropout_key": key}


def step_seed(seed: int, it: int, rank: int) -> int:
    """The RNG seed of iteration IT on RANK (dropout, online sampling): a function of the step,
    so a resumed run draws what the uninterrupted one drew (MLX offers no way to set
    `mx.random.state` to a saved key, so checkpoints do not hold it)."""
    return (seed * 1_000_003 + it * 131 + rank) % (2**32)


def reference_model(model, ref_params: Optional[dict] = None):
    """The model as the frozen reference, in place and without loading it twice
    (`adapters.as_reference`): LoRA/DoRA layers swapped for the base layers they wrap, or, for
    full fine-tuning, the saved starting weights REF_PARAMS put back for the duration."""
    return as_reference(model, ref_params)


@contextmanager
def eval_mode(model):
    """MODEL in eval mode (no dropout) inside the block, back in training mode after it if it
    was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def validation_names(loss: Loss) -> list:
    """The keys of a validation line besides step, split and val_time."""
    return sorted(set(loss.metric_names()) | {"loss", "logps/negative"})


def evaluate(
    model, examples: list, loss: Loss, settings: dict, batch_size: int, pad_id: int, shard: Shard
) -> dict:
    """Mean loss and metrics over EXAMPLES (no gradient), sharded across ranks.

    `logps/negative` is always there, whatever the loss reports (DPO names it
    `logps/rejected`): the mean log π(negative) that training should lower."""
    layout = tuple(r for r in ROWS if r in loss.rows or r == "negative")
    objective = Objective(loss, settings, layout)
    shared = supports(model)
    mine = sorted(examples[shard.rank :: shard.size], key=lambda e: e.length())
    totals, n = {}, 0
    with eval_mode(model):
        for i in range(0, len(mine), batch_size):
            chunk = mine[i : i + batch_size]
            batch = collate(chunk, layout, pad_id)[0]
            logps, counts = forward(model, batch.inputs(shared))
            arrays = objective.arrays(logps, counts, batch.refs)
            lvalue, metrics = loss(arrays, **settings)
            vals = {"loss": lvalue, **loss.with_aliases(metrics)}
            vals.setdefault("logps/negative", mx.mean(arrays["policy_negative"]))
            for k, v in vals.items():
                totals[k] = totals.get(k, 0.0) + v * len(chunk)
            n += len(chunk)
            mx.eval(totals)
    # Every rank must join the all_sum, even one with no examples: the key list comes from the
    # loss, not from the data, so it is the same everywhere.
    keys = sorted(totals) or validation_names(loss)
    vals = shard.sum(mx.array([totals.get(k, 0.0) for k in keys] + [n], dtype=mx.float32))
    vals = vals.tolist()
    return {k: v / max(vals[-1], 1) for k, v in zip(keys, vals[:-1])}


def mean_negative_logp(model, examples: list, batch_size: int, pad_id: int, shard: Shard) -> float:
    """Mean log π(negative | prompt) over EXAMPLES: forward passes over the negatives only."""
    mine = sorted(examples[shard.rank :: shard.size], key=lambda e: e.length())
    total, shared = mx.array(0.0), supports(model)
    with eval_mode(model):
        for i in range(0, len(mine), batch_size):
            batch = collate(mine[i : i + batch_size], ("negative",), pad_id)[0]
            total = total + forward(model, batch.inputs(shared))[0].sum()
            mx.eval(total)
    return shard.sum(total).item() / len(examples)
