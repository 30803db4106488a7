"""How close the fused model is to base + adapter, measured by `fuse` itself: KL per token.

    KL/token = (1/N) Σ_positions Σ_v π(v | x, y_<t) (log π(v | x, y_<t) − log π_fused(v | x, y_<t))

over the N response positions of a few prompts, each KL over the full vocabulary (as
`evaluate.metrics.sequence_kl`). π is the base with the adapter as mlx-lm runs it (the LoRA
wrappers over the stored base), read before fusing; π_fused the model as it is written. Both
read the same tokens (teacher forcing), so the figure has no sampling noise: a fused model that
computes what base + adapter computes scores ~0, and one that lost the update scores about the
adapter's own KL to the base.

Responses: by default the built-in benign exchanges below (fixed text: the figure costs two
forward passes); with `--fidelity-prompts FILE`, the prompts of FILE answered by base + adapter
(sampled at temperature 1, seed 0, at most `MAX_TOKENS` tokens): the adapter's own distribution.
On the CPU both models run dequantized to float32 for the measurement (`FloatView`), as every
other command runs them there: quantized matmuls on the CPU are many times slower.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Everyday requests with a plain, helpful answer: what the fused model must still do as the
# adapter does. Few and short: the measurement is two forward passes over ~300 tokens. Measured
# on SmolLM2-135M, on the CPU of a shared 2-core machine (load ~7): 4 s a pass, 5 s to
# dequantize; `fuse` took 21 s instead of 7 s and peaked at 1.0 GB instead of 0.3 GB.
BUILTIN = [
    (
        "What's a simple recipe for banana bread?",
        "Mash three ripe bananas, stir in melted butter, sugar, an egg and vanilla, then fold in "
        "flour and baking soda. Bake at 175 °C for about an hour.",
    ),
    (
        "Can you explain the Pythagorean theorem with an example?",
        "In a right triangle, the square of the longest side equals the sum of the squares of "
        "the other two: with sides 3 and 4, the hypotenuse is 5.",
    ),
    (
        "Write a two-line poem about autumn leaves.",
        "Red and golden, drifting down,\nthe leaves lay blankets on the town.",
    ),
    (
        "What are good habits for better sleep?",
        "Go to bed and get up at the same time every day, keep the bedroom dark and cool, and "
        "avoid screens and caffeine in the evening.",
    ),
]
BUILTIN_NAME = f"{len(BUILTIN)} built-in benign prompts"
MAX_TOKENS = 32  # response length for --fidelity-prompts
MAX_TOKENS_PER_BATCH = 1024


@dataclass
class Probe:
    """(prompt ids, response ids) pairs, and base + adapter's log-probs at their response
    positions ([positions, vocab] per batch), to compare a fused model against."""

    pairs: list
    source: str
    pad_id: int = 0
    batches: list = field(default_factory=list)  # [(pair indices, reference log-probs)]

    @property
    def tokens(self) -> int:
        return sum(len(r) for _, r in self.pairs)


def _pairs(tokenizer, net, prompts_file: Optional[str]) -> tuple[list, str]:
    from ..data import load_records, prompt_tokens, response_tokens
    from ..generation import generate_tokens

    if prompts_file is None:
        pairs = []
        for prompt, response in BUILTIN:
            conv = [{"role": "user", "content": prompt}]
            p = prompt_tokens(tokenizer, conv)
            pairs.append((p, response_tokens(tokenizer, conv, response, p)))
        return pairs, BUILTIN_NAME
    records = load_records(prompts_file, require_rejected=False)
    prompts = [prompt_tokens(tokenizer, r.messages) for r in records]
    responses = generate_tokens(net, tokenizer, prompts, MAX_TOKENS, temp=1.0, seed=0, desc=None)
    pairs = [(p, r) for p, r in zip(prompts, responses) if r]
    return pairs, f"{len(pairs)} prompts of {Path(prompts_file).name}, answered by base + adapter"


def _response_logps(net, pairs: list, idx: list, pad_id: int):
    """Log-probs [positions, vocab] at the positions of IDX's pairs that predict a response
    token (as `logprobs.sequence_logps` counts them), in order."""
    import mlx.core as mx

    from ..logprobs import pad

    tokens, _ = pad([list(pairs[j][0]) + list(pairs[j][1]) for j in idx], pad_id)
    logits = net(tokens[:, :-1]).astype(mx.float32)
    n, t, v = logits.shape
    # output s predicts token s + 1: response tokens [p, p + r) come from outputs [p - 1, p + r - 1)
    rows = [
        i * t + s
        for i, j in enumerate(idx)
        for s in range(len(pairs[j][0]) - 1, len(pairs[j][0]) + len(pairs[j][1]) - 1)
    ]
    picked = mx.take(logits.reshape(n * t, v), mx.array(rows), axis=0)
    return picked - mx.logsumexp(picked, axis=-1, keepdims=True)


def make_probe(net, tokenizer, prompts_file: Optional[str] = None) -> Probe:
    """Base + adapter's side of the measurement: NET is the adapted model, before fusing."""
    import mlx.core as mx

    from .. import logprobs
    from ..logprobs import batches_by_tokens

    pairs, source = _pairs(tokenizer, net, prompts_file)
    pad_id = logprobs.pad_id(tokenizer)
    probe = Probe(pairs, source, pad_id)
    lengths = [len(p) + len(r) for p, r in pairs]
    for idx in batches_by_tokens(lengths, MAX_TOKENS_PER_BATCH, 8):
        ref = _response_logps(net, pairs, idx, pad_id)
        mx.eval(ref)
        probe.batches.append((idx, ref))
    return probe


