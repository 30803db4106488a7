"""`mlx-d2o fuse`: fused logits equal base-plus-adapter logits, the directory is a plain mlx-lm model,
the card parses, bad input is refused before anything is written, and uploads fail cleanly offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_smollm2, run_cli

TOKENS = [[1, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 2, 1, 33, 44]]
D2O_META = {
    "loss": "d2o",
    "alpha": 0.1,
    "beta": 0.1,
    "K": 11,
    "iters": 200,
    "steps": 200,
    "data_fingerprint": "0123456789abcdef",
    "dataset": "org/negatives",
}


def make_adapter(
    base: Path,
    out: Path,
    *,
    dora: bool = False,
    seed: int = 0,
    num_layers: int = 2,
    rank: int = 4,
    scale: float = 2.0,
    b_std: float = 0.3,
    d2o: dict | None = D2O_META,
) -> Path:
    """An mlx-lm adapter directory with random non-zero LoRA B (a fresh adapter would be a no-op)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(base))
    model.freeze()
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    mx.random.seed(seed)
    linear_to_lora_layers(model, num_layers, params, use_dora=dora)
    trainable = dict(tree_flatten(model.trainable_parameters()))
    for k, v in trainable.items():
        if k.endswith(".lora_b"):
            trainable[k] = b_std * mx.random.normal(v.shape)
        elif k.endswith(".m"):  # DoRA magnitudes: move them too, so the test sees their fuse
            trainable[k] = v * (1 + b_std * mx.random.uniform(shape=v.shape))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), trainable)
    cfg = {
        "fine_tune_type": "dora" if dora else "lora",
        "num_layers": num_layers,
        "lora_parameters": params,
        "model": str(base),
    }
    if d2o is not None:
        cfg["d2o"] = d2o
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def logits(model_path, adapter_path=None, tokens=TOKENS) -> np.ndarray:
    """Logits through plain mlx-lm (no mlx-d2o code on this side of the comparison)."""
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(model_path), adapter_path=str(adapter_path) if adapter_path else None)
    out = model(mx.array(tokens))
    return np.array(out.astype(mx.float32))


def do_fuse(**kw):
    from mlx_d2o.export import FuseArgs, fuse

    lines = []
    result = fuse(FuseArgs(**kw), log=lines.append)
    return result, "\n".join(lines)


