"""A full fine-tune's weights put into a loaded base (quantized bases too): eval, sample, fuse."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from .errors import D2OError


def put_full(net, path: str | Path, tuned: dict) -> tuple[list, list, list, list]:
    """A full fine-tune's TUNED weights (name -> array) put into NET in place, the one way eval,
    sample and fuse load one: the quantized modules it replaced made float (it trains float
    weights), cast to the types they replace, checked (one line naming PATH); other modules
    untouched. Returns (tuned, base values, float modules in, quantized ones out) lists."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten

    modules = dict(net.named_modules())
    floats, quantized = [], []
    for name in sorted({n.rsplit(".", 1)[0] for n in tuned}):
        m = modules.get(name)
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            floats.append((name, _float_copy(m)))
            quantized.append((name, m))
    if floats:
        net.update_modules(tree_unflatten(floats))
    params = dict(tree_flatten(net.parameters()))
    bad = [k for k, v in tuned.items() if k not in params or params[k].shape != v.shape]
    if bad:
        if quantized:
            net.update_modules(tree_unflatten(quantized))
        fit = f"weights {', '.join(bad[:3])} do not fit the model"
        raise D2OError(f"{path}: {fit}: this adapter was made for another base model")
    on = [(k, v.astype(params[k].dtype)) for k, v in tuned.items()]
    off = [(k, params[k]) for k in tuned]
    net.update(tree_unflatten(on))
    return on, off, floats, quantized


def _float_copy(m):
    """A float Linear / Embedding holding the dequantized weights of quantized module M."""
    import mlx.nn as nn

    w = mx.dequantize(m.weight, m.scales, m.biases, m.group_size, m.bits, mode=m.mode)
    linear = isinstance(m, nn.QuantizedLinear)
    f = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m) if linear else nn.Embedding(*w.shape)
    if linear and "bias" in m:
        f.bias = m.bias
    f.weight = w
    return f
