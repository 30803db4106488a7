"""Fuse a trained adapter into its base model, write it with a model card, upload it to the Hub.

The fused directory is an ordinary mlx-lm model directory (safetensors shards, `config.json`,
tokenizer files, chat template), so `mlx_lm.load`, LM Studio and the Hub read it without
mlx-d2o. The fuse itself is mlx-lm's: every LoRA / DoRA layer's own `fuse()`, then
`mlx_lm.utils.save`. Over a quantized base kept quantized, the layers the adapter changed are
stored as `--adapted-layers` says (default: 8 bits, beside the base's own quantization for the
rest; `quant.ADAPTED_LAYERS`), because rounding W + ΔW back to 4 bits loses most of a LoRA
update. What this module adds around it: checks before any work, the fidelity of the result
measured against base + adapter (`fidelity`), a write that is all-or-nothing, a D2O model card
(`card`), an upload whose failure leaves OUT intact (`hub`), and with `--export-gguf` one GGUF
file for llama.cpp inside OUT, measured the same way once read back (`to_gguf`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from .. import adapters, ranges
from ..errors import D2OError
from ..io import check_output_dir, remove_stale_temps
from ..models import DEFAULT_MODEL
from .describe import fidelity_line, fuse_warnings, gguf_line, log_dry_run, make_card
from .fidelity import FloatView, kl_per_token, make_probe
from .files import check_out_dir, planned_files, write_model
from .hub import HUB_ID, hub_token, hub_url, upload
from .provenance import find_report
from .quant import (
    ADAPTED_LAYERS,
    DEFAULT_ADAPTED,
    changed_weights,
    check_quantization,
    quantization_of,
    record_layers,
    set_quantization,
    store_adapted,
)
from .to_gguf import (
    check_exportable,
    check_gguf_args,
    estimated_size,
    export_and_measure,
    gguf_file,
    gguf_stage,
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
        adapted_layers: Over a quantized base kept quantized, how the layers the adapter changed
            are stored: a key of `quant.ADAPTED_LAYERS` (None: `quant.DEFAULT_ADAPTED`).
        fidelity: Measure the fused model's KL per token to base + adapter (`fidelity`).
        fidelity_prompts: Records file whose prompts the fidelity is measured on (default: a
            few built-in benign prompts).
        upload_repo: Hub repo `user/name` to upload OUT to.
        private: Create the Hub repo as private.
        dry_run: Print what would be written and uploaded; write and upload nothing.
        overwrite: Replace OUT if it exists and is not empty.
        report: Directory of an `mlx-d2o eval` report (default: look beside the adapter).
        export_gguf: Also write the fused model as one GGUF file for llama.cpp, Ollama and
            LM Studio, inside OUT (`to_gguf`), with its KL/token to base + adapter.
        gguf_type: How the GGUF stores its matrices: a key of `to_gguf.GGUF_TYPES`.
        gguf_path: The GGUF's file name inside OUT (None: `ggml-model-<gguf_type>.gguf`, as
            `mlx_lm.fuse` names it).
    """

    model: Optional[str] = None
    adapter_path: str = "adapters"
    save_path: str = "fused_model"
    dequantize: bool = False
    quantize: bool = False
    q_bits: int = 4
    q_group_size: int = 64
    adapted_layers: Optional[str] = None
    fidelity: bool = True
    fidelity_prompts: Optional[str] = None
    upload_repo: Optional[str] = None
    private: bool = False
    dry_run: bool = False
    overwrite: bool = False
    report: Optional[str] = None
    export_gguf: bool = False
    gguf_type: str = "f16"
    gguf_path: Optional[str] = None


@dataclass
class FuseResult:
    save_path: Path
    files: list  # [(name, bytes)], bytes estimated for a dry run
    quantization: Optional[dict]
    url: Optional[str] = None  # the Hub repo's URL when uploaded (dry run: where it would go)
    uploaded: bool = False
    warnings: list = field(default_factory=list)
    changed: Optional[float] = None  # on the base's bits: share of adapted weights that moved
    adapted_layers: Optional[str] = None  # how the adapted layers were stored (None: as the rest)
    fidelity: Optional[dict] = None  # {"kl_per_token", "tokens", "source"}
    gguf: Optional[dict] = None  # {"file", "type", "bytes", "kl_per_token"} with --export-gguf


# ---------------------------------------------------------------------------------------------
# Checks that run before any work
# ---------------------------------------------------------------------------------------------


