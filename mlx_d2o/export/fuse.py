"""Fuse a trained adapter into its base model, write it with a model card, upload it to the Hub.

The fused directory is an ordinary mlx-lm model directory (safetensors shards, `config.json`,
tokenizer files, chat template), so `mlx_lm.load`, LM Studio and the Hub read it without
mlx-d2o. The fuse itself is mlx-lm's: every LoRA / DoRA layer's own `fuse()`, then
`mlx_lm.utils.save`; except that over a quantized base kept quantized, the fused weight is
rounded back onto the base's own grid rather than quantized afresh (`quant.requantize_like`).
What this module adds around it: checks before any work, a write that is all-or-nothing, a D2O
model card (`card`), and an upload whose failure leaves OUT intact (`hub`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from .. import adapters
from ..errors import D2OError
from ..models import DEFAULT_MODEL, file_fingerprint
from .card import d2o_block, model_card
from .files import check_out_dir, human_size, planned_files, write_model
from .hub import HUB_ID, hub_token, hub_url, upload
from .provenance import (
    base_label,
    base_license,
    base_model_id,
    eval_section,
    find_report,
    sample_manifest,
)
from .quant import (
    changed_weights,
    check_quantization,
    quantization_of,
    requantize_like,
    set_quantization,
)


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
    url: Optional[str] = None  # the Hub repo's URL when uploaded (dry run: where it would go)
    uploaded: bool = False
    warnings: list = field(default_factory=list)
    changed: Optional[float] = None  # kept quantized: share of adapted weights whose value moved


# ---------------------------------------------------------------------------------------------
# Checks that run before any work
# ---------------------------------------------------------------------------------------------


def check_args(args: FuseArgs) -> None:
    if args.quantize and args.dequantize:
        raise D2OError("--quantize and --dequantize contradict each other: pick one")
    if args.quantize:
        check_quantization(args.q_bits, args.q_group_size)
    if args.upload_repo is not None and not HUB_ID.match(args.upload_repo):
        raise D2OError(
            f"--upload-repo {args.upload_repo!r}: expected a Hub repo id like 'user/name'"
        )
    adapter = Path(args.adapter_path)
    for name in (adapters.CONFIG_FILE, adapters.ADAPTERS_FILE):
        if not (adapter / name).is_file():
            raise D2OError(f"{adapter}: not an adapter directory ({name} is missing)")
    check_out_dir(Path(args.save_path), args.overwrite)


def with_base_model(args: FuseArgs, adapter_config: dict, log: Callable[[str], None]) -> FuseArgs:
    """ARGS with `model` set: as given, else the adapter's base, else the default model."""
    if args.model is not None:
        return args
    trained = adapter_config.get("model")
    args = replace(args, model=trained if isinstance(trained, str) and trained else DEFAULT_MODEL)
    log(f"base model: {args.model} ({'from adapter_config.json' if trained else 'the default'})")
    return args


