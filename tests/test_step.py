"""The training step (issue 11): shared prompts and exact chunking against today's path.

Today's path runs every sequence whole (prompt + response) and takes float32 logits at every
position; here it is written out independently (`whole_logps`). The step must give the same
loss and gradients, within 1e-5 (3e-5 for gradients) relative, for every loss, K = 1, 4, 11, mixed prompt lengths,
multi-turn prompts and responses cut by --max-seq-length, in one pass and in chunks.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from mlx_d2o.errors import D2OError
from mlx_d2o.losses import LOSSES
from mlx_d2o.models import load
from mlx_d2o.shared_prompt import pack, shared_logps, split_head, supports
from mlx_d2o.train.examples import build_examples, collate
from mlx_d2o.train.step import make_loss_fn, make_step
from mlx_d2o.train.trainable import build_optimizer, checkpointed_layers, setup_trainable

RTOL = 1e-5
# Gradients against per-sequence forwards: float32 sums over other shapes (the review
# measured up to 2e-5 relative with its own reference).
GRAD_RTOL = 3e-5
MAX_LEN = 80  # cuts the long samples of the multi-turn prompts


def plain_logps(model, prompt: list, response: list) -> tuple[mx.array, int]:
    """log π(response | prompt) of one sequence alone: a plain mlx-lm forward, float32 logits
    at every position (none of the project's helpers: no padding, no split head)."""
    if not response:
        return mx.array(0.0), 0
    tokens = mx.array([list(prompt) + list(response)])
    logits = model(tokens[:, :-1]).astype(mx.float32)[0]
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(prompt) - 1
    picked = mx.take_along_axis(logp[start:], mx.array(response)[:, None], axis=-1)
    return picked.sum(), len(response)


def whole_logps(model, batch):
    """Today's path, written out: every sequence of BATCH alone, whole (prompt + response)."""
    out = [plain_logps(model, batch.prompts[g], r) for r, g in zip(batch.responses, batch.group)]
    return mx.stack([lp for lp, _ in out]), mx.array([n for _, n in out])


def rows(n: int, k: int, seed: int = 0, mixed: bool = True) -> list:
    """Cache rows: single- and multi-turn prompts of different lengths, samples of different
    lengths (one empty, long ones cut by MAX_LEN), made-up reference scores."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Q{i}?" + " more" * (i % 4)}]
        if i % 2:
            msgs = [
                {"role": "user", "content": f"Hello {i}"},
                {"role": "assistant", "content": "Hi there!"},
                *msgs,
            ]
        samples = [("" if j == 1 else f"S{j}." * (1 + 3 * j)) for j in range(k)]
        if not mixed:
            samples = [f"Sample {j:02d}." for j in range(k)]
        out.append(
            {
                "id": f"r{i}",
                "messages": msgs,
                "rejected": f"No {i}." * (1 + i % 3),
                "chosen": f"Yes {i}.",
                "samples": samples,
                "ref_logps": {
                    "samples": list(-rng.uniform(5, 60, k)),
                    "rejected": float(-rng.uniform(5, 60)),
                    "chosen": float(-rng.uniform(5, 60)),
                },
            }
        )
    return out


def make_batch(tok, loss: str, k: int, n: int = 3, seed: int = 0, mixed: bool = True):
    args = SimpleNamespace(loss=loss, max_seq_length=MAX_LEN)
    examples, cut = build_examples(rows(n, k, seed, mixed), tok, args, "test")
    if loss in ("d2o", "d2o-instance") and k > 2 and mixed:
        assert cut, "the test wants cut samples"
    assert len({len(e.prompt) for e in examples}) > 1
    return collate(examples, LOSSES[loss].layout(), tok.pad_token_id)[0]


def trainable(path, fine_tune_type="lora", seed=0, dequantize=None):
    model, tok = load(str(path), dequantize=dequantize)
    mx.random.seed(seed)
    args = SimpleNamespace(
        fine_tune_type=fine_tune_type,
        num_layers=2,
        lora_parameters=lambda: {"rank": 4, "scale": 10.0, "dropout": 0.0},
        learning_rate=1e-3,
        lr_schedule=None,
        warmup=0,
        optimizer="adam",
    )
    setup_trainable(model, args)
    # LoRA's B starts at zero: move it so that every gradient path is exercised.
    model.update(
        tree_map(lambda p: p + 0.05 * mx.random.normal(p.shape), model.trainable_parameters())
    )
    mx.eval(model.parameters())
    return model, tok, build_optimizer(args, 10)


def near_refs(model, batch, seed: int = 0):
    """BATCH with reference log-probs near the policy's (plain forwards + N(0, 1)): made-up
    references tens of nats away saturate the sigmoids, and a sequence whose weight in the
    gradient is ~0 would hide a chunk that is lost."""
    lp = np.array(whole_logps(model, batch)[0])
    noise = np.random.default_rng(seed).normal(0, 1, lp.size)
    refs, at = [], 0
    for ref in batch.refs:
        n = ref.size
        refs.append(mx.array((lp[at : at + n] + noise[at : at + n]).reshape(ref.shape)))
        at += n
    return dataclasses.replace(batch, refs=tuple(refs))


def reference(model, batch, objective):
    """(loss, grads) of today's path."""

    def fn(m):
        return objective.value(*whole_logps(m, batch), batch.refs)

    (loss, _), grad = nn.value_and_grad(model, fn)(model)
    return loss, grad


def assert_close(loss, grad, ref_loss, ref_grad):
    assert abs(loss.item() - ref_loss.item()) <= RTOL * max(abs(ref_loss.item()), 1e-3)
    got, want = dict(tree_flatten(grad)), dict(tree_flatten(ref_grad))
    assert got.keys() == want.keys()
    for name, g in want.items():
        err = mx.linalg.norm(got[name] - g).item()
        assert err <= GRAD_RTOL * max(mx.linalg.norm(g).item(), 1e-6), (name, err)


def step_grad(model, opt, batch, objective, chunk=None, shared=None):
    step, state = make_step(model, opt, objective, 1, chunk_size=chunk, shared=shared)
    loss, metrics, _, grad = step(batch, None, False)
    mx.eval(loss, metrics, grad)
    return loss, grad


# K matters only to the losses that read samples; the others vary the number of prompts.
CASES = [(loss, k, 3) for loss in ("d2o", "d2o-instance") for k in (1, 4, 11)]
CASES += [(loss, 4, n) for loss in ("dpo", "npo", "ga") for n in (3, 5)]


@pytest.mark.parametrize("loss, k, n", CASES)
def test_shared_and_chunked_equal_todays_path(tiny_model, loss, k, n):
    model, tok, opt = trainable(tiny_model)
    assert supports(model)
    batch = near_refs(model, make_batch(tok, loss, k, n=n))
    size = len(batch)
    assert size == n * (k + 1 if LOSSES[loss].uses("samples") else len(LOSSES[loss].layout()))
    objective = make_loss_fn(LOSSES[loss], {"alpha": 0.3, "beta": 0.7})
    ref_loss, ref_grad = reference(model, batch, objective)
    assert math.isfinite(ref_loss.item())
    # every sequence with a response weighs in the gradient, so that losing one shows
    w = np.abs(np.array(objective.weights(*whole_logps(model, batch), batch.refs)[2]))
    counts = np.array([len(r) for r in batch.responses])
    assert w[counts > 0].min() > 1e-2 * w.max(), w
    # every chunk size below the batch's sequences takes the chunked path
    chunks = sorted({size - 1, 2} | ({1} if k == 4 and n == 3 else set()))
    assert all(0 < c < size for c in chunks)
    for chunk in [None, *chunks]:
        assert_close(*step_grad(model, opt, batch, objective, chunk), ref_loss, ref_grad)
    # the whole-sequence path (models the shared prompt does not know), chunked too
    assert_close(*step_grad(model, opt, batch, objective, 2, shared=False), ref_loss, ref_grad)


@pytest.mark.parametrize("fine_tune_type", ["lora", "dora", "full"])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_fine_tune_types_and_checkpointing(tiny_model, fine_tune_type, checkpoint):
    model, tok, opt = trainable(tiny_model, fine_tune_type)
    batch = make_batch(tok, "d2o", 4)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7})
    ref_loss, ref_grad = reference(model, batch, objective)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7}, checkpoint)
    with checkpointed_layers(model, checkpoint):
        for chunk in (None, 4):
            assert_close(*step_grad(model, opt, batch, objective, chunk), ref_loss, ref_grad)