def kl_per_token(net, probe: Probe) -> float:
    """Mean KL(base + adapter ‖ NET) per response token over PROBE's pairs."""
    import mlx.core as mx

    total = mx.array(0.0)
    for idx, ref in probe.batches:
        logq = _response_logps(net, probe.pairs, idx, probe.pad_id)
        total = total + (mx.exp(ref) * (ref - logq)).sum()
        mx.eval(total)
    return max(0.0, total.item() / max(1, probe.tokens))


class FloatView:
    """`with view(net):` NET with its quantized layers dequantized and its floats in float32, on
    the CPU only; put back as they were (the same arrays) on exit. On a GPU: NET as it is.

    The float copies are kept between uses: the layers fusing does not touch are dequantized
    once for both sides of the measurement (on SmolLM2, 4.7 s of 2 x 7 s on the loaded CPU).
    `forget` drops the copies of layers that are about to be freed, `clear` all of them.
    """

    def __init__(self):
        self._floats = {}  # id(quantized module) -> (that module, its float copy)

    @contextlib.contextmanager
    def __call__(self, net):
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_flatten, tree_map, tree_unflatten

        from ..models import on_cpu

        if not on_cpu():
            yield net
            return
        params = tree_flatten(net.parameters())
        quantized = [
            (name, m)
            for name, m in net.named_modules()
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
        ]
        for _, m in quantized:
            if id(m) not in self._floats:
                self._floats[id(m)] = (m, _dequantized(m))
        net.update_modules(tree_unflatten([(n, self._floats[id(m)][1]) for n, m in quantized]))
        net.update(
            tree_map(
                lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
                net.parameters(),
            )
        )
        try:
            yield net
        finally:
            net.update_modules(tree_unflatten(quantized))
            net.update(tree_unflatten(params))

    def forget(self, modules) -> None:
        for m in modules:
            self._floats.pop(id(m), None)

    def clear(self) -> None:
        self._floats.clear()


def _dequantized(m):
    """A float32 Linear / Embedding computing what quantized M computes."""
    import mlx.core as mx
    import mlx.nn as nn

    biases = getattr(m, "biases", None)  # None in the float modes (mxfp4, ...)
    w = mx.dequantize(
        m.weight, m.scales, biases, group_size=m.group_size, bits=m.bits, mode=m.mode
    ).astype(mx.float32)
    if isinstance(m, nn.QuantizedEmbedding):
        f = nn.Embedding(*w.shape)
    else:
        f = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
        if "bias" in m:
            f.bias = m.bias.astype(mx.float32)
    f.weight = w
    return f
