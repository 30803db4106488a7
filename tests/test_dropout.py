"""LoRA dropout with gradient checkpointing and chunking (issue 17, defect 1).

`mx.checkpoint` (and mlx-lm's grad_checkpoint) runs a layer's forward again in the backward
pass; the chunked step runs a pass without gradient and then one per chunk. Each pass must see
the masks of the one plain forward, or the gradient is that of another loss: measured before
the fix, a checkpointed step at dropout 0.3 had LoRA gradients 1.67 relative away.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten, tree_map
from test_step import make_batch

from mlx_d2o.dropout import KeyedDropout
from mlx_d2o.losses import LOSSES
from mlx_d2o.models import load
from mlx_d2o.train.step import make_loss_fn, make_step
from mlx_d2o.train.trainable import build_optimizer, checkpointed_layers, setup_trainable

SETTINGS = {"alpha": 0.3, "beta": 0.7}


def dropout_model(path, p=0.3):
    model, tok = load(str(path))
    mx.random.seed(0)
    args = SimpleNamespace(
        fine_tune_type="lora",
        num_layers=2,
        lora_parameters=lambda: {"rank": 4, "scale": 10.0, "dropout": p},
        learning_rate=1e-3,
        lr_schedule=None,
        warmup=0,
        optimizer="adam",
    )
    setup_trainable(model, args)
    model.update(
        tree_map(lambda q: q + 0.05 * mx.random.normal(q.shape), model.trainable_parameters())
    )
    mx.eval(model.parameters())
    model.train()
    return model, tok, build_optimizer(args, 10)


def step_grad(model, opt, batch, loss, checkpoint, chunk, shared, seed=7):
    objective = make_loss_fn(LOSSES[loss], SETTINGS, checkpoint)
    step, _ = make_step(model, opt, objective, 1, chunk_size=chunk, shared=shared)
    mx.random.seed(seed)  # the loop seeds every step so
    with checkpointed_layers(model, checkpoint and not shared):
        lvalue, _, _, grad = step(batch, None, False)
        mx.eval(lvalue, grad)
    return lvalue.item(), dict(tree_flatten(grad))


def rel(a: dict, b: dict) -> float:
    num = sum(mx.sum((a[k] - b[k]) ** 2).item() for k in b) ** 0.5
    return num / sum(mx.sum(b[k] ** 2).item() for k in b) ** 0.5


@pytest.mark.parametrize("shared, loss", [(True, "d2o"), (False, "dpo")])
def test_checkpointed_and_chunked_steps_draw_the_plain_steps_masks(tiny_model, shared, loss):
    model, tok, opt = dropout_model(tiny_model)
    assert sum(isinstance(m, KeyedDropout) for m in model.modules()) == 14  # 7 per layer
    batch = make_batch(tok, loss, 4)
    n = len(batch)
    plain_loss, plain = step_grad(model, opt, batch, loss, False, None, shared)
    # dropout is on: another step key gives another gradient, eval mode yet another
    assert rel(step_grad(model, opt, batch, loss, False, None, shared, seed=8)[1], plain) > 1e-2
    for checkpoint, chunk in ((True, None), (False, 3), (True, 2), (False, n - 1)):
        lvalue, grad = step_grad(model, opt, batch, loss, checkpoint, chunk, shared)
        assert abs(lvalue - plain_loss) <= 1e-5 * abs(plain_loss), (checkpoint, chunk)
        assert rel(grad, plain) <= 2e-5, (checkpoint, chunk, rel(grad, plain))


def test_masks_have_the_rate_and_differ_between_layers_and_rows(tiny_model):
    from mlx_d2o import dropout

    key = mx.array([12345], dtype=mx.uint32)
    dropout.place(key, mx.arange(64), mx.broadcast_to(mx.arange(32)[None], (64, 32)))
    a, b = dropout.keep_mask((64, 32, 48), 0.3, 0), dropout.keep_mask((64, 32, 48), 0.3, 1)
    dropout.place(None)
    assert abs(a.astype(mx.float32).mean().item() - 0.7) < 0.01
    assert abs((a == b).astype(mx.float32).mean().item() - (0.7**2 + 0.3**2)) < 0.01
    assert abs((a[0] == a[1]).astype(mx.float32).mean().item() - (0.7**2 + 0.3**2)) < 0.03