def test_quantized_model_kept_quantized(tiny_quantized_model):
    """QLoRA (4-bit weights and embedding kept quantized): same loss and gradients."""
    model, tok, opt = trainable(tiny_quantized_model, dequantize=False)
    assert "QuantizedEmbedding" in type(model.model.embed_tokens).__name__
    batch = make_batch(tok, "d2o", 4)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7})
    ref_loss, ref_grad = reference(model, batch, objective)
    for chunk in (None, 3):
        assert_close(*step_grad(model, opt, batch, objective, chunk), ref_loss, ref_grad)


def test_accumulated_updates_match(tiny_model):
    """Two micro-batches accumulated then one update: chunked equals one pass."""
    params = []
    for chunk in (None, 3):
        model, tok, opt = trainable(tiny_model)
        opt.init(model.trainable_parameters())
        b1, b2 = make_batch(tok, "d2o", 4, seed=1), make_batch(tok, "d2o", 4, n=2, seed=2)
        objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7})
        step, state = make_step(model, opt, objective, 2, chunk_size=chunk)
        _, _, _, grad = step(b1, None, False)
        mx.eval(state, grad)
        loss, _, norm, grad = step(b2, grad, True)
        mx.eval(state, loss, norm)
        assert grad is None and norm.item() > 0
        params.append(dict(tree_flatten(model.trainable_parameters())))
    for name, p in params[0].items():
        assert mx.allclose(p, params[1][name], rtol=1e-5, atol=1e-7).item(), name


