"""`mlx-d2o plan` and `train.plan`: the memory model of a step, from config.json alone."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from conftest import REPO, run_cli, write_jsonl

from mlx_d2o.errors import D2OError
from mlx_d2o.sample.cache import FORMAT_VERSION
from mlx_d2o.train import plan as P

GB = 1e9


def plan_cli(args, capsys):
    """`mlx-d2o plan ARGS` through the console script once it is registered, else through a
    Typer app holding only the command (same one-line error and exit code 2 as `cli.main`)."""
    from mlx_d2o import cli

    if any(c.name == "plan" for c in cli.app.registered_commands):
        return run_cli(["plan", *args], capsys)
    import typer

    from mlx_d2o.cli.plan import command

    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("plan")(command)
    app.command("noop")(lambda: None)  # two commands: Typer keeps the subcommand name
    try:
        app(["plan", *map(str, args)], standalone_mode=False)
        code = 0
    except D2OError as e:
        print(f"error: {e}", file=__import__("sys").stderr)
        code = 2
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def inputs(name="mistral-7b", **kw) -> P.PlanInputs:
    return P.PlanInputs(P.load_shape(name), **{"prompt_tokens": 143, "response_tokens": 48, **kw})


@pytest.mark.parametrize(
    "name, weights_gb", [("mistral-7b", 4.08), ("llama-3.1-8b", 4.52), ("qwen2.5-7b", 4.28)]
)
def test_shipped_7b_configs_plan_offline(name, weights_gb, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--model", name, "-k", 11, "--batch-size", 1, "--prompt-tokens", 143]
    code, out, err = plan_cli([*args, "--response-tokens", 48, "--ram", 16], capsys)
    assert code == 0, err
    for line in ("weights", "adapter + optimizer", "activations", "logits", "prompt cache"):
        assert line in out
    assert "total (peak)" in out and "fits" in out and "11.45 GB" in out  # 2/3 of 16 GiB
    weights = next(ln for ln in out.splitlines() if ln.startswith("weights"))
    # mlx-community's 4-bit files: 4.08 (Mistral), 4.52 (Llama 3.1), 4.28 GB (Qwen2.5)
    assert float(weights.split()[1]) == pytest.approx(weights_gb, abs=0.02)


def test_numbers_respond_to_k_checkpointing_and_chunks():
    for step in ("full", "shared"):
        k1, k4, k11 = (P.plan(inputs(k=k, step=step), 100 * GB).breakdown for k in (1, 4, 11))
        assert (
            k11["weights"] == k4["weights"]
            and k11["adapter + optimizer"] == k4["adapter + optimizer"]
        )
        # activations: a part per sequence (K + 1 of them) and, in the shared step, the prompt's
        # part, paid once: a + b (K + 1) with a = 0 in the full step, a > 0 in the shared one
        b = (k11["activations"] - k4["activations"]) / 7
        assert k4["activations"] - k1["activations"] == pytest.approx(3 * b)
        a = k1["activations"] - 2 * b
        assert a == pytest.approx(0, abs=1e-6 * b) if step == "full" else a > 0.5 * b
        off, on = (P.plan(inputs(step=step, grad_checkpoint=c), 100 * GB) for c in (False, True))
        assert on.breakdown["activations"] < off.breakdown["activations"] / 3
    full_k4, full_k11 = (P.plan(inputs(k=k, step="full"), 100 * GB) for k in (4, 11))
    assert full_k11.breakdown["logits"] == pytest.approx(full_k4.breakdown["logits"] * 12 / 5)
    # the shared step: the prompt runs once, logits at response positions only, by chunks
    shared = P.plan(inputs(step="shared"), 100 * GB)
    assert shared.total < full_k11.total
    acts = [P.plan(inputs(chunk_size=c), 100 * GB).breakdown["activations"] for c in (12, 6, 3, 1)]
    assert acts == sorted(acts, reverse=True) and acts[-1] < acts[0] / 3
    assert P.plan(inputs(chunk_size=99), GB).inputs.chunk == 12
    assert P.plan(inputs(step="full", chunk_size=3), GB).inputs.chunk == 12  # no chunks there
    # more trained layers, more memory; a float model weighs more than its 4-bit form
    assert P.plan(inputs(num_layers=-1), GB).total > P.plan(inputs(num_layers=8), GB).total
    fp = P.PlanInputs(P.load_shape("mistral-7b", bits=0), prompt_tokens=143, response_tokens=48)
    assert P.plan(fp, GB).breakdown["weights"] == pytest.approx(2 * 7.25e9, rel=0.01)


def test_choose_chunk_size_and_suggest():
    i = inputs(k=11)
    one, all_ = (P.plan(replace(i, chunk_size=c), 100 * GB).total for c in (1, 12))
    limit = (one + all_) / 2
    n = P.choose_chunk_size(i, limit)
    assert 1 <= n < 12
    assert P.plan(replace(i, chunk_size=n), limit).fits
    assert not P.plan(replace(i, chunk_size=n + 1), limit).fits
    assert P.plan(i, limit).suggest() == {"chunk_size": n}
    assert P.plan(i, 100 * GB).suggest() == {}
    # the margin counts: all 12 at once fit without it, not with it
    whole = P.plan(replace(i, chunk_size=12), 100 * GB).breakdown
    assert 0 < whole["margin"] < 0.2 * (whole["activations"] + whole["logits"])
    tight = all_ - whole["margin"] / 2
    assert P.choose_chunk_size(i, tight) < 12 and P.plan(i, tight).suggest()["chunk_size"] < 12
    with pytest.raises(D2OError, match="even one sequence at a time: weights 4.08 GB"):
        P.choose_chunk_size(i, 3 * GB)
    assert P.plan(i, 3 * GB).suggest() is None
    # the full step cannot chunk: checkpointing first, then a smaller batch with accumulation
    full = inputs(step="full", batch_size=4)
    ckpt = P.plan(replace(full, grad_checkpoint=True), 100 * GB).total
    assert P.plan(full, ckpt + GB / 100).suggest() == {"grad_checkpoint": True}
    change = P.plan(full, ckpt - GB / 100).suggest()
    assert change["grad_checkpoint"] is True and change["batch_size"] in (1, 2)
    smaller = replace(full, **change)
    # the update still sees 4 prompts; the suggested batch fits, twice that does not
    assert smaller.batch_size * smaller.grad_accumulation_steps == 4
    assert P.plan(smaller, ckpt - GB / 100).fits
    doubled = replace(smaller, batch_size=2 * smaller.batch_size)
    assert not P.plan(doubled, ckpt - GB / 100).fits


def test_default_memory_limit(monkeypatch):
    import os
    import sys

    import mlx.core as mx

    limit, source = P.default_memory_limit()
    # the CPU device has no recommended working set: this machine's RAM (2/3 of it on a Mac)
    ram = mx.device_info().get("memory_size") or os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )
    mac = sys.platform == "darwin"
    assert (limit, source) == ((ram * 2 / 3, "(2/3 of RAM)") if mac else (ram, "(RAM)"))
    monkeypatch.setattr(sys, "platform", "linux" if mac else "darwin")
    assert P.default_memory_limit() == ((ram, "(RAM)") if mac else (ram * 2 / 3, "(2/3 of RAM)"))
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 11e9})
    assert P.default_memory_limit() == (11e9, "(device's recommended working set)")
    assert P.plan(inputs()).memory_limit == 11e9


def _no_weights(monkeypatch):
    """Loading any weights fails the test."""
    import mlx.core as mx
    import mlx_lm.utils

    def refuse(*a, **k):
        raise AssertionError("the planner loaded weights")

    monkeypatch.setattr(mlx_lm.utils, "load", refuse)
    monkeypatch.setattr(mlx_lm.utils, "load_model", refuse)
    monkeypatch.setattr(mx, "load", refuse)


def test_tiny_model_dir_plans_without_weights(
    tiny_model, records_file, tmp_path, capsys, monkeypatch
):
    import mlx.core as mx

    stored = mx.load(str(tiny_model / "model.safetensors"))
    params = sum(a.size for a in stored.values())
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("*.safetensors"))
    _no_weights(monkeypatch)
    code, out, err = plan_cli(["--model", model, "--data", records_file, "-k", 4], capsys)
    assert code == 0, err
    assert "8 prompts in" in out
    assert "llama, 2 layers, hidden 64" in out
    shape = P.load_shape(str(model))
    # no torch_dtype in its config: the Hub's usual bfloat16 (--dtype float32 plans the CPU's)
    assert shape.bits is None and shape.dtype_bytes == 2 and shape.vocab == 259
    # a config file alone, with lengths given
    code, out, err = plan_cli(
        [
            "--model",
            model / "config.json",
            "--prompt-tokens",
            20,
            "--response-tokens",
            10,
            "--json",
            "--keep-quantized",
        ],
        capsys,
    )
    got = json.loads(out)
    # every stored tensor, in 16 bits: the type assumed when the config and files do not say
    assert code == 0 and got["inputs"]["k"] == 11
    assert got["breakdown"]["weights"] == 2 * params
    assert "assumed bfloat16" in got["inputs"]["shape"]["dtype_source"]


def test_dtype_from_the_safetensors_headers(tiny_model, tmp_path, capsys):
    """A config without torch_dtype: the weights' files say float32 or bfloat16 (a quantized
    model: its scales' type); plan says which it read, and plans this CPU's train as float32."""
    import mlx.core as mx

    shape = P.load_shape(str(tiny_model))
    assert (shape.dtype_bytes, shape.dtype_source) == (4, "weights: float32")
    half = tmp_path / "half"
    shutil.copytree(tiny_model, half)
    weights = mx.load(str(half / "model.safetensors"))
    mx.save_safetensors(str(half / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()})  # fmt: skip
    shape = P.load_shape(str(half))
    assert (shape.dtype_bytes, shape.dtype_source) == (2, "weights: bfloat16")
    params = sum(a.size for a in weights.values())
    assert P.weight_bytes(shape) == 2 * params
    assert P.load_shape(str(half), dtype="float32").dtype_bytes == 4  # --dtype wins
    args = ["--model", half, "--prompt-tokens", 20, "--response-tokens", 10]
    code, out, err = plan_cli([*args, "--keep-quantized"], capsys)
    assert code == 0 and "dtype                16-bit (weights: bfloat16)" in out, err
    code, out, err = plan_cli(args, capsys)  # on this CPU, train dequantizes and upcasts
    if mx.default_device() == mx.cpu:
        assert "dtype                32-bit (float32: train dequantizes" in out, out


def _cache(path, k=3):
    path.mkdir()
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": "question " * (i + 1)}],
            "rejected": "no",
            "samples": ["a"] * k,
            "ref_logps": {"samples": [-1.0] * k, "rejected": -1.0},
            "ref_tokens": {"samples": [5 + i] * k, "rejected": 30 + i},
        }
        for i in range(4)
    ]
    write_jsonl(path / "samples.jsonl", rows)
    manifest = {"format_version": FORMAT_VERSION, "complete": True, "records": 4, "num_samples": k}
    (path / "manifest.json").write_text(json.dumps({**manifest, "world_size": 1}))
    return path


def test_lengths_from_a_sample_cache(tiny_model, tmp_path, capsys, monkeypatch):
    _no_weights(monkeypatch)
    cache = _cache(tmp_path / "cache")
    code, out, err = plan_cli(
        ["--model", tiny_model, "--samples", cache, "--batch-size", 2, "--json"], capsys
    )
    assert code == 0, err
    got = json.loads(out)["inputs"]
    # K from the cache; the step that peaks holds the 2 longest rows: the longest negative (33)
    assert got["k"] == 3 and got["response_tokens"] == 33 and got["batch_size"] == 2
    assert got["prompt_tokens"] > 4 * 8  # "question " x 4 in a byte-level ChatML prompt


def test_mac_recipe_plans_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = REPO / "recipes" / "mac-7b-16gb.yaml"
    args = ["-c", recipe, "--model", "mistral-7b", "--prompt-tokens", 143, "--response-tokens", 256]
    code, out, err = plan_cli([*args, "--ram", 16, "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["inputs"]["k"] == 11 and got["inputs"]["batch_size"] == 1 and got["fits"]
    assert got["inputs"]["grad_checkpoint"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mistral-7b"], "no token lengths"),
        (["--model", "nowhere/at-all", "--prompt-tokens", 5, "--response-tokens", 5], "offline?"),
        (["--model", "./missing", "--prompt-tokens", 5, "--response-tokens", 5], "no such model"),
        (["--model", "mistral-7b", "--data", "x.jsonl"], "no tokenizer to measure"),
        (
            ["--model", "mistral-7b", "--prompt-tokens", 5, "--response-tokens", 5, "--step", "x"],
            "--step x",
        ),
        (["--model", "mistral-7b", "--prompt-tokens", 0, "--response-tokens", 5], "at least 1"),
        (
            [
                "--model",
                "mistral-7b",
                "--prompt-tokens",
                5,
                "--response-tokens",
                5,
                "--fine-tune-type",
                "full",
                "--keep-quantized",  # on this CPU, train (and so plan) would dequantize
            ],
            "--q-bits 0",
        ),
    ],
)
def test_bad_input_one_line_exit_2(args, message, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, out, err = plan_cli(args, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(D2OError, match="field 'num_attention_heads': missing"):
        P.load_shape(str(bad))
    bad.write_text("{")
    with pytest.raises(D2OError, match="malformed config.json"):
        P.load_shape(str(bad))
    bad.write_text(json.dumps({"num_local_experts": 8}))
    with pytest.raises(D2OError, match="mixture-of-experts"):
        P.load_shape(str(bad))


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_plan", REPO / "benchmarks" / "bench_plan.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("ckpt, chunk", [(False, None), (True, None), (False, 2)])
def test_prediction_near_the_trainers_step_never_much_under(ckpt, chunk):
    """The planner against `mx.get_peak_memory()` of one `train.step` step (shared prompt) of a
    small random float32 llama; benchmarks/bench_plan.py does the same at 135M-1B shapes."""
    import gc

    import mlx.core as mx
    from mlx_lm.models import llama

    bench = _bench()
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()  # arrays other tests left alive
    config = dict(model_type="llama", hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=16384,
                  rms_norm_eps=1e-5, tie_word_embeddings=True, torch_dtype="float32")  # fmt: skip
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    i = P.PlanInputs(P.ModelShape.from_config(config), k=4, prompt_tokens=48, response_tokens=24,
                     num_layers=4, grad_checkpoint=ckpt, chunk_size=chunk)  # fmt: skip
    measured = bench.measure_shared_step(model, i, 2) - before
    predicted = P.plan(i, 1e12).total
    # the plan errs on the safe side (its margin, and constants fitted at 7B width as well):
    # not under by more than the run-to-run noise of a peak this small, at most +20 %
    assert 0.95 * measured <= predicted <= 1.2 * measured, (predicted, measured)
