"""`mlx-d2o`: a thin Typer layer. Each command parses, merges its recipe, calls one library
function, and prints. Errors from bad input (`D2OError`) print one line and exit with code 2.

Commands of the later steps live in `cli_<step>.py` files, each with a `register(app)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import D2OError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Align chat models with human-labelled negatives only: Distributional Dispreference Optimization on MLX.")
data_app = typer.Typer(no_args_is_help=True, help="Convert and check negatives-only datasets.")
app.add_typer(data_app, name="data")


@app.command()
def doctor(matmul_size: int = typer.Option(1024, help="Matrix size for the matmul speed test.")):
    """Device, BLAS in use, measured float32 matmul GFLOP/s, memory, versions."""
    from .doctor import report

    for k, v in report(matmul_size).items():
        typer.echo(f"{k:<18} {v}")


@app.command("convert-gguf")
def convert_gguf_cmd(
    gguf: Path = typer.Argument(..., help="A llama-family .gguf file (Q4_0, Q4_1, Q8_0, F16, F32)."),
    out_dir: Path = typer.Argument(..., help="Directory to write (mlx-lm format)."),
    overwrite: bool = typer.Option(False, help="Replace OUT_DIR if it exists."),
):
    """Write a GGUF model as an mlx-lm directory that `mlx_lm.load` / `mlx_lm.generate` accept."""
    from .models import convert_gguf, resolve_model

    out = convert_gguf(resolve_model(str(gguf)), out_dir, overwrite=overwrite)
    typer.echo(f"wrote {out}")


@app.command()
def generate(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Embedded name, .gguf, mlx-lm dir or Hub repo id."),
    prompt: str = typer.Option("What is the capital of France?", "--prompt", "-p"),
    adapter_path: Optional[Path] = typer.Option(None, help="Adapter directory to apply."),
    max_tokens: int = typer.Option(64, help="Maximum new tokens."),
    temp: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    system_prompt: Optional[str] = typer.Option(None, help="System prompt."),
):
    """Answer one prompt through the chat template (a quick check of a model or adapter)."""
    from mlx_lm import generate as mlx_generate
    from mlx_lm.sample_utils import make_sampler

    from .data import prompt_tokens, with_system
    from .models import load

    net, tok = load(model, adapter_path=str(adapter_path) if adapter_path else None)
    ids = prompt_tokens(tok, with_system([{"role": "user", "content": prompt}], system_prompt))
    typer.echo(mlx_generate(net, tok, ids, max_tokens=max_tokens, sampler=make_sampler(temp=temp)))


@data_app.command("convert")
def data_convert(
    src: str = typer.Argument(..., help="Source file (.jsonl, .jsonl.gz, .json) or Hub dataset org/name[:split]."),
    out: Path = typer.Argument(..., help="Output .jsonl of negatives-only records."),
    from_: str = typer.Option(..., "--from", help="Source format: pku-saferlhf or hh-rlhf."),
):
    """Convert PKU-SafeRLHF or HH-RLHF rows into negatives-only records."""
    from .data import convert

    rows, n = convert(from_, src, out)
    typer.echo(f"{rows} rows -> {n} records in {out}")


@data_app.command("check")
def data_check(
    file: str = typer.Argument(..., help="Records file or Hub dataset."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model whose tokenizer measures lengths."),
    max_seq_length: Optional[int] = typer.Option(None, help="Flag records longer than this (default: model context)."),
    prompts_only: bool = typer.Option(False, help="Records need no 'rejected' (prompt sets)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Counts, token-length statistics and problems of a records file."""
    from .data import check_file

    rep = check_file(file, model, max_seq_length, require_rejected=not prompts_only)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    for k, v in rep.items():
        if k != "problems":
            typer.echo(f"{k:<20} {v}")
    typer.echo(f"{'problems':<20} {len(rep['problems'])}")
    for p in rep["problems"]:
        typer.echo(f"  - {p}")


def _register_steps() -> None:
    import importlib

    for step in ("sample", "train", "eval", "fuse"):
        try:
            mod = importlib.import_module(f".cli_{step}", __package__)
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.cli_{step}":
                raise
            continue
        mod.register(app)


_register_steps()


def main() -> None:
    from .blas import ensure_optimized_blas

    ensure_optimized_blas()
    try:
        app()
    except D2OError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