def test_weights_are_d2o_formula():
    """∂L/∂log π: −σ(−z)·β/K for a sample, σ(−z)·α for the negative (over B prompts): the
    gradient is σ(−z)·∇[(β/K)Σ_k log π(y_k) − α log π(y_l)] ascended."""
    B, K, alpha, beta = 3, 4, 0.3, 0.7
    rng = np.random.default_rng(0)
    ps, rs = rng.normal(-30, 5, (B, K)), rng.normal(-30, 5, (B, K))
    pn, rn = rng.normal(-30, 5, B), rng.normal(-30, 5, B)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": alpha, "beta": beta})
    logps = mx.array(np.concatenate([ps.ravel(), pn]), dtype=mx.float32)
    refs = (mx.array(rs, dtype=mx.float32), mx.array(rn, dtype=mx.float32))
    _, _, w = objective.weights(logps, mx.ones(B * K + B, dtype=mx.int32), refs)
    z = beta * (ps - rs).mean(1) - alpha * (pn - rn)
    s = 1 / (1 + np.exp(z))
    want = np.concatenate([np.repeat(-s * beta / K, K), s * alpha]) / B
    assert np.allclose(np.array(w), want, rtol=1e-5)


def test_shared_pack_equals_whole_sequences_and_prompt_of_one_token(tiny_model):
    model, _ = load(str(tiny_model))
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(3, 250, n))) for n in (5, 17, 1, 9)]
    responses, group = [], []
    for g in range(len(prompts)):
        for _ in range(3):
            responses.append(list(rng.integers(3, 250, int(rng.integers(0, 12)))))
            group.append(g)
    responses = [list(map(int, r)) for r in responses]
    lp, cnt = shared_logps(model, pack(prompts, responses, group))
    want = [plain_logps(model, prompts[g], r)[0].item() for r, g in zip(responses, group)]
    assert cnt.tolist() == [len(r) for r in responses]
    assert any(len(r) == 0 for r in responses) and min(want) < -1
    np.testing.assert_allclose(np.array(lp), want, rtol=1e-5, atol=1e-4)


