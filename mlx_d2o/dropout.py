"""LoRA dropout whose masks are a function of where they fall, so every pass draws the same ones.

mlx-lm's LoRA layers draw their dropout masks from MLX's global RNG at each call. A training
step calls them more than once for the same tokens: gradient checkpointing (`mx.checkpoint`,
mlx-lm's `grad_checkpoint`) runs the forward again in the backward pass, and the chunked step
(`train.step`) runs a pass without gradient for the loss weights and then one per chunk. With
fresh masks each time, the gradient is that of another loss than the one reported (measured:
a checkpointed LoRA step at dropout 0.3 had gradients 1.67 relative away from the plain one).

`KeyedDropout` replaces those layers' `nn.Dropout`: its mask at a token is a hash of (the step's
key, the layer, the token's row, its position, the feature), so the recomputation, the weights
pass and every chunk see exactly the masks of the one unchunked forward. `place` says, before
a pass, which row and position each token of the inputs is; the row is the sequence's index in
the batch (its prompt's, for a shared prompt), not its index in a chunk. In the shared-prompt
path a prompt runs once for its K + 1 continuations, so its tokens get one mask for all of them
(the whole-sequence path draws one per sequence): both are dropout of the same rate; the
shared path's noise is correlated across a prompt's continuations.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

# (key [1] uint32, rows [B] uint32, positions [B, L] uint32) of the pass running now; None: no
# key, so masks come from the global RNG as in mlx-lm. Not reset after a pass: the backward
# recomputation of a checkpointed layer reads it after the forward has returned.
_PLACE: Optional[tuple] = None


def _u32(value) -> mx.array:
    return mx.array(value, dtype=mx.uint32)


def _mix(x: mx.array) -> mx.array:
    """A 32-bit integer hash (Wellons' lowbias32): every input bit moves every output bit."""
    x = x ^ (x >> 16)
    x = x * _u32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * _u32(0x846CA68B)
    return x ^ (x >> 16)


def place(key: Optional[mx.array], rows=None, positions=None) -> None:
    """The coordinates of the next pass's tokens: ROWS [B] (the row of each input row) and
    POSITIONS [B, L]; KEY None: masks from the global RNG (mlx-lm's dropout)."""
    global _PLACE
    if key is None:
        _PLACE = None
        return
    _PLACE = (key.astype(mx.uint32), rows.astype(mx.uint32), positions.astype(mx.uint32))


def draw_key() -> mx.array:
    """One step's key, from MLX's global RNG (seeded per step by the training loop)."""
    return mx.random.randint(0, 2**31 - 1, (1,)).astype(mx.uint32)


def keep_mask(shape: tuple, p: float, salt: int) -> mx.array:
    """Bool mask of SHAPE ([B, L, ...], as `place`d): True with probability 1 - P."""
    key, rows, positions = _PLACE
    if tuple(shape[:2]) != tuple(positions.shape):
        raise ValueError(
            f"dropout input {shape} does not match its placed tokens {positions.shape}"
        )
    base = _mix(_mix(_mix(key + _u32(salt) * _u32(0x9E3779B9)) ^ rows)[:, None] ^ positions)
    rest = shape[2:]
    width = 1
    for n in rest:
        width *= n
    feature = mx.arange(width, dtype=mx.uint32).reshape(rest)
    h = _mix(base.reshape(base.shape + (1,) * len(rest)) ^ feature)
    return h >= _u32(min(int(p * 2**32), 2**32 - 1))


class KeyedDropout(nn.Module):
    """`nn.Dropout` whose mask is `keep_mask` at the `place`d tokens (SALT: the layer's own
    stream); without a placed key, `nn.Dropout` itself."""

    def __init__(self, p: float, salt: int):
        super().__init__()
        self.p, self.salt = p, salt

    def _extra_repr(self) -> str:
        return f"p={self.p}, salt={self.salt}"

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training or self.p == 0:
            return x
        if _PLACE is None:
            return nn.Dropout(self.p)(x)
        keep = keep_mask(x.shape, self.p, self.salt)
        return mx.where(keep, x * (1 / (1 - self.p)), mx.zeros_like(x))


def use_keyed_dropout(model) -> int:
    """Replace the `nn.Dropout` of MODEL's LoRA/DoRA layers with `KeyedDropout` (one salt per
    layer, in module order, so a resumed run gets the same); returns how many."""
    n = 0
    for _, module in model.named_modules():
        drop = getattr(module, "dropout", None)
        if isinstance(drop, nn.Dropout) and not isinstance(drop, KeyedDropout):
            p = 1 - drop._p_1
            module.dropout = KeyedDropout(p, salt=n)
            n += 1
    return n
