"""How the fused weights are stored over a quantized base, and the grid maths it needs.

MLX's affine quantization stores each group of `group_size` weights as `bits`-wide integer codes
q with one scale s and one bias b: w ≈ s·q + b. A fused weight W + ΔW kept quantized has to be
rounded onto some grid again, and a LoRA update is small: most of ΔW is finer than half a 4-bit
step, so rounding it back onto the base's own grid gives the base back almost exactly (measured
on SmolLM2 Q4_1 with a D2O adapter: 0.4 % of the adapted weights moved, and the fused model
scored like the base). `ADAPTED_LAYERS` are the ways to store the adapted layers instead (see
benchmarks/fuse_accuracy.py for their size and fidelity); the layers the adapter did not touch
keep the base's weights bit for bit in every one of them.
"""

from __future__ import annotations

import copy
from typing import Optional

from ..errors import D2OError

# `--adapted-layers`: how the layers an adapter changed are stored when the base stays quantized.
ADAPTED_LAYERS = {
    "8bit": "8-bit affine at the base's group size (the default: close to exact, small)",
    "float": "the base's float type (exact, largest)",
    "requant": "quantized afresh at the base's bits, as `mlx_lm fuse` does (smallest)",
    "grid": "rounded onto the base's own grid (smallest; an update finer than a step is lost)",
}
DEFAULT_ADAPTED = "8bit"


def check_quantization(bits: int, group_size: int) -> None:
    """Refuse settings MLX cannot do, asking MLX itself (supported sets vary by version)."""
    import mlx.core as mx

    gs = int(group_size)
    try:
        mx.eval(mx.quantize(mx.zeros((1, 4 * gs)), group_size=gs, bits=int(bits)))
    except Exception as e:
        raise D2OError(
            f"unsupported quantization --q-bits {bits} --q-group-size {group_size} "
            "(MLX's affine quantization takes e.g. bits 2, 3, 4, 5, 6, 8 and group sizes "
            f"32, 64, 128): {e}"
        ) from None