def test_head_in_chunks_equals_whole_logits(tiny_model):
    """Log-probs with the head a few positions at a time (each chunk checkpointed) give the
    loss and gradients of the whole logits."""
    model, tok, _ = trainable(tiny_model)
    batch = make_batch(tok, "d2o", 11)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7})
    ref_loss, ref_grad = reference(model, batch, objective)
    x = batch.inputs(True)
    assert x["select"].size > 3 * 16

    def fn(m):
        return objective.value(*shared_logps(m, x, chunk=16), batch.refs)

    (loss, _), grad = nn.value_and_grad(model, fn)(model)
    assert_close(loss, grad, ref_loss, ref_grad)


@pytest.mark.parametrize("vocab", [97, 32768, 152064])
def test_head_runs_on_bounded_positions_and_gives_whole_logits(vocab):
    """`token_logps` calls the head on at most 64 MB of float32 logits at a time (512
    positions of a 32k vocabulary, fewer for a larger one, and at least 16), with no chunk much
    smaller than that bound, and gives the log-probs and gradient of whole logits computed
    here."""
    from mlx_d2o.shared_prompt import Head, token_logps

    mx.random.seed(0)
    lin = nn.Linear(32, vocab, bias=False)
    rows = []

    def fn(h):
        rows.append(h.shape[0])
        return lin(h)

    head = Head(None, lin, fn)
    M = 3 * min(512 * 32768 // vocab, 4096) + 5
    h, t = mx.random.normal((M, 32)), mx.random.randint(0, vocab, (M,))
    value, grad = mx.value_and_grad(lambda h: token_logps(head, h, t).sum())(h)
    mx.eval(value, grad)
    budget = 64 * 2**20  # bytes of float32 logits alive at once
    assert sum(rows) >= M and max(rows) * vocab * 4 <= budget
    # not needlessly small chunks: the forward and the backward's recomputation, each in as
    # many calls as the budget needs (plus one for the rest)
    assert len(rows) <= 2 * (math.ceil(M * vocab * 4 / budget) + 1), rows

    def whole(h):
        logits = (h @ lin.weight.T).astype(mx.float32)
        return (mx.take_along_axis(logits, t[:, None], -1)[:, 0] - mx.logsumexp(logits, -1)).sum()

    want, want_grad = mx.value_and_grad(whole)(h)
    assert abs(value.item() - want.item()) <= 1e-5 * abs(want.item())
    assert mx.allclose(grad, want_grad, rtol=1e-4, atol=1e-6).item()


def test_head_vocab_of_real_layouts(tiny_model, tiny_quantized_model):
    for path in (tiny_model, tiny_quantized_model):
        model, _ = load(str(path), dequantize=False)
        assert split_head(model).vocab == model.args.vocab_size


def test_chunk_peak_memory_does_not_grow_with_k(tiny_model):
    """With one sequence per chunk, the step's peak stays put as K grows (samples of one
    length, so that only their number changes)."""
    peaks = []
    for k in (4, 11):
        model, tok, opt = trainable(tiny_model)
        batch = make_batch(tok, "d2o", k, n=2, mixed=False)
        objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.3, "beta": 0.7})
        step, state = make_step(model, opt, objective, 1, chunk_size=1)
        step(batch, None, False)  # compile
        mx.synchronize()
        mx.clear_cache()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        _, _, _, grad = step(batch, None, False)
        mx.eval(grad)
        peaks.append(mx.get_peak_memory() - base)
    assert peaks[1] < 1.3 * peaks[0], peaks


