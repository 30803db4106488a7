"""The Typer app: one command per module (`cli/__init__.py` runs it, with its error handling)."""

from __future__ import annotations

import typer

from . import train as train_module
from .data import app as data_app
from .eval import command as eval_command
from .fuse import command as fuse_command
from .plan import command as plan_command
from .run import command as run_command
from .sample import command as sample_command
from .tools import convert_gguf, doctor, generate
from .train import command as train_command


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
app.command()(doctor)
app.command("convert-gguf")(convert_gguf)
app.command()(generate)
app.add_typer(data_app, name="data")
app.command("sample")(sample_command)
app.command("plan")(plan_command)
# Words train does not know may be the flags of a loss's own hyperparameters (`losses.Param`).
app.command("train", context_settings=train_module.CONTEXT)(train_command)
app.command("eval")(eval_command)
app.command("fuse")(fuse_command)
app.command("run")(run_command)
