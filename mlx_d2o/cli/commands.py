"""The Typer app: one command per module (`cli/__init__.py` runs it, with its error handling)."""

from __future__ import annotations

import typer

from . import data, eval, fuse, plan, sample, tools, train


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
app.command("train")(train.command)
app.command("eval")(eval.command)
app.command("fuse")(fuse.command)
