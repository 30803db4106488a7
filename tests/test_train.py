"""mlx-d2o train on the tiny random llama: losses, adapters, resume, reference, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten

from mlx_d2o import data as D
from mlx_d2o.errors import D2OError
from mlx_d2o.logprobs import score
from mlx_d2o.losses import LOSSES, Loss
from mlx_d2o.models import load, model_fingerprint
from mlx_d2o.sample.cache import FORMAT_VERSION, write_manifest
from mlx_d2o.train import TrainArgs, reference_model, setup_trainable, train

K = 3
LN2 = math.log(2.0)


def make_cache(
    model_dir: Path,
    out: Path,
    n: int = 8,
    k: int = K,
    chosen: bool = True,
    ref: bool = True,
    ref_chosen: bool = True,
    nan: bool = False,
) -> Path:
    """A sample cache as `mlx-d2o sample` writes it, scored for real by the base model.

    Samples are fixed texts rather than generations: the tiny model's output is noise anyway,
    and fixed texts keep the tests deterministic.
    """
    model, tok = load(str(model_dir))
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Question number {i}?" + " more" * (i % 3)}]
        row = {
            "id": f"r{i}",
            "messages": msgs,
            "rejected": f"Stupid question {i}, go away.",
            "samples": [f"Sample {j} for {i}." * (1 + j) for j in range(k)],
            "sample_tokens": [0] * k,
            "sample_finish": ["stop"] * k,
        }
        if chosen:
            row["chosen"] = f"Here is answer {i}."
        p = D.prompt_tokens(tok, msgs)
        texts = row["samples"] + [row["rejected"]] + ([row["chosen"]] if chosen else [])
        lp, cnt = score(model, [(p, D.response_tokens(tok, msgs, t, p)) for t in texts])
        if ref:
            row["ref_logps"] = {"samples": lp[:k], "rejected": float("nan") if nan else lp[k]}
            row["ref_tokens"] = {"samples": cnt[:k], "rejected": cnt[k]}
            if chosen and ref_chosen:
                row["ref_logps"]["chosen"], row["ref_tokens"]["chosen"] = lp[k + 1], cnt[k + 1]
        rows.append(row)
    write_manifest(
        out,
        {
            "format_version": FORMAT_VERSION,
            "complete": True,
            "records": n,
            "num_samples": k,
            "world_size": 1,
            "model_fingerprint": model_fingerprint(model_dir),
            "data_fingerprint": "test-data",
            "max_tokens": 32,
            "temp": 1.0,
            "top_p": 1.0,
            "seed": 0,
        },
    )
    D.write_jsonl_atomic(out / "samples.jsonl", rows)
    return out


@pytest.fixture(scope="module")
def cache(tiny_model, tmp_path_factory) -> Path:
    return make_cache(tiny_model, tmp_path_factory.mktemp("cache") / "c")


def args(model, cache, out, **kw) -> TrainArgs:
    base = dict(
        model=str(model),
        samples=str(cache),
        adapter_path=str(out),
        batch_size=2,
        num_layers=2,
        learning_rate=1e-3,
        steps_per_report=1,
        save_every=0,
        iters=4,
    )
    base.update(kw)
    return TrainArgs(**base)


def metrics(out: Path, split: str = "train") -> list:
    return [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == split
    ]


def log_ratios(model_dir, adapter, cache_dir):
    """Mean log π_θ/π_ref of the samples and of the negatives, with the adapter as mlx_lm.load applies it."""
    import mlx_lm

    model, tok = mlx_lm.load(str(model_dir), adapter_path=str(adapter))
    assert isinstance(mlx_lm.generate(model, tok, "hi", max_tokens=3), str)
    rows = [json.loads(line) for line in (cache_dir / "samples.jsonl").read_text().splitlines()]
    s, n = [], []
    for r in rows:
        p = D.prompt_tokens(tok, r["messages"])
        lp, _ = score(
            model,
            [
                (p, D.response_tokens(tok, r["messages"], t, p))
                for t in r["samples"] + [r["rejected"]]
            ],
        )
        s += [a - b for a, b in zip(lp[:-1], r["ref_logps"]["samples"])]
        n.append(lp[-1] - r["ref_logps"]["rejected"])
    return float(np.mean(s)), float(np.mean(n))


def test_d2o_lowers_negatives_keeps_samples_and_loads_in_mlx_lm(tiny_model, cache, tmp_path):
    out = tmp_path / "a"
    summary = train(
        args(tiny_model, cache, out, iters=12, val_samples=str(cache), steps_per_eval=6),
        log=lambda s: None,
    )
    lines = metrics(out)
    assert lines[0]["loss"] == pytest.approx(
        LN2, abs=1e-5
    )  # LoRA starts at zero: policy == reference
    assert lines[-1]["loss"] < 0.5 * LN2
    for key in (
        "step",
        "loss",
        "rewards/samples",
        "rewards/negative",
        "rewards/margin",
        "accuracy",
        "logps/samples",
        "logps/negative",
        "grad_norm",
        "learning_rate",
        "tokens_per_sec",
        "trained_tokens",
        "peak_memory_gb",
    ):
        assert key in lines[-1], key
    assert [line["step"] for line in metrics(out, "val")] == [0, 6, 12]
    # The adapter as mlx_lm.load applies it: negatives pushed down, samples not collapsed.
    samples_ratio, negative_ratio = log_ratios(tiny_model, out, cache)
    assert negative_ratio < -2.0
    assert samples_ratio > -0.5
    assert summary["logps_negative_after"] < summary["logps_negative_before"] - 2.0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora" and cfg["lora_parameters"]["rank"] == 8
    assert cfg["d2o"]["loss"] == "d2o" and cfg["d2o"]["K"] == K and cfg["d2o"]["steps"] == 12
    assert cfg["d2o"]["base_model_fingerprint"] == model_fingerprint(tiny_model)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains(tiny_model, cache, tmp_path, loss):
    out = tmp_path / loss
    train(args(tiny_model, cache, out, loss=loss, iters=3), log=lambda s: None)
    lines = metrics(out)
    assert len(lines) == 3 and all(math.isfinite(line["loss"]) for line in lines)
    assert "logps/negative" in lines[0] or "logps/rejected" in lines[0]
    if loss != "ga":  # every reference-based loss starts where policy == reference
        expected = {"npo": 2 * LN2 / 0.1}.get(loss, LN2)
        assert lines[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert (
        lines[-1]["logps/negative" if loss != "dpo" else "logps/rejected"]
        < lines[0]["logps/negative" if loss != "dpo" else "logps/rejected"]
    )


def test_a_loss_added_through_the_declaration_alone_trains(
    tiny_model, cache, tmp_path, monkeypatch
):
    # A toy loss: a hinge on D2O's logit, with a parameter of its own and a token count. Nothing
    # but this entry tells the trainer about it: rows, inputs, parameters, metric names.
    def toy_loss(
        policy_samples, policy_negative, ref_samples, ref_negative, samples_tokens, beta=0.1
    ):
        z = beta * (
            mx.mean(policy_samples - ref_samples, axis=-1) - (policy_negative - ref_negative)
        )
        metrics = {"toy/z": mx.mean(z), "toy/tokens": mx.mean(samples_tokens.astype(mx.float32))}
        return mx.mean(mx.maximum(1.0 - z, 0.0)), {
            k: mx.stop_gradient(v) for k, v in metrics.items()
        }

    monkeypatch.setitem(
        LOSSES,
        "toy",
        Loss(
            "toy",
            toy_loss,
            rows=("negative", "samples"),
            params=("beta",),
            help="a toy",
            inputs=(
                "policy_samples",
                "policy_negative",
                "ref_samples",
                "ref_negative",
                "tokens_samples",
            ),
        ),
    )
    out = tmp_path / "toy"
    train(
        args(tiny_model, cache, out, loss="toy", iters=1, val_samples=str(cache), steps_per_eval=1),
        log=lambda s: None,
    )
    (line,) = metrics(out)
    assert line["loss"] == pytest.approx(1.0, abs=1e-5)  # policy == reference at step 1: z = 0
    assert line["toy/z"] == pytest.approx(0.0, abs=1e-5) and line["toy/tokens"] > 1
    assert [v["step"] for v in metrics(out, "val")] == [0, 1] and "logps/negative" in metrics(
        out, "val"
    )[0]
    assert json.loads((out / "adapter_config.json").read_text())["d2o"]["K"] == K


def test_resume_repeats_the_uninterrupted_run(tiny_model, cache, tmp_path):
    kw = dict(
        iters=8,
        save_every=4,
        grad_accumulation_steps=2,
        lora_dropout=0.2,
        lr_schedule="cosine",
        warmup=1,
        batch_size=2,
        seed=3,
    )
    full = tmp_path / "full"
    train(args(tiny_model, cache, full, **kw), log=lambda s: None)

    cut = tmp_path / "cut"

    def interrupt(line):
        if line["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(args(tiny_model, cache, cut, **kw), on_report=interrupt, log=lambda s: None)
    assert json.loads((cut / "checkpoints" / "latest.json").read_text())["step"] == 4
    train(args(tiny_model, cache, cut, resume=True, **kw), log=lambda s: None)

    a, b = metrics(full), metrics(cut)
    assert [line["step"] for line in b] == list(range(1, 9))
    np.testing.assert_allclose(
        [line["loss"] for line in b], [line["loss"] for line in a], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        [line["learning_rate"] for line in b], [line["learning_rate"] for line in a], rtol=1e-6
    )
    wa, wb = mx.load(str(full / "adapters.safetensors")), mx.load(str(cut / "adapters.safetensors"))
    for k in wa:
        np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fine_tune_type", ["lora", "dora", "full"])
def test_reference_is_the_fresh_base(tiny_model, cache, tmp_path, fine_tune_type):
    out = tmp_path / fine_tune_type
    a = args(tiny_model, cache, out, fine_tune_type=fine_tune_type, iters=3, learning_rate=1e-2)
    train(a, log=lambda s: None)
    model, _ = load(str(tiny_model))
    base, _ = load(str(tiny_model))
    setup_trainable(model, a)
    ref_params = (
        dict(tree_flatten(model.trainable_parameters())) if fine_tune_type == "full" else None
    )
    model.load_weights(str(out / "adapters.safetensors"), strict=False)
    x = mx.array([[1, 40, 50, 60, 70, 2]])
    trained = model(x)
    assert not np.allclose(np.array(trained), np.array(base(x)), atol=1e-4)
    with reference_model(model, ref_params):
        np.testing.assert_allclose(np.array(model(x)), np.array(base(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(model(x)), np.array(trained), rtol=1e-6, atol=1e-6)


def test_qlora_keeps_the_model_quantized(tiny_quantized_model, tmp_path):
    import mlx.nn as nn

    c = make_cache(tiny_quantized_model, tmp_path / "qc")
    out = tmp_path / "q"
    train(
        args(tiny_quantized_model, c, out, dequantize=False, iters=6, learning_rate=3e-3),
        log=lambda s: None,
    )
    lines = metrics(out)
    assert lines[-1]["rewards/margin"] > lines[0]["rewards/margin"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["d2o"]["dequantized"] is False
    model, _ = load(str(tiny_quantized_model), adapter_path=str(out), dequantize=False)
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


def test_grad_checkpoint_same_step_and_restores_the_class(tiny_model, cache, tmp_path):
    from mlx_lm.models.llama import TransformerBlock

    original = TransformerBlock.__call__
    train(
        args(tiny_model, cache, tmp_path / "g", grad_checkpoint=True, iters=2), log=lambda s: None
    )
    assert TransformerBlock.__call__ is original
    train(args(tiny_model, cache, tmp_path / "n", iters=2), log=lambda s: None)
    np.testing.assert_allclose(
        [line["loss"] for line in metrics(tmp_path / "g")],
        [line["loss"] for line in metrics(tmp_path / "n")],
        rtol=1e-5,
    )


def test_truncated_and_unscored_sequences_are_rescored(tiny_model, tmp_path):
    # dpo with no reference score for `chosen` and sequences cut by --max-seq-length: the first
    # loss is exactly log 2 only if every reference score is for the tokens the policy sees.
    c = make_cache(tiny_model, tmp_path / "c", ref_chosen=False)
    out = tmp_path / "o"
    train(args(tiny_model, c, out, loss="dpo", max_seq_length=40, iters=1), log=lambda s: None)
    assert metrics(out)[0]["loss"] == pytest.approx(LN2, abs=1e-5)
    out = tmp_path / "o2"
    train(args(tiny_model, c, out, loss="d2o", max_seq_length=40, iters=1), log=lambda s: None)
    assert metrics(out)[0]["loss"] == pytest.approx(LN2, abs=1e-5)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tiny_model, cache, tmp_path):
    out = tmp_path / "n"
    train(args(tiny_model, cache, out, iters=2, save_every=2), log=lambda s: None)
    good = dict(mx.load(str(out / "adapters.safetensors")))
    bad = make_cache(tiny_model, tmp_path / "bad", nan=True)
    with pytest.raises(D2OError, match=r"loss became nan at step 3.*checkpoints/0000002"):
        train(args(tiny_model, bad, out, iters=4, save_every=2, resume=True), log=lambda s: None)
    now = mx.load(str(out / "adapters.safetensors"))
    for k in good:
        assert np.array_equal(np.array(good[k]), np.array(now[k]))
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 2


def test_resume_refuses_other_settings(tiny_model, cache, tmp_path):
    out = tmp_path / "r"
    train(args(tiny_model, cache, out, iters=2, save_every=2), log=lambda s: None)
    with pytest.raises(D2OError, match=r"other settings.*beta: checkpoint 0.1, now 0.5"):
        train(
            args(tiny_model, cache, out, iters=2, save_every=2, beta=0.5, resume=True),
            log=lambda s: None,
        )


def run_cli(*argv):
    """`mlx-d2o train ARGV` in this process, through the console script's `main`: exit code and output."""
    import contextlib
    import io
    import sys

    from mlx_d2o.cli import main

    buf, old = io.StringIO(), sys.argv
    sys.argv = ["mlx-d2o", "train", *argv]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code or 0
    finally:
        sys.argv = old
    return code, buf.getvalue()


