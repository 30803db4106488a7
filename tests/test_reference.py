"""The reference comes from one function, in the policy's precision (issue 17, defect 3).

`sample` with a full fine-tune adapter loaded the base again with `load(args.model)`, which
dequantizes on the CPU whatever --dequantize said: with a 4-bit model with bfloat16 scales
kept quantized, the generator was 4-bit bf16 and the reference float32; the cached reference
was 0.249 nats per sequence away from the step-0 policy, and the manifest recorded the
generator's flag, so train never warned. Now every reference is `adapters.as_reference` on
the policy's own weights, and the manifest records its precision.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from test_sample import _args

from mlx_d2o.data import prompt_tokens, response_tokens
from mlx_d2o.models import load, precision
from mlx_d2o.sample import sample
from mlx_d2o.sample.cache import read_cache
from mlx_d2o.testing import make_tiny_model

LORA = {"rank": 4, "scale": 10.0, "dropout": 0.0}


@pytest.fixture(scope="module")
def bf16_4bit(tmp_path_factory):
    return make_tiny_model(
        tmp_path_factory.mktemp("q4bf16") / "m", seed=2, quantize=True, dtype="bfloat16"
    )


def make_adapter(model_path, out, kind: str):
    """A LoRA adapter on layer 1, or a full fine-tune of layer 1's floating parameters the
    4-bit layers leave trainable (its norms), as `train` would save them."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    net, _ = load(str(model_path), dequantize=False)
    net.freeze()
    if kind == "lora":
        linear_to_lora_layers(net, 1, LORA)
        trained = tree_flatten(net.trainable_parameters())
    else:
        trained = [
            (k, v) for k, v in tree_flatten(net.parameters()) if "layers.1." in k and "norm" in k
        ]
    mx.random.seed(4)
    w = {k: v + (0.3 * mx.random.normal(v.shape)).astype(v.dtype) for k, v in trained}
    out.mkdir()
    mx.save_safetensors(str(out / "adapters.safetensors"), w)
    config = {"fine_tune_type": kind, "num_layers": 1, "lora_parameters": LORA}
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def plain_logp(model, prompt, response) -> float:
    """log π(response | prompt): one mlx-lm forward, float32 log-softmax, written here."""
    tokens = mx.array([prompt + response])
    logits = model(tokens[:, :-1]).astype(mx.float32)[0]
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    at = np.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return float(logp[at, response].sum())


def cached_vs(rows, tok, model) -> np.ndarray:
    """|cached reference - MODEL's plain log-prob| for every sample and negative of ROWS."""
    out = []
    for row in rows:
        p = prompt_tokens(tok, row["messages"])
        # a sample cut at --max-tokens is scored as its generated ids (cache format 2)
        finish = row.get("sample_finish") or ["stop"] * len(row["samples"])
        responses = [
            list(row["sample_ids"][k])
            if f == "length"
            else response_tokens(tok, row["messages"], text, p)
            for k, (text, f) in enumerate(zip(row["samples"], finish))
        ]
        responses.append(response_tokens(tok, row["messages"], row["rejected"], p))
        refs = [*row["ref_logps"]["samples"], row["ref_logps"]["rejected"]]
        for resp, ref in zip(responses, refs):
            out.append(abs(ref - plain_logp(model, p, resp)))
    return np.array(out)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_sample_reference_keeps_the_policys_precision(bf16_4bit, records_file, tmp_path, kind):
    adapter = make_adapter(bf16_4bit, tmp_path / "adapter", kind)
    out = tmp_path / "cache"
    sample(
        _args(bf16_4bit, records_file, out, adapter_path=str(adapter), limit=3, dequantize=False),
        progress=False,
    )
    manifest, rows = read_cache(out)
    kept, tok = load(str(bf16_4bit), dequantize=False)
    f32, _ = load(str(bf16_4bit), dequantize=True)
    assert precision(kept) == "4-bit bfloat16" and precision(f32) == "float32"
    near, far = cached_vs(rows, tok, kept), cached_vs(rows, tok, f32)
    # the cache's reference is the kept-quantized base (to bf16 rounding of another batch
    # shape), far from the float32 one
    assert near.max() < 0.03, (near, far)
    assert far.mean() > 5 * near.mean() and far.max() > 0.05, (near, far)
    assert manifest["reference_precision"] == "4-bit bfloat16"


def test_train_warns_when_the_policy_has_another_precision(bf16_4bit, records_file, tmp_path):
    from mlx_d2o.distributed import Shard
    from mlx_d2o.train import TrainArgs
    from mlx_d2o.train.run import prepare

    out = tmp_path / "cache"
    sample(_args(bf16_4bit, records_file, out, limit=4, dequantize=False), progress=False)
    for dequantize, warned in ((None, True), (False, False)):
        lines = []
        a = TrainArgs(
            model=str(bf16_4bit), samples=str(out), adapter_path=str(tmp_path / "a"), batch_size=2
        )
        prepare(
            TrainArgs(**{**a.__dict__, "dequantize": dequantize}), Shard.current(), lines.append
        )
        hits = [x for x in lines if x.startswith("warning: the cache's reference was scored in")]
        assert bool(hits) == warned, lines
        if warned:
            assert "4-bit bfloat16, and the policy trains in float32" in hits[0]


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_train_and_eval_references_are_the_kept_quantized_base(bf16_4bit, tmp_path, kind):
    """Train's `reference_model` (set-up and online refresh) and eval's `Adapter.disabled`
    both go through `as_reference`: inside it the 4-bit bf16 policy is exactly a freshly
    loaded kept-quantized base, after it the policy again."""
    from types import SimpleNamespace

    from mlx_d2o.adapters import Adapter
    from mlx_d2o.train.step import reference_model
    from mlx_d2o.train.trainable import setup_trainable

    base, _ = load(str(bf16_4bit), dequantize=False)
    x = mx.array([[1, 40, 50, 60, 70, 2, 90, 33]])
    want = np.array(base(x).astype(mx.float32))

    model, _ = load(str(bf16_4bit), dequantize=False)
    args = SimpleNamespace(fine_tune_type=kind, num_layers=2, lora_parameters=lambda: LORA)
    setup_trainable(model, args)
    start = dict(tree_flatten(model.trainable_parameters())) if kind == "full" else None
    mx.random.seed(1)
    model.update(
        tree_map(
            lambda p: p + (0.2 * mx.random.normal(p.shape)).astype(p.dtype),
            model.trainable_parameters(),
        )
    )
    trained = np.array(model(x).astype(mx.float32))
    assert np.abs(trained - want).max() > 1e-2
    with reference_model(model, start):
        assert precision(model) == "4-bit bfloat16"
        assert np.array_equal(np.array(model(x).astype(mx.float32)), want)
    assert np.array_equal(np.array(model(x).astype(mx.float32)), trained)

    ad = make_adapter(bf16_4bit, tmp_path / "ad", kind)
    net, _ = load(str(bf16_4bit), dequantize=False)
    adapter = Adapter(net, ad)
    adapted = np.array(net(x).astype(mx.float32))
    assert np.abs(adapted - want).max() > 1e-2
    with adapter.disabled():
        assert np.array_equal(np.array(net(x).astype(mx.float32)), want)
    assert np.array_equal(np.array(net(x).astype(mx.float32)), adapted)
