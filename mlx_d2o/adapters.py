"""The adapter folder, and the one module that knows its layout.

    adapters/
      adapters.safetensors   LoRA/DoRA factors (or the tuned weights of a full fine-tune), in
                             mlx-lm's format: `mlx_lm.load(model, adapter_path=...)` reads it
      adapter_config.json    mlx-lm's config, plus ours under "d2o" (loss, base fingerprint, ...)
      metrics.jsonl          one JSON object per report / validation step
      checkpoints/           NNNNNNN/ folders written by `train` for `--resume`

Everything else (train, eval, fuse, plots) reads and writes the folder through these functions:
one fingerprint rule, one metrics reader, one way to switch an adapter off and on.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import mlx.core as mx

from .errors import D2OError
from .full_weights import put_full
from .io import atomic_path, check_safetensors, write_text_atomic

ADAPTERS_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"

# Keys under which adapter configs have named the base they were trained on, newest first.
_FINGERPRINT_KEYS = ("base_model_fingerprint", "base_fingerprint")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def read_config(path: str | Path) -> dict:
    """adapter_config.json of the adapter folder PATH; a one-line D2OError when missing or torn."""
    p = Path(path) / CONFIG_FILE
    if not p.is_file():
        raise D2OError(f"{Path(path)}: not an adapter directory ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise D2OError(f"{p}: cannot read the adapter config ({e})") from None
    if not isinstance(config, dict):
        raise D2OError(f"{p}: the adapter config must be a JSON object")
    return config


def write_config(path: str | Path, config: dict) -> None:
    write_text_atomic(Path(path) / CONFIG_FILE, json.dumps(config, indent=2))


def save_weights(path: str | Path, arrays: dict, metadata: Optional[dict] = None) -> None:
    """adapters.safetensors in the folder PATH (or the file PATH itself), written atomically."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / ADAPTERS_FILE
    # mx.save_safetensors appends ".safetensors" to names without it, so the temp name keeps it.
    with atomic_path(p, suffix=".safetensors") as tmp:
        mx.save_safetensors(tmp, arrays, metadata=metadata or {})


