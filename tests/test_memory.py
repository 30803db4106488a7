"""`train.memory`: the plan of a run's steps from its cache (`batch_lengths`, `plan_inputs`),
the measured check under --memory-limit (`fit_memory`), and the planner against real steps
at a 7B model's width and in benchmarks/device_check.sh."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from conftest import REPO, run_cli

from mlx_d2o import data as D
from mlx_d2o import losses
from mlx_d2o.errors import D2OError
from mlx_d2o.sample.cache import FORMAT_VERSION, write_manifest
from mlx_d2o.train import memory as M
from mlx_d2o.train.args import TrainArgs
from mlx_d2o.train.examples import Example

GB = 1e9


def _example(i, prompt, negative, samples, chosen=1):
    toks = lambda n: list(range(3, 3 + n))  # noqa: E731
    return Example(f"r{i}", [], toks(prompt), toks(negative), [toks(n) for n in samples], -1.0,
                   [-1.0] * len(samples), chosen=toks(chosen), ref_chosen=-1.0)  # fmt: skip


# (prompt, negative, samples, chosen) tokens of four examples, one batch each
LENGTHS = [(10, 5, [3, 30], 4), (20, 8, [2, 2], 12), (5, 40, [1, 1], 1), (20, 2, [1, 1], 1)]


@pytest.mark.parametrize("loss", ["d2o", "dpo", "npo"])
def test_batch_lengths_keeps_the_batches_no_other_exceeds(loss):
    loss = losses.get(loss)
    exs = [_example(i, *x) for i, x in enumerate(LENGTHS)]
    batches = [[0], [1], [2], [3], [0, 3]]
    got = M.batch_lengths(batches, exs, loss.layout())
    # the reference: each batch's longest prompt and longest response of the rows it reads
    shapes = {}
    for b in batches:
        rows = [r for i in b for row in loss.layout() for r in exs[i].responses(row)]
        shapes[tuple(b)] = (max(len(exs[i].prompt) for i in b), max(len(r) for r in rows))
    frontier = {s for s in shapes.values() if all(o == s for o in _dominating(s, shapes))}
    assert set(got) == frontier
    for pr, batch in got.items():
        assert shapes[tuple(batch)] == pr
    # the rows each loss reads: a sample of 30 tokens counts for D2O, the chosen 12 for DPO
    expected = {"d2o": {(20, 30), (5, 40)}, "dpo": {(20, 12), (5, 40)}, "npo": {(20, 8), (5, 40)}}
    assert frontier == expected[loss.name]


def _dominating(s, shapes):
    return [o for o in shapes.values() if o[0] >= s[0] and o[1] >= s[1]]


SETTINGS = dict(num_layers=1, lora_rank=4, grad_checkpoint=True, grad_accumulation_steps=3,
                fine_tune_type="dora")  # fmt: skip


def test_plan_inputs_from_the_run(tiny_model):
    from mlx_lm.models import gpt2

    from mlx_d2o.models import load
    from mlx_d2o.shared_prompt import supports

    model, _, info = load(str(tiny_model), return_info=True)
    shape = M.model_shape(info, "m")
    settings = vars(TrainArgs(model="m", batch_size=4, **SETTINGS))
    d2o = losses.get("d2o").layout()
    i = M.plan_inputs(shape, d2o, 3, settings, 30, 12, 5, "shared", 4)
    assert (i.k, i.rows, i.sequences, i.batch_size) == (3, 4, 16, 4)
    assert (i.prompt_tokens, i.response_tokens, i.chunk_size, i.chunk) == (30, 12, 5, 5)
    assert (i.fine_tune_type, i.lora_rank, i.num_layers, i.grad_checkpoint) == ("dora", 4, 1, True)
    assert i.grad_accumulation_steps == 3 and i.step == "shared"
    config = json.loads((tiny_model / "config.json").read_text())
    assert (i.shape.hidden, i.shape.layers, i.shape.vocab) == (64, 2, config["vocab_size"])
    assert info.dequantized and i.shape.dtype_bytes == 4 and i.shape.bits is None  # the CPU's
    # DPO reads chosen + negative, NPO the negative alone (K unused)
    dpo = M.plan_inputs(shape, losses.get("dpo").layout(), 1, settings, 30, 12, None, "full", 4)
    npo = M.plan_inputs(shape, losses.get("npo").layout(), 1, settings, 30, 12, None, "full", 4)
    assert (dpo.k, dpo.rows, dpo.sequences) == (1, 2, 8) and (npo.rows, npo.sequences) == (1, 4)
    # a model the shared-prompt step cannot run gets the whole-sequence step's plan (`prepare`)
    other = gpt2.Model(gpt2.ModelArgs("gpt2", n_ctx=64, n_embd=32, n_head=2, n_layer=1,
                                      n_positions=64, layer_norm_epsilon=1e-5, vocab_size=64))  # fmt: skip
    assert supports(model) and not supports(other)


def _step_setup(chunk=None):
    """A LoRA step of a small random llama over 2 prompts x (11 samples + negative)."""
    from mlx_lm.models import llama

    from mlx_d2o.train.examples import collate
    from mlx_d2o.train.step import make_loss_fn, make_step
    from mlx_d2o.train.trainable import build_optimizer, setup_trainable

    config = dict(model_type="llama", hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=8192, rms_norm_eps=1e-5)  # fmt: skip
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    args = TrainArgs(num_layers=2)
    setup_trainable(model, args)
    optimizer = build_optimizer(args, 10)
    optimizer.init(model.trainable_parameters())
    rng = np.random.default_rng(0)
    toks = lambda n: rng.integers(3, 8192, n).tolist()  # noqa: E731
    exs = [Example(str(b), [], toks(96), toks(48), [toks(48) for _ in range(11)], -50.0,
                   [-50.0] * 11) for b in range(2)]  # fmt: skip
    loss = losses.get("d2o")
    fn = make_loss_fn(loss, {"alpha": 0.1, "beta": 0.2})
    step, _ = make_step(model, optimizer, fn, 1, chunk, shared=True)
    return step, exs, loss, collate(exs, loss.layout(), 0)[0]


def _peak(step, batch, chunk):
    peaks = []
    for _ in range(2):
        mx.synchronize()
        mx.clear_cache()
        mx.reset_peak_memory()
        mx.eval(step(batch, None, False, chunk))
        peaks.append(mx.get_peak_memory())
    return max(peaks)


def test_fit_memory_shrinks_the_chunk_until_a_measured_step_fits():
    step, exs, loss, batch = _step_setup()
    whole, one = _peak(step, batch, None), _peak(step, batch, 1)
    assert one < 0.9 * whole
    limit = (whole + one) / 2 / M.MARGIN  # all 24 sequences at once are over MARGIN x limit
    said = []

    def fit(predicted, chunk=None, lim=limit, measure=True):
        mp = M.MemoryPlan(chunk, lim, predicted, [0, 1], measure)
        return M.fit_memory(step, lambda: batch, mp, said.append)

    assert fit(0.4 * limit, measure=False) is None  # predicted well under the limit: not measured
    assert fit(limit, chunk=24, measure=False) == 24  # --chunk-size given: left as it is
    assert not said
    n = fit(limit)
    assert n is not None and 1 <= n < 24 and said and "over 90% of the limit" in said[0]
    assert _peak(step, batch, n) <= M.MARGIN * limit * 1.03  # run to run, a peak varies
    # under the limit but over MARGIN of it: still made smaller
    n = fit(whole, lim=whole / 0.95)
    assert n is not None and n < 24
    # not even one sequence at a time fits: one line with the numbers
    with pytest.raises(D2OError, match="one sequence at a time, a step peaks at"):
        fit(one, lim=one * 0.8)


# Mistral-7B's widths, 2 layers, SmolLM2's vocabulary: 3.36 GB of float32 weights.
WIDTH_7B = dict(model_type="llama", hidden_size=4096, num_hidden_layers=2, num_attention_heads=32,
                num_key_value_heads=8, intermediate_size=14336, vocab_size=49152,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)  # fmt: skip


def _cache_for(model_dir, out, k=11, prompt_words=20, sample_chars=30):
    """A one-prompt sample cache whose token counts are the model tokenizer's own."""
    from mlx_d2o.models import load_tokenizer, model_fingerprint

    tok = load_tokenizer(str(model_dir))[0]
    msgs = [{"role": "user", "content": " ".join(f"word{j}" for j in range(prompt_words))}]
    samples = [(f"sample {j} " * 20)[:sample_chars] for j in range(k)]
    rejected = ("no, never " * 10)[: sample_chars + 10]
    p = D.prompt_tokens(tok, msgs)
    count = lambda t: len(D.response_tokens(tok, msgs, t, p))  # noqa: E731
    row = {"id": "r0", "messages": msgs, "rejected": rejected, "samples": samples,
           "ref_logps": {"samples": [-50.0] * k, "rejected": -60.0},
           "ref_tokens": {"samples": [count(t) for t in samples], "rejected": count(rejected)}}  # fmt: skip
    out.mkdir(parents=True)
    write_manifest(out, {"format_version": FORMAT_VERSION, "complete": True, "records": 1,
                         "num_samples": k, "world_size": 1, "data_fingerprint": "test",
                         "model_fingerprint": model_fingerprint(model_dir), "max_tokens": 32,
                         "temp": 1.0, "top_p": 1.0, "seed": 0})  # fmt: skip
    D.write_jsonl_atomic(out / "samples.jsonl", [row])
    return out


