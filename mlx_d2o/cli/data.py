"""`mlx-d2o data convert` and `mlx-d2o data check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import ranges
from ..errors import D2OError

app = typer.Typer(no_args_is_help=True, help="Convert and check negatives-only datasets.")


@app.command("convert")
def convert(
    src: str = typer.Argument(
        ..., help="Source file (.jsonl, .jsonl.gz, .json) or Hub dataset org/name[:split]."
    ),
    out: Path = typer.Argument(..., help="Output .jsonl of negatives-only records."),
    from_: str = typer.Option(..., "--from", help="Source format: pku-saferlhf or hh-rlhf."),
):
    """Convert PKU-SafeRLHF or HH-RLHF rows into negatives-only records."""
    from ..data import convert as convert_rows

    rows, n = convert_rows(from_, src, out)
    typer.echo(f"{rows} rows -> {n} records in {out}")


@app.command("check")
def check(
    file: str = typer.Argument(..., help="Records file or Hub dataset."),
    model: str = typer.Option(
        "smollm2-135m", "--model", "-m", help="Model whose tokenizer measures lengths."
    ),
    max_seq_length: Optional[int] = typer.Option(
        None, help="Flag records longer than this (default: model context)."
    ),
    prompts_only: bool = typer.Option(False, help="Records need no 'rejected' (prompt sets)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Counts, token-length statistics and problems of a records file."""
    from ..data import check_file
    from ..models import load_tokenizer

    ranges.check_flag("data", "max_seq_length", max_seq_length)
    tokenizer, context = load_tokenizer(model)
    limit = max_seq_length or context or 2048
    rep = check_file(file, tokenizer, limit, require_rejected=not prompts_only)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
    else:
        for k, v in rep.items():
            if k not in ("problems", "errors"):
                typer.echo(f"{k:<20} {v}")
        typer.echo(f"{'problems':<20} {len(rep['problems'])}")
        for p in rep["problems"]:
            typer.echo(f"  - {p}")
    if rep["errors"]:
        more = f" (and {len(rep['errors']) - 1} more)" if len(rep["errors"]) > 1 else ""
        raise D2OError(rep["errors"][0] + more)