def test_memory_limit_below_one_step_chunks_and_keeps_the_curve(tiny_model, tmp_path, capsys):
    """`train --memory-limit` below an unchunked step's peak (as metrics.jsonl reports it):
    the plan chunks, the run stays under the limit and trains the same curve."""
    from test_train import make_cache

    from mlx_d2o import cli

    cache = make_cache(tiny_model, tmp_path / "cache", n=8, k=4)

    def run(out, *flags):
        argv = ["train", "--model", tiny_model, "--samples", cache, "--adapter-path", out]
        argv += [
            "--iters",
            "4",
            "--batch-size",
            "2",
            "--steps-per-report",
            "1",
            "--save-every",
            "0",
        ]
        argv += ["--learning-rate", "1e-3", "--num-layers", "2", *flags]
        code = cli.app(list(map(str, argv)), standalone_mode=False)
        assert code in (None, 0)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        train_lines = [r for r in lines if r["split"] == "train"]
        return [r["loss"] for r in train_lines], max(r["peak_memory_gb"] for r in train_lines)

    losses, peak = run(tmp_path / "whole")
    gc.collect()  # the first run's arrays must not count in the second one's peak
    assert "chunk 10" in capsys.readouterr().err  # B=2 prompts x (K + 1) in one pass
    limit = 0.8 * peak
    chunked, chunked_peak = run(tmp_path / "chunked", "--memory-limit", f"{limit:.6f}")
    err = capsys.readouterr().err
    chunk = int(re.findall(r"chunk (\d+)", err)[-1])  # the plan's, or the measured step's
    assert 1 <= chunk < 10, err
    assert chunked_peak <= limit
    assert np.allclose(chunked, losses, rtol=1e-4, atol=1e-6), (chunked, losses)


def test_memory_limit_that_nothing_fits_is_refused(tiny_model, tmp_path, capsys):
    from test_train import make_cache

    from mlx_d2o import cli

    cache = make_cache(tiny_model, tmp_path / "cache", n=4, k=2)
    argv = ["train", "--model", tiny_model, "--samples", cache, "--adapter-path", tmp_path / "o"]
    argv += ["--iters", "1", "--batch-size", "2", "--memory-limit", "0.000001"]
    with pytest.raises(D2OError, match="does not fit in 0.00 GB even one sequence at a time"):
        cli.app(list(map(str, argv)), standalone_mode=False)
    argv += ["--chunk-size", "3", "--memory-limit", "0.000001"]
    with pytest.raises(D2OError, match="--chunk-size 3: the predicted peak .* GB .*weights"):
        cli.app(list(map(str, argv)), standalone_mode=False)


def test_two_ranks_chunked_and_resumed_equal_one_unchunked_process(tiny_model, tmp_path):
    """The distributed path with chunking (2 ranks under mlx.launch, --chunk-size 2), resumed
    after its first step, trains what one process trains in one pass per step."""
    import subprocess

    from test_train import make_cache, metrics
    from test_train_distributed import SETTINGS, launch_cmd, weights

    from mlx_d2o.train import TrainArgs, train

    cache = make_cache(tiny_model, tmp_path / "cache", n=8)
    one = tmp_path / "one"
    args = TrainArgs(model=str(tiny_model), samples=str(cache), adapter_path=str(one), iters=2)
    train(dataclasses.replace(args, **SETTINGS), log=lambda s: None)
    two = tmp_path / "two"
    for iters, resume in ((1, False), (2, True)):
        cmd, env = launch_cmd(tiny_model, cache, two, iters, resume, chunk_size=2)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr[-3000:]
        assert "chunk 2" in r.stderr
    w1, w2 = weights(one), weights(two)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-3, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(
        [line["loss"] for line in metrics(two)], [line["loss"] for line in metrics(one)], rtol=1e-5
    )
