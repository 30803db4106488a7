"""Log-probs of many responses to few prompts, each prompt computed once.

A D2O step scores K samples and a negative (and DPO's chosen response) of each prompt; with
HH-RLHF lengths most of each sequence is the prompt. Here the prompts run through the model once
(`pack`'s ``prompts``), every layer keeps their keys and values (`SharedPromptCache`), and each
continuation attends to its prompt's keys and values, gathered over the batch, then to its own
tokens causally. The gradient flows back through the gathered keys and values into the shared
prompt, so loss and gradients equal those of the full sequences (to float32 rounding).

Positions are exactly those of the full sequence: prompts are left-padded and their RoPE offset
is minus their padding, as mlx-lm's `BatchKVCache` does; a continuation starts at the position of
its prompt's last token, which it takes as its first input, so every response token - the first
one too - is predicted inside the continuation pass. The LM head and its log-softmax then run at
the response positions only (`token_logps`), a bounded number of positions at a time.

The model must be one whose decoder takes mlx-lm's cache objects and whose RoPE rotates each
position by an angle of that position alone (`supports`, `EXACT_ROPES`); other models use
`logprobs.sequence_logps` on full sequences (`fallback_note` says so for a known architecture
with a length-dependent RoPE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import dropout

# mlx-lm architectures whose decoder builds its mask with `cache.make_mask`, applies RoPE at
# `cache.offset` and reads keys/values through `cache.update_and_fetch`, and whose head is the
# tied embedding or `lm_head` with nothing after it (no soft-capping, no logit scale).
SUPPORTED = ("mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3")
# Float32 logits alive at once in the head: 512 positions of a 32k vocabulary (64 MB a copy),
# fewer positions for a larger vocabulary, so that a 152k vocabulary costs what a 32k one does.
LOGIT_ELEMENTS = 512 * 32768


class Head(NamedTuple):
    """A model split at its head: BODY maps tokens to final normed hidden states, FN maps those
    to logits; MODULE (an embedding or linear layer, quantized or not) owns FN's weights."""

    body: object
    module: object
    fn: Callable

    @property
    def vocab(self) -> int:
        return int(self.module.weight.shape[0])  # rows: the outputs, packed or not

    def positions(self) -> int:
        """Positions whose logits are computed at once (`token_logps`'s chunk)."""
        return max(16, LOGIT_ELEMENTS // self.vocab)


def split_head(model) -> Optional[Head]:
    """MODEL split at its head, or None when it is not `SUPPORTED`."""
    if type(model).__module__ not in SUPPORTED:
        return None
    body = getattr(model, "model", None)
    if body is None or getattr(body, "swa_idx", None) is not None:  # sliding-window layers
        return None
    if getattr(model.args, "tie_word_embeddings", False):
        return Head(body, body.embed_tokens, body.embed_tokens.as_linear)
    return Head(body, model.lm_head, model.lm_head)


# RoPE modules (of `rope_utils.initialize_rope`, by class name) that rotate each position by
# an angle of that position alone, and take an array offset: a continuation at its prompt's
# offset gets exactly the rotation of the full sequence. Not here: `DynamicNTKScalingRoPE`
# (its base grows with the sequence length, so a prompt and a continuation pass would each
# get another base than the full sequence; it also takes no array offset), and any type
# mlx-lm adds later, until it is checked against a full-sequence forward.
EXACT_ROPES = ("RoPE", "Llama3RoPE", "YarnRoPE", "SuScaledRoPE", "ProportionalRoPE")


def whole_sequence_reason(model) -> Optional[str]:
    """Why MODEL, an architecture `split_head` knows, must run whole sequences (the RoPE it
    uses is not one of `EXACT_ROPES`); None when the shared-prompt path computes it exactly."""
    body = getattr(model, "model", None)
    for layer in getattr(body, "layers", []):
        name = type(getattr(getattr(layer, "self_attn", None), "rope", None)).__name__
        if name not in EXACT_ROPES:
            scaling = getattr(model.args, "rope_scaling", None) or {}
            kind = scaling.get("type") or scaling.get("rope_type")
            what = f"rope_scaling type {kind!r}" if kind else f"RoPE {name}"
            return f"{what} ({name}) is not computed exactly with shared prompts"
    return None


def supports(model) -> bool:
    """Whether `shared_logps` computes MODEL exactly: an architecture `split_head` knows, with
    a RoPE of `EXACT_ROPES`."""
    return split_head(model) is not None and whole_sequence_reason(model) is None


def fallback_note(model) -> Optional[str]:
    """The one line to print when MODEL's architecture has a shared-prompt path but its RoPE
    keeps it on whole sequences (right-padded: a length-dependent RoPE then sees the batch's
    padded length, as in mlx-lm's own trainer); None otherwise."""
    if split_head(model) is None or (reason := whole_sequence_reason(model)) is None:
        return None
    return f"note: {reason}: training and scoring run whole sequences (no shared prompts)"


def _round_up(n: int, multiple: int) -> int:
    return -(-max(n, 1) // multiple) * multiple


def _ints(values) -> mx.array:
    return mx.array(np.asarray(values, dtype=np.int32).reshape(-1))


def pack(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    group: Sequence[int],
    pad_id: int = 0,
    multiple: int = 8,
    counted: Optional[Sequence[int]] = None,
) -> dict:
    """The arrays of one shared-prompt forward pass (lengths rounded up to MULTIPLE, so compiled
    shapes repeat). RESPONSES[n] answers PROMPTS[GROUP[n]]; only its last COUNTED[n] tokens
    (default: all) are scored, so a continuation may begin with the rest of its own prompt
    (`shared_prefix`: PROMPTS is then the beginning that all prompts share).

    Returns a dict of arrays: ``prompts`` [P, Lp] (each prompt but its last token, left-padded),
    ``starts`` [P] (its padding), ``inputs`` [N, Lc] (the prompt's last token, then the response
    but its last token; right-padded), ``offsets`` [N] (RoPE position of the first input),
    ``group`` [N], ``select`` [M] (flat index into [N, Lc] of each response token's input
    position), ``targets`` [M], ``owner`` [M] (its response; N for padding), ``counts`` [N].
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt has no tokens")
    P, N = len(prompts), len(responses)
    Lp = _round_up(max(len(p) - 1 for p in prompts), multiple)
    ptoks = np.full((P, Lp), pad_id, dtype=np.int32)
    starts = np.array([Lp - len(p) + 1 for p in prompts], dtype=np.int32)
    for i, p in enumerate(prompts):
        ptoks[i, starts[i] :] = p[:-1]
    Lc = _round_up(max(len(r) for r in responses), multiple)
    inputs = np.full((N, Lc), pad_id, dtype=np.int32)
    select, targets, owner = [], [], []
    for n, (r, g) in enumerate(zip(responses, group)):
        seq = [prompts[g][-1], *r[:-1]]
        inputs[n, : len(seq)] = seq
        c = len(r) if counted is None else counted[n]
        select += range(n * Lc + len(r) - c, n * Lc + len(r))
        targets += list(r[len(r) - c :])
        owner += [n] * c
    M = _round_up(len(select), multiple)
    pad = M - len(select)
    return {
        "prompts": mx.array(ptoks),
        "starts": mx.array(starts),
        "inputs": mx.array(inputs),
        "offsets": _ints([len(prompts[g]) - 1 for g in group]),
        "group": _ints(group),
        "select": _ints(select + [0] * pad),
        "targets": _ints(targets + [0] * pad),
        "owner": _ints(owner + [N] * pad),
        "counts": _ints([len(r) for r in responses] if counted is None else counted),
    }


class PromptCache:
    """One layer's cache (mlx-lm's cache protocol) in the prompts' pass: RoPE at each prompt's
    own positions; keeps the keys and values, with their graph, for the continuations."""

    def __init__(self, offset: mx.array, mask: mx.array):
        self.offset, self.mask = offset, mask
        self.keys = self.values = None

    def make_mask(self, N, return_array=False, window_size=None):
        return self.mask

    def update_and_fetch(self, keys, values):
        self.keys, self.values = keys, values
        return keys, values


class ContinuationCache(PromptCache):
    """One layer's cache in the continuations' pass: each row's prompt keys and values (gathered
    over the batch: the gradient flows back to the shared prompt) before the row's own."""

    def __init__(self, prompt: PromptCache, offset: mx.array, mask: mx.array, group: mx.array):
        super().__init__(offset, mask)
        self.prompt, self.group = prompt, group

    def update_and_fetch(self, keys, values):
        g, p = self.group, self.prompt
        return (
            mx.concatenate([p.keys[g], keys], axis=2),
            mx.concatenate([p.values[g], values], axis=2),
        )


