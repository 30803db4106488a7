"""`mlx-d2o fuse`: merge an adapter into its base, write a model card, optionally upload."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("fuse")
    def fuse_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model: embedded name, .gguf, mlx-lm dir or Hub repo id (default: the one in the adapter's adapter_config.json, else smollm2-135m)."),
        adapter_path: Optional[str] = typer.Option(None, help="Adapter directory (adapters.safetensors + adapter_config.json) (default: adapters)."),
        save_path: Optional[str] = typer.Option(None, help="Directory to write the fused model to (default: fused_model)."),
        dequantize: Optional[bool] = typer.Option(None, "--dequantize/--no-dequantize", help="Write float weights even if the base is quantized."),
        quantize: Optional[bool] = typer.Option(None, "--quantize/--no-quantize", help="(Re)quantize the fused weights with --q-bits/--q-group-size."),
        q_bits: Optional[int] = typer.Option(None, help="Bits per weight for --quantize (default: 4)."),
        q_group_size: Optional[int] = typer.Option(None, help="Group size for --quantize (default: 64)."),
        upload_repo: Optional[str] = typer.Option(None, help="Hugging Face repo (user/name) to upload the fused model to."),
        private: Optional[bool] = typer.Option(None, "--private/--no-private", help="Create the Hub repo as private."),
        dry_run: Optional[bool] = typer.Option(None, "--dry-run", help="Print what would be written and uploaded; touch nothing."),
        overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="Replace --save-path if it exists and is not empty."),
        report: Optional[str] = typer.Option(None, help="Directory of an `mlx-d2o eval` report for the model card (default: beside the adapter)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe (its `fuse:` section or top-level keys)."),
    ):
        """Fuse a LoRA/DoRA adapter into its base model (mlx-lm format, with a model card); upload to the Hub."""
        from .config import merge
        from .fuse import FuseArgs, fuse

        cli = {k: v for k, v in locals().items() if k in FuseArgs.__dataclass_fields__}
        args = FuseArgs(**{k: v for k, v in merge(cli, config, asdict(FuseArgs()), section="fuse").items()
                           if k in FuseArgs.__dataclass_fields__})
        result = fuse(args, log=typer.echo)
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
        if args.dry_run:
            return
        q = result.quantization
        kind = f"{q['bits']}-bit, group size {q['group_size']}" if q else "not quantized"
        total = sum(s for _, s in result.files)
        typer.echo(f"wrote {result.save_path} ({kind}, {len(result.files)} files, {total / 2**20:.1f} MB)")
        if result.uploaded:
            typer.echo(f"uploaded to {result.url}")