def check_args(args: FuseArgs) -> None:
    ranges.check("fuse", args)
    if args.quantize and args.dequantize:
        raise D2OError("--quantize and --dequantize contradict each other: pick one")
    if args.quantize:
        check_quantization(args.q_bits, args.q_group_size)
    if args.adapted_layers is not None:
        if args.adapted_layers not in ADAPTED_LAYERS:
            raise D2OError(
                f"--adapted-layers {args.adapted_layers!r}: expected one of "
                f"{', '.join(ADAPTED_LAYERS)}"
            )
        if args.quantize or args.dequantize:
            flag = "--quantize" if args.quantize else "--dequantize"
            raise D2OError(
                f"--adapted-layers and {flag} contradict each other: {flag} stores every layer "
                "alike, --adapted-layers is for a base kept quantized"
            )
    if args.upload_repo is not None and not HUB_ID.match(args.upload_repo):
        raise D2OError(
            f"--upload-repo {args.upload_repo!r}: expected a Hub repo id like 'user/name'"
        )
    adapter = Path(args.adapter_path)
    for name in (adapters.CONFIG_FILE, adapters.ADAPTERS_FILE):
        if not (adapter / name).is_file():
            raise D2OError(f"{adapter}: not an adapter directory ({name} is missing)")
    check_gguf_args(args)
    check_out_dir(Path(args.save_path), args.overwrite)
    if not args.dry_run:
        check_output_dir(args.save_path, "--save-path")


def with_base_model(args: FuseArgs, adapter_config: dict, log: Callable[[str], None]) -> FuseArgs:
    """ARGS with `model` set: as given, else the adapter's base, else the default model."""
    if args.model is not None:
        return args
    trained = adapter_config.get("model")
    args = replace(args, model=trained if isinstance(trained, str) and trained else DEFAULT_MODEL)
    log(f"base model: {args.model} ({'from adapter_config.json' if trained else 'the default'})")
    return args


# ---------------------------------------------------------------------------------------------
# Loading and fusing
# ---------------------------------------------------------------------------------------------


def load_for_fuse(model: str, adapter_path: str | Path, full: bool = False):
    """Base as stored (quantized stays quantized: `dequantize=False`), with the adapter on it.

    Refused in one line: a corrupt adapters.safetensors, an adapter whose shapes do not fit,
    and one whose adapter_config.json names another base (same shapes: another model, or
    another copy of it; `eval` refuses the same pair).
    Returns `(net, tokenizer, info, requantize)`: `requantize` maps the modules a full fine-tune
    replaced in a quantized base to the base's quantized modules (empty for LoRA / DoRA).
    """
    from mlx_lm.utils import load_adapters

    from ..models import load

    weights = adapters.load_weights(adapter_path)  # a torn file: refused before the model loads
    net, tokenizer, info = load(model, dequantize=False, return_info=True)
    adapters.check_fits(adapter_path, net, weights)
    adapters.check_base(adapter_path, adapters.read_config(adapter_path), info.fingerprint)
    try:
        if full:
            return net, tokenizer, info, _load_full(net, Path(adapter_path), weights)
        net = load_adapters(net, str(adapter_path))
        net.eval()
        return net, tokenizer, info, {}
    except (ValueError, KeyError) as e:
        # mlx-lm's load_adapters raises these for tensors or LoRA settings the base lacks; its
        # message lists every tensor (a hundred lines): the first one and a count say enough.
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        raise D2OError(
            f"{adapter_path}: the adapter does not fit the base model {model}: "
            f"{' '.join(lines[:2])[:300]}{more}"
        ) from None


def _load_full(net, adapter_path: Path, weights: dict) -> dict:
    """Put full fine-tuned WEIGHTS into NET in the base's own format (`adapters.put_full`);
    returns the quantized modules they replaced, by path, for requantizing on their own grid."""
    return dict(adapters.put_full(net, adapter_path, weights)[3])