def _prompt_mask(starts: mx.array, L: int) -> mx.array:
    """[P, 1, L, L]: causal over the prompt's own tokens. A padding query sees itself only (a row
    with nothing visible would give NaN, and NaN times a zero weight is still NaN)."""
    q, k = mx.arange(L)[:, None], mx.arange(L)[None]
    real = k[None] >= starts[:, None, None]
    return ((k <= q)[None] & (real | (k == q)[None]))[:, None]


def _continuation_mask(starts: mx.array, group: mx.array, Lp: int, Lc: int) -> mx.array:
    """[N, 1, Lc, Lp + Lc]: the real tokens of the row's prompt, then its own tokens causally."""
    prompt = mx.arange(Lp)[None] >= starts[group][:, None]  # [N, Lp]
    prompt = mx.broadcast_to(prompt[:, None, None, :], (group.size, 1, Lc, Lp))
    own = mx.arange(Lc)[None] <= mx.arange(Lc)[:, None]
    own = mx.broadcast_to(own[None, None], (group.size, 1, Lc, Lc))
    return mx.concatenate([prompt, own], axis=-1)


def _block(layer, x, mask, cache):
    # The decoder block of every `SUPPORTED` architecture, written out rather than called:
    # mlx-lm's grad_checkpoint patches the block class's __call__, and its checkpoint would not
    # see the prompt keys a cache object carries (they are not array arguments), so their
    # gradient would be lost. Checkpointing here is `_layer_pair`'s.
    h = x + layer.self_attn(layer.input_layernorm(x), mask, cache)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _layer_pair(layer, hp, hc, a: dict, checkpoint: bool):
    """One layer over the prompts HP, then over the continuations HC that attend to them."""

    def both(params, hp, hc, *index):
        if params is not None:
            layer.update(params)
        # masks, positions and indices: the checkpoint's backward must not differentiate them
        mp, mc, starts, offsets, group, *place = (mx.stop_gradient(a) for a in index)
        # The dropout masks are placed here, inside: a checkpoint's recomputation draws them
        # again and must draw the same (`dropout.place`).
        key = place[0] if place else None
        prompt = PromptCache(-starts, mp)
        dropout.place(key, *place[1:3])
        hp = _block(layer, hp, mp, prompt)
        dropout.place(key, *place[3:5])
        hc = _block(layer, hc, mc, ContinuationCache(prompt, offsets, mc, group))
        return hp, hc

    args = (hp, hc, a["prompt_mask"], a["mask"], a["starts"], a["offsets"], a["group"])
    args += a["dropout"]
    if checkpoint:
        return mx.checkpoint(both)(layer.trainable_parameters(), *args)
    return both(None, *args)


