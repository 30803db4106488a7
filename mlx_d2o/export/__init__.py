"""Export: fuse an adapter into its base (`fuse`), the quantization-grid maths it needs (`quant`),
the model card (`card`) and the Hugging Face Hub upload (`hub`)."""

from .fuse import FuseArgs, FuseResult, fuse, fuse_model, load_for_fuse
from .quant import changed_weights, pack_codes, requantize_like, unpack_codes

__all__ = [
    "FuseArgs",
    "FuseResult",
    "changed_weights",
    "fuse",
    "fuse_model",
    "load_for_fuse",
    "pack_codes",
    "requantize_like",
    "unpack_codes",
]