def base_warnings(adapter_config: dict, fingerprint: str) -> list:
    """A warning when the adapter names another base than this one.

    Shapes fit (loading checked them), so this is another copy or format of a same-shaped model,
    e.g. a float original of the quantized base the adapter was trained on: allowed, but said.
    """
    trained_on = adapters.made_for(adapter_config)
    if trained_on and trained_on != fingerprint:
        return [
            f"the adapter was trained on a base with fingerprint {trained_on}, this base's is "
            f"{fingerprint}: same shapes, but check it is the same model"
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Loading and fusing
# ---------------------------------------------------------------------------------------------


def load_for_fuse(model: str, adapter_path: str | Path, full: bool = False):
    """Base as stored (quantized stays quantized: `dequantize=False`), with the adapter on it.

    Returns `(net, tokenizer, info, requantize)`: `requantize` maps the modules a full fine-tune
    replaced in a quantized base to the base's quantized modules (empty for LoRA / DoRA).
    """
    from mlx_lm.utils import load_adapters

    from ..models import load

    net, tokenizer, info = load(model, dequantize=False, return_info=True)
    weights = adapters.load_weights(adapter_path)
    adapters.check_fits(adapter_path, net, weights)
    try:
        if full:
            return net, tokenizer, info, _load_full(net, Path(adapter_path), set(weights))
        net = load_adapters(net, str(adapter_path))
        net.eval()
        return net, tokenizer, info, {}
    except (ValueError, KeyError) as e:
        # mlx-lm's load_adapters raises these for tensors or LoRA settings the base lacks.
        raise D2OError(
            f"{adapter_path}: the adapter does not fit the base model {model}: {e}"
        ) from None


def _load_full(net, adapter_path: Path, names: set) -> dict:
    """Put full fine-tuned weights (NAMES) into NET in the base's own format.

    A full fine-tune trains float weights (on the CPU, of the dequantized base), so the modules
    it replaced are dequantized first, loaded by mlx-lm's `load_adapters` (which checks names and
    shapes), cast back to the base's float type, and reported for requantizing on their own
    grid. Modules it did not touch keep their original quantized weights bit for bit.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load_adapters

    modules = dict(net.named_modules())
    requantize, swaps = {}, []
    for path in sorted({n.rsplit(".", 1)[0] for n in names}):
        m = modules.get(path)
        if not isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        w = mx.dequantize(
            m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode
        )
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


def _fuse_one(module, base, dequantize: bool):
    """mlx-lm's `fuse()`; over a quantized linear kept quantized, requantized on BASE's grid."""
    import mlx.nn as nn

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
    Returns `{"fused": layers, "changed": n, "weights": n}`, the last two counting, over
    quantized layers kept quantized, the weights whose stored value the update moved
    (`quant.changed_weights`): an update finer than the grid is lost in the rounding.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from tqdm import tqdm

    # Popped one at a time, so that each adapter layer is freed once its fused layer is in.
    layers = adapters.adapter_layers(net)[::-1]
    n = len(layers)
    stats = {"fused": n, "changed": 0, "weights": 0}
    changed, pending = mx.array(0), []
    bar = tqdm(total=n, desc="fusing", unit="layer", file=sys.stderr, disable=not progress or not n)
    for i in range(n):
        name, module, base = layers.pop()
        fused = _fuse_one(module, base, dequantize)
        if (
            evaluate
            and isinstance(fused, nn.QuantizedLinear)
            and isinstance(base, nn.QuantizedLinear)
        ):
            changed = changed + changed_weights(fused, base)
            stats["weights"] += base.scales.size * base.group_size
        net.update_modules(tree_unflatten([(name, fused)]))
        pending.append(fused.parameters())
        if evaluate and (len(pending) == EVAL_EVERY or i == n - 1):
            mx.eval(pending, changed)
            pending = []
        bar.update()
    bar.close()
    stats["changed"] = int(changed.item()) if evaluate else 0
    return stats


# ---------------------------------------------------------------------------------------------
# What gets written
# ---------------------------------------------------------------------------------------------


def make_card(args: FuseArgs, adapter_config: dict, info, net, quant, changed, report_dir) -> str:
    """The model card of the fused model (see `card.model_card`)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    adapter = Path(args.adapter_path)
    floats = {
        str(v.dtype).replace("mlx.core.", "")
        for _, v in tree_flatten(net.parameters())
        if mx.issubdtype(v.dtype, mx.floating)
    }
    return model_card(
        name=args.upload_repo or Path(args.save_path).name,
        base_model=base_model_id(args.model, info.path),
        base_label=base_label(args.model, info.path),
        license=base_license(info.path),
        adapter_config=adapter_config,
        metrics=adapters.last_metrics(adapter),
        eval_table=eval_section(report_dir),
        quantization=quant,
        dtype="/".join(sorted(floats)) or "float",
        fingerprints={
            "base fingerprint": info.fingerprint,
            "adapter fingerprint": file_fingerprint(adapter / adapters.ADAPTERS_FILE),
        },
        changed=changed,
        manifest=sample_manifest(d2o_block(adapter_config), adapter),
    )


def log_dry_run(args: FuseArgs, files: list, url: Optional[str], log: Callable[[str], None]):
    out = Path(args.save_path)
    log(f"dry run: would write {out}{' (replacing it)' if out.exists() else ''}")
    for fname, size in files:
        log(f"  {fname:<40} {human_size(size)}")
    log(f"  {'total':<40} {human_size(sum(s for _, s in files))}")
    if url:
        token = "found" if hub_token() else "NOT found: set HF_TOKEN or run `hf auth login`"
        visibility = "private" if args.private else "public"
        log(f"dry run: would upload to {url} ({visibility}); Hugging Face token {token}")
    log("dry run: nothing written, nothing uploaded")


def grid_warnings(changed: Optional[float], quant: Optional[dict], log) -> list:
    """Kept quantized: say how much of the update survived the rounding; warn when little did."""
    if changed is None:
        return []
    log(
        f"kept quantized: the update moved {changed:.2%} of the adapted layers' weights to "
        "another grid value"
    )
    if changed >= 0.05:
        return []
    bits = quant["bits"] if quant else "?"
    return [
        f"only {changed:.2%} of the adapted weights changed when rounded to the base's "
        f"{bits}-bit grid: most of the update is finer than the quantization and is lost; "
        "--dequantize keeps all of it"
    ]


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def fuse(args: FuseArgs, log: Callable[[str], None] = print) -> FuseResult:
    """Fuse `args.adapter_path` into `args.model`, write `args.save_path`, optionally upload it.

    Everything that can be refused (settings, OUT, adapter files, adapter/base shapes, a missing
    Hub token) is refused before anything is written.
    """
    check_args(args)
    out, adapter = Path(args.save_path), Path(args.adapter_path)
    if args.upload_repo and not args.dry_run and not hub_token():
        raise D2OError(
            "--upload-repo needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
            "(nothing was written)"
        )
    adapter_config = adapters.read_config(adapter)
    report_dir = find_report(adapter, args.report)
    args = with_base_model(args, adapter_config, log)
    full = adapter_config.get("fine_tune_type", "lora") == "full"
    net, tokenizer, info, requantize = load_for_fuse(args.model, adapter, full=full)
    warnings = base_warnings(adapter_config, info.fingerprint)

    stats = fuse_model(
        net, args.dequantize or args.quantize, evaluate=not args.dry_run, progress=not args.dry_run
    )
    if stats["fused"] == 0 and not full:
        raise D2OError(f"{adapter}: no adapter layers found in the model after loading the adapter")
    net, config = set_quantization(net, info.config, args, requantize)
    quant = quantization_of(config)
    changed = stats["changed"] / stats["weights"] if stats["weights"] else None
    card = make_card(args, adapter_config, info, net, quant, changed, report_dir)

    url = hub_url(args.upload_repo) if args.upload_repo else None
    if args.dry_run:
        files = planned_files(net, tokenizer, config, card)
        log_dry_run(args, files, url, log)
        return FuseResult(out, files, quant, url=url, warnings=warnings)

    files = write_model(out, args.overwrite, info.path, net, tokenizer, config, card)
    warnings += grid_warnings(changed, quant, log)
    result = FuseResult(out, files, quant, url=url, warnings=warnings, changed=changed)
    if args.upload_repo:
        log(f"wrote {out}; uploading it to {url} ({'private' if args.private else 'public'})")
        result.url = upload(out, args.upload_repo, private=args.private)
        result.uploaded = True
    return result