def _dropout_places(arrays: dict) -> tuple:
    """(key, prompt rows, prompt positions, continuation rows, continuation positions) for
    `dropout.place`, or () without a ``dropout_key``. Rows are the batch's (``prompt_ids``,
    ``row_ids``; default: this pack's own), so a chunk draws the masks of the whole batch."""
    key = arrays.get("dropout_key")
    if key is None:
        return ()
    P, Lp = arrays["prompts"].shape
    N, Lc = arrays["inputs"].shape
    prompts = arrays.get("prompt_ids", mx.arange(P))
    rows = arrays.get("row_ids", mx.arange(N))
    ppos = mx.arange(Lp)[None] - arrays["starts"][:, None]
    cpos = arrays["offsets"][:, None] + mx.arange(Lc)[None]
    return (key, 2 * prompts, ppos, 2 * rows + 1, cpos)


def hidden_states(body, arrays: dict, checkpoint: bool = False) -> mx.array:
    """[N, Lc, D] final hidden states of the continuations of a `pack`; CHECKPOINT: each layer
    keeps only its inputs for the backward pass and recomputes the rest (mlx-lm's
    grad_checkpoint, done per layer over both passes). With a ``dropout_key`` in ARRAYS, LoRA
    dropout masks are those of `dropout.KeyedDropout` at each token's batch row and position."""
    starts, group = arrays["starts"], arrays["group"]
    Lp, Lc = arrays["prompts"].shape[1], arrays["inputs"].shape[1]
    a = {
        **arrays,
        "prompt_mask": _prompt_mask(starts, Lp),
        "mask": _continuation_mask(starts, group, Lp, Lc),
        "dropout": _dropout_places(arrays),
    }
    hp, hc = body.embed_tokens(arrays["prompts"]), body.embed_tokens(arrays["inputs"])
    for layer in body.layers:
        # Only the keys and values of the prompts matter: their last-layer output is never
        # evaluated.
        hp, hc = _layer_pair(layer, hp, hc, a, checkpoint)
    return body.norm(hc)