def config(path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


def front_matter(readme: Path):
    import yaml

    text = readme.read_text()
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert m, "README.md must start with YAML front matter"
    return yaml.safe_load(m.group(1)), m.group(2)


@pytest.fixture(scope="module")
def lora(tiny_model, tmp_path_factory):
    return make_adapter(tiny_model, tmp_path_factory.mktemp("lora") / "adapters")


# ---------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_fused_float_base_equals_base_plus_adapter(tiny_model, tmp_path, dora):
    adapter = make_adapter(tiny_model, tmp_path / "a", dora=dora, seed=3)
    res, _ = do_fuse(
        model=str(tiny_model), adapter_path=str(adapter), save_path=str(tmp_path / "out")
    )
    ref, base, fused = logits(tiny_model, adapter), logits(tiny_model), logits(res.save_path)
    effect = np.abs(base - ref).max()
    assert effect > 0.5, "the adapter must change the logits, or the test proves nothing"
    # Same float32 math in another order (x@W + (x@A)@B vs x@(W + BA)): rounding only.
    np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert "quantization" not in config(res.save_path)


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_quantized_base_dequantized_fuse_equals_base_plus_adapter(
    tiny_quantized_model, tmp_path, dora
):
    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", dora=dora, seed=4)
    res, _ = do_fuse(
        model=str(tiny_quantized_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "out"),
        dequantize=True,
    )
    cfg = config(res.save_path)
    assert "quantization" not in cfg and "quantization_config" not in cfg
    ref, base, fused = (
        logits(tiny_quantized_model, adapter),
        logits(tiny_quantized_model),
        logits(res.save_path),
    )
    assert np.abs(base - ref).max() > 0.5
    # base+adapter runs the quantized kernel on the same dequantized values the fused weights
    # hold exactly, so again only float rounding separates them.
    np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _group_sq_err(a, b, gs):
    import mlx.core as mx

    d = mx.square(a.astype(mx.float32) - b.astype(mx.float32))
    return np.array(d.reshape(d.shape[0], -1, gs).sum(-1))


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("b_std", [0.3, 0.003], ids=["large", "small"])
def test_quantized_base_stays_quantized(tiny_quantized_model, tmp_path, dora, b_std):
    """--adapted-layers grid: each group of W + ΔW is rounded onto the base's grid, or quantized
    afresh where that is closer; so never further from W + ΔW than mlx-lm's fresh requantization."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load

    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", dora=dora, seed=5, b_std=b_std)
    res, _ = do_fuse(
        model=str(tiny_quantized_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "out"),
        adapted_layers="grid",
    )
    assert config(res.save_path)["quantization"] == config(tiny_quantized_model)["quantization"]

    ref_model, _ = load(str(tiny_quantized_model), adapter_path=str(adapter))
    fused_model, _ = load(str(res.save_path))
    kept = 0
    for i, layer in enumerate(fused_model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            q = getattr(layer.self_attn, name)
            assert isinstance(q, nn.QuantizedLinear)
            lora = getattr(ref_model.layers[i].self_attn, name)
            base = lora.linear
            want = lora.fuse(dequantize=True).weight  # W + ΔW, float
            got = mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)
            fresh = mx.dequantize(
                *mx.quantize(want, group_size=q.group_size, bits=q.bits),
                group_size=q.group_size,
                bits=q.bits,
            )
            err, err_fresh = (
                _group_sq_err(got, want, q.group_size),
                _group_sq_err(fresh, want, q.group_size),
            )
            # near-ties go to the base's grid
            tie = q.group_size * np.square(1e-3 * np.array(base.scales))
            assert (err <= err_fresh * (1 + 1e-5) + tie + 1e-12).all()
            on_grid = np.array((q.scales == base.scales) & (q.biases == base.biases))
            kept += on_grid.sum()
            # on the base's grid, a value inside the group's range is within half a step
            step = np.abs(np.array(mx.repeat(q.scales, q.group_size, -1)))
            lo = np.array(mx.repeat(base.biases, q.group_size, -1))
            hi = lo + np.array(mx.repeat(base.scales, q.group_size, -1)) * (2**q.bits - 1)
            inside = (np.array(want) >= np.minimum(lo, hi)) & (np.array(want) <= np.maximum(lo, hi))
            sel = np.repeat(on_grid, q.group_size, -1) & inside
            assert (np.abs(np.array(got - want))[sel] <= step[sel] / 2 * (1 + 1e-4) + 1e-7).all()
    assert 0 < kept  # (on an MLX-quantized base a fresh grid is often as good: both choices occur)
    # share of the adapted weights whose stored 4-bit value moved: nearly all for a large update
    assert res.changed > (0.9 if b_std > 0.1 else 0.05), res.changed
    assert not [w for w in res.warnings if "rounded to the base's grid" in w]

    ref, base, fused = (
        logits(tiny_quantized_model, adapter),
        logits(tiny_quantized_model),
        logits(res.save_path),
    )
    effect, err = np.abs(base - ref).max(), np.abs(fused - ref).max()
    if b_std > 0.1:
        # 4-bit rounding noise is far below what a large update changes, but not float rounding either
        assert 1e-6 < err < 0.25 * effect, (err, effect)
    else:
        # a small update: better than mlx-lm's own fuse, which quantizes every fused group afresh
        mlx_lm_way, _ = load(str(tiny_quantized_model), adapter_path=str(adapter))
        from mlx.utils import tree_unflatten

        mlx_lm_way.update_modules(
            tree_unflatten(
                [(n, m.fuse()) for n, m in mlx_lm_way.named_modules() if hasattr(m, "fuse")]
            )
        )
        theirs = np.array(mlx_lm_way(mx.array(TOKENS)))
        assert err < np.abs(theirs - ref).max(), (err, np.abs(theirs - ref).max())


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_pack_codes_matches_mlx_layout(bits):
    """Codes read back from mx.quantize's output, packed again, give its packed words exactly."""
    import mlx.core as mx

    from mlx_d2o.export import pack_codes

    mx.random.seed(bits)
    for gs in (32, 64, 128):
        q, s, b = mx.quantize(mx.random.normal((8, 256)), group_size=gs, bits=bits)
        d = mx.dequantize(q, s, b, group_size=gs, bits=bits)
        codes = mx.round((d - mx.repeat(b, gs, -1)) / mx.repeat(s, gs, -1))
        assert int(codes.max().item()) == 2**bits - 1  # every code width is exercised
        assert mx.array_equal(pack_codes(codes, bits), q).item(), gs


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_no_op_adapter_gives_the_quantized_base_back_bit_for_bit(
    tiny_quantized_model, tmp_path, dora
):
    """On the base's own grid a no-op adapter gives the base back bit for bit; in every setting
    the layers the adapter does not touch are the base's, bit for bit."""
    import mlx.core as mx

    # B = 0, DoRA m = |W| rows; the adapter covers the last layer of two
    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", dora=dora, b_std=0.0, num_layers=1)
    before = mx.load(str(tiny_quantized_model / "model.safetensors"))
    for how in ("grid", "8bit", "float"):
        res, _ = do_fuse(
            model=str(tiny_quantized_model),
            adapter_path=str(adapter),
            save_path=str(tmp_path / how),
            adapted_layers=how,
        )
        after = mx.load(str(res.save_path / "model.safetensors"))
        assert res.fidelity["kl_per_token"] < (1e-4 if how == "8bit" else 1e-6), how
        if how == "grid":
            assert before.keys() == after.keys()
        for k in before:
            if how == "grid" or not k.startswith("model.layers.1."):
                assert mx.array_equal(before[k], after[k]).item(), (how, k)


def test_update_finer_than_the_grid_is_warned(tiny_quantized_model, tmp_path, capsys):
    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", b_std=1e-5)
    code, stdout, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_quantized_model,
            "--adapter-path",
            adapter,
            "--save-path",
            tmp_path / "out",
            "--adapted-layers",
            "grid",
        ],
        capsys,
    )
    assert code == 0, err
    assert "warning: only 0.0" in err and "--adapted-layers 8bit (the default)" in err, stdout
    _, body = front_matter(tmp_path / "out" / "README.md")
    assert "(the rest of the update was finer than the grid)" in body
    for flags in (["--dequantize"], []):  # --dequantize, and the default (8-bit adapted layers)
        out = tmp_path / f"out{len(flags)}"
        args = ["fuse", "--model", tiny_quantized_model, "--adapter-path", adapter]
        code, _, err = run_cli([*args, "--save-path", out, *flags], capsys)
        assert code == 0 and "warning" not in err, err


