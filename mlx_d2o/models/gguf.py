"""GGUF import: a llama-family GGUF file -> an mlx-lm directory that plain `mlx_lm.load` reads."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import D2OError
from ..io import atomic_dir
from .fingerprint import file_fingerprint

_GGUF_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GGUF_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# GGML's Q4_0, Q4_1 and Q8_0 all quantize blocks of 32 weights; mx.load hands them over as
# MLX affine triples with that group size.
_GGML_GROUP_SIZE = 32


def _scalar(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def _hf_name(gguf_name: str) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        if part not in _GGUF_BLOCK_NAMES:
            raise D2OError(f"unsupported GGUF tensor {gguf_name!r} (not a llama block tensor)")
        return f"model.layers.{layer}.{_GGUF_BLOCK_NAMES[part]}.{suffix}"
    if stem not in _GGUF_TOP_NAMES:
        raise D2OError(f"unsupported GGUF tensor {gguf_name!r}")
    return f"{_GGUF_TOP_NAMES[stem]}.{suffix}"


def _unpermute_rope_rows(w, n_heads: int):
    """Undo llama.cpp's permutation of Q/K rows (its `permute()` in convert_hf_to_gguf.py).

    llama.cpp reorders each head's rows so that its rotary embedding can pair adjacent
    dimensions; Hugging Face llama pairs dimension i with i + d/2. Undoing it gives the
    Hugging Face layout, so the converted directory is an ordinary llama that every tool reads
    (mlx-lm with rope_traditional=False, transformers, llama.cpp's own converter). Rows are
    output features and GGML quantizes along the input, so this is exact for the packed
    weights, scales and biases alike.
    """
    rows = w.shape[0]
    return (
        w.reshape(n_heads, (rows // n_heads) // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _bytes_to_unicode():
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# llama.cpp's pre-tokenizer names that split digits one by one before GPT-2's byte-level regex
# (llama-vocab.cpp: STARCODER, REFACT, COMMAND_R, SMOLLM, CODESHELL, EXAONE, MINERVA).
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _gguf_tokenizer(meta: dict):
    """A `tokenizers.Tokenizer` rebuilt from GGUF metadata (byte-level BPE or sentencepiece BPE)."""
    from tokenizers import AddedToken

    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = (
        [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]
        if "tokenizer.ggml.token_type" in meta
        else [1] * len(tokens)
    )
    if kind == "gpt2":
        tok = _byte_level_bpe(meta, tokens)
    elif kind == "llama":
        tok = _sentencepiece_bpe(meta, tokens, types)
    else:
        raise D2OError(f"unsupported GGUF tokenizer model {kind!r} (supported: gpt2, llama)")
    # Control tokens (type 3) must stay whole: <|im_start|> is one token, not a dozen bytes.
    added = [
        AddedToken(t, special=(ty == 3), normalized=False)
        for t, ty in zip(tokens, types)
        if ty in (3, 4)
    ]
    tok.add_tokens(added)
    return tok


def _byte_level_bpe(meta: dict, tokens: list):
    """GPT-2 style BPE with llama.cpp's pre-tokenizer name mapped to its split rules."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    pre = meta.get("tokenizer.ggml.pre", "gpt2")
    if pre in ("llama-bpe", "llama3", "dbrx", "smaug-bpe"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        steps = [
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        ]
        if pre in _DIGIT_SPLIT_PRE:
            steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: dict, tokens: list, types: list):
    """Sentencepiece files carry scores, not merges: a merge is any split of a vocabulary token
    into two vocabulary tokens, ranked by the merged token's score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = [float(s) for s in meta["tokenizer.ggml.scores"].tolist()]
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for t, i in vocab.items():
        if types[i] != 1 or len(t) < 2:
            continue
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in vocab and b in vocab:
                ranked.append((-scores[i], vocab[a], vocab[b], a, b))
    ranked.sort()
    merges = [(a, b) for *_, a, b in ranked]
    unk = tokens[int(_scalar(meta.get("tokenizer.ggml.unknown_token_id", 0)))]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    prefix = bool(_scalar(meta.get("tokenizer.ggml.add_space_prefix", True)))
    steps = ([normalizers.Prepend("▁")] if prefix else []) + [normalizers.Replace(" ", "▁")]
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(dec)
    return tok


def read_gguf(path: str | Path):
    import mlx.core as mx

    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as e:  # mx.load's messages do not name the file
        raise D2OError(f"{path}: cannot read as GGUF ({e})") from e


GGUF_SOURCE = "gguf_source.json"  # beside a converted model: which GGUF file it came from


def gguf_source(model_dir: str | Path) -> dict:
    """What the GGUF import recorded beside a converted model ({} when not converted, or torn)."""
    src = Path(model_dir) / GGUF_SOURCE
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a llama-family GGUF as an mlx-lm model directory that plain `mlx_lm.load` reads.

    Weights stay as stored (Q4_0/Q4_1/Q8_0 as MLX affine groups of 32, F16/F32 as they are);
    Q/K rows go back to Hugging Face's rotary layout; the tokenizer, special tokens and chat
    template come from the metadata. The directory is written beside OUT and renamed into place,
    so a failure leaves nothing half-written.
    """
    import mlx.core as mx

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise D2OError(f"{gguf_path}: no such file")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise D2OError(f"{out_dir} exists and is not empty (use --overwrite to replace it)")
    weights, meta = read_gguf(gguf_path)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise D2OError(
            f"{gguf_path}: architecture {arch!r} is not supported (llama-family GGUF only)"
        )
    config = _llama_config(gguf_path, meta, tie_embeddings="output.weight" not in weights)
    out_w, quant = _convert_weights(weights, config)
    if quant:
        config["quantization"] = _quantization_config(quant)
        config["quantization_config"] = config["quantization"]
    source = {
        "gguf": gguf_path.name,
        "name": meta.get("general.name"),
        "license": meta.get("general.license"),
        "sha256_head": file_fingerprint(gguf_path),
    }
    with atomic_dir(out_dir) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), out_w, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        _hf_tokenizer(meta).save_pretrained(str(tmp))
        (tmp / GGUF_SOURCE).write_text(json.dumps(source, indent=2))
    return out_dir


