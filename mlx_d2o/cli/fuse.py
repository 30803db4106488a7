"""`mlx-d2o fuse`: merge an adapter into its base, write a model card, optionally upload."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import args_from

Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Base model: embedded name, .gguf, mlx-lm dir or Hub repo id (default: the one in "
        "the adapter's adapter_config.json, else smollm2-135m).",
    ),
]
AdapterPath = Annotated[
    Optional[str],
    typer.Option(
        help="Adapter directory (adapters.safetensors + adapter_config.json) (default: adapters)."
    ),
]
SavePath = Annotated[
    Optional[str],
    typer.Option(help="Directory to write the fused model to (default: fused_model)."),
]
Dequantize = Annotated[
    Optional[bool],
    typer.Option(
        "--dequantize/--no-dequantize", help="Write float weights even if the base is quantized."
    ),
]
Quantize = Annotated[
    Optional[bool],
    typer.Option(
        "--quantize/--no-quantize",
        help="(Re)quantize the fused weights with --q-bits/--q-group-size.",
    ),
]
QBits = Annotated[Optional[int], typer.Option(help="Bits per weight for --quantize (default: 4).")]
QGroupSize = Annotated[Optional[int], typer.Option(help="Group size for --quantize (default: 64).")]
AdaptedLayers = Annotated[
    Optional[str],
    typer.Option(
        help="Base kept quantized: how the layers the adapter changed are stored. 8bit (default): "
        "8-bit beside the base's bits, close to exact; float: exact, largest; requant: quantized "
        "afresh at the base's bits as `mlx_lm fuse` does, smallest; grid: onto the base's own "
        "grid, smallest, loses an update finer than a step. The output states the fidelity.",
    ),
]
Fidelity = Annotated[
    Optional[bool],
    typer.Option(
        "--fidelity/--no-fidelity",
        help="Measure the fused model's KL per token to base + adapter (default: on; seconds).",
    ),
]
FidelityPrompts = Annotated[
    Optional[str],
    typer.Option(
        help="Records file (.jsonl) whose prompts, answered by base + adapter, the fidelity is "
        "measured on (default: 4 built-in benign prompts).",
    ),
]
UploadRepo = Annotated[
    Optional[str],
    typer.Option(help="Hugging Face repo (user/name) to upload the fused model to."),
]
Private = Annotated[
    Optional[bool], typer.Option("--private/--no-private", help="Create the Hub repo as private.")
]
DryRun = Annotated[
    Optional[bool],
    typer.Option("--dry-run", help="Print what would be written and uploaded; touch nothing."),
]
Overwrite = Annotated[
    Optional[bool],
    typer.Option(
        "--overwrite/--no-overwrite", help="Replace --save-path if it exists and is not empty."
    ),
]
Report = Annotated[
    Optional[str],
    typer.Option(
        help="Directory of an `mlx-d2o eval` report for the model card (default: beside the "
        "adapter)."
    ),
]
ExportGguf = Annotated[
    Optional[bool],
    typer.Option(
        "--export-gguf/--no-export-gguf",
        help="Also write the fused model as one GGUF file (llama.cpp, Ollama, LM Studio) inside "
        "--save-path, with its tokenizer and chat template; its KL/token to base + adapter is "
        "printed and on the card. Llama-family models.",
    ),
]
GgufType = Annotated[
    Optional[str],
    typer.Option(help="GGUF weight type for --export-gguf: f16 (default) or q8_0."),
]
GgufPath = Annotated[
    Optional[str],
    typer.Option(
        help="File name of the GGUF inside --save-path (default: ggml-model-<gguf-type>.gguf)."
    ),
]
Config = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML recipe (its `fuse:` section or top-level keys)."),
]


def command(
    model: Model = None,
    adapter_path: AdapterPath = None,
    save_path: SavePath = None,
    dequantize: Dequantize = None,
    quantize: Quantize = None,
    q_bits: QBits = None,
    q_group_size: QGroupSize = None,
    adapted_layers: AdaptedLayers = None,
    fidelity: Fidelity = None,
    fidelity_prompts: FidelityPrompts = None,
    upload_repo: UploadRepo = None,
    private: Private = None,
    dry_run: DryRun = None,
    overwrite: Overwrite = None,
    report: Report = None,
    export_gguf: ExportGguf = None,
    gguf_type: GgufType = None,
    gguf_path: GgufPath = None,
    config: Config = None,
):
    """Fuse a LoRA/DoRA adapter into its base model (mlx-lm format, with a model card); \
upload to the Hub."""
    from ..export import FuseArgs, fuse

    flags = {k: v for k, v in locals().items() if k in FuseArgs.__dataclass_fields__}
    args = args_from(FuseArgs, flags, config, "fuse")
    result = fuse(args, log=typer.echo)
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    if args.dry_run:
        return
    q = result.quantization
    kind = f"{q['bits']}-bit, group size {q['group_size']}" if q else "not quantized"
    if q and result.adapted_layers:
        kind += f"; adapted layers {result.adapted_layers}"
    total = sum(s for _, s in result.files)
    files = len(result.files)
    typer.echo(f"wrote {result.save_path} ({kind}, {files} files, {total / 2**20:.1f} MB)")
    if result.gguf:
        typer.echo(f"wrote {result.save_path / result.gguf['file']} (GGUF, {result.gguf['type']})")
    if result.uploaded:
        typer.echo(f"uploaded to {result.url}")