def pack_codes(codes, bits: int):
    """Integer codes [..., n] (n a multiple of 32) -> MLX's packed uint32 layout [..., n*bits/32].

    MLX stores each row as a little-endian bit stream of `bits`-wide codes, 32 bits a word; so a
    group of 32 codes fills exactly `bits` words, for every width MLX has (2, 3, 4, 5, 6, 8).
    """
    import mlx.core as mx

    *lead, n = codes.shape
    if 32 % bits == 0:  # 2, 4, 8 bits: whole codes per word, one shift-and-sum (disjoint bits)
        g = codes.astype(mx.uint32).reshape(*lead, n * bits // 32, 32 // bits)
        shifts = mx.arange(0, 32, bits, dtype=mx.uint32)
        return mx.left_shift(g, shifts).sum(-1).astype(mx.uint32)
    g = codes.astype(mx.uint32).reshape(*lead, n // 32, 32)
    words = []
    for j in range(bits):
        word = mx.zeros(g.shape[:-1], dtype=mx.uint32)
        for i in range(32):
            shift = i * bits - 32 * j  # where code i starts, relative to word j
            if shift >= 32 or shift + bits <= 0:
                continue
            c = g[..., i]
            part = mx.left_shift(c, shift) if shift >= 0 else mx.right_shift(c, -shift)
            word = mx.bitwise_or(word, part)
        words.append(word)
    return mx.stack(words, axis=-1).reshape(*lead, n * bits // 32)


def unpack_codes(packed, bits: int, group_size: int):
    """MLX's packed uint32 [rows, cols*bits/32] -> codes [rows, cols/group_size, group_size],
    for widths that fill words exactly (2, 4, 8 bits)."""
    import mlx.core as mx

    shifts = mx.arange(0, 32, bits, dtype=mx.uint32)
    mask = mx.array(2**bits - 1, dtype=mx.uint32)
    codes = mx.bitwise_and(mx.right_shift(packed[..., None], shifts), mask)
    return codes.reshape(packed.shape[0], -1, group_size)


def _dequantized(m):
    """Float32 weights of quantized module M; from the codes where widths fill words (exact, and
    several times faster than the CPU's dequantize)."""
    import mlx.core as mx

    bits, gs = m.bits, m.group_size
    if 32 % bits:
        w = mx.dequantize(m.weight, m.scales, m.biases, group_size=gs, bits=bits)
        return w.astype(mx.float32)
    s, b = m.scales.astype(mx.float32)[..., None], m.biases.astype(mx.float32)[..., None]
    w = unpack_codes(m.weight, bits, gs) * s + b
    return w.reshape(w.shape[0], -1)


def requantize_like(module, like):
    """Float MODULE (Linear or Embedding) quantized with LIKE's settings, on LIKE's grid where
    that serves.

    Why not mlx-lm's `QuantizedLinear.from_linear` (a fresh `mx.quantize`): it draws a new grid for
    every group, so even an unchanged weight is rounded a second time. Measured: re-quantizing
    SmolLM2's dequantized Q4_1 weights changes 96% of them (mean error 0.22 of a step), and 12%
    of an MLX-quantized matrix. Here each group is rounded onto the base's own scale and bias,
    so a weight the adapter left alone comes back bit for bit and a changed one is within half
    a step; a group takes the fresh quantization only where that is clearly closer to the float
    weight (the update pushed values outside the group's range).
    """
    import mlx.core as mx

    gs, bits, mode = like.group_size, like.bits, getattr(like, "mode", "affine")
    fresh = module.to_quantized(group_size=gs, bits=bits, mode=mode)
    if mode != "affine" or like.weight.shape != fresh.weight.shape:
        return fresh
    w = module.weight.astype(mx.float32)
    rows, cols = w.shape
    wg = w.reshape(rows, cols // gs, gs)
    s, b = like.scales.astype(mx.float32)[..., None], like.biases.astype(mx.float32)[..., None]
    safe = mx.where(s == 0, 1.0, s)
    codes = mx.where(s == 0, 0.0, mx.clip(mx.round((wg - b) / safe), 0, 2**bits - 1))
    err_grid = mx.square(codes * s + b - wg).sum(-1)
    fresh.scales = fresh.scales.astype(like.scales.dtype)
    fresh.biases = fresh.biases.astype(like.biases.dtype)
    err_fresh = mx.square(_dequantized(fresh).reshape(rows, cols // gs, gs) - wg).sum(-1)
    # Prefer the base's grid unless the fresh one is closer by more than a thousandth of a step
    # (RMS): a near-tie is float noise, and switching grids on it would move values for nothing.
    keep = err_grid <= err_fresh + gs * mx.square(1e-3 * s[..., 0])
    packed = pack_codes(codes.reshape(rows, cols), bits).reshape(rows, cols // gs, -1)
    weight = mx.where(keep[..., None], packed, fresh.weight.reshape(packed.shape))
    fresh.weight = weight.reshape(fresh.weight.shape)
    fresh.scales = mx.where(keep, like.scales, fresh.scales)
    fresh.biases = mx.where(keep, like.biases, fresh.biases)
    return fresh


def changed_weights(fused, base):
    """How many weights of quantized FUSED hold another value than in quantized BASE (lazy)."""
    import mlx.core as mx

    bits, gs = base.bits, base.group_size
    same_grid = (fused.scales == base.scales) & (fused.biases == base.biases)
    if 32 % bits or fused.weight.shape != base.weight.shape:

        def deq(m):
            return mx.dequantize(
                m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode
            )

        return mx.sum(deq(fused) != deq(base))
    # Codes straight from the packed words (cheaper than two dequantizations); a group moved to
    # a fresh grid counts whole.
    moved = unpack_codes(fused.weight, bits, gs) != unpack_codes(base.weight, bits, gs)
    return mx.sum(mx.where(same_grid, moved.sum(-1), gs))


def store_adapted(fused, base, adapted: str):
    """FUSED, a float module holding W + ΔW, stored as HOW (an `ADAPTED_LAYERS` key) says; BASE
    is the quantized module W came from (its bits, group size and grid).

    Float: the fused module as it is (the base's float type, mlx-lm's `fuse(dequantize=True)`).
    8bit: a fresh 8-bit grid, 16x finer steps than 4 bits, so the update survives; the group
    size stays the base's (affine takes 32, 64, 128; other modes' sizes fall back to 64).
    """
    if adapted == "float":
        return fused
    if adapted == "grid":
        return requantize_like(fused, base)
    if adapted == "requant":
        return fused.to_quantized(
            group_size=base.group_size, bits=base.bits, mode=getattr(base, "mode", "affine")
        )
    if adapted != "8bit":
        raise D2OError(
            f"--adapted-layers {adapted}: unknown (expected float, grid, requant or 8bit)"
        )
    gs = base.group_size if base.group_size in (32, 64, 128) else 64
    if fused.weight.shape[-1] % gs:
        return fused  # no 8-bit grid fits this width: float, which is exact
    return fused.to_quantized(group_size=gs, bits=8)


def record_layers(config: dict, modules: dict) -> dict:
    """CONFIG with MODULES ({path: module}, the stored adapted layers) described in its
    `quantization`: a module stored otherwise than the default gets its own entry (mlx-lm's
    per-module format: `{"group_size", "bits"}`, or `false` for a float layer), so `mlx_lm.load`
    and LM Studio rebuild the same mixed model. A float base's config is returned as it is."""
    import mlx.nn as nn

    q = config.get("quantization")
    if not isinstance(q, dict) or not modules:
        return config
    q = dict(q)
    default = (q.get("bits"), q.get("group_size"), q.get("mode", "affine"))
    for path, m in sorted(modules.items()):
        if not isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            q[path] = False
            continue
        mode = getattr(m, "mode", "affine")
        if (m.bits, m.group_size, mode) == default:
            q.pop(path, None)
        else:
            q[path] = {"group_size": m.group_size, "bits": m.bits}
            if mode != "affine":
                q[path]["mode"] = mode
    config = {**config, "quantization": q}
    if "quantization_config" in config:  # the Hugging Face name of the same block
        config["quantization_config"] = dict(q)
    return config


def set_quantization(net, config: dict, args, requantize: dict, adapted: str = DEFAULT_ADAPTED):
    """The fused model's weights as ARGS (a `FuseArgs`) ask: as the base with the adapted layers
    stored as HOW says (default), float (`dequantize`) or (re)quantized (`quantize`, `q_bits`,
    `q_group_size`). REQUANTIZE maps the modules a full fine-tune replaced to the base's
    quantized modules. Returns the model and its config."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, quantize_model

    config = copy.deepcopy(config)
    if not (args.dequantize or args.quantize):
        if requantize:  # a full fine-tune's modules, stored like any adapted layer
            modules = dict(net.named_modules())
            back = [(p, store_adapted(modules[p], like, adapted)) for p, like in requantize.items()]
            net.update_modules(tree_unflatten(back))
        return net, config
    dequantize_model(net)
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    if args.quantize:
        net, config = quantize_model(net, config, group_size=args.q_group_size, bits=args.q_bits)
    return net, config


def quantization_of(config: dict) -> Optional[dict]:
    """`{bits, group_size, mode, per_layer}` from a model config's `quantization`, or None."""
    q = config.get("quantization")
    if not q:
        return None
    out = {k: v for k, v in q.items() if k in ("bits", "group_size", "mode")}
    out["per_layer"] = any(isinstance(v, dict) for v in q.values())
    return out