def test_cli_recipe_and_flags(tiny_model, cache, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_model),
                "train": {
                    "samples": str(cache),
                    "loss": "npo",
                    "iters": 5,
                    "batch_size": 2,
                    "num_layers": 1,
                    "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.0},
                    "steps_per_report": 1,
                },
            }
        )
    )
    out = tmp_path / "o"
    recipe.write_text(recipe.read_text().replace("iters: 5", "epochs: 3"))
    code, text = run_cli(
        "-c", str(recipe), "--adapter-path", str(out), "--iters", "2"
    )  # --iters replaces epochs
    assert code == 0, text
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (
        cfg["iters"] == 2
        and cfg["loss"] == "npo"
        and cfg["lora_parameters"] == {"rank": 4, "scale": 10.0, "dropout": 0.0}
    )
    assert cfg["num_layers"] == 1 and len(metrics(out)) == 2


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "unscored",
        "dpo-no-chosen",
        "other-model",
        "big-batch",
        "both-lengths",
        "resume-nothing",
        "refresh-npo",
    ],
)
def test_bad_arguments_get_clear_errors(tiny_model, tiny_quantized_model, cache, tmp_path, case):
    extra, match = [], None
    c = cache
    if case == "missing":
        c, match = tmp_path / "nope", "no such sample cache"
    elif case == "unscored":
        c, match = make_cache(tiny_model, tmp_path / "u", n=2, ref=False), "reference scores"
    elif case == "dpo-no-chosen":
        c, match = make_cache(tiny_model, tmp_path / "nc", n=2, chosen=False), "'chosen': missing"
        extra = ["--loss", "dpo"]
    elif case == "other-model":
        extra, match = ["--model", str(tiny_quantized_model)], "another model"
    elif case == "big-batch":
        extra, match = ["--batch-size", "64"], "larger than"
    elif case == "both-lengths":
        extra, match = ["--iters", "2", "--epochs", "1"], "not both"
    elif case == "resume-nothing":
        extra, match = ["--resume"], "no checkpoint"
    elif case == "refresh-npo":
        extra, match = ["--loss", "npo", "--refresh-every", "2"], "uses none"
    argv = [
        "--samples",
        str(c),
        "--adapter-path",
        str(tmp_path / "o"),
        "--batch-size",
        "2",
        "--num-layers",
        "2",
    ] + extra
    if "--model" not in extra:
        argv += ["--model", str(tiny_model)]
    code, text = run_cli(*argv)
    assert code == 2, text
    assert "error:" in text and match in text, text
    assert not (tmp_path / "o" / "adapters.safetensors").exists()


