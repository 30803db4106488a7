"""One training step, and the forward passes without gradient (validation, the reference).

The step follows mlx-lm's tuner/trainer.py: one compiled function over model + optimizer + RNG
state, gradient accumulation, `average_gradients` across ranks. A step runs ONE batched forward
over every sequence of the batch (`examples.collate`) and splits the summed log-probs by the
loss's row layout (`losses.Loss.layout`); reference log-probs come from the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..adapters import adapters_disabled
from ..distributed import Shard
from ..logprobs import sequence_logps
from ..losses import ROWS, Loss
from .examples import collate


def policy_logps(model, layout: tuple, tokens, plens, lens, *refs) -> dict:
    """One forward pass over a batch of `examples.collate`, its rows split by LAYOUT into the
    arrays a loss names (`losses.Loss.inputs`): `policy_<row>` (summed log-probs, with
    gradient), `tokens_<row>` (response token counts) and `ref_<row>` (from the cache)."""
    logps, counts = sequence_logps(model, tokens, plens, lens)
    arrays, at = {}, 0
    for row, ref in zip(layout, refs):
        n = ref.size
        arrays[f"policy_{row}"] = logps[at : at + n].reshape(ref.shape)
        arrays[f"tokens_{row}"] = counts[at : at + n].reshape(ref.shape)
        arrays[f"ref_{row}"] = ref
        at += n
    return arrays


def make_loss_fn(loss: Loss, settings: dict) -> Callable:
    """loss_fn(model, tokens, prompt_lengths, lengths, *refs) -> (loss, metrics), for a batch
    collated with `loss.layout()`; SETTINGS holds the loss's parameters (alpha, beta)."""
    layout = loss.layout()

    def loss_fn(model, *batch):
        return loss(policy_logps(model, layout, *batch), **settings)

    return loss_fn


def make_step(model, optimizer, loss_fn: Callable, accumulation: int):
    """(step, state): step(batch, prev_grad, do_update) -> (loss, metrics, grad_norm, grad),
    compiled over STATE (model, optimizer and RNG state; evaluate it after each call).

    Gradients add up over ACCUMULATION micro-batches; the update divides by their number, so
    it equals one step on the whole batch."""
    loss_value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, prev_grad, do_update):
        (lvalue, metrics), grad = loss_value_and_grad(model, *batch)
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
        return lvalue, metrics, grad_norm, grad

    return step, state


def step_seed(seed: int, it: int, rank: int) -> int:
    """The RNG seed of iteration IT on RANK (dropout, online sampling): a function of the step,
    so a resumed run draws what the uninterrupted one drew (MLX offers no way to set
    `mx.random.state` to a saved key, so checkpoints do not hold it)."""
    return (seed * 1_000_003 + it * 131 + rank) % (2**32)


@contextmanager
def reference_model(model, ref_params: Optional[dict] = None):
    """The model as the frozen reference, in place and without loading it twice: LoRA/DoRA
    layers swapped for the base layers they wrap (`adapters.adapters_disabled`), or, for full
    fine-tuning, the saved starting weights REF_PARAMS put back for the duration."""
    current = None
    if ref_params:
        current = dict(tree_flatten(model.trainable_parameters()))
        model.update(tree_unflatten(list(ref_params.items())))
    try:
        with adapters_disabled(model):
            yield model
    finally:
        if current is not None:
            model.update(tree_unflatten(list(current.items())))


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
    mine = sorted(examples[shard.rank :: shard.size], key=lambda e: e.length())
    totals, n = {}, 0
    with eval_mode(model):
        for i in range(0, len(mine), batch_size):
            chunk = mine[i : i + batch_size]
            arrays = policy_logps(model, layout, *collate(chunk, layout, pad_id)[0])
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
    total = mx.array(0.0)
    with eval_mode(model):
        for i in range(0, len(mine), batch_size):
            tokens, plens, lens = collate(mine[i : i + batch_size], ("negative",), pad_id)[0][:3]
            total = total + sequence_logps(model, tokens, plens, lens)[0].sum()
            mx.eval(total)
    return shard.sum(total).item() / len(examples)
