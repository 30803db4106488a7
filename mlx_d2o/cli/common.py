"""The one idiom every command uses: flags + recipe + the step's defaults -> its args dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from .. import ranges
from ..config import merge
from ..errors import D2OError

T = TypeVar("T")


def defaults_of(cls) -> dict:
    """Field name -> default of the dataclass CLS (default factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def settings_from(
    cls, cli: dict, config: Optional[str | Path], section: str, **defaults_override
) -> dict:
    """The merged settings (flags > recipe > defaults) for CLS, before building it.

    CLI values of None mean "not given". DEFAULTS_OVERRIDE replaces dataclass defaults that
    depend on the command line (e.g. a required path the dataclass cannot default).
    """
    defaults = {**defaults_of(cls), **defaults_override}
    settings = merge(cli, config, defaults, section=section, shared=_every_setting())
    check_types(cls, settings, config)
    ranges.check(section, settings, config, from_recipe(cli, settings, defaults))
    return settings


def from_recipe(cli: dict, settings: dict, defaults: dict) -> set:
    """The settings the recipe gave: not a flag, and not the default (a recipe value equal to
    the default passes every check the default passes)."""
    return {
        k
        for k, v in settings.items()
        if cli.get(k) is None and (k not in defaults or v != defaults[k])
    }


def _every_setting() -> frozenset:
    """Every command's setting names: a top-level recipe key may belong to any of them."""
    from ..evaluate import EvalArgs
    from ..export import FuseArgs
    from ..losses import params
    from ..sample import SampleArgs
    from ..train import TrainArgs

    names = {"adapter_path", "model", "lora_parameters", *params()}
    for cls in (SampleArgs, TrainArgs, EvalArgs, FuseArgs):
        names.update(f.name for f in dataclasses.fields(cls))
    return frozenset(names)


def _allowed(hint) -> Optional[tuple]:
    """The Python types a recipe value may have for a field annotated HINT (None: any)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_allowed(a) for a in typing.get_args(hint) if a is not type(None)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)
    if origin in (list, tuple):
        return (list, tuple, str)
    return {bool: (bool,), int: (int,), float: (int, float), str: (str,), Path: (str, Path)}.get(
        hint
    )


def check_types(cls, settings: dict, config) -> None:
    """A recipe value of the wrong type (`num_samples: "four"`) is the user's typo: one line."""
    hints = typing.get_type_hints(cls)
    for name, value in settings.items():
        allowed = _allowed(hints[name]) if name in hints and value is not None else None
        if allowed is None:
            continue
        # bool is an int in Python, but `iters: true` is not a number of steps
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            want = " or ".join(sorted({t.__name__ for t in allowed}))
            src = f"{config}: field '{name}'" if config else f"--{name.replace('_', '-')}"
            raise D2OError(f"{src}: expected {want}, got {value!r}")


def args_from(
    cls: type[T], cli: dict, config: Optional[str | Path], section: str, **defaults_override
) -> T:
    """recipe + flags -> the step's args dataclass CLS (unknown recipe keys are an error in merge)."""
    settings = settings_from(cls, cli, config, section, **defaults_override)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names})


def option(kind, *names: str, help: Optional[str] = None):
    """A flag of type KIND that defaults to None ("not given"), so that the recipe, then the
    step's args dataclass, decides: what `args_from` expects of every command's flags."""
    return Annotated[Optional[kind], typer.Option(*names, help=help)]
