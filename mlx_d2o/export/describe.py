"""What `fuse` says about the model it wrote: card facts, dry-run listing, warnings.

What `fuse` says about the model it wrote: the model card's facts, the dry-run listing, the
fidelity line and the warnings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

from .. import adapters
from ..models import file_fingerprint
from .card import model_card
from .files import human_size
from .hub import hub_token
from .provenance import base_label, base_license, base_model_id, eval_section, sample_manifest

# Above this KL per token the fused model is said to differ from base + adapter (the issue's
# bar; measured: 8-bit adapted layers ~1e-4, float ~1e-6, the base's own grid ~ the adapter's
# whole effect; see benchmarks/fuse_accuracy.py).
KL_WARN = 0.01


def make_card(args, adapter_config: dict, info, net, quant, report_dir, **facts) -> str:
    """The model card of the fused model (see `card.model_card`); FACTS: `changed`, `fidelity`,
    `adapted` (as `card.model_card` takes them)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from .card import d2o_block

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
        manifest=sample_manifest(d2o_block(adapter_config), adapter),
        **facts,
    )


def log_dry_run(args, files: list, url: Optional[str], log: Callable[[str], None]):
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


def fidelity_line(fidelity: dict) -> str:
    """One line: the measured KL per token and what it was measured on."""
    return (
        f"fidelity: KL/token {fidelity['kl_per_token']:.2g} to base + adapter "
        f"({fidelity['tokens']} response tokens of {fidelity['source']}; 0 = identical)"
    )


def gguf_line(gguf: dict, fidelity: Optional[dict]) -> str:
    """One line: the GGUF written and its KL per token (on the same tokens as `fidelity_line`)."""
    line = f"GGUF {gguf['file']} ({gguf['type']}, {human_size(gguf['bytes'])})"
    if "kl_per_token" not in gguf:
        return f"{line}: fidelity not measured (--no-fidelity)"
    return (
        f"{line}: KL/token {gguf['kl_per_token']:.2g} to base + adapter, loaded back through "
        f"MLX's GGUF reader ({gguf['tokens']} response tokens"
        + (f" of {fidelity['source']})" if fidelity else ")")
    )


def fuse_warnings(
    changed: Optional[float], fidelity: Optional[dict], adapted: Optional[str], gguf=None
) -> list:
    """Warnings about what the fused model lost: the update rounded away (grid), or a KL to
    base + adapter above `KL_WARN` (of the fused directory, or of the GGUF)."""
    out = []
    if changed is not None and adapted == "grid" and changed < 0.05:
        out.append(
            f"only {changed:.2%} of the adapted weights changed when rounded to the base's grid: "
            "most of the update is finer than the quantization and is lost; "
            "--adapted-layers 8bit (the default) or --dequantize keeps it"
        )
    if fidelity and fidelity["kl_per_token"] > KL_WARN:
        out.append(
            f"the fused model is {fidelity['kl_per_token']:.2g} nats/token (KL) away from base + "
            f"adapter, above {KL_WARN}: it does not behave like the adapter; "
            "--adapted-layers 8bit or float, or --dequantize, stays closer"
        )
    out += (gguf or {}).get("warnings", [])
    if gguf and gguf.get("kl_per_token", 0) > KL_WARN:
        out.append(
            f"the GGUF {gguf['file']} is {gguf['kl_per_token']:.2g} nats/token (KL) away from "
            f"base + adapter, above {KL_WARN}: --gguf-type f16 stays closer"
        )
    return out