def make_full_adapter(base: Path, out: Path, seed: int = 0) -> Path:
    """A full fine-tune of the last block, as the trainer saves it on the CPU: float weights of the
    dequantized base, moved at random."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_d2o.models import load

    net, _ = load(str(base), dequantize=True)
    net.freeze()
    net.layers[-1].unfreeze()
    mx.random.seed(seed)
    w = {
        k: v + 0.05 * mx.random.normal(v.shape) for k, v in tree_flatten(net.trainable_parameters())
    }
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), w)
    (out / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "full", "num_layers": 1, "d2o": D2O_META})
    )
    return out


def test_full_fine_tune_on_quantized_base(tiny_quantized_model, tmp_path):
    """Full fine-tune weights go in as trained; untouched quantized layers stay bit-identical."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    adapter = make_full_adapter(tiny_quantized_model, tmp_path / "a")
    ref_net, _ = load(str(tiny_quantized_model))
    dequantize_model(ref_net)
    ref_net.load_weights(str(adapter / "adapters.safetensors"), strict=False)
    ref = np.array(ref_net(mx.array(TOKENS)))
    base = logits(tiny_quantized_model)
    assert np.abs(base - ref).max() > 0.5

    deq, _ = do_fuse(
        model=str(tiny_quantized_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "deq"),
        dequantize=True,
    )
    np.testing.assert_allclose(logits(deq.save_path), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

    kept, _ = do_fuse(
        model=str(tiny_quantized_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "q"),
        adapted_layers="grid",
    )
    assert config(kept.save_path)["quantization"] == config(tiny_quantized_model)["quantization"]
    before = mx.load(str(tiny_quantized_model / "model.safetensors"))
    after = mx.load(str(kept.save_path / "model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:
        same = bool(mx.array_equal(before[k], after[k]))
        assert same == (not k.startswith("model.layers.1.")), k
    err = np.abs(logits(kept.save_path) - ref).max()
    assert err < 0.25 * np.abs(base - ref).max()

    # the default: the tuned linear layers at 8 bits, recorded per module in config.json
    eight, _ = do_fuse(
        model=str(tiny_quantized_model), adapter_path=str(adapter), save_path=str(tmp_path / "8")
    )
    q = config(eight.save_path)["quantization"]
    assert q["model.layers.1.mlp.down_proj"] == {"group_size": 32, "bits": 8}
    assert "model.layers.0.mlp.down_proj" not in q
    err8 = np.abs(logits(eight.save_path) - ref).max()
    assert err8 < 0.1 * err, (err8, err)


def test_requantize_float_base_8bit(tiny_model, lora, tmp_path):
    res, _ = do_fuse(
        model=str(tiny_model),
        adapter_path=str(lora),
        save_path=str(tmp_path / "out"),
        quantize=True,
        q_bits=8,
        q_group_size=32,
    )
    q = config(res.save_path)["quantization"]
    assert (q["bits"], q["group_size"]) == (8, 32)
    assert res.quantization["bits"] == 8
    ref, base, fused = logits(tiny_model, lora), logits(tiny_model), logits(res.save_path)
    err, effect = np.abs(fused - ref).max(), np.abs(base - ref).max()
    assert 1e-6 < err < 0.05 * effect, (err, effect)  # 8 bits: 16x finer steps than 4


# ---------------------------------------------------------------------------------------------
# The fused model behaves like base + adapter (issue 12)
# ---------------------------------------------------------------------------------------------

NEGATIVES = [(f"Question number {i}?", f"Stupid question {i}, go away.") for i in range(8)]


def neg_pairs(tok):
    from mlx_d2o.data import prompt_tokens, response_tokens

    out = []
    for prompt, rejected in NEGATIVES:
        conv = [{"role": "user", "content": prompt}]
        p = prompt_tokens(tok, conv)
        out.append((p, response_tokens(tok, conv, rejected, p)))
    return out


def train_adapter(base: Path, out: Path, steps: int = 10, lr: float = 1e-5) -> Path:
    """A LoRA trained for a few steps to push log π(negative) down, as D2O's negative term does,
    on the base dequantized to float (as `train` does on the CPU). Small steps: most of the
    update is finer than a 4-bit step, as for a real adapter (0.4 % of SmolLM2's adapted
    weights move on its grid), yet log π(negative) drops by several percent."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from mlx_d2o import adapters
    from mlx_d2o.logprobs import pad, sequence_logps
    from mlx_d2o.models import load

    model, tok = load(str(base), dequantize=True)
    model.freeze()
    params = {"rank": 8, "scale": 20.0, "dropout": 0.0}
    mx.random.seed(0)
    linear_to_lora_layers(model, 2, params)
    pairs = neg_pairs(tok)
    tokens, lens = pad([p + r for p, r in pairs])
    plens = mx.array([len(p) for p, _ in pairs])

    def loss(m):
        return sequence_logps(m, tokens, plens, lens)[0].mean()

    opt, grad = optim.Adam(learning_rate=lr), nn.value_and_grad(model, loss)
    for _ in range(steps):
        _, g = grad(model)
        opt.update(model, g)
        mx.eval(model.parameters(), opt.state)
    adapters.save_weights(out, dict(tree_flatten(model.trainable_parameters())))
    config = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params}
    adapters.write_config(out, {**config, "model": str(base), "d2o": D2O_META})
    return out


def mean_neg_logp(model_path, adapter_path=None) -> float:
    """Mean log π(negative) through plain mlx-lm, as `eval --negatives` scores it."""
    from mlx_lm import load

    from mlx_d2o.logprobs import score

    net, tok = load(str(model_path), adapter_path=str(adapter_path) if adapter_path else None)
    logps, _ = score(net, neg_pairs(tok))
    return sum(logps) / len(logps)


def test_default_fused_model_behaves_like_base_plus_adapter(tiny_quantized_model, tmp_path, capsys):
    """Issue 12's bar, on a tiny 4-bit base: the default fused model's log π(negative) within 2 %
    of base + adapter's and its KL/token to base + adapter <= 0.01, where the old default (the
    base's own grid) lost the update and scored like the base. The CLI and the card say the
    fidelity."""
    from mlx_lm import load

    from mlx_d2o.evaluate.metrics import sequence_kl

    adapter = train_adapter(tiny_quantized_model, tmp_path / "a")
    base, want = mean_neg_logp(tiny_quantized_model), mean_neg_logp(tiny_quantized_model, adapter)
    effect = abs(want - base)
    assert effect > 0.05 * abs(want), (base, want)  # the 2 % bar means something

    out = tmp_path / "out"
    args = ["fuse", "--model", tiny_quantized_model, "--adapter-path", adapter, "--save-path", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "warning" not in err, err
    m = re.search(r"fidelity: KL/token (\S+) to base \+ adapter", stdout)
    assert m and float(m.group(1)) <= 0.01, stdout
    assert "adapted layers 8bit" in stdout
    got = mean_neg_logp(out)
    assert abs(got - want) <= 0.02 * abs(want) and abs(got - want) < 0.1 * effect, (got, want)

    # KL/token measured independently of `fuse`: plain mlx-lm models, eval's KL
    fused, tok = load(str(out))
    ref, _ = load(str(tiny_quantized_model), adapter_path=str(adapter))
    kls, counts = sequence_kl(ref, fused, neg_pairs(tok), pad_id=0)
    assert sum(kls) / sum(counts) <= 0.01, (sum(kls), sum(counts))
    _, body = front_matter(out / "README.md")
    assert "- fidelity: KL(base + adapter ‖ this model) = " in body and "8-bit" in body

    # the old default, for contrast: the update is rounded away, and the fidelity says so
    grid = tmp_path / "grid"
    code, stdout, err = run_cli([*args[:-1], grid, "--adapted-layers", "grid"], capsys)
    assert code == 0, err
    kl_grid = float(re.search(r"fidelity: KL/token (\S+) to base", stdout).group(1))
    assert kl_grid > 100 * float(m.group(1)), (kl_grid, m.group(1))
    assert abs(mean_neg_logp(grid) - want) > 0.5 * effect


@pytest.mark.parametrize("how", ["8bit", "float", "requant", "grid"])
def test_adapted_layers_settings_load_in_mlx_lm(tiny_quantized_model, tmp_path, how):
    """Each setting writes a model plain mlx-lm loads and runs, its adapted layers stored as said
    (config.json's per-module `quantization`), the rest of the base bit for bit; the smaller
    settings are smaller on disk."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load

    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", b_std=0.01, num_layers=1)
    res, log = do_fuse(
        model=str(tiny_quantized_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "out"),
        adapted_layers=how,
    )
    assert res.adapted_layers == how and "fidelity: KL/token" in log
    net, _ = load(str(res.save_path))
    q_proj = net.layers[1].self_attn.q_proj
    assert isinstance(net.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    if how == "float":
        assert type(q_proj) is nn.Linear
        assert config(res.save_path)["quantization"]["model.layers.1.self_attn.q_proj"] is False
    else:
        assert isinstance(q_proj, nn.QuantizedLinear) and q_proj.bits == (8 if how == "8bit" else 4)
    before = mx.load(str(tiny_quantized_model / "model.safetensors"))
    after = mx.load(str(res.save_path / "model.safetensors"))
    for k in before:
        if not k.startswith("model.layers.1."):
            assert mx.array_equal(before[k], after[k]).item(), k
    size = (res.save_path / "model.safetensors").stat().st_size
    base_size = (tiny_quantized_model / "model.safetensors").stat().st_size
    assert (size <= base_size * 1.01) == (how in ("requant", "grid")), (size, base_size)
    assert np.isfinite(logits(res.save_path)).all()


def test_fidelity_prompts_file(tiny_quantized_model, records_file, tmp_path, capsys):
    adapter = make_adapter(tiny_quantized_model, tmp_path / "a", b_std=0.01)
    code, stdout, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_quantized_model,
            "--adapter-path",
            adapter,
            "--save-path",
            tmp_path / "out",
            "--fidelity-prompts",
            records_file,
        ],
        capsys,
    )
    assert code == 0, err
    assert "8 prompts of records.jsonl, answered by base + adapter" in stdout, stdout
    # and off
    code, stdout, err = run_cli(
        ["fuse", "--model", tiny_quantized_model, "--adapter-path", adapter]
        + ["--save-path", tmp_path / "off", "--no-fidelity"],
        capsys,
    )
    assert code == 0 and "fidelity: KL" not in stdout, stdout
    _, body = front_matter(tmp_path / "off" / "README.md")
    assert "- fidelity:" not in body


# ---------------------------------------------------------------------------------------------
# The directory and the card
# ---------------------------------------------------------------------------------------------


def test_fused_dir_is_plain_mlx_lm_model_and_generates(tiny_model, lora, tmp_path):
    from mlx_lm import generate, load

    (lora / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "split": "train", "loss": 0.61})
        + "\n"
        + json.dumps({"step": 100, "split": "val", "loss": 0.65})
        + "\n"
        + json.dumps({"step": 200, "split": "train", "loss": 0.4321})
        + '\n{"step": 2'  # killed mid-line
    )
    (lora / "report.md").write_text(
        "# Eval\n\nSome text.\n\n| model | harmful rate | win rate |\n|---|---|---|\n"
        "| base | 0.40 | - |\n| adapter | 0.10 | 0.62 |\n\nMore text.\n"
    )
    try:
        res, _ = do_fuse(
            model=str(tiny_model),
            adapter_path=str(lora),
            save_path=str(tmp_path / "out"),
            upload_repo=None,
        )
    finally:
        for f in ("metrics.jsonl", "report.md"):
            (lora / f).unlink()
    out = res.save_path
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    assert not any(n.startswith(".") for n in os.listdir(tmp_path)), (
        "no temp folders left beside OUT"
    )

    model, tok = load(str(out))
    assert tok.chat_template is not None
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    text = generate(model, tok, prompt=prompt, max_tokens=5)
    assert isinstance(text, str) and len(tok.encode(text, add_special_tokens=False)) >= 1

    meta, body = front_matter(out / "README.md")
    from huggingface_hub import ModelCard

    hub = ModelCard.load(out / "README.md")  # the Hub library's own parser agrees
    assert hub.data.library_name == "mlx" and "d2o" in hub.data.tags and "## Training" in hub.text
    assert meta["library_name"] == "mlx"
    assert {"mlx", "d2o", "lora"} <= set(meta["tags"])
    assert meta["datasets"] == ["org/negatives"]
    # a local random model has no Hub id; a made-up one would be wrong
    assert "base_model" not in meta
    assert "| α (weight of the human negative) | 0.1 |" in body
    assert "| K (self-generated samples per prompt) | 11 |" in body
    assert "| final train loss | 0.4321 (step 200) |" in body
    assert "| final val loss | 0.65 (step 100) |" in body
    assert "| adapter | 0.10 | 0.62 |" in body and "## Evaluation" in body
    assert "0123456789abcdef" in body and "LoRA adapter is fused" in body


def test_card_without_d2o_block_and_report_dir(tiny_model, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "a", d2o=None)
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.json").write_text(json.dumps({"adapter": {"harmful_rate": 0.125}, "n": 40}))
    res, _ = do_fuse(
        model=str(tiny_model),
        adapter_path=str(adapter),
        save_path=str(tmp_path / "out"),
        report=str(rep),
    )
    meta, body = front_matter(res.save_path / "README.md")
    assert "datasets" not in meta and "d2o" in meta["tags"]
    assert "training settings unknown" in body
    assert "| adapter.harmful_rate | 0.125 |" in body


def test_card_eval_table_from_eval_report_json(tiny_model, tmp_path):
    """report.json as `mlx-d2o eval` writes it (rows per model), in its `report/` folder beside the adapter."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text(
        json.dumps(
            {
                "data": "someorg/negatives-hh:train",
                "num_samples": 11,
                "temp": 0.8,
                "top_p": 1.0,
                "max_tokens": 128,
            }
        )
    )
    adapter = make_adapter(
        tiny_model,
        tmp_path / "a",
        d2o={
            **D2O_META,
            "samples": str(cache),
            "base_model": str(tiny_model),
        },
    )
    rows = [
        {
            "name": "base",
            "negatives": {"logps": -41.5, "logratio": 0.0},
            "harmful": {"unsafe_rate": 0.5},
        },
        {
            "name": "a",
            "negatives": {"logps": -55.25, "logratio": -13.75},
            "harmful": {"unsafe_rate": 0.125},
        },
    ]
    settings = {"model": "smollm2-135m", "judge": "keywords", "negatives": {"n": 16}}
    (tmp_path / "a" / "report").mkdir()
    (tmp_path / "a" / "report" / "report.json").write_text(
        json.dumps({"settings": settings, "rows": rows})
    )
    res, _ = do_fuse(
        model=str(tiny_model), adapter_path=str(adapter), save_path=str(tmp_path / "out")
    )
    meta, body = front_matter(res.save_path / "README.md")
    assert meta["datasets"] == ["org/negatives", "someorg/negatives-hh"]
    assert (
        "| self-generated samples (π_r) | K=11, temperature 0.8, top-p 1.0, at most 128 tokens |"
        in body
    )
    assert (
        str(tiny_model.parent) not in body
        and "| trained on base | `model` (a local model) |" in body
    )
    evals = body.split("## Evaluation", 1)[1]
    assert "judge `keywords`" in evals and "negatives n=16" in evals
    assert re.search(r"\| a \| -55\.2\d \| -13\.75 \|.* 12\.5% \|", evals), evals


def test_missing_report_dir_refused(tiny_model, lora, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            lora,
            "--save-path",
            tmp_path / "out",
            "--report",
            tmp_path / "nope",
        ],
        capsys,
    )
    assert code == 2 and "--report" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: refused, exit 2, nothing written
# ---------------------------------------------------------------------------------------------


def test_existing_out_refused_without_overwrite(tiny_model, lora, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["fuse", "--model", tiny_model, "--adapter-path", lora, "--save-path", out]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert os.listdir(out) == ["keep.txt"]

    # base from adapter_config.json
    code, stdout, err = run_cli(args[:1] + args[3:] + ["--overwrite"], capsys)
    assert code == 0, err
    assert f"base model: {tiny_model} (from adapter_config.json)" in stdout
    assert "keep.txt" not in os.listdir(out) and (out / "model.safetensors").exists()
    assert "wrote" in stdout


def test_failure_midway_leaves_no_out(tiny_model, lora, tmp_path, monkeypatch):
    import mlx_lm.utils

    def broken_save_config(*a, **k):
        raise OSError("disk full")

    # after the weights are written
    monkeypatch.setattr(mlx_lm.utils, "save_config", broken_save_config)
    with pytest.raises(OSError, match="disk full"):
        do_fuse(model=str(tiny_model), adapter_path=str(lora), save_path=str(tmp_path / "out"))
    assert os.listdir(tmp_path) == [], "neither OUT nor a temp folder may be left"

    # with --overwrite, the old OUT survives a failed replacement untouched
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    with pytest.raises(OSError):
        do_fuse(model=str(tiny_model), adapter_path=str(lora), save_path=str(old), overwrite=True)
    assert os.listdir(tmp_path) == ["old"] and os.listdir(old) == ["keep.txt"]


def test_adapter_for_another_base_refused(tiny_model, tmp_path, capsys):
    from mlx_d2o.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=2, hidden_size=32, intermediate_size=64)
    adapter = make_adapter(other, tmp_path / "a")
    code, _, err = run_cli(
        ["fuse", "--model", tiny_model, "--adapter-path", adapter, "--save-path", tmp_path / "out"],
        capsys,
    )
    assert code == 2 and "another base model" in err
    assert not (tmp_path / "out").exists()


def test_adapter_for_another_base_of_the_same_shapes_refused(tiny_model, tmp_path, capsys):
    """adapter_config.json names another base (same shapes): refused in one line, as `eval`
    refuses it; nothing written."""
    adapter = make_adapter(
        tiny_model, tmp_path / "a", d2o={**D2O_META, "base_model_fingerprint": "ffffffffffffffff"}
    )
    code, out, err = run_cli(
        ["fuse", "--model", tiny_model, "--adapter-path", adapter, "--save-path", tmp_path / "out"],
        capsys,
    )
    assert code == 2 and "another base model" in err and "ffffffffffffffff" in err, err
    assert err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_adapter_for_a_deeper_model_refused_in_one_line(tiny_model, tmp_path, capsys):
    """An adapter of a 4-layer model on a 2-layer one (its tensors name layers the base lacks):
    one line, not mlx-lm's list of every tensor."""
    from mlx_d2o.testing import make_tiny_model

    deeper = make_tiny_model(tmp_path / "deeper", seed=3, num_layers=4)
    adapter = make_adapter(deeper, tmp_path / "a", num_layers=2)  # layers 2 and 3
    code, _, err = run_cli(
        ["fuse", "--model", tiny_model, "--adapter-path", adapter, "--save-path", tmp_path / "out"],
        capsys,
    )
    assert code == 2 and "does not fit the base model" in err, err
    assert err.strip().count("\n") == 0 and len(err) < 600, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped header", "flipped data offsets"])
def test_corrupt_adapter_weights_refused(tiny_model, lora, tmp_path, capsys, damage):
    """A torn or bit-flipped adapters.safetensors: one line naming the file, exit 2, nothing
    written."""
    import shutil

    adapter = tmp_path / "a"
    shutil.copytree(lora, adapter)
    f = adapter / "adapters.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    elif damage == "flipped header":
        data[20] ^= 0xFF  # inside the JSON header: not UTF-8 / not JSON any more
    else:
        header = data[8 : 8 + int.from_bytes(data[:8], "little")].decode()
        i = header.index('"data_offsets":[') + len('"data_offsets":[')
        data[8 + i] = ord("9")  # an offset past the end of the file
    f.write_bytes(bytes(data))
    code, out, err = run_cli(
        ["fuse", "--model", tiny_model, "--adapter-path", adapter, "--save-path", tmp_path / "out"],
        capsys,
    )
    assert code == 2, (code, err)
    assert err.startswith(f"error: {f}") and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_card_says_all_layers(tiny_model, tmp_path):
    """mlx-lm's num_layers -1 (every layer) reads "all layers" on the card, not "last -1"."""
    adapter = make_adapter(tiny_model, tmp_path / "a", num_layers=-1)
    res, _ = do_fuse(
        model=str(tiny_model), adapter_path=str(adapter), save_path=str(tmp_path / "out")
    )
    _, body = front_matter(res.save_path / "README.md")
    assert "| adapter | lora, rank 4, scale 2.0, all layers |" in body, body
    assert "last -1" not in body


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--quantize", "--q-bits", "7"], "unsupported quantization"),
        (["--quantize", "--q-group-size", "48"], "unsupported quantization"),
        (["--quantize", "--dequantize"], "contradict"),
        (["--upload-repo", "not a repo"], "user/name"),
        (["--adapted-layers", "16bit"], "expected one of 8bit, float, requant, grid"),
        (["--adapted-layers", "float", "--dequantize"], "contradict"),
        (["--adapted-layers", "grid", "--quantize"], "contradict"),
    ],
)
def test_bad_settings_refused(tiny_model, lora, tmp_path, capsys, flags, message):
    code, _, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            lora,
            "--save-path",
            tmp_path / "out",
            *flags,
        ],
        capsys,
    )
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_recipe_section_and_flags(tiny_quantized_model, tmp_path, capsys):
    adapter = make_adapter(tiny_quantized_model, tmp_path / "a")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {tiny_quantized_model}\nfuse:\n  adapter_path: {adapter}\n  dequantize: true\n"
        f"  save_path: {tmp_path / 'from-recipe'}\n"
    )
    code, _, err = run_cli(["fuse", "-c", recipe], capsys)
    assert code == 0, err
    assert "quantization" not in config(tmp_path / "from-recipe")
    # the command line beats the recipe
    code, _, err = run_cli(
        [
            "fuse",
            "-c",
            recipe,
            "--save-path",
            tmp_path / "flag",
            "--quantize",
            "--q-bits",
            "8",
            "--q-group-size",
            "32",
        ],
        capsys,
    )
    assert code == 2 and "contradict" in err  # recipe's dequantize + flag's quantize
    code, _, err = run_cli(
        [
            "fuse",
            "-c",
            recipe,
            "--save-path",
            tmp_path / "flag",
            "--no-dequantize",
            "--quantize",
            "--q-bits",
            "8",
            "--q-group-size",
            "32",
        ],
        capsys,
    )
    assert code == 0, err
    assert config(tmp_path / "flag")["quantization"]["bits"] == 8
    recipe.write_text(recipe.read_text() + "  q_bitz: 8\n")
    code, _, err = run_cli(["fuse", "-c", recipe], capsys)
    assert code == 2 and "q_bitz" in err