def test_online_refresh_samples_with_policy_scores_with_reference(tiny_model, cache, tmp_path):
    out = tmp_path / "online"
    train(
        args(tiny_model, cache, out, iters=4, refresh_every=2, learning_rate=3e-3),
        log=lambda s: None,
    )
    lines = metrics(out)
    # At step 1 the policy is still the base: fresh samples scored by the reference give z = 0.
    assert lines[0]["loss"] == pytest.approx(LN2, abs=1e-4)
    files = sorted((out / "online").glob("*.jsonl"))
    assert [f.name for f in files] == ["samples-step0000001.jsonl", "samples-step0000003.jsonl"]
    cached = {
        json.loads(line)["id"]: json.loads(line)["samples"]
        for line in (cache / "samples.jsonl").read_text().splitlines()
    }
    base, tok = load(str(tiny_model))
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        assert rows and all(len(r["samples"]) == K for r in rows)
        assert all(r["samples"] != cached[r["id"]] for r in rows)  # generated anew, not the cache's
        for r in rows[
            :2
        ]:  # scored by the reference = a freshly loaded base, not the trained policy
            p = D.prompt_tokens(tok, r["messages"])
            # A sample cut at --max-tokens is scored as the ids generated, no end-of-turn.
            resp = [
                ids if f == "length" else D.response_tokens(tok, r["messages"], t, p)
                for t, f, ids in zip(r["samples"], r["sample_finish"], r["sample_ids"])
            ]
            assert all(
                len(ids) == 32 and tok.decode(ids) == t and tok.eos_token_id not in ids
                for t, f, ids in zip(r["samples"], r["sample_finish"], r["sample_ids"])
                if f == "length"
            )
            assert "length" in r["sample_finish"]  # the tiny model rarely stops in 32 tokens
            lp, _ = score(base, [(p, x) for x in resp])
            np.testing.assert_allclose(r["ref_logps"]["samples"], lp, rtol=1e-4, atol=1e-3)