def _fuse_one(module, base, adapted: Optional[str]):
    """mlx-lm's `fuse()`: float where HOW is None or the base is float; over a quantized base
    kept quantized, the float W + ΔW stored as HOW says (`quant.store_adapted`)."""
    import mlx.nn as nn

    if adapted is None or not isinstance(base, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
        return module.fuse(dequantize=True)
    return store_adapted(module.fuse(dequantize=True), base, adapted)


# Fused layers evaluated together. Measured on SmolLM2 (CPU): the same time for 1, 16, 64 or all
# (lazy until the save, as mlx-lm), but peak MLX memory 190, 216, 250 and 355 MB.
EVAL_EVERY = 8


def fuse_model(net, adapted: Optional[str] = None, evaluate: bool = True, progress: bool = True):
    """Replace every adapter layer by its fused layer, stored as HOW says, in place.

    Each layer's `fuse()` is mlx-lm's. Unlike mlx-lm's fuse script, which leaves everything lazy
    until the save, fused layers are swapped in and evaluated a few at a time: the adapter
    layers (and their base weights) are freed as we go, and the bar shows real progress.
    Returns `{"fused": [layer paths], "changed": n, "weights": n}`, the last two counting, over
    layers stored at the base's own bits, the weights whose stored value the update moved
    (`quant.changed_weights`): an update finer than the grid is lost in the rounding.
    """
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from tqdm import tqdm

    # Popped one at a time, so that each adapter layer is freed once its fused layer is in.
    layers = adapters.adapter_layers(net)[::-1]
    n = len(layers)
    stats = {"fused": [name for name, _, _ in layers[::-1]], "changed": 0, "weights": 0}
    changed, pending = mx.array(0), []
    bar = tqdm(total=n, desc="fusing", unit="layer", file=sys.stderr, disable=not progress or not n)
    for i in range(n):
        name, module, base = layers.pop()
        fused = _fuse_one(module, base, adapted)
        if evaluate and getattr(fused, "bits", None) == getattr(base, "bits", 0):
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
# The step
# ---------------------------------------------------------------------------------------------


def effective_adapted_layers(args: FuseArgs, base_config: dict) -> Optional[str]:
    """How the adapted layers are stored: None (float, as every other layer) when the fused
    model is written float or requantized whole, or the base is not quantized."""
    if args.dequantize or args.quantize or not base_config.get("quantization"):
        return None
    return args.adapted_layers or DEFAULT_ADAPTED


def fused_net(
    args: FuseArgs, adapter_config: dict, log: Callable[[str], None], gguf_to: Optional[Path] = None
):
    """Load, fuse and measure: `(net, tokenizer, info, config, facts)`, FACTS being what the card
    and the result report (`changed`, `adapted`, `fidelity`, and with GGUF_TO, the GGUF written
    there and its own fidelity: `gguf`)."""
    adapter = Path(args.adapter_path)
    full = adapter_config.get("fine_tune_type", "lora") == "full"
    net, tokenizer, info, requantize = load_for_fuse(args.model, adapter, full=full)
    if args.export_gguf:
        check_exportable(info.config)
    adapted = effective_adapted_layers(args, info.config)
    probe, view = None, FloatView()
    if args.fidelity and not args.dry_run:
        with view(net):  # base + adapter, before fusing
            probe = make_probe(net, tokenizer, args.fidelity_prompts)
        view.forget([*requantize.values(), *(b for _, _, b in adapters.adapter_layers(net))])
    stats = fuse_model(net, adapted, evaluate=not args.dry_run, progress=not args.dry_run)
    if not stats["fused"] and not full:
        raise D2OError(f"{adapter}: no adapter layers found in the model after loading the adapter")
    net, config = set_quantization(net, info.config, args, requantize, adapted or DEFAULT_ADAPTED)
    if adapted is not None:
        modules = dict(net.named_modules())
        config = record_layers(config, {p: modules[p] for p in [*stats["fused"], *requantize]})
    changed = stats["changed"] / stats["weights"] if stats["weights"] else None
    if changed is not None:
        log(f"kept on the base's bits: the update moved {changed:.2%} of the adapted weights")
    fidelity = None
    if probe is not None:
        with view(net):
            kl = kl_per_token(net, probe)
        view.clear()
        fidelity = {"kl_per_token": kl, "tokens": probe.tokens, "source": probe.source}
        log(fidelity_line(fidelity))
    facts = {"changed": changed, "adapted": adapted, "fidelity": fidelity}
    if gguf_to is not None:
        name = args.upload_repo or Path(args.save_path).name
        facts["gguf"] = export_and_measure(
            net, tokenizer, config, gguf_to, args.gguf_type, name, probe
        )
        log(gguf_line(facts["gguf"], fidelity))
    return net, tokenizer, info, config, facts


def fuse(args: FuseArgs, log: Callable[[str], None] = print) -> FuseResult:
    """Fuse `args.adapter_path` into `args.model`, write `args.save_path`, optionally upload it.

    Everything that can be refused (settings, OUT, adapter files, adapter/base shapes and
    fingerprint, a missing Hub token) is refused before anything is written.
    """
    check_args(args)
    out, adapter = Path(args.save_path), Path(args.adapter_path)
    if not args.dry_run:  # what a killed fuse left beside OUT (a whole model, maybe)
        remove_stale_temps(out.parent, out.name)
    if args.upload_repo and not args.dry_run and not hub_token():
        raise D2OError(
            "--upload-repo needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
            "(nothing was written)"
        )
    adapter_config = adapters.read_config(adapter)
    report_dir = find_report(adapter, args.report)
    args = with_base_model(args, adapter_config, log)
    with gguf_stage(out, args.export_gguf and not args.dry_run) as stage:
        gguf_to = stage / gguf_file(args) if stage else None
        net, tokenizer, info, config, facts = fused_net(args, adapter_config, log, gguf_to)
        quant = quantization_of(config)
        card = make_card(args, adapter_config, info, net, quant, report_dir, **facts)

        url = hub_url(args.upload_repo) if args.upload_repo else None
        if args.dry_run:
            files = planned_files(net, tokenizer, config, card)
            if args.export_gguf:
                files.append((gguf_file(args), estimated_size(net, args.gguf_type)))
            log_dry_run(args, files, url, log)
            return FuseResult(out, files, quant, url=url, adapted_layers=facts["adapted"])

        extra = [gguf_to] if gguf_to else []
        files = write_model(out, args.overwrite, info.path, net, tokenizer, config, card, extra)
    warnings = fuse_warnings(
        facts["changed"], facts["fidelity"], facts["adapted"], facts.get("gguf")
    )
    result = FuseResult(
        out, files, quant, url=url, warnings=warnings, changed=facts["changed"],
        adapted_layers=facts["adapted"], fidelity=facts["fidelity"], gguf=facts.get("gguf"),
    )  # fmt: skip
    if args.upload_repo:
        log(f"wrote {out}; uploading it to {url} ({'private' if args.private else 'public'})")
        result.url = upload(out, args.upload_repo, private=args.private)
        result.uploaded = True
    return result
