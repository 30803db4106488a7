"""Export: fuse, quantized storage, fidelity, model card, Hub upload.

Export: fuse an adapter into its base (`fuse`), how the fused weights are stored over a
quantized base (`quant`), how close the result is to base + adapter (`fidelity`), the model card
(`card`, `describe`), the Hugging Face Hub upload (`hub`) and the GGUF export for llama.cpp
(`to_gguf`, `gguf_vocab`)."""

from .fidelity import FloatView, kl_per_token, make_probe
from .fuse import FuseArgs, FuseResult, fuse, fuse_model, load_for_fuse
from .quant import (
    ADAPTED_LAYERS,
    DEFAULT_ADAPTED,
    changed_weights,
    pack_codes,
    requantize_like,
    store_adapted,
    unpack_codes,
)
from .to_gguf import GGUF_TYPES, export_gguf

__all__ = [
    "ADAPTED_LAYERS",
    "DEFAULT_ADAPTED",
    "FuseArgs",
    "FuseResult",
    "FloatView",
    "GGUF_TYPES",
    "export_gguf",
    "changed_weights",
    "fuse",
    "fuse_model",
    "kl_per_token",
    "load_for_fuse",
    "make_probe",
    "pack_codes",
    "requantize_like",
    "store_adapted",
    "unpack_codes",
]
