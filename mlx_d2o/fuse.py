"""Fuse a trained adapter into its base model, write a model card, upload to the Hugging Face Hub.

The fused directory is an ordinary mlx-lm model directory (safetensors shards, `config.json`,
tokenizer files, chat template), so `mlx_lm.load`, LM Studio and the Hub read it without
mlx-d2o. The fuse itself is mlx-lm's: every LoRA / DoRA layer's own `fuse()`, then
`mlx_lm.utils.save`; except that over a quantized base kept quantized, the fused weight is
rounded back onto the base's own grid rather than quantized afresh (see `requantize_like`).
What this module adds around it: checks before any work, a write that is all-or-nothing, a D2O
model card, and an upload whose failure leaves OUT intact.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from .errors import D2OError
from .models import DEFAULT_MODEL, file_fingerprint

# Hub repos of the embedded models' originals, for the card's `base_model` (the GGUF metadata
# only holds a free-text name, which the Hub would reject as a base model).
EMBEDDED_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

_FTYPE_NAMES = {"lora": "LoRA adapter", "dora": "DoRA adapter", "full": "full fine-tune"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class FuseArgs:
    """Settings of `mlx-d2o fuse`; field names are the flags' (as in `mlx_lm.fuse`).

    Args:
        model: Base model: embedded name, `.gguf`, mlx-lm directory or Hub repo id. None: the
            `model` the adapter was trained on (its adapter_config.json), else the default model.
        adapter_path: Adapter directory (`adapters.safetensors` + `adapter_config.json`).
        save_path: Directory to write the fused model to (OUT).
        dequantize: Write float weights even if the base is quantized.
        quantize: (Re)quantize the fused weights with `q_bits` / `q_group_size`.
        q_bits: Bits per weight for `quantize`.
        q_group_size: Group size for `quantize`.
        upload_repo: Hub repo `user/name` to upload OUT to.
        private: Create the Hub repo as private.
        dry_run: Print what would be written and uploaded; write and upload nothing.
        overwrite: Replace OUT if it exists and is not empty.
        report: Directory of an `mlx-d2o eval` report (default: look beside the adapter).
    """

    model: Optional[str] = None
    adapter_path: str = "adapters"
    save_path: str = "fused_model"
    dequantize: bool = False
    quantize: bool = False
    q_bits: int = 4
    q_group_size: int = 64
    upload_repo: Optional[str] = None
    private: bool = False
    dry_run: bool = False
    overwrite: bool = False
    report: Optional[str] = None


@dataclass
class FuseResult:
    save_path: Path
    files: list  # [(name, bytes)], bytes estimated for a dry run
    quantization: Optional[dict]
    url: Optional[str] = None  # the Hub repo's URL when uploaded (or, in a dry run, where it would go)
    uploaded: bool = False
    warnings: list = field(default_factory=list)
    changed: Optional[float] = None  # kept quantized: share of the adapted weights whose stored value moved


# ---------------------------------------------------------------------------------------------
# Checks that run before any work
# ---------------------------------------------------------------------------------------------

def check_quantization(bits: int, group_size: int) -> None:
    """Refuse quantization settings MLX cannot do, asking MLX itself (supported sets vary by version)."""
    import mlx.core as mx

    try:
        mx.eval(mx.quantize(mx.zeros((1, 4 * int(group_size))), group_size=int(group_size), bits=int(bits)))
    except Exception as e:
        raise D2OError(
            f"unsupported quantization --q-bits {bits} --q-group-size {group_size} "
            f"(MLX's affine quantization takes e.g. bits 2, 3, 4, 5, 6, 8 and group sizes 32, 64, 128): {e}"
        ) from None


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise D2OError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise D2OError(f"{out} exists and is not empty (use --overwrite to replace it)")


def check_args(args: FuseArgs) -> None:
    if args.quantize and args.dequantize:
        raise D2OError("--quantize and --dequantize contradict each other: pick one")
    if args.quantize:
        check_quantization(args.q_bits, args.q_group_size)
    if args.upload_repo is not None and not _HUB_ID.match(args.upload_repo):
        raise D2OError(f"--upload-repo {args.upload_repo!r}: expected a Hub repo id like 'user/name'")
    adapter = Path(args.adapter_path)
    for name in ("adapter_config.json", "adapters.safetensors"):
        if not (adapter / name).is_file():
            raise D2OError(f"{adapter}: not an adapter directory ({name} is missing)")
    check_out_dir(Path(args.save_path), args.overwrite)


def read_adapter_config(adapter_path: str | Path) -> dict:
    path = Path(adapter_path) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise D2OError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise D2OError(f"{path}: expected a JSON object")
    return cfg


# ---------------------------------------------------------------------------------------------
# Fusing
# ---------------------------------------------------------------------------------------------

def load_for_fuse(model: str, adapter_path: str, full: bool = False):
    """Base as stored (quantized stays quantized: `dequantize=False`), with the adapter on it.

    Returns `(net, tokenizer, info, requantize)`: `requantize` maps the modules a full fine-tune
    replaced in a quantized base to the base's quantized modules (empty for LoRA / DoRA).
    """
    from .models import load

    try:
        if not full:
            return (*load(model, adapter_path=str(adapter_path), dequantize=False, return_info=True), {})
        net, tokenizer, info = load(model, dequantize=False, return_info=True)
        return net, tokenizer, info, _load_full(net, Path(adapter_path))
    except (ValueError, KeyError) as e:
        # mlx-lm's load_adapters raises these for tensors or LoRA settings the base does not have.
        raise D2OError(f"{adapter_path}: the adapter does not fit the base model {model}: {e}") from None


def _load_full(net, adapter_path: Path) -> dict:
    """Put full fine-tuned weights into NET in the base's own format.

    A full fine-tune trains float weights (on the CPU, of the dequantized base), so the modules
    it replaced are dequantized first, loaded by mlx-lm's `load_adapters` (which checks names and
    shapes), cast back to the base's float type, and reported for requantizing on their own
    grid. Modules it did not touch keep their original quantized weights bit for bit.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load_adapters

    names = set(mx.load(str(adapter_path / "adapters.safetensors")))
    touched = {n.rsplit(".", 1)[0] for n in names}
    modules = dict(net.named_modules())
    requantize, swaps = {}, []
    for path in sorted(touched):
        m = modules.get(path)
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode)
            if isinstance(m, nn.QuantizedLinear):
                f = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
                if "bias" in m:
                    f.bias = m.bias
            else:
                f = nn.Embedding(*w.shape)
            f.weight = w
            swaps.append((path, f))
            requantize[path] = m
    if swaps:
        net.update_modules(tree_unflatten(swaps))
    params = dict(tree_flatten(net.parameters()))
    dtypes = {k: params[k].dtype for k in names if k in params}
    load_adapters(net, str(adapter_path))
    params = dict(tree_flatten(net.parameters()))
    net.update(tree_unflatten([(k, params[k].astype(d)) for k, d in dtypes.items()]))
    return requantize


