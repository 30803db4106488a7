"""`mlx-d2o`: a thin Typer layer. Each command parses, merges its recipe into the step's args
dataclass (`cli.common.args_from`), calls one library function, and prints. Errors from bad
input (`D2OError`) print one line and exit with code 2.

One module per command, in pipeline order: data, sample, train, eval, fuse; tools holds doctor,
convert-gguf and generate.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import D2OError
from . import data, tools

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Align chat models with human-labelled negatives only: "
    "Distributional Dispreference Optimization on MLX.",
)
app.command()(tools.doctor)
app.command("convert-gguf")(tools.convert_gguf)
app.command()(tools.generate)
app.add_typer(data.app, name="data")


def _register_steps() -> None:
    # TRANSITIONAL while the step packages move: new cli/<step>.py, else the old cli_<step>.py.
    for step, name in (
        ("sample", "sample"),
        ("train", "train"),
        ("eval", "eval"),
        ("fuse", "fuse"),
    ):
        try:
            mod = importlib.import_module(f".{step}", __name__)
            app.command(name)(mod.command)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{step}":
                raise
            importlib.import_module(f"mlx_d2o.cli_{step}").register(app)


_register_steps()


def main() -> None:
    from ..models.blas import ensure_optimized_blas

    ensure_optimized_blas()
    try:
        app()
    except D2OError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
