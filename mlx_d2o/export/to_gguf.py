"""GGUF export: the fused model as one file that llama.cpp (and Ollama, LM Studio) loads.

Written with the `gguf` package, llama.cpp's own writer, in the layout of llama.cpp's
`convert_hf_to_gguf.py` for llama: tensors under GGUF names, Q/K rows permuted for llama.cpp's
rotary pairing (`_permute_rope_rows`), 1-D tensors in float32, the rest in `--gguf-type`
(f16, or Q8_0: blocks of 32 weights with one f16 scale), and the tokenizer (tokens, token types,
merges, special ids, pre-tokenizer name, chat template) in the metadata. It is the inverse of
`models.gguf.convert_gguf`: the import of an exported file gives the fused model back (exactly
at f16 up to rounding), which is how `fuse` measures the file's fidelity.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import D2OError
from ..io import writing
from ..models.gguf import _GGUF_BLOCK_NAMES, _GGUF_TOP_NAMES, _gguf_tokenizer, convert_gguf
from .fidelity import FloatView, Probe, kl_per_token

GGUF_TYPES = ("f16", "q8_0")
# mlx-lm model types whose weights are llama's (mistral is llama with its own name).
EXPORTABLE = ("llama", "mistral")
# Text whose tokenization must survive the trip through the GGUF metadata: words, digits,
# contractions, runs of spaces and newlines, accents (byte-level BPE splits these differently
# under each of llama.cpp's pre-tokenizers).
CHECK_TEXT = "Hello World! It's 2024: 12345 apples,  3.14\n\n\tdon't Ünïcødé   ok?"
# llama.cpp's pre-tokenizer names (llama-vocab.cpp) that `models.gguf` also rebuilds.
PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe")
# gguf.TokenType: NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def check_exportable(config: dict) -> None:
    """Refuse, before any work, a model this exporter cannot write as llama.cpp reads it."""
    kind = config.get("model_type")
    if kind not in EXPORTABLE:
        raise D2OError(
            f"--export-gguf: model type {kind!r} is not supported (llama-family only: "
            f"{', '.join(EXPORTABLE)})"
        )
    if config.get("rope_scaling") or config.get("attention_bias") or config.get("mlp_bias"):
        what = "rope_scaling" if config.get("rope_scaling") else "attention/MLP biases"
        raise D2OError(f"--export-gguf: this llama has {what}, which the exporter does not write")


def check_gguf_args(args) -> None:
    """`--gguf-type` / `--gguf-path` of `FuseArgs`, before any work."""
    if args.gguf_type not in GGUF_TYPES:
        raise D2OError(f"--gguf-type {args.gguf_type!r}: expected one of {', '.join(GGUF_TYPES)}")
    if args.gguf_path is not None:
        p = Path(args.gguf_path)
        if p.name != args.gguf_path or p.suffix != ".gguf" or p.name in ("", ".gguf"):
            raise D2OError(
                f"--gguf-path {args.gguf_path!r}: expected a file name ending in .gguf (it is "
                "written inside --save-path)"
            )
    if (args.gguf_path is not None or args.gguf_type != "f16") and not args.export_gguf:
        raise D2OError("--gguf-type and --gguf-path need --export-gguf")


def gguf_file(args) -> str:
    return args.gguf_path or f"ggml-model-{args.gguf_type}.gguf"


@contextlib.contextmanager
def gguf_stage(out: Path, active: bool):
    """A temp folder beside OUT for the GGUF until it moves into OUT (None when not ACTIVE):
    same file system, so the move is a rename; removed whatever happens."""
    if not active:
        yield None
        return
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.gguf-", dir=out.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _gguf_name(hf_name: str) -> str:
    blocks = {v: k for k, v in _GGUF_BLOCK_NAMES.items()}
    top = {v: k for k, v in _GGUF_TOP_NAMES.items()}
    stem, _, suffix = hf_name.rpartition(".")
    if stem.startswith("model.layers."):
        layer, part = stem[len("model.layers.") :].split(".", 1)
        if part in blocks:
            return f"blk.{layer}.{blocks[part]}.{suffix}"
    elif stem in top:
        return f"{top[stem]}.{suffix}"
    raise D2OError(f"--export-gguf: no GGUF name for tensor {hf_name!r}")


def _permute_rope_rows(w, n_heads: int):
    """Hugging Face's rotary layout (dimension i paired with i + d/2) -> llama.cpp's (adjacent
    pairs): `permute()` of llama.cpp's convert_hf_to_gguf.py, inverse of
    `models.gguf._unpermute_rope_rows`."""
    rows = w.shape[0]
    return (
        w.reshape(n_heads, 2, (rows // n_heads) // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def float_weights(net):
    """(Hugging Face name, float32 numpy array) for every weight, one at a time: quantized
    modules dequantized (the fused model over a quantized base is written from the weights it
    computes with), so that only one float copy is alive at a time."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    for path, m in net.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            w = mx.dequantize(
                m.weight, m.scales, getattr(m, "biases", None),
                group_size=m.group_size, bits=m.bits, mode=m.mode,
            )  # fmt: skip
            yield f"{path}.weight", np.array(w.astype(mx.float32))
            if "bias" in m:
                yield f"{path}.bias", np.array(m.bias.astype(mx.float32))
        elif isinstance(m, (nn.Linear, nn.Embedding, nn.RMSNorm)):
            for k, v in sorted(m.items()):
                if isinstance(v, mx.array):
                    yield f"{path}.{k}", np.array(v.astype(mx.float32))