def token_logps(head: Head, h: mx.array, targets: mx.array, chunk: Optional[int] = None):
    """log π(target) at each row of H [M, D]: logits[target] - logsumexp(logits), in float32,
    CHUNK rows at a time (default `Head.positions`). With more rows than one chunk each chunk is
    checkpointed (mx.checkpoint): the backward recomputes its logits instead of keeping [M, V]
    of them. (MLX evaluates a few sibling chunks together, so the saving is the chunks beyond
    those: measured on SmolLM2, K = 11, 1128 positions in 3 chunks: -120 MB, +7 % time.)"""

    def one(h, t):
        t = mx.stop_gradient(t)  # token ids: the checkpoint's backward must not differentiate them
        logits = head.fn(h).astype(mx.float32)
        picked = mx.take_along_axis(logits, t[:, None], axis=-1).squeeze(-1)
        return picked - mx.logsumexp(logits, axis=-1)

    M, chunk = h.shape[0], chunk or head.positions()
    if M <= chunk:
        return one(h, targets)
    fn = nn.utils.checkpoint(head.module, one)
    return mx.concatenate(
        [fn(h[i : i + chunk], targets[i : i + chunk]) for i in range(0, M, chunk)]
    )


def shared_logps(
    model, arrays: dict, checkpoint: bool = False, chunk: Optional[int] = None
) -> tuple[mx.array, mx.array]:
    """Summed response log-probs [N] and response token counts [N] of a `pack`. Differentiable
    in the model's parameters; MODEL must be `supports`-ed. CHECKPOINT: gradient checkpointing
    of every layer (`hidden_states`); CHUNK: `token_logps`'s."""
    head = split_head(model)
    h = hidden_states(head.body, arrays, checkpoint)
    h = h.reshape(-1, h.shape[-1])[arrays["select"]]
    tok = token_logps(head, h, arrays["targets"], chunk)
    N = arrays["counts"].size
    # A one-hot [N, M] sum: padding positions (owner N) belong to no row.
    onehot = (arrays["owner"][None] == mx.arange(N)[:, None]).astype(tok.dtype)
    return onehot @ tok, arrays["counts"]
