"""`mlx-d2o fuse --export-gguf`: the GGUF holds the fused model as llama.cpp lays it out, read by
readers we did not write (the `gguf` package's GGUFReader, MLX's `mx.load`), and computes what
base + adapter computes (KL/token printed, at most 0.01)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_smollm2, run_cli
from test_fuse import logits, make_adapter

# Hugging Face llama names -> GGUF names, as llama.cpp's convert_hf_to_gguf.py maps them.
HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# Greedy tokens compared between llama.cpp and mlx-lm, on these prompts.
N_TOKENS = 24
PROMPTS = ["What is the capital of France?", "Give me three tips for better sleep."]
KL_LINE = r"GGUF {name} \(.*?\): KL/token (\S+) to base \+ adapter"


def gguf_name(hf: str) -> str:
    stem, suffix = hf.rsplit(".", 1)
    if stem in TOP:
        return f"{TOP[stem]}.{suffix}"
    _, _, layer, part = stem.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGUF[part]}.{suffix}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, copied."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def fused_float_weights(out: Path) -> dict:
    """The fused directory's weights as plain mlx-lm computes with them (dequantized)."""
    import mlx.core as mx

    cfg = json.loads((out / "config.json").read_text())
    raw = {}
    for f in sorted(out.glob("*.safetensors")):
        raw.update(mx.load(str(f)))
    q = cfg.get("quantization") or {}
    w = {}
    for k, v in raw.items():
        if k.endswith((".scales", ".biases")):
            continue
        module = k.rsplit(".", 1)[0]
        if f"{module}.scales" in raw:
            mq = q.get(module, q)
            v = mx.dequantize(
                v, raw[f"{module}.scales"], raw[f"{module}.biases"],
                group_size=mq["group_size"], bits=mq["bits"],
            )  # fmt: skip
        w[k] = np.array(v.astype(mx.float32))
    return w


def fuse_cli(model, adapter, out, capsys, *flags):
    return run_cli(
        ["fuse", "--model", model, "--adapter-path", adapter, "--save-path", out, *flags], capsys
    )


def printed_kl(text: str, name: str) -> float:
    m = re.search(KL_LINE.format(name=re.escape(name)), text)
    assert m, text
    return float(m.group(1))


def reader_fields(path: Path) -> dict:
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(str(path)).fields.items()}


@pytest.fixture(scope="module")
def merged_model(tmp_path_factory):
    from mlx_d2o.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tinym") / "model", seed=2, merges=True)


@pytest.fixture(scope="module")
def merged_quantized_model(tmp_path_factory):
    from mlx_d2o.testing import make_tiny_model

    path = tmp_path_factory.mktemp("tinymq") / "model"
    return make_tiny_model(path, seed=3, merges=True, quantize=True)


def check_tokenizer_fields(fields: dict, out: Path):
    """GGUF tokenizer metadata against the fused directory's own tokenizer files."""
    from transformers import AutoTokenizer

    spec = json.loads((out / "tokenizer.json").read_text())
    hf = AutoTokenizer.from_pretrained(str(out))
    vocab = hf.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"  # plain byte-level split, no digit rule
    assert fields["tokenizer.ggml.tokens"] == by_id
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert merges and fields["tokenizer.ggml.merges"] == merges
    types = fields["tokenizer.ggml.token_type"]
    specials = {a["id"] for a in spec["added_tokens"] if a["special"]}
    assert [i for i, t in enumerate(types) if t == 3] == sorted(specials)  # 3: CONTROL
    assert fields["tokenizer.ggml.bos_token_id"] == hf.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == hf.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == hf.pad_token_id
    assert fields["tokenizer.chat_template"] == hf.chat_template


