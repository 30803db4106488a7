"""`mlx-d2o doctor`, `convert-gguf`, `generate`: the commands around the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import ranges


def doctor(
    matmul_size: int = typer.Option(1024, help="Matrix size for the matmul speed test."),
):
    """Device, BLAS in use, measured float32 matmul GFLOP/s, memory, versions."""
    from ..models.doctor import report

    ranges.check_flag("doctor", "matmul_size", matmul_size)
    for k, v in report(matmul_size).items():
        typer.echo(f"{k:<18} {v}")


def convert_gguf(
    gguf: Path = typer.Argument(
        ..., help="A llama-family .gguf file (Q4_0, Q4_1, Q8_0, F16, F32)."
    ),
    out_dir: Path = typer.Argument(..., help="Directory to write (mlx-lm format)."),
    overwrite: bool = typer.Option(False, help="Replace OUT_DIR if it exists."),
):
    """Write a GGUF model as an mlx-lm directory that `mlx_lm.load` / `mlx_lm.generate` accept."""
    from ..models import convert_gguf as convert
    from ..models import resolve_model

    out = convert(resolve_model(str(gguf)), out_dir, overwrite=overwrite)
    typer.echo(f"wrote {out}")


def generate(
    model: str = typer.Option(
        "smollm2-135m", "--model", "-m", help="Embedded name, .gguf, mlx-lm dir or Hub repo id."
    ),
    prompt: str = typer.Option(
        "What is the capital of France?", "--prompt", "-p", help="The user message to answer."
    ),
    adapter_path: Optional[Path] = typer.Option(None, help="Adapter directory to apply."),
    max_tokens: int = typer.Option(64, help="Maximum new tokens."),
    temp: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    system_prompt: Optional[str] = typer.Option(None, help="System prompt."),
):
    """Answer one prompt through the chat template (a quick check of a model or adapter)."""
    from mlx_lm import generate as mlx_generate
    from mlx_lm.sample_utils import make_sampler

    from ..data import prompt_tokens, with_system
    from ..models import load

    for name, value in (("max_tokens", max_tokens), ("temp", temp)):
        ranges.check_flag("generate", name, value)
    net, tok = load(model, adapter_path=str(adapter_path) if adapter_path else None)
    ids = prompt_tokens(tok, with_system([{"role": "user", "content": prompt}], system_prompt))
    typer.echo(mlx_generate(net, tok, ids, max_tokens=max_tokens, sampler=make_sampler(temp=temp)))
