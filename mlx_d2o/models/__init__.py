"""Models: load (embedded name, Hub id, mlx-lm dir, GGUF), GGUF import, fingerprints, and the
device set-up (BLAS, float32 on the CPU).

Every command loads through `load()`, so the same rules hold everywhere:
- a `.gguf` file is converted once into an mlx-lm directory (`convert_gguf`), cached, and
  loaded by `mlx_lm.load` like any other model;
- on the CPU device, quantized and half-precision weights are turned into float32, because MLX's
  CPU kernels for those are 17x (Q4_1, `benchmarks/bench_blas.py`) slower than a float32 BLAS
  matmul;
- adapters go on after that, so LoRA trains on the fast float32 base.
"""

from ..adapters import adapter_layers
from ..adapters import check_fits as check_adapter
from .fingerprint import check_made_for, file_fingerprint, fingerprint_of, model_fingerprint
from .gguf import (
    _bytes_to_unicode,
    _gguf_tokenizer,
    _hf_name,
    _unpermute_rope_rows,
    convert_gguf,
    gguf_source,
    read_gguf,
)
from .load import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    LoadedModel,
    _hub_snapshot,
    cache_root,
    embedded_model_path,
    load,
    load_tokenizer,
    model_dir,
    on_cpu,
    precision,
    prepare_for_device,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "LoadedModel",
    "_bytes_to_unicode",
    "_gguf_tokenizer",
    "_hf_name",
    "_hub_snapshot",
    "_unpermute_rope_rows",
    "adapter_layers",
    "cache_root",
    "check_adapter",
    "check_made_for",
    "convert_gguf",
    "embedded_model_path",
    "file_fingerprint",
    "gguf_source",
    "fingerprint_of",
    "load",
    "load_tokenizer",
    "model_dir",
    "model_fingerprint",
    "on_cpu",
    "precision",
    "prepare_for_device",
    "read_gguf",
    "resolve_model",
]