def _weights_file(path: str | Path) -> Path:
    """adapters.safetensors of the folder PATH (or the file PATH itself); D2OError if missing."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / ADAPTERS_FILE
    if not p.is_file():
        raise D2OError(f"{p.parent}: not an adapter directory ({p.name} is missing)")
    return p


def load_weights(path: str | Path) -> dict:
    """The arrays of adapters.safetensors in the folder PATH (or the file PATH itself).

    A truncated or corrupt file is the user's problem to fix, not a bug: one line, naming it.
    """
    p = _weights_file(path)
    try:
        return mx.load(str(p))
    except (RuntimeError, ValueError, OSError) as e:
        raise _torn(p, e) from None


def check_files(path: str | Path) -> dict:
    """The config of the adapter folder PATH, its weights file checked from its header alone
    (not loaded: the `Adapter` that loads them comes later): a command refuses a missing or
    torn adapter in one line before any model loads."""
    config = read_config(path)
    p = _weights_file(path)
    try:
        check_safetensors(p)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise _torn(p, e) from None
    return config


def _torn(p: Path, e: BaseException) -> D2OError:
    return D2OError(f"{p}: corrupt or truncated safetensors file ({_first_line(e)})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# Which base an adapter belongs to
# ---------------------------------------------------------------------------------------------


def made_for(config: dict) -> Optional[str]:
    """The fingerprint of the base model the adapter was trained on, when its config says."""
    d2o = config.get("d2o") if isinstance(config.get("d2o"), dict) else {}
    for key in _FINGERPRINT_KEYS:
        if d2o.get(key):
            return str(d2o[key])
    return None


def check_base(path: str | Path, config: dict, fingerprint: Optional[str]) -> None:
    """Refuse an adapter whose config names another base than FINGERPRINT."""
    trained_on = made_for(config)
    if fingerprint and trained_on and trained_on != fingerprint:
        raise D2OError(
            f"{path}: this adapter was trained on another base model (fingerprint {trained_on} in "
            f"{CONFIG_FILE}, the model given has {fingerprint})"
        )


def _bits_of(net, module_path: str) -> int:
    m = net
    for part in module_path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return getattr(m, "bits", 32)


def check_fits(path: str | Path, net, weights: Optional[dict] = None) -> None:
    """Refuse an adapter whose weights do not fit NET's shapes: made for another base."""
    from mlx.utils import tree_flatten

    p = Path(path)
    read_config(p)
    weights = load_weights(p) if weights is None else weights
    params = dict(tree_flatten(net.parameters()))
    for k, v in weights.items():
        # LoRA factors are named <module>.lora_a/b; the module's weight tells the base's shape.
        module = k.rsplit(".", 1)[0]
        w = params.get(f"{module}.weight")
        if w is None:
            continue
        if k.endswith(".lora_a"):
            in_dims = (
                w.shape[-1] * (32 // _bits_of(net, module)) if w.dtype == mx.uint32 else w.shape[-1]
            )
            got, want, what = v.shape[0], in_dims, "input size"
        elif k.endswith(".lora_b"):
            got, want, what = v.shape[-1], w.shape[0], "output size"
        else:
            continue
        if got != want:
            raise D2OError(
                f"{p}: adapter weight {k} has {what} {got} but the model's {module} has {want}: "
                "this adapter was made for another base model"
            )


# ---------------------------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------------------------


# Metric names older metrics.jsonl files used, and TRL's that replaced them.
RENAMED_METRICS = {"rewards/margin": "rewards/margins", "accuracy": "rewards/accuracies"}


def _metrics_rows(path: Path):
    """JSON objects of metrics.jsonl, older names read as the current ones (`RENAMED_METRICS`);
    a torn last line (a run killed mid-write) is skipped."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield {RENAMED_METRICS.get(k, k): v for k, v in row.items()}


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Training and validation rows of metrics.jsonl (PATH: the file or the adapter folder).

    A row is validation when it has `"split": "val"` (its `loss` is the validation loss) or a
    `val_loss` field; rows without a `step` are skipped.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    train, val = [], []
    for row in _metrics_rows(p):
        if not isinstance(row.get("step"), (int, float)):
            continue
        if row.get("split") == "val":
            val.append({**row, "val_loss": row.get("val_loss", row.get("loss"))})
        elif "val_loss" in row and "loss" not in row:
            val.append(row)
        else:
            train.append(row)
            if "val_loss" in row:
                val.append(row)
    return train, val


def last_metrics(path: str | Path) -> dict:
    """{"train": (loss, step), "val": (loss, step)}: the last losses in metrics.jsonl.

    Accepts mlx-lm's and TRL's spellings too, for adapters made by other tools.
    """
    p = Path(path)
    p = p / METRICS_FILE if p.is_dir() or not p.suffix else p
    out = {}
    for row in _metrics_rows(p):
        step = row.get("step", row.get("iteration", row.get("iter")))
        split = row.get("split")
        if split in ("train", "val") and isinstance(row.get("loss"), (int, float)):
            out[split] = (row["loss"], step)
            continue
        for key, name in (
            ("train/loss", "train"),
            ("train_loss", "train"),
            ("val/loss", "val"),
            ("val_loss", "val"),
            ("loss", "train"),
        ):
            if isinstance(row.get(key), (int, float)):
                out[name] = (row[key], step)
                break
    return out


# ---------------------------------------------------------------------------------------------
# Adapters off and on, on one loaded base
# ---------------------------------------------------------------------------------------------


def adapter_layers(model) -> list:
    """(name, wrapper, base layer) for each of mlx-lm's LoRA/DoRA wrappers in MODEL.

    The wrappers keep the layer they wrap as `.linear` / `.embedding`, so putting those back
    gives the base model exactly, without a second copy of its weights.
    """
    return [
        (name, m, m.linear if hasattr(m, "linear") else m.embedding)
        for name, m in model.named_modules()
        if "lora_a" in m and (hasattr(m, "linear") or hasattr(m, "embedding"))
    ]


@contextlib.contextmanager
def adapters_disabled(model):
    """Run MODEL as its base: swap each LoRA/DoRA wrapper for the layer it wraps, then back.

    The reference π_ref is the base without adapter. Swapping layers in the one loaded model
    gives it exactly (no `scale = 0` rounding, and DoRA's rescaling is gone too) without loading
    the weights twice, which a 7B model on a 16 GB Mac cannot afford.
    """
    from mlx.utils import tree_unflatten

    layers = adapter_layers(model)
    if not layers:
        yield model
        return
    model.update_modules(tree_unflatten([(n, base) for n, _, base in layers]))
    try:
        yield model
    finally:
        model.update_modules(tree_unflatten([(n, wrapper) for n, wrapper, _ in layers]))


@contextlib.contextmanager
def as_reference(model, base_params: Optional[dict] = None):
    """The reference π_ref of the policy MODEL, in place, for the duration of the block: the
    one way sample, train (set-up and online refresh) and eval get it.

    LoRA/DoRA: each wrapper swapped for the layer it wraps (`adapters_disabled`). A full
    fine-tune has no base layer to swap back: BASE_PARAMS (flat names -> the starting values of
    the tuned parameters) are put in for the block and the tuned ones back after it. Either way
    the reference is the policy's own loaded weights, so it has the policy's precision (the
    same --dequantize / keep-quantized choice), and no second copy of the model is loaded.
    """
    from mlx.utils import tree_flatten, tree_unflatten

    current = None
    if base_params:
        current = [(k, v) for k, v in tree_flatten(model.parameters()) if k in base_params]
        model.update(tree_unflatten(list(base_params.items())))
    try:
        with adapters_disabled(model):
            yield model
    finally:
        if current is not None:
            model.update(tree_unflatten(current))


class Adapter:
    """An adapter put on a loaded base model, that can be switched off and on without reloading.

    LoRA/DoRA: mlx-lm's `load_adapters` wraps the base layers; switching swaps the wrapped and
    the wrapping modules (exact: the base layers are the same objects). Full fine-tunes: the
    tuned and the base values of the tuned parameters are swapped. `remove()` puts the base back
    for good, so the next adapter starts from the plain base.

    An adapter whose config names the base it was trained on must match BASE_FINGERPRINT;
    the weights' shapes are checked either way.
    """

    def __init__(self, model, path: str | Path, base_fingerprint: Optional[str] = None):
        self.model, self.path = model, Path(path)
        self.config = read_config(self.path)
        weights = load_weights(self.path)
        check_fits(self.path, model, weights)
        check_base(self.path, self.config, base_fingerprint)
        self.full = self.config.get("fine_tune_type", "lora") == "full"
        if self.full:
            self._put_full(weights)
        else:
            self._put_lora()
        model.eval()

    def _put_full(self, tuned: dict) -> None:
        self._on, self._off, self._floats, self._quantized = put_full(self.model, self.path, tuned)

    def _put_lora(self) -> None:
        from mlx_lm.utils import load_adapters

        try:
            load_adapters(self.model, str(self.path))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._restore_base()
            raise D2OError(
                f"{self.path}: cannot apply this adapter to {type(self.model).__name__} ({e})"
            ) from None
        layers = adapter_layers(self.model)
        self._on = [(k, wrapper) for k, wrapper, _ in layers]
        self._off = [(k, base) for k, _, base in layers]

    def _restore_base(self):
        from mlx.utils import tree_unflatten

        base = [(k, b) for k, _, b in adapter_layers(self.model)]
        if base:
            self.model.update_modules(tree_unflatten(base))

    def _set(self, on: bool):
        from mlx.utils import tree_unflatten

        items = self._on if on else self._off
        if not self.full:
            self.model.update_modules(tree_unflatten(items))
            return
        if on and self._floats:  # a quantized base: the tuned modules are float ones
            self.model.update_modules(tree_unflatten(self._floats))
        self.model.update(tree_unflatten(items))
        if not on and self._quantized:
            self.model.update_modules(tree_unflatten(self._quantized))

    def disabled(self):
        """The base model (π_ref, `as_reference`) inside the block, the adapted one after it; a
        full fine-tune of a base kept quantized puts the quantized modules back (exact)."""
        if self.full and self._quantized:
            return self._switched_off()
        return as_reference(self.model, dict(self._off) if self.full else None)

    @contextlib.contextmanager
    def _switched_off(self):
        self._set(False)
        try:
            yield self.model
        finally:
            self._set(True)

    def remove(self):
        self._set(False)
