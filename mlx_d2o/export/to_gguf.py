"""GGUF export: the fused model as one file that llama.cpp (and Ollama, LM Studio) loads.

Written with the `gguf` package, llama.cpp's own writer, in the layout of llama.cpp's
`convert_hf_to_gguf.py` for llama: tensors under GGUF names, Q/K rows permuted for llama.cpp's
rotary pairing (`_permute_rope_rows`), 1-D tensors in float32, the rest in `--gguf-type`
(f16, or Q8_0: blocks of 32 weights with one f16 scale), and the tokenizer with its chat
template in the metadata (`gguf_vocab`). It is the inverse of
`models.gguf.convert_gguf`: the import of an exported file gives the fused model back (exactly
at f16 up to rounding), which is how `fuse` measures the file's fidelity.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import D2OError
from ..io import writing
from ..models.gguf import _GGUF_BLOCK_NAMES, _GGUF_TOP_NAMES, convert_gguf
from .fidelity import FloatView, Probe, kl_per_token
from .gguf_vocab import add_tokenizer, lacks_merges, tokenizer_meta

GGUF_TYPES = ("f16", "q8_0")
# mlx-lm model types whose weights are llama's (mistral is llama with its own name).
EXPORTABLE = ("llama", "mistral")


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
    computes with), so that only one float copy is alive at a time. Every parameter is
    yielded: one without a GGUF name is refused by `_gguf_name`, not dropped."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten

    quantized = {
        path: m
        for path, m in net.named_modules()
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
    }
    for name, v in tree_flatten(net.parameters()):
        path, _, leaf = name.rpartition(".")
        m = quantized.get(path)
        if m is not None and leaf in ("scales", "biases"):
            continue
        if m is not None and leaf == "weight":
            v = mx.dequantize(
                m.weight, m.scales, getattr(m, "biases", None),
                group_size=m.group_size, bits=m.bits, mode=m.mode,
            )  # fmt: skip
        yield name, np.array(v.astype(mx.float32))


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
    add_tokenizer(writer, meta)
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
    if lacks_merges(tokenizer):
        facts["warnings"].append(
            f"the tokenizer has no BPE merges, so {path.name} has no tokenizer.ggml.merges: "
            "llama.cpp refuses such a file (MLX and the gguf reader open it)"
        )
    if probe is not None:
        facts["kl_per_token"] = gguf_kl(path, probe)
        facts["tokens"] = probe.tokens
    return facts