def test_export_gguf_float_base(merged_model, tmp_path, capsys):
    import mlx.core as mx
    from gguf import GGUFReader

    adapter = make_adapter(merged_model, tmp_path / "a", seed=5)
    out = tmp_path / "F"
    code, stdout, stderr = fuse_cli(merged_model, adapter, out, capsys, "--export-gguf")
    assert code == 0, stderr
    path = out / "ggml-model-f16.gguf"
    kl = printed_kl(stdout, path.name)
    assert kl <= 0.01
    assert (
        f"`{path.name}` (f16); KL(base + adapter ‖ the GGUF) = {kl:.2g}"
        in (out / "README.md").read_text()
    )
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "no temp folder left"

    # The gguf package's reader: architecture, names, shapes, types, tokenizer.
    cfg = json.loads((out / "config.json").read_text())
    fields = reader_fields(path)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == cfg["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert fields["llama.embedding_length"] == cfg["hidden_size"]
    check_tokenizer_fields(fields, out)
    fused = fused_float_weights(out)
    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    assert set(tensors) == {gguf_name(k) for k in fused}
    for k, w in fused.items():
        t = tensors[gguf_name(k)]
        assert list(map(int, t.shape))[::-1] == list(w.shape), k  # GGUF lists columns first
        assert t.tensor_type.name == ("F32" if w.ndim == 1 else "F16"), k

    # MLX's GGUF loader: the weights, Q and K rows in llama.cpp's rotary layout.
    loaded = mx.load(str(path))
    heads = {"q_proj": cfg["num_attention_heads"], "k_proj": cfg["num_key_value_heads"]}
    for k, w in fused.items():
        proj = k.split(".")[-2]
        want = llama_cpp_permute(w, heads[proj]) if proj in heads else w
        got = np.array(loaded[gguf_name(k)].astype(mx.float32))
        np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(w).max(), err_msg=k)

    # The file as a model: mlx-d2o's import (`convert-gguf`), then plain mlx-lm.
    back = tmp_path / "back"
    code, _, stderr = run_cli(["convert-gguf", path, back], capsys)
    assert code == 0, stderr
    ref, base, got = logits(merged_model, adapter), logits(merged_model), logits(back)
    assert np.abs(ref - base).max() > 0.1, "the adapter must change the logits"
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    from transformers import AutoTokenizer

    text = "the theater is in there, Ünïcødé 12345"
    ids = AutoTokenizer.from_pretrained(str(out)).encode(text)
    assert AutoTokenizer.from_pretrained(str(back)).encode(text) == ids
    assert any(i >= 259 for i in ids), "the merges must be used"


@pytest.mark.parametrize("gguf_type", ["q8_0", "f16"])
def test_export_gguf_quantized_base(merged_quantized_model, tmp_path, capsys, gguf_type):
    import mlx.core as mx
    from gguf import GGUFReader

    base = merged_quantized_model
    adapter = make_adapter(base, tmp_path / "a", seed=6)
    out = tmp_path / "F"
    flags = ["--export-gguf", "--gguf-type", gguf_type, "--gguf-path", "m.gguf"]
    code, stdout, stderr = fuse_cli(base, adapter, out, capsys, *flags)
    assert code == 0, stderr
    path = out / "m.gguf"
    kl = printed_kl(stdout, path.name)
    assert kl <= 0.01
    assert json.loads((out / "config.json").read_text())["quantization"], "the dir stays quantized"

    fused = fused_float_weights(out)  # the weights the fused directory computes with
    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    matrix = "Q8_0" if gguf_type == "q8_0" else "F16"
    assert {t.tensor_type.name for n, t in tensors.items() if len(t.shape) == 2} == {matrix}
    loaded = mx.load(str(path))  # Q8_0 arrives as MLX 8-bit affine groups of 32
    cfg = json.loads((out / "config.json").read_text())
    n_kv = cfg["num_key_value_heads"]
    w = fused["model.layers.1.self_attn.v_proj.weight"]
    name = "blk.1.attn_v"
    if gguf_type == "q8_0":
        got = mx.dequantize(
            loaded[f"{name}.weight"], loaded[f"{name}.scales"], loaded[f"{name}.biases"],
            group_size=32, bits=8,
        )  # fmt: skip
        step = np.abs(w.reshape(-1, 32)).max(-1) / 127  # Q8_0: one scale per block of 32
        err = np.abs(np.array(got) - w).reshape(-1, 32).max(-1)
        assert (err <= 0.6 * step).all()  # half a step, and the f16 rounding of the scale
    else:
        got = loaded[f"{name}.weight"].astype(mx.float32)
        np.testing.assert_allclose(np.array(got), w, atol=2e-3 * np.abs(w).max())
    wk = fused["model.layers.0.self_attn.k_proj.weight"]
    name = "blk.0.attn_k"
    if gguf_type == "q8_0":
        got = mx.dequantize(
            loaded[f"{name}.weight"], loaded[f"{name}.scales"], loaded[f"{name}.biases"],
            group_size=32, bits=8,
        )  # fmt: skip
    else:
        got = loaded[f"{name}.weight"]
    got = np.array(got.astype(mx.float32))
    want = llama_cpp_permute(wk, n_kv)
    assert np.abs(got - want).max() < 0.02 * np.abs(wk).max()
    assert np.abs(got - wk).max() > 0.1 * np.abs(wk).max(), "rows must be permuted"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--export-gguf", "--gguf-type", "q4_k"], "--gguf-type 'q4_k': expected one of f16, q8_0"),
        (["--export-gguf", "--gguf-path", "sub/x.gguf"], "--gguf-path 'sub/x.gguf'"),
        (["--export-gguf", "--gguf-path", "x.bin"], "--gguf-path 'x.bin'"),
        (["--gguf-type", "q8_0"], "need --export-gguf"),
    ],
)
def test_bad_gguf_flags_refused(tiny_model, tmp_path, capsys, flags, message):
    adapter = make_adapter(tiny_model, tmp_path / "a")
    out = tmp_path / "F"
    code, stdout, stderr = fuse_cli(tiny_model, adapter, out, capsys, *flags)
    assert code == 2 and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists() and "fusing" not in stdout