def pack_codes(codes, bits: int):
    """Integer codes [..., n] (n a multiple of 32) -> MLX's packed uint32 layout [..., n * bits / 32].

    MLX stores each row as a little-endian bit stream of `bits`-wide codes, 32 bits a word; so a
    group of 32 codes fills exactly `bits` words, for every width MLX has (2, 3, 4, 5, 6, 8).
    """
    import mlx.core as mx

    *lead, n = codes.shape
    if 32 % bits == 0:  # 2, 4, 8 bits: whole codes per word, one shift-and-sum (the bits are disjoint)
        g = codes.astype(mx.uint32).reshape(*lead, n * bits // 32, 32 // bits)
        return mx.left_shift(g, mx.arange(0, 32, bits, dtype=mx.uint32)).sum(-1).astype(mx.uint32)
    g = codes.astype(mx.uint32).reshape(*lead, n // 32, 32)
    words = []
    for j in range(bits):
        word = mx.zeros(g.shape[:-1], dtype=mx.uint32)
        for i in range(32):
            shift = i * bits - 32 * j  # where code i starts, relative to word j
            if shift >= 32 or shift + bits <= 0:
                continue
            c = g[..., i]
            word = mx.bitwise_or(word, mx.left_shift(c, shift) if shift >= 0 else mx.right_shift(c, -shift))
        words.append(word)
    return mx.stack(words, axis=-1).reshape(*lead, n * bits // 32)


def unpack_codes(packed, bits: int, group_size: int):
    """MLX's packed uint32 [rows, cols * bits / 32] -> codes [rows, cols / group_size, group_size],
    for widths that fill words exactly (2, 4, 8 bits)."""
    import mlx.core as mx

    shifts = mx.arange(0, 32, bits, dtype=mx.uint32)
    codes = mx.bitwise_and(mx.right_shift(packed[..., None], shifts), mx.array(2**bits - 1, dtype=mx.uint32))
    return codes.reshape(packed.shape[0], -1, group_size)


def requantize_like(module, like):
    """Float MODULE (Linear or Embedding) quantized with LIKE's settings, on LIKE's grid where that serves.

    Why not mlx-lm's `QuantizedLinear.from_linear` (a fresh `mx.quantize`): it draws a new grid for
    every group, so even an unchanged weight is rounded a second time. Measured: re-quantizing
    SmolLM2's dequantized Q4_1 weights changes 96% of them (mean error 0.22 of a step), and 12%
    of an MLX-quantized matrix. Here each group is rounded onto the base's own scale and bias,
    so a weight the adapter left alone comes back bit for bit and a changed one is within half
    a step; a group takes the fresh quantization only where that is clearly closer to the float
    weight (the update pushed values outside the group's range).
    """
    import mlx.core as mx

    gs, bits = like.group_size, like.bits
    fresh = module.to_quantized(group_size=gs, bits=bits, mode=getattr(like, "mode", "affine"))
    if getattr(like, "mode", "affine") != "affine" or like.weight.shape != fresh.weight.shape:
        return fresh
    w = module.weight.astype(mx.float32)
    rows, cols = w.shape
    wg = w.reshape(rows, cols // gs, gs)
    s, b = like.scales.astype(mx.float32)[..., None], like.biases.astype(mx.float32)[..., None]
    safe = mx.where(s == 0, 1.0, s)
    codes = mx.where(s == 0, 0.0, mx.clip(mx.round((wg - b) / safe), 0, 2**bits - 1))
    err_grid = mx.square(codes * s + b - wg).sum(-1)
    fresh.scales, fresh.biases = fresh.scales.astype(like.scales.dtype), fresh.biases.astype(like.biases.dtype)
    if 32 % bits == 0:  # float32 from the codes: exact, and several times faster than the CPU's dequantize
        dn = unpack_codes(fresh.weight, bits, gs) * fresh.scales.astype(mx.float32)[..., None] \
            + fresh.biases.astype(mx.float32)[..., None]
    else:
        dn = mx.dequantize(fresh.weight, fresh.scales, fresh.biases, group_size=gs, bits=bits).astype(mx.float32)
    err_fresh = mx.square(dn.reshape(rows, cols // gs, gs) - wg).sum(-1)
    # Prefer the base's grid unless the fresh one is closer by more than a thousandth of a step
    # (RMS): a near-tie is float noise, and switching grids on it would move values for nothing.
    keep = err_grid <= err_fresh + gs * mx.square(1e-3 * s[..., 0])
    packed = pack_codes(codes.reshape(rows, cols), bits).reshape(rows, cols // gs, -1)
    fresh.weight = mx.where(keep[..., None], packed, fresh.weight.reshape(packed.shape)).reshape(fresh.weight.shape)
    fresh.scales = mx.where(keep, like.scales, fresh.scales)
    fresh.biases = mx.where(keep, like.biases, fresh.biases)
    return fresh


def changed_weights(fused, base):
    """How many weights of quantized FUSED hold another value than in quantized BASE (lazy scalar)."""
    import mlx.core as mx

    bits, gs = base.bits, base.group_size
    same_grid = (fused.scales == base.scales) & (fused.biases == base.biases)
    if 32 % bits or fused.weight.shape != base.weight.shape:
        def deq(m):
            return mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode)

        return mx.sum(deq(fused) != deq(base))
    # Codes straight from the packed words (cheaper than two dequantizations); a group moved to
    # a fresh grid counts whole.
    per_group = (unpack_codes(fused.weight, bits, gs) != unpack_codes(base.weight, bits, gs)).sum(-1)
    return mx.sum(mx.where(same_grid, per_group, gs))


def _fuse_one(module, dequantize: bool):
    """mlx-lm's `fuse()`; over a quantized linear kept quantized, requantized on the base's grid."""
    import mlx.nn as nn

    base = getattr(module, "linear", None)
    if dequantize or not isinstance(base, nn.QuantizedLinear):
        return module.fuse(dequantize=dequantize)
    return requantize_like(module.fuse(dequantize=True), base)


# Fused layers evaluated together. Measured on SmolLM2 (CPU): the same time for 1, 16, 64 or all
# (lazy until the save, as mlx-lm), but peak MLX memory 190, 216, 250 and 355 MB.
EVAL_EVERY = 8


def fuse_model(net, dequantize: bool = False, evaluate: bool = True, progress: bool = True) -> dict:
    """Replace every adapter layer by its fused linear, in place.

    Each layer's `fuse()` is mlx-lm's. Unlike mlx-lm's fuse script, which leaves everything lazy
    until the save, fused layers are swapped in and evaluated a few at a time: the adapter
    layers (and their base weights) are freed as we go, and the bar shows real progress.
    Returns `{"fused": layers, "changed": n, "weights": n}`, the last two counting, over quantized layers kept quantized, the weights whose stored value
    the update moved (`changed_weights`): an update finer than the grid is lost in the rounding.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from tqdm import tqdm

    names = [n for n, m in net.named_modules() if hasattr(m, "fuse")]
    modules = dict(net.named_modules())
    stats = {"fused": len(names), "changed": 0, "weights": 0}
    changed, pending = mx.array(0), []
    for i, name in enumerate(tqdm(names, desc="fusing", unit="layer", file=sys.stderr,
                                  disable=not progress or not names)):
        module = modules.pop(name)
        fused = _fuse_one(module, dequantize)
        base = getattr(module, "linear", None)
        if evaluate and isinstance(fused, nn.QuantizedLinear) and isinstance(base, nn.QuantizedLinear):
            changed = changed + changed_weights(fused, base)
            stats["weights"] += base.scales.size * base.group_size
        net.update_modules(tree_unflatten([(name, fused)]))
        pending.append(fused.parameters())
        if evaluate and (len(pending) == EVAL_EVERY or i == len(names) - 1):
            mx.eval(pending, changed)
            pending = []
    stats["changed"] = int(changed.item()) if evaluate else 0
    return stats


def set_quantization(net, config: dict, args: FuseArgs, requantize: dict):
    """The fused model's weights as asked: as the base (default), float (--dequantize) or
    (re)quantized (--quantize). Returns the model and its config."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, quantize_model

    config = copy.deepcopy(config)
    if not (args.dequantize or args.quantize):
        if requantize:  # a full fine-tune's modules, back on their base's own grid
            modules = dict(net.named_modules())
            net.update_modules(tree_unflatten([(p, requantize_like(modules[p], like)) for p, like in requantize.items()]))
        return net, config
    dequantize_model(net)
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    if args.quantize:
        net, config = quantize_model(net, config, group_size=args.q_group_size, bits=args.q_bits)
    return net, config


def quantization_of(config: dict) -> Optional[dict]:
    q = config.get("quantization")
    if not q:
        return None
    out = {k: v for k, v in q.items() if k in ("bits", "group_size", "mode")}
    out["per_layer"] = any(isinstance(v, dict) for v in q.values())
    return out


def weight_files(net) -> list:
    """[(file name, bytes)] of the shards `mlx_lm.utils.save_model` would write (sizes from shapes)."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import make_shards

    shards = make_shards(dict(tree_flatten(net.parameters())))
    fmt = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    return [(fmt.format(i + 1, len(shards)), sum(v.nbytes for v in s.values())) for i, s in enumerate(shards)]


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------

def _front_matter(path: Path) -> dict:
    import yaml

    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_model_id(model: str, path: Path) -> Optional[str]:
    """The Hub repo the base came from, when we can tell: embedded name, Hub id, Hub cache path, card."""
    if model in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[model]
    if _HUB_ID.match(model) and not Path(model).exists():
        return model
    m = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", str(path))
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    bm = _front_matter(path / "README.md").get("base_model")
    if isinstance(bm, list) and len(bm) == 1:
        bm = bm[0]
    return bm if isinstance(bm, str) and _HUB_ID.match(bm) else None


def base_label(model: str, path: Path) -> str:
    """How the card names the base: its Hub id, and the GGUF file when it was imported from one."""
    hub = base_model_id(model, path)
    if hub:
        label = f"`{hub}`"
    elif Path(model).exists():
        label = f"the local model `{Path(model).name}`"  # its name only, not the user's directory layout
    else:
        label = f"`{model}`"
    src = path / "gguf_source.json"
    if src.is_file():
        try:
            gguf = json.loads(src.read_text()).get("gguf")
        except (json.JSONDecodeError, AttributeError):
            gguf = None
        if gguf:
            label += f" (imported from the GGUF file `{gguf}`)"
    return label


def base_license(path: Path) -> Optional[str]:
    src = path / "gguf_source.json"
    if src.is_file():
        try:
            lic = json.loads(src.read_text()).get("license")
        except (json.JSONDecodeError, AttributeError):
            lic = None
        if isinstance(lic, str) and lic:
            return lic
    lic = _front_matter(path / "README.md").get("license")
    return lic if isinstance(lic, str) else None


def last_metrics(adapter_path: Path) -> dict:
    """The last training and validation losses in `metrics.jsonl` beside the adapter, with their steps."""
    path = adapter_path / "metrics.jsonl"
    out = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a run killed mid-write leaves a partial last line
            if not isinstance(row, dict):
                continue
            step = row.get("step", row.get("iteration", row.get("iter")))
            split = row.get("split")
            if split in ("train", "val") and isinstance(row.get("loss"), (int, float)):
                out[split] = (row["loss"], step)
                continue
            for key, name in (("train/loss", "train"), ("train_loss", "train"), ("val/loss", "val"),
                              ("val_loss", "val"), ("loss", "train")):
                if isinstance(row.get(key), (int, float)):
                    out[name] = (row[key], step)
                    break
    return out


def _markdown_tables(text: str) -> list:
    tables, cur = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            cur.append(line.strip())
        elif cur:
            tables.append("\n".join(cur))
            cur = []
    if cur:
        tables.append("\n".join(cur))
    return [t for t in tables if t.count("\n") >= 2]  # header, rule, at least one row


def _flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            yield key, v


def find_report(adapter_path: Path, report: Optional[str]) -> Optional[Path]:
    """`--report DIR`, else a report beside the adapter (in it, or in its `report/` folder)."""
    if report:
        d = Path(report)
        if not d.is_dir():
            raise D2OError(f"--report {d}: no such directory")
        if not ((d / "report.md").is_file() or (d / "report.json").is_file()):
            raise D2OError(f"--report {d}: no report.json or report.md in it (made by `mlx-d2o eval`)")
        return d
    for d in (adapter_path, adapter_path / "report"):
        if (d / "report.md").is_file() or (d / "report.json").is_file():
            return d
    return None


def _eval_json_table(data: dict) -> Optional[str]:
    """`mlx-d2o eval`'s report.json: its rows through eval's own table code, and what they were measured on."""
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        return None
    try:
        from .evaluate import markdown_table

        table = markdown_table(data["rows"])
    except Exception:  # a report from another version: fall back to report.md / the raw numbers
        return None
    s = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    ns = ", ".join(f"{k} n={s[k]['n']}" for k in ("negatives", "prompts", "benign")
                   if isinstance(s.get(k), dict) and "n" in s[k])
    head = (f"From `mlx-d2o eval`: base `{s.get('model', '?')}` in the first row, judge `{s.get('judge', '?')}`"
            + (f", {ns}" if ns else "") + ".")
    return head + "\n\n" + table


def _bullets_after_table(text: str) -> list:
    """The bullet list that follows report.md's table: eval's definitions of the columns."""
    lines, seen_table, out = text.splitlines(), False, []
    for line in lines:
        if line.lstrip().startswith("|"):
            seen_table, out = True, []
        elif seen_table and line.startswith("- "):
            if not line.startswith("- plots"):  # about files beside the report, not in the card
                out.append(line)
        elif seen_table and out and not line.strip():
            break
    return out


def eval_section(report_dir: Optional[Path]) -> Optional[str]:
    """The eval table as Markdown: from report.json's rows, else report.md's tables, else report.json's numbers."""
    if report_dir is None:
        return None
    md, js = report_dir / "report.md", report_dir / "report.json"
    data = None
    if js.is_file():
        try:
            data = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = None
    if isinstance(data, dict):
        table = _eval_json_table(data)
        if table:
            if md.is_file():
                notes = _bullets_after_table(md.read_text(encoding="utf-8", errors="replace"))
                table += "\n\n" + "\n".join(notes) if notes else ""
            return table
    if md.is_file():
        tables = _markdown_tables(md.read_text(encoding="utf-8", errors="replace"))
        if tables:
            return "\n\n".join(tables)
    if isinstance(data, dict):
        rows = [(k, v) for k, v in _flatten(data) if not isinstance(v, str) or len(v) < 80][:60]
        if rows:
            return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)
    return None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


# Labels for the `d2o` block the trainer writes into adapter_config.json, in the card's order
# (older or hand-written adapters may use the alternative names).
_D2O_FIELDS = [
    (("loss",), "loss"),
    (("alpha",), "α (weight of the human negative)"),
    (("beta",), "β"),
    (("K", "num_samples"), "K (self-generated samples per prompt)"),
    (("steps",), "steps trained"),
    (("iters",), "steps planned"),
    (("batch_size",), "batch size"),
    (("grad_accumulation_steps",), "gradient accumulation steps"),
    (("refresh_every",), "samples refreshed from the policy (online)"),
    (("data_fingerprint",), "data fingerprint"),
    (("base_model",), "trained on base"),
    (("base_model_fingerprint", "base_fingerprint"), "base model fingerprint at training"),
    (("dequantized",), "trained on the base dequantized to float"),
    (("world_size",), "processes (data parallel)"),
]


def sample_manifest(d2o: dict, adapter_path: Path) -> dict:
    """The sample cache's manifest.json the adapter was trained from, if it can still be found
    (its path as the trainer recorded it, from here or from beside the adapter)."""
    samples = d2o.get("samples")
    if not isinstance(samples, str) or not samples:
        return {}
    for d in (Path(samples), adapter_path.parent / samples):
        try:
            data = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def _hub_dataset(spec) -> Optional[str]:
    """`org/name` from a Hub dataset spec (`org/name[:split]`); None for a local file."""
    if not isinstance(spec, str) or Path(spec).exists():
        return None
    repo = spec.split(":", 1)[0]
    return repo if _HUB_ID.match(repo) and not re.search(r"\.(jsonl?|gz|csv|parquet)$", repo) else None


def _datasets(d2o: dict, manifest: dict) -> list:
    ds = d2o.get("datasets", d2o.get("dataset"))
    ds = [ds] if isinstance(ds, str) else ds if isinstance(ds, list) else []
    ds = ds + [manifest.get("data")]
    # Only Hub dataset ids belong in `datasets:`; a local file path would be rejected by the Hub.
    out = [_hub_dataset(d) for d in ds]
    return list(dict.fromkeys(d for d in out if d))


def model_card(*, name: str, base_model: Optional[str], base_label: str, license: Optional[str],
               adapter_config: dict, metrics: dict, eval_table: Optional[str], quantization: Optional[dict],
               dtype: str, fingerprints: dict, changed: Optional[float] = None,
               manifest: Optional[dict] = None) -> str:
    """README.md: Hub front matter (YAML) and Markdown with the training settings and eval results."""
    import yaml

    d2o = adapter_config.get("d2o") if isinstance(adapter_config.get("d2o"), dict) else {}
    ftype = adapter_config.get("fine_tune_type", "lora")
    meta = {}
    if base_model:
        meta["base_model"] = base_model
    meta["library_name"] = "mlx"
    meta["pipeline_tag"] = "text-generation"
    if license:
        meta["license"] = license
    tags = ["mlx", "d2o", "alignment"] + ([ftype] if ftype in ("lora", "dora") else [])
    loss = d2o.get("loss")
    if isinstance(loss, str) and loss not in tags:
        tags.append(loss)
    meta["tags"] = tags
    manifest = manifest or {}
    datasets = _datasets(d2o, manifest)
    if datasets:
        meta["datasets"] = datasets

    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", ""]
    lines += [
        f"This model is {base_label} aligned with **Distributional Dispreference Optimization** "
        "(D2O; Duan et al., 2024, [arXiv:2403.03419](https://arxiv.org/abs/2403.03419)) using only "
        "human-labelled *negative* responses, with mlx-d2o on MLX. "
        f"The {_FTYPE_NAMES.get(ftype, ftype)} is fused into the weights: it loads as a standalone model.",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    rows, used = [], {"dataset", "datasets", "samples"}
    for keys, label in _D2O_FIELDS:
        key = next((k for k in keys if d2o.get(k) is not None), None)
        used.update(keys)
        if key == "base_model" and isinstance(d2o[key], str) and (Path(d2o[key]).exists() or d2o[key][:1] in "/~."):
            rows.append((label, f"`{Path(d2o[key]).name}` (a local model)"))  # not the user's directory layout
        elif key == "refresh_every":
            rows.append((label, f"every {d2o[key]} steps" if d2o[key] else "no (offline: samples of the starting model)"))
        elif key is not None:
            rows.append((label, d2o[key]))
    rows += [(k, v) for k, v in d2o.items() if k not in used and isinstance(v, (int, float, str, bool))]
    if not d2o and "iters" in adapter_config:
        rows.append(("steps", adapter_config["iters"]))
    if datasets:
        rows.append(("datasets", ", ".join(datasets)))
    if manifest.get("data") and not _hub_dataset(manifest["data"]):
        # a local file: its name only (a full path would publish the user's directory layout)
        rows.append(("negatives", f"`{Path(str(manifest['data'])).name}`"
                     + (f", {manifest['records']} records" if manifest.get("records") else "")))
    if manifest.get("num_samples"):
        rows.append(("self-generated samples (π_r)",
                     f"K={manifest['num_samples']}, temperature {manifest.get('temp', '?')}, "
                     f"top-p {manifest.get('top_p', '?')}, at most {manifest.get('max_tokens', '?')} tokens"))
    lp = adapter_config.get("lora_parameters") or {}
    if ftype != "full":
        rows.append(("adapter", f"{ftype}, rank {lp.get('rank', '?')}, scale {lp.get('scale', '?')}, "
                                f"last {adapter_config.get('num_layers', '?')} layers"))
    for k in ("learning_rate", "batch_size", "seed"):
        if k in adapter_config and k not in d2o:
            rows.append((k.replace("_", " "), adapter_config[k]))
    for kind in ("train", "val"):
        if kind in metrics:
            v, step = metrics[kind]
            rows.append((f"final {kind} loss", f"{_fmt(float(v))}" + (f" (step {step})" if step is not None else "")))
    if not d2o:
        rows.append(("note", "adapter_config.json has no `d2o` block: training settings unknown"))
    lines += [f"| {label} | {_fmt(v)} |" for label, v in rows]
    if eval_table:
        lines += ["", "## Evaluation", "",
                  "Measured with the adapter applied to the base, before fusing"
                  + (" (the fused weights are quantized again, which moves the numbers slightly)." if quantization else "."),
                  "", eval_table]
    q = (f"{quantization.get('bits')}-bit affine, group size {quantization.get('group_size')}"
         + (" (some layers differ: see `quantization` in config.json)" if quantization.get("per_layer") else "")
         if quantization else f"not quantized ({dtype})")
    lines += [
        "",
        "## Weights",
        "",
        f"- quantization: {q}",
        *([f"- adapted weights whose quantized value the update moved: {changed:.2%}"
           + (" (the rest of the update was finer than the grid)" if changed < 0.05 else "")]
          if changed is not None else []),
        *[f"- {k}: `{v}`" for k, v in fingerprints.items()],
        "",
        "## Use with mlx",
        "",
        "```bash",
        "pip install mlx-lm",
        "```",
        "",
        "```python",
        "from mlx_lm import load, generate",
        "",
        f'model, tokenizer = load("{name}")',
        'messages = [{"role": "user", "content": "hello"}]',
        "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)",
        "print(generate(model, tokenizer, prompt=prompt, max_tokens=128))",
        "```",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing and uploading
# ---------------------------------------------------------------------------------------------

def write_dir(out: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Run WRITE into a temp folder beside OUT, then rename it into place.

    A failure midway leaves no OUT (and, with --overwrite, the old OUT untouched): the old one is
    only moved aside once the new one is complete, and removed after the swap.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        write(tmp)
        check_out_dir(out, overwrite)  # again: something may have appeared while we worked
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "x", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def hub_url(repo: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo}"


def hub_token() -> Optional[str]:
    """The token huggingface_hub would use (HF_TOKEN or `hf auth login`); never printed."""
    from huggingface_hub import get_token

    return get_token()


def upload(out: Path, repo: str, private: bool = False) -> str:
    """Create REPO if needed, upload OUT, return the repo URL. Errors name no token."""
    from huggingface_hub import HfApi

    token = hub_token()
    try:
        api = HfApi()
        url = api.create_repo(repo, exist_ok=True, private=private, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=str(out), repo_type="model",
                          commit_message="Upload D2O-aligned model fused with mlx-d2o")
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if token:
            msg = msg.replace(token, "***")
        raise D2OError(
            f"upload to {hub_url(repo)} failed ({type(e).__name__}: {msg[:300]}). The fused model in {out} "
            f"is complete; upload it later with: hf upload {repo} {out} ."
        ) from None
    return str(url)


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------

def fuse(args: FuseArgs, log: Callable[[str], None] = print) -> FuseResult:
    """Fuse `args.adapter_path` into `args.model`, write `args.save_path`, optionally upload it.

    Everything that can be refused (settings, OUT, adapter files, adapter/base shapes, a missing
    Hub token) is refused before anything is written.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import save

    check_args(args)
    out, adapter = Path(args.save_path), Path(args.adapter_path)
    if args.upload_repo and not args.dry_run and not hub_token():
        raise D2OError("--upload-repo needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
                       "(nothing was written)")
    adapter_config = read_adapter_config(adapter)
    report_dir = find_report(adapter, args.report)
    if args.model is None:
        trained = adapter_config.get("model")
        args = replace(args, model=trained if isinstance(trained, str) and trained else DEFAULT_MODEL)
        log(f"base model: {args.model} ({'from adapter_config.json' if trained else 'the default'})")
    full = adapter_config.get("fine_tune_type", "lora") == "full"
    net, tokenizer, info, requantize = load_for_fuse(args.model, str(adapter), full=full)

    warnings = []
    d2o = adapter_config.get("d2o") if isinstance(adapter_config.get("d2o"), dict) else {}
    trained_on = d2o.get("base_model_fingerprint") or d2o.get("base_fingerprint")
    if trained_on and trained_on != info.fingerprint:
        # Shapes fit (load checked them), so this is another copy or format of a same-shaped
        # model, e.g. a float original of the quantized base the adapter was trained on: allowed,
        # but said.
        warnings.append(f"the adapter was trained on a base with fingerprint {trained_on}, this base's is "
                        f"{info.fingerprint}: same shapes, but check it is the same model")

    stats = fuse_model(net, dequantize=args.dequantize or args.quantize, evaluate=not args.dry_run,
                       progress=not args.dry_run)
    if stats["fused"] == 0 and not full:
        raise D2OError(f"{adapter}: no adapter layers found in the model after loading the adapter")
    net, config = set_quantization(net, info.config, args, requantize)
    quant = quantization_of(config)

    floats = {str(v.dtype).replace("mlx.core.", "") for _, v in tree_flatten(net.parameters())
              if mx.issubdtype(v.dtype, mx.floating)}
    card = model_card(
        name=args.upload_repo or out.name,
        base_model=base_model_id(args.model, info.path),
        base_label=base_label(args.model, info.path),
        license=base_license(info.path),
        adapter_config=adapter_config,
        metrics=last_metrics(adapter),
        eval_table=eval_section(report_dir),
        quantization=quant,
        dtype="/".join(sorted(floats)) or "float",
        fingerprints={"base fingerprint": info.fingerprint,
                      "adapter fingerprint": file_fingerprint(adapter / "adapters.safetensors")},
        changed=stats["changed"] / stats["weights"] if stats["weights"] else None,
        manifest=sample_manifest(d2o, adapter),
    )

    def write(dst: Path) -> None:
        # mlx-lm's save: shards, index, config (quantization included), tokenizer with chat
        # template, generation_config.json. It also writes a bare model card; ours replaces it.
        save(dst, str(info.path), net, tokenizer, config, donate_model=False)
        (dst / "README.md").write_text(card, encoding="utf-8")

    url = hub_url(args.upload_repo) if args.upload_repo else None
    if args.dry_run:
        files = _planned_files(net, tokenizer, config, card)
        log(f"dry run: would write {out}{' (replacing it)' if out.exists() else ''}")
        for fname, size in files:
            log(f"  {fname:<40} {_human(size)}")
        log(f"  {'total':<40} {_human(sum(s for _, s in files))}")
        if url:
            log(f"dry run: would upload to {url} ({'private' if args.private else 'public'}); "
                f"Hugging Face token {'found' if hub_token() else 'NOT found: set HF_TOKEN or run `hf auth login`'}")
        log("dry run: nothing written, nothing uploaded")
        return FuseResult(out, files, quant, url=url, warnings=warnings)

    write_dir(out, args.overwrite, write)
    files = sorted((p.name, p.stat().st_size) for p in out.iterdir() if p.is_file())
    if stats["weights"]:
        share = stats["changed"] / stats["weights"]
        log(f"kept quantized: the update moved {share:.2%} of the adapted layers' weights to another grid value")
        if share < 0.05:
            warnings.append(f"only {share:.2%} of the adapted weights changed when rounded to the base's "
                            f"{quant['bits'] if quant else '?'}-bit grid: most of the update is finer than the "
                            "quantization and is lost; --dequantize keeps all of it")
    result = FuseResult(out, files, quant, url=url, warnings=warnings, changed=stats["changed"] / stats["weights"]
                        if stats["weights"] else None)
    if args.upload_repo:
        log(f"wrote {out}; uploading it to {url} ({'private' if args.private else 'public'})")
        result.url = upload(out, args.upload_repo, private=args.private)
        result.uploaded = True
    return result


def _planned_files(net, tokenizer, config, card: str) -> list:
    """What `write` would produce, without writing OUT: weight sizes from shapes, the rest rendered.

    The tokenizer files are rendered in a private temp folder (a few MB), removed right after.
    """
    from mlx.utils import tree_flatten
    from mlx_lm.utils import get_total_parameters, save_config

    files = weight_files(net)
    weights = dict(tree_flatten(net.parameters()))
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values()),
                          "total_parameters": get_total_parameters(net)},
             "weight_map": {k: files[0][0] for k in sorted(weights)}}  # file names all have the same length
    files.append(("model.safetensors.index.json", len(json.dumps(index, indent=4))))
    with tempfile.TemporaryDirectory(prefix="mlx-d2o-dry-run-") as tmp:
        save_config(copy.deepcopy(config), Path(tmp) / "config.json")
        tokenizer.save_pretrained(tmp)
        files += [(p.name, p.stat().st_size) for p in sorted(Path(tmp).iterdir()) if p.is_file()]
    files.append(("README.md", len(card.encode("utf-8"))))
    return files


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
