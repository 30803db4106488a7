"""The one idiom every command uses: flags + recipe + the step's defaults -> its args dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, TypeVar

from ..config import merge

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
    return merge(cli, config, defaults, section=section)


def args_from(
    cls: type[T], cli: dict, config: Optional[str | Path], section: str, **defaults_override
) -> T:
    """recipe + flags -> the step's args dataclass CLS (unknown recipe keys are an error in merge)."""
    settings = settings_from(cls, cli, config, section, **defaults_override)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names})