def test_unsupported_model_refused_before_fusing(tmp_path, capsys):
    from mlx_d2o.testing import make_tiny_model

    base = make_tiny_model(tmp_path / "m", merges=True)
    cfg = json.loads((base / "config.json").read_text())
    cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    (base / "config.json").write_text(json.dumps(cfg))
    adapter = make_adapter(base, tmp_path / "a")
    code, _, stderr = fuse_cli(base, adapter, tmp_path / "F", capsys, "--export-gguf")
    assert code == 2 and "--export-gguf: this llama has rope_scaling" in stderr
    assert "fusing" not in stderr and not (tmp_path / "F").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_failure_while_measuring_leaves_nothing(merged_model, tmp_path, monkeypatch):
    from mlx_d2o.export import FuseArgs, fuse, to_gguf

    def broken(path, probe):
        assert path.is_file()  # the GGUF was written before the measurement
        raise RuntimeError("boom")

    monkeypatch.setattr(to_gguf, "gguf_kl", broken)
    adapter = make_adapter(merged_model, tmp_path / "a")
    args = FuseArgs(
        model=str(merged_model), adapter_path=str(adapter), save_path=str(tmp_path / "F"),
        export_gguf=True,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        fuse(args, log=lambda s: None)
    assert sorted(os.listdir(tmp_path)) == ["a"], "no OUT, no GGUF or temp folder beside it"


def test_dry_run_lists_the_gguf(merged_model, tmp_path, capsys):
    adapter = make_adapter(merged_model, tmp_path / "a")
    flags = ["--export-gguf", "--gguf-type", "q8_0", "--dry-run"]
    code, stdout, _ = fuse_cli(merged_model, adapter, tmp_path / "F", capsys, *flags)
    assert code == 0 and re.search(r"ggml-model-q8_0.gguf +\d+\.\d KB", stdout)
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_no_merges_warned(tiny_model, tmp_path, capsys):
    adapter = make_adapter(tiny_model, tmp_path / "a")
    code, _, stderr = fuse_cli(tiny_model, adapter, tmp_path / "F", capsys, "--export-gguf")
    assert code == 0 and "has no tokenizer.ggml.merges: llama.cpp refuses" in stderr
    assert "tokenizer.ggml.merges" not in reader_fields(tmp_path / "F" / "ggml-model-f16.gguf")


# ---------------------------------------------------------------------------------------------
# SmolLM2 (the embedded Q4_1 GGUF): export of the imported model gives the original file back
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_fused(tmp_path_factory):
    """SmolLM2 + a small random LoRA on its last 4 layers, fused with --export-gguf (f16)."""
    from mlx_d2o.export import FuseArgs, fuse
    from mlx_d2o.models import model_dir

    tmp = tmp_path_factory.mktemp("smol")
    with pytest.MonkeyPatch.context() as mp:  # the session's cache, as `_isolated_cache` sets it
        mp.setenv("MLX_D2O_CACHE", str(tmp_path_factory.getbasetemp() / "mlx-d2o-cache"))
        adapter = make_adapter(model_dir("smollm2-135m"), tmp / "a", num_layers=4, b_std=0.02)
        lines = []
        args = FuseArgs(
            model="smollm2-135m", adapter_path=str(adapter), save_path=str(tmp / "F"),
            export_gguf=True,
        )  # fmt: skip
        fuse(args, log=lines.append)
    return tmp / "F", adapter, "\n".join(lines)


@pytest.mark.real_model
@needs_smollm2
def test_smollm2_export_matches_the_original_gguf(smollm2_fused):
    import gguf

    from mlx_d2o.models import embedded_model_path

    out, _, log = smollm2_fused
    path = out / "ggml-model-f16.gguf"
    assert printed_kl(log, path.name) <= 0.01
    original = embedded_model_path("smollm2-135m")
    a, b = reader_fields(original), reader_fields(path)
    for k in [k for k in a if k.startswith(("tokenizer.", "llama."))]:
        if k != "tokenizer.ggml.add_space_prefix":  # a sentencepiece key, unused by gpt2
            assert b[k] == a[k], k
    ta = {t.name: t for t in gguf.GGUFReader(str(original)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    assert set(ta) == set(tb)
    # Layers the adapter did not touch (it is on the last 4 of 30): llama.cpp's own dequantize
    # of the original and our file agree to f16 rounding, Q/K rows included.
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.3.ffn_down.weight"]:
        x = gguf.quants.dequantize(ta[name].data, ta[name].tensor_type).astype(np.float32)
        y = np.asarray(tb[name].data, dtype=np.float32).reshape(x.shape)
        assert np.abs(x - y).max() <= 1e-3 * np.abs(x).max(), name


HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
# llama.cpp itself: `pip install llama-cpp-python` builds it from source (long on 2 cores); CI
# does not, so these skip there.
needs_llama_cpp = pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python not installed")


@pytest.mark.real_model
@pytest.mark.llama_cpp
@needs_smollm2
@needs_llama_cpp
def test_llama_cpp_generates_what_mlx_lm_generates(smollm2_fused):
    """llama.cpp itself (llama-cpp-python) on the exported GGUF: it tokenizes the chat prompt as
    our tokenizer does, holds the chat template, and its greedy answer starts with the tokens
    that mlx_lm.generate gives on the fused directory."""
    from llama_cpp import Llama
    from mlx_lm import load
    from mlx_lm.generate import stream_generate

    out, _, _ = smollm2_fused
    model, tok = load(str(out))
    llm = Llama(str(out / "ggml-model-f16.gguf"), n_ctx=512, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    for question in PROMPTS:
        messages = [{"role": "user", "content": question}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)
        want = [r.token for r in stream_generate(model, tok, prompt=ids, max_tokens=N_TOKENS)]
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == ids
        got = []
        for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if len(got) == len(want):
                break
            got.append(t)
        llm.reset()
        print(f"llama.cpp: {llm.detokenize(got)!r}\nmlx_lm:    {tok.decode(want)!r}")
        assert got == want


# ---------------------------------------------------------------------------------------------
# Sentencepiece-style BPE (Llama 2, Mistral): llama.cpp's `llama` vocabulary
# ---------------------------------------------------------------------------------------------

SP_PAIRS = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a"), ("e", "r"), ("o", "r")]
SP_TEXT = "the other theater is in Paris, 42 ünïcødé  ok"


def sentencepiece_tokenizer():
    """A Llama-2-style tokenizer.json: BPE with byte fallback, '▁' for spaces, BOS added."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = ["▁", *"abcdefghijklmnopqrstuvwxyz"]
    vocab = [*specials, *(f"<0x{i:02X}>" for i in range(256)), *chars]
    vocab += [a + b for a, b in SP_PAIRS]
    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(vocab)}, merges=SP_PAIRS, unk_token="<unk>",
        fuse_unk=True, byte_fallback=True,
    )  # fmt: skip
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
         decoders.Strip(content=" ", left=1, right=0)]
    )  # fmt: skip
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    hf.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
        "{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    )
    return hf


@pytest.fixture(scope="module")
def sp_export(tmp_path_factory):
    from mlx_d2o.export import FuseArgs, fuse
    from mlx_d2o.testing import make_tiny_model

    tmp = tmp_path_factory.mktemp("sp")
    base = make_tiny_model(tmp / "m", seed=4, tokenizer=sentencepiece_tokenizer())
    adapter = make_adapter(base, tmp / "a", seed=7)
    lines = []
    args = FuseArgs(
        model=str(base), adapter_path=str(adapter), save_path=str(tmp / "F"), export_gguf=True
    )
    fuse(args, log=lines.append)
    return tmp / "F", "\n".join(lines)


def test_export_gguf_sentencepiece_tokenizer(sp_export, tmp_path):
    from transformers import AutoTokenizer

    from mlx_d2o.models import convert_gguf

    out, log = sp_export
    path = out / "ggml-model-f16.gguf"
    assert printed_kl(log, path.name) <= 0.01
    fields = reader_fields(path)
    hf = AutoTokenizer.from_pretrained(str(out))
    vocab = hf.get_vocab()
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.tokens"] == sorted(vocab, key=vocab.get)
    types = fields["tokenizer.ggml.token_type"]
    assert [i for i, t in enumerate(types) if t == 6] == list(range(3, 259))  # 6: BYTE
    assert [i for i, t in enumerate(types) if t == 3] == [0, 1, 2]  # 3: CONTROL
    assert "tokenizer.ggml.merges" not in fields and "tokenizer.ggml.pre" not in fields
    scores = fields["tokenizer.ggml.scores"]
    # sentencepiece merges the best-scored pair first: the merges' order, as scores
    merged = [vocab[a + b] for a, b in SP_PAIRS]
    assert [scores[i] for i in merged] == sorted((scores[i] for i in merged), reverse=True)
    assert max(scores[i] for i in range(259)) < min(scores[i] for i in merged)
    assert fields["tokenizer.ggml.add_space_prefix"] is True
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.chat_template"] == hf.chat_template

    back = AutoTokenizer.from_pretrained(str(convert_gguf(path, tmp_path / "back")))
    ids = hf.encode(SP_TEXT, add_special_tokens=False)
    assert back.encode(SP_TEXT, add_special_tokens=False) == ids
    assert vocab["▁the"] in ids and vocab["<0x34>"] in ids  # a merge, and a byte ('4')


@pytest.mark.llama_cpp
@needs_llama_cpp
def test_llama_cpp_tokenizes_the_sentencepiece_export(sp_export):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    out, _ = sp_export
    hf = AutoTokenizer.from_pretrained(str(out))
    llm = Llama(str(out / "ggml-model-f16.gguf"), n_ctx=64, verbose=False)
    assert llm.tokenize(SP_TEXT.encode("utf-8")) == hf.encode(SP_TEXT)  # with BOS, as HF


@pytest.mark.llama_cpp
@needs_llama_cpp
def test_llama_cpp_logits_equal_the_fused_model(merged_model, tmp_path, capsys):
    """llama.cpp's forward pass over the exported file against plain mlx-lm's over the fused
    directory, on the same tokens: Q/K layout, norms, rotary base and tied/untied head all
    have to be llama.cpp's for these to agree."""
    from llama_cpp import Llama

    adapter = make_adapter(merged_model, tmp_path / "a", seed=8)
    out = tmp_path / "F"
    code, _, stderr = fuse_cli(merged_model, adapter, out, capsys, "--export-gguf")
    assert code == 0, stderr
    tokens = [1, 40, 50, 60, 70, 80, 90, 100, 110, 120, 260, 262, 2, 1, 33, 44]
    want = logits(out, tokens=[tokens])[0]
    llm = Llama(str(out / "ggml-model-f16.gguf"), n_ctx=64, logits_all=True, verbose=False)
    llm.eval(tokens)
    got = np.array(llm.scores[: len(tokens)])
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
