"""The `mlx-d2o` command: its subcommands, and bad input as one line with exit code 2.

`mlx-d2o`: a thin Typer layer. Each command parses, merges its recipe into the step's args
dataclass (`cli.common.args_from`), calls one library function, and prints. Errors from bad
input (`D2OError`) print one line and exit with code 2.

One module per command, in pipeline order: data, sample, plan, train, eval, fuse, then run (the
whole pipeline from one recipe); tools holds doctor, convert-gguf and generate.
"""

from __future__ import annotations

import sys

import typer

from ..errors import D2OError
from ..io import place_error
from ..signals import Interrupted
from . import data, eval, fuse, plan, run, sample, tools, train


def _flags_take_no_value() -> None:
    # typer 0.29 prints "<bool>" beside every flag (--help included), as if it took a value.
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_mlx_d2o", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._mlx_d2o = True
    option.display_type_rich = display_type_rich


_flags_take_no_value()
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
app.command("sample")(sample.command)
app.command("plan")(plan.command)
# Words train does not know may be the flags of a loss's own hyperparameters (`losses.Param`).
app.command("train", context_settings=train.CONTEXT)(train.command)
app.command("eval")(eval.command)
app.command("fuse")(fuse.command)
app.command("run")(run.command)


def main() -> None:
    from ..models.blas import ensure_optimized_blas

    ensure_optimized_blas()
    try:
        app()
    except D2OError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except (OSError, RuntimeError) as e:
        # the last net for writes that did not go through io.writing: still one line, but
        # only for errors of the place written to; anything else is a bug with its traceback
        err = place_error(e, getattr(e, "filename", None) or "output")
        if err is None:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except Interrupted as e:
        typer.echo(f"interrupted: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
