"""A model's shape for the memory plan: its config.json and its weights' stored float type."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..errors import D2OError

CONFIGS = Path(__file__).resolve().parent.parent / "model_configs"
SHIPPED = {  # name -> config.json of an mlx-community 4-bit model (public configs)
    "mistral-7b": "mistral-7b-instruct-v0.3-4bit.json",
    "llama-3.1-8b": "llama-3.1-8b-instruct-4bit.json",
    "qwen2.5-7b": "qwen2.5-7b-instruct-4bit.json",
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# safetensors' dtype codes of the float types (quantized weights are U32, their scales float)
SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a dense decoder depends on, read from its config.json."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_word_embeddings: bool
    bits: Optional[int] = None  # None: float weights
    group_size: int = 64
    dtype_bytes: int = 2  # float weights, quantization scales and activations
    dtype_source: str = "config.json"  # where dtype_bytes came from, for the plan's table

    @classmethod
    def from_config(cls, config: dict, name: str = "model") -> ModelShape:
        config = {**config, **(config.get("text_config") or {})}
        moe = [k for k in ("num_local_experts", "num_experts", "n_routed_experts") if config.get(k)]
        if moe:
            raise D2OError(f"{name}: field '{moe[0]}': mixture-of-experts models are not planned")
        try:
            h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            q = config.get("quantization") or {}
            dtype = config.get("torch_dtype") or config.get("dtype")
            source = f"config.json: {dtype}"
            if dtype not in DTYPE_BYTES:  # the Hub's usual type, and what MLX keeps it in
                source = f"assumed bfloat16: config.json names {dtype or 'no torch_dtype'}"
            return cls(
                name=name,
                model_type=str(config.get("model_type", "?")),
                hidden=h,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or h // heads),
                intermediate=int(config["intermediate_size"]),
                vocab=int(config["vocab_size"]),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                bits=int(q["bits"]) if q.get("bits") else None,
                group_size=int(q.get("group_size", 64)),
                dtype_bytes=DTYPE_BYTES.get(dtype, 2),
                dtype_source=source,
            )
        except KeyError as e:
            raise D2OError(f"{name}: field {e}: missing from config.json") from None

    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def describe(self) -> str:
        q = f"{self.bits}-bit g{self.group_size}, " if self.bits else "float, "
        q += f"{8 * self.dtype_bytes}-bit activations"
        return f"{self.name} ({self.model_type}, {self.layers} layers, hidden {self.hidden}, vocab {self.vocab}, {q})"

    def as_dequantized(self) -> ModelShape:
        """The shape `models.prepare_for_device` makes of it: float32, nothing quantized."""
        why = "float32: train dequantizes and upcasts the weights (on the CPU by default)"
        return replace(self, bits=None, dtype_bytes=4, dtype_source=why)


def weights_dtype(directory: Path) -> Optional[str]:
    """The float type most of the weights of DIRECTORY's *.safetensors files are stored in (of
    a quantized model: its scales'), from the files' JSON headers alone; None without files."""
    sizes: dict = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)) if 0 < n < 1 << 28 else {}
        except (OSError, ValueError):
            raise D2OError(f"{path}: unreadable safetensors header") from None
        for name, t in header.items():
            dtype = SAFETENSORS_DTYPES.get(t.get("dtype")) if isinstance(t, dict) else None
            if dtype and name != "__metadata__":
                begin, end = t.get("data_offsets", (0, 0))
                sizes[dtype] = sizes.get(dtype, 0) + end - begin
    return max(sizes, key=sizes.get) if sizes else None


def read_config(model: str) -> tuple[dict, str]:
    """(config.json, its path) of MODEL: a shipped name, a config file, a model directory, or a Hub
    id (only its config.json is fetched); embedded names and GGUF files through `model_dir`."""
    if model in SHIPPED:
        path = CONFIGS / SHIPPED[model]
    elif model.endswith(".json") or Path(model, "config.json").is_file():
        path = Path(model) if model.endswith(".json") else Path(model, "config.json")
    elif (
        model.count("/") == 1 and not model.startswith((".", "/", "~")) and not Path(model).is_dir()
    ):
        path = _hub_config(model)
    else:
        from ..models import model_dir

        path = model_dir(model) / "config.json"
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), str(path)
    except FileNotFoundError:
        raise D2OError(f"{path}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise D2OError(f"{path}: malformed config.json ({e})") from None


def _hub_config(repo: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, "config.json"))
    except Exception as e:  # offline, unknown repo, gated: one line, with what to do instead
        raise D2OError(
            f"could not fetch {repo}/config.json from the Hugging Face Hub ({type(e).__name__}); "
            f"offline? give a local config.json, a model directory or one of: {', '.join(SHIPPED)}"
        ) from None


def stored_shape(config: dict, directory: Path, name: str) -> ModelShape:
    """The shape of CONFIG with the float type its weights in DIRECTORY are stored in (a config
    does not always say, or says the type they were trained in)."""
    shape = ModelShape.from_config(config, name)
    stored = weights_dtype(directory)
    if stored:
        return replace(shape, dtype_bytes=DTYPE_BYTES[stored], dtype_source=f"weights: {stored}")
    if shape.dtype_source.startswith("assumed"):
        return replace(shape, dtype_source=shape.dtype_source + ", and no weights to read")
    return shape


def load_shape(model: str, bits: Optional[int] = None, dtype: Optional[str] = None) -> ModelShape:
    """The shape of MODEL; BITS overrides the config's quantization (0: float weights) and
    DTYPE its float type (float32 plans the CPU trainer's dequantized model)."""
    config, path = read_config(model)
    shape = stored_shape(config, Path(path).parent, model)
    if bits is not None:
        shape = replace(shape, bits=bits or None)
    if dtype is not None:
        if dtype not in DTYPE_BYTES:
            raise D2OError(f"--dtype {dtype}: expected one of {', '.join(DTYPE_BYTES)}")
        shape = replace(shape, dtype_bytes=DTYPE_BYTES[dtype], dtype_source=f"--dtype {dtype}")
    return shape