@pytest.mark.slow
def test_7b_width_plan_is_never_under_and_agrees_with_plan(tmp_path, capsys):
    """The planner at a 7B model's width against `peak_memory_gb` of a real `train` run, and
    `mlx-d2o plan` on the same directory and cache: the same plan, line for line. The config
    names no torch_dtype: only the safetensors headers say float32."""
    from mlx_d2o.testing import make_random_model

    model = make_random_model(tmp_path / "model", WIDTH_7B)
    assert "torch_dtype" not in json.loads((model / "config.json").read_text())
    gc.collect()
    mx.clear_cache()
    cache = _cache_for(model, tmp_path / "cache")
    # --keep-quantized: a float32 model stays as it is stored, and both plans read the headers
    common = ["--model", model, "--samples", cache, "--batch-size", 1, "--num-layers", -1,
              "--keep-quantized"]  # fmt: skip
    code, out, err = run_cli(["plan", *common], capsys)
    assert code == 0, err
    planned = [ln for ln in out.splitlines() if not ln.startswith("lengths")]
    assert "dtype                32-bit (weights: float32)" in out
    total = json.loads(run_cli(["plan", *common, "--json"], capsys)[1])["total"] / GB
    code, out, err = run_cli(["train", *common, "--adapter-path", tmp_path / "a", "--iters", 2,
                              "--steps-per-report", 1, "--save-every", 0], capsys)  # fmt: skip
    assert code == 0, err
    printed = [ln[len("plan: ") :] for ln in (out + err).splitlines() if ln.startswith("plan: ")]
    assert printed[: len(planned)] == planned
    rows = [json.loads(ln) for ln in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    measured = max(r["peak_memory_gb"] for r in rows if r["split"] == "train")
    assert measured > 3.36
    print(f"7B width: predicted {total:.3f} GB, measured {measured:.3f} GB")
    assert measured <= total <= 1.15 * measured, (total, measured)


@pytest.mark.slow
def test_device_check_tiny_prints_its_lines(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", "--tiny", str(tmp_path / "w")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for b in (1, 4):
        m = re.search(rf"^peak batch {b}: predicted ([\d.]+) GB \(train's plan ([\d.]+) GB\), "
                      rf"measured ([\d.]+) GB \(([+-][\d.]+) %\)$", out, re.M)  # fmt: skip
        assert m, out
        predicted, trains, measured, err = map(float, m.groups())
        # plan and train's printed plan agree (train prints 2 decimals)
        assert predicted == pytest.approx(trains, abs=0.0051) and measured > 0
        rounding = 100 * 0.001 / measured
        assert err == pytest.approx((predicted - measured) / measured * 100, abs=rounding + 0.06)
        assert float(re.search(rf"^train batch {b}: ([\d.]+) tok/s", out, re.M).group(1)) > 0
    assert float(re.search(r"^sampling: ([\d.]+) tok/s", out, re.M).group(1)) > 0