def estimated_size(net, gguf_type: str) -> int:
    """Bytes of the tensors `export_gguf` would write (for `--dry-run`; metadata aside)."""
    import mlx.nn as nn

    per = {"f16": 2.0, "q8_0": 34 / 32}[gguf_type]  # Q8_0: 32 int8 and one f16 scale a block
    total = 0
    for _, m in net.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            total += m.scales.size * m.group_size * per
        elif isinstance(m, (nn.Linear, nn.Embedding, nn.RMSNorm)):
            total += sum(v.size * (4 if v.ndim == 1 else per) for v in m.parameters().values())
    return int(total)


def _tensor(name: str, w, gguf_type: str):
    """(data, raw_dtype) as the writer takes them; llama.cpp keeps 1-D tensors in float32 and
    quantizes only rows that are whole blocks."""
    import gguf
    import numpy as np

    if w.ndim == 1:
        return w.astype(np.float32), None
    q = gguf.GGMLQuantizationType.Q8_0
    if gguf_type == "q8_0" and w.shape[-1] % gguf.GGML_QUANT_SIZES[q][0] == 0:
        return gguf.quants.quantize(w, q), q
    return w.astype(np.float16), None


def _architecture(writer, config: dict, name: str, gguf_type: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(ftype[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _hf(tokenizer):
    """The Hugging Face tokenizer under mlx-lm's TokenizerWrapper."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def _vocab(hf, spec: dict, vocab_size: int) -> tuple[list, list]:
    """Tokens by id and their GGUF types; ids the embedding has beyond the tokenizer's are
    `[PADn]` placeholders (llama.cpp wants one token per embedding row, as its converter)."""
    vocab = hf.backend_tokenizer.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    if n > vocab_size:
        raise D2OError(
            f"--export-gguf: the tokenizer has {n} tokens but the model only {vocab_size} "
            "embedding rows"
        )
    tokens = [None] * vocab_size
    for t, i in vocab.items():
        tokens[i] = t
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    types = []
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types.append(UNUSED)
        elif i in added:
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        else:
            types.append(NORMAL)
    return tokens, types


def _adds(hf, token_id) -> tuple[bool, bool]:
    """(adds BOS, adds EOS): what the tokenizer puts around a plain encode, as llama.cpp's
    `add_bos_token` / `add_eos_token` say."""
    with_specials = hf("a")["input_ids"]
    plain = hf("a", add_special_tokens=False)["input_ids"]
    extra = len(with_specials) > len(plain)
    bos = extra and token_id("bos") is not None and with_specials[0] == token_id("bos")
    eos = extra and token_id("eos") is not None and with_specials[-1] == token_id("eos")
    return bool(bos), bool(eos)


def tokenizer_meta(tokenizer, vocab_size: int) -> dict:
    """The `tokenizer.*` metadata of TOKENIZER (byte-level BPE), keyed as in a GGUF file.

    The pre-tokenizer name is the first of `PRE_TOKENIZERS` under which the tokenizer rebuilt
    from this metadata (by `models.gguf`, the importer) pre-tokenizes and encodes `CHECK_TEXT`
    and the special tokens as TOKENIZER does; none: refused, since llama.cpp would split text
    differently from the model's own tokenizer.
    """
    import numpy as np

    hf = _hf(tokenizer)
    spec = json.loads(hf.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = "sentencepiece-style BPE" if model.get("byte_fallback") else model.get("type")
        raise D2OError(
            f"--export-gguf: {kind} tokenizers are not supported yet (byte-level BPE only, "
            "as GPT-2, SmolLM2 and Llama 3 use)"
        )
    tokens, types = _vocab(hf, spec, vocab_size)

    def token_id(kind):
        return getattr(hf, f"{kind}_token_id", None)

    bos, eos = _adds(hf, token_id)
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.merges": [
            m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])
        ],
        "tokenizer.ggml.add_bos_token": bos,
        "tokenizer.ggml.add_eos_token": eos,
    }
    for kind, key in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")]:
        if token_id(kind) is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = int(token_id(kind))
    if hf.chat_template:
        meta["tokenizer.chat_template"] = hf.chat_template
    meta["tokenizer.ggml.pre"] = _pre_tokenizer(hf, meta, tokens, types)
    return meta


def _pre_tokenizer(hf, meta: dict, tokens: list, types: list) -> str:
    backend = hf.backend_tokenizer
    specials = [t for t, ty in zip(tokens, types) if ty == CONTROL][:4]
    text = CHECK_TEXT + "".join(f"{s}x {i}" for i, s in enumerate(specials))
    want = backend.encode(text, add_special_tokens=False).ids
    pieces = (
        [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(CHECK_TEXT)]
        if backend.pre_tokenizer
        else None
    )
    for pre in PRE_TOKENIZERS:
        rebuilt = _gguf_tokenizer({**meta, "tokenizer.ggml.pre": pre})
        got = [p for p, _ in rebuilt.pre_tokenizer.pre_tokenize_str(CHECK_TEXT)]
        if (pieces is None or got == pieces) and rebuilt.encode(
            text, add_special_tokens=False
        ).ids == want:
            return pre
    raise D2OError(
        "--export-gguf: the tokenizer splits text unlike any of llama.cpp's pre-tokenizers the "
        f"exporter knows ({', '.join(PRE_TOKENIZERS)}); llama.cpp would tokenize differently"
    )


def _add_tokenizer(writer, meta: dict) -> None:
    writer.add_tokenizer_model(meta["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types([int(t) for t in meta["tokenizer.ggml.token_type"]])
    writer.add_token_merges(meta["tokenizer.ggml.merges"])  # an empty list writes no key
    for key, add in [
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("unknown_token_id", writer.add_unk_token_id),
        ("padding_token_id", writer.add_pad_token_id),
    ]:
        if f"tokenizer.ggml.{key}" in meta:
            add(meta[f"tokenizer.ggml.{key}"])
    writer.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(meta["tokenizer.ggml.add_eos_token"])
    if "tokenizer.chat_template" in meta:
        writer.add_chat_template(meta["tokenizer.chat_template"])


def export_gguf(
    net, tokenizer, config: dict, path: str | Path, gguf_type: str = "f16", name: str = ""
) -> Path:
    """Write NET (an mlx-lm llama, float or quantized) with TOKENIZER as a GGUF file at PATH.

    Q and K rows are permuted for llama.cpp unless the model already runs llama.cpp's layout
    (`rope_traditional`: mlx-lm then pairs adjacent dimensions, as llama.cpp does).
    """
    import gguf

    check_exportable(config)
    if gguf_type not in GGUF_TYPES:
        raise D2OError(f"--gguf-type {gguf_type!r}: expected one of {', '.join(GGUF_TYPES)}")
    meta = tokenizer_meta(tokenizer, config["vocab_size"])
    heads = config["num_attention_heads"]
    rope_heads = {"q_proj": heads, "k_proj": config.get("num_key_value_heads", heads)}
    permute = not config.get("rope_traditional", False)
    writer = gguf.GGUFWriter(str(path), "llama", use_temp_file=True)
    _architecture(writer, config, name, gguf_type)
    writer.add_vocab_size(len(meta["tokenizer.ggml.tokens"]))
    _add_tokenizer(writer, meta)
    for hf_name, w in float_weights(net):
        proj = hf_name.rsplit(".", 2)[-2]
        if permute and proj in rope_heads and ".self_attn." in hf_name:
            w = _permute_rope_rows(w, rope_heads[proj])
        data, raw = _tensor(hf_name, w, gguf_type)
        writer.add_tensor(_gguf_name(hf_name), data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def gguf_kl(path: Path, probe: Probe) -> float:
    """KL/token of base + adapter (PROBE) to the GGUF at PATH as readers we did not write see
    it: MLX's GGUF loader (`mx.load`) under mlx-d2o's import (`convert_gguf`), then mlx-lm."""
    from mlx_lm import load

    with tempfile.TemporaryDirectory(prefix=".gguf-check-", dir=path.parent) as tmp:
        net, _ = load(str(convert_gguf(path, Path(tmp) / "model")))
        view = FloatView()
        with view(net):
            return kl_per_token(net, probe)


def export_and_measure(
    net, tokenizer, config: dict, path: Path, gguf_type: str, name: str, probe: Optional[Probe]
) -> dict:
    """Write the GGUF (`export_gguf`) and, given PROBE, measure it (`gguf_kl`)."""
    export_gguf(net, tokenizer, config, path, gguf_type, name)
    facts = {"file": path.name, "type": gguf_type, "bytes": path.stat().st_size, "warnings": []}
    if not json.loads(_hf(tokenizer).backend_tokenizer.to_str())["model"].get("merges"):
        facts["warnings"].append(
            f"the tokenizer has no BPE merges, so {path.name} has no tokenizer.ggml.merges: "
            "llama.cpp refuses such a file (MLX and the gguf reader open it)"
        )
    if probe is not None:
        facts["kl_per_token"] = gguf_kl(path, probe)
        facts["tokens"] = probe.tokens
    return facts