def test_not_an_adapter_dir_refused(tiny_model, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    code, _, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            tmp_path / "a",
            "--save-path",
            tmp_path / "out",
        ],
        capsys,
    )
    assert code == 2 and "adapter_config.json is missing" in err


# ---------------------------------------------------------------------------------------------
# Dry run and upload
# ---------------------------------------------------------------------------------------------


def test_dry_run_touches_nothing(tiny_model, lora, tmp_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run_cli(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            lora,
            "--save-path",
            tmp_path / "out",
            "--upload-repo",
            "someone/tiny-d2o",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "https://huggingface.co/someone/tiny-d2o" in stdout
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md"):
        assert name in stdout
    assert "nothing written, nothing uploaded" in stdout


def _cli_subprocess(args, env_extra, cwd):
    env = {**os.environ, **env_extra}
    env.pop("HF_HUB_OFFLINE", None) if "HF_HUB_OFFLINE" not in env_extra else None
    return subprocess.run(
        [sys.executable, "-m", "mlx_d2o.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "net_env",
    [
        # nothing listens on the discard port: refused at once
        {"HF_ENDPOINT": "http://127.0.0.1:9"},
        {"HF_HUB_OFFLINE": "1"},
    ],
    ids=["unreachable", "offline"],
)
def test_upload_offline_clear_error_out_complete(tiny_model, lora, tmp_path, net_env):
    """A real upload attempt with no way out of the machine: exit 2, clear message, OUT complete, no token shown."""
    secret = "hf_NotARealTokenButSecret1234567890"
    env = {
        "HF_TOKEN": secret,
        "HF_HOME": str(tmp_path / "hf"),
        "MLX_D2O_NO_BLAS_REEXEC": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        **net_env,
    }
    out = tmp_path / "out"
    p = _cli_subprocess(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            lora,
            "--save-path",
            out,
            "--upload-repo",
            "someone/tiny-d2o",
            "--private",
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 2, p.stderr
    assert "upload to" in p.stderr and "failed" in p.stderr and "complete" in p.stderr
    assert secret not in p.stdout + p.stderr
    assert "wrote" in p.stdout  # said before the upload began
    assert logits(out).shape == (1, len(TOKENS[0]), config(tiny_model)["vocab_size"])
    assert (out / "README.md").exists()


def test_upload_without_token_refused_before_writing(tiny_model, lora, tmp_path):
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "MLX_D2O_NO_BLAS_REEXEC": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_TOKEN": "",
    }
    p = _cli_subprocess(
        [
            "fuse",
            "--model",
            tiny_model,
            "--adapter-path",
            lora,
            "--save-path",
            tmp_path / "out",
            "--upload-repo",
            "someone/tiny-d2o",
        ],
        env,
        tmp_path,
    )
    assert p.returncode == 2 and "token" in p.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The real model
# ---------------------------------------------------------------------------------------------


@needs_smollm2
@pytest.mark.real_model
def test_smollm2_gguf_fuse_generates(tmp_path):
    from mlx_lm import generate, load

    from mlx_d2o.models import model_dir

    adapter = make_adapter(
        model_dir("smollm2-135m"), tmp_path / "a", num_layers=2, rank=4, b_std=0.01
    )
    res, _ = do_fuse(
        model="smollm2-135m",
        adapter_path=str(adapter),
        save_path=str(tmp_path / "out"),
        adapted_layers="grid",
    )
    q = config(res.save_path)["quantization"]
    assert q["bits"] == 4 and q["model.embed_tokens"]["bits"] == 8
    meta, _ = front_matter(res.save_path / "README.md")
    assert (
        meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        and meta["license"] == "apache-2.0"
    )

    # GGUF's Q4_1 grid does not put zero on the grid as MLX's quantizer does: quantizing afresh
    # (mlx-lm's fuse) would re-round nearly every weight; rounding onto the base's grid keeps it.
    import mlx.core as mx

    base_w = mx.load(str(model_dir("smollm2-135m") / "model.safetensors"))
    fused_w = mx.load(str(res.save_path / "model.safetensors"))
    p = "model.layers.29.self_attn.q_proj."
    # the adapter is in
    assert not mx.array_equal(base_w[p + "weight"], fused_w[p + "weight"]).item()
    kept = (base_w[p + "scales"] == fused_w[p + "scales"]).astype(mx.float32).mean().item()
    assert kept > 0.9, kept
    p0 = "model.layers.0.self_attn.q_proj.weight"  # not adapted: bit for bit
    assert mx.array_equal(base_w[p0], fused_w[p0]).item()

    model, tok = load(str(res.save_path))
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    text = generate(model, tok, prompt=prompt, max_tokens=8)
    assert len(text.strip()) > 0