def _llama_config(gguf_path: Path, meta: dict, tie_embeddings: bool) -> dict:
    """mlx-lm's llama config.json from the GGUF's `llama.*` metadata."""

    def m(key, default=None):
        v = meta.get(f"llama.{key}", default)
        if v is None:
            raise D2OError(f"{gguf_path}: metadata field 'llama.{key}' is missing")
        return _scalar(v)

    scaling = meta.get("llama.rope.scaling.type")
    if scaling is not None and scaling != "none":
        raise D2OError(f"{gguf_path}: rope scaling {scaling!r} is not supported yet")
    n_heads = int(m("attention.head_count"))
    hidden = int(m("embedding_length"))
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(m("block_count")),
        "intermediate_size": int(m("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(m("attention.head_count_kv", n_heads)),
        "head_dim": int(_scalar(meta.get("llama.attention.key_length", hidden // n_heads))),
        "rms_norm_eps": float(m("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(m("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(m("context_length", 2048)),
        "vocab_size": int(
            _scalar(meta.get("llama.vocab_size", len(meta["tokenizer.ggml.tokens"])))
        ),
        "tie_word_embeddings": tie_embeddings,
        "rope_traditional": False,
        "bos_token_id": int(_scalar(meta.get("tokenizer.ggml.bos_token_id", 1))),
        "eos_token_id": int(_scalar(meta.get("tokenizer.ggml.eos_token_id", 2))),
    }


def _convert_weights(weights: dict, config: dict) -> tuple[dict, dict]:
    """GGUF tensors -> Hugging Face names (Q/K rows un-permuted); quantized module -> its bits."""
    out_w, quant = {}, {}
    for name, w in weights.items():
        hf = _hf_name(name)
        if ".self_attn.q_proj." in hf:
            w = _unpermute_rope_rows(w, config["num_attention_heads"])
        elif ".self_attn.k_proj." in hf:
            w = _unpermute_rope_rows(w, config["num_key_value_heads"])
        out_w[hf] = w
        if hf.endswith(".scales"):
            in_dims = w.shape[-1] * _GGML_GROUP_SIZE
            bits = weights[name[: -len(".scales")] + ".weight"].shape[-1] * 32 // in_dims
            quant[hf[: -len(".scales")]] = {"group_size": _GGML_GROUP_SIZE, "bits": int(bits)}
    return out_w, quant


def _quantization_config(quant: dict) -> dict:
    """The most common bit width as the default; modules that differ (Q8_0 embeddings) by name."""
    counts = {}
    for q in quant.values():
        counts[q["bits"]] = counts.get(q["bits"], 0) + 1
    bits = max(counts, key=counts.get)
    config = {"group_size": _GGML_GROUP_SIZE, "bits": bits}
    for module, q in sorted(quant.items()):
        if q["bits"] != bits:
            config[module] = q
    return config


def _hf_tokenizer(meta: dict):
    from transformers import PreTrainedTokenizerFast

    tokens = meta["tokenizer.ggml.tokens"]

    def special(key):
        idx = meta.get(f"tokenizer.ggml.{key}")
        return None if idx is None else tokens[int(_scalar(idx))]

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=_gguf_tokenizer(meta),
        bos_token=special("bos_token_id"),
        eos_token=special("eos_token_id"),
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        add_bos_token=bool(_scalar(meta.get("tokenizer.ggml.add_bos_token", False))),
        clean_up_tokenization_spaces=False,
    )
    if "tokenizer.chat_template" in meta:
        hf_tok.chat_template = meta["tokenizer.chat_template"]
    return hf_tok
