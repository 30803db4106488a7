"""Recipes: YAML settings read, flattened and merged with flags.

Recipes: YAML files of settings, merged with flags. The command line beats the YAML, the YAML
beats the defaults, as in `mlx_lm.lora -c`. Keys are the flag names with underscores
(`learning_rate`, `adapter_path`); mlx-lm's nested `lora_parameters: {rank, scale, dropout}` is
accepted too."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import D2OError

# mlx_lm.lora's nested LoRA block -> our flat keys
_NESTED = {
    "lora_parameters": {"rank": "lora_rank", "scale": "lora_scale", "dropout": "lora_dropout"}
}


def load_recipe(path: Optional[str | Path]) -> dict:
    if path is None:
        return {}
    import yaml

    path = Path(path)
    if not path.exists():
        raise D2OError(f"{path}: no such recipe file")
    if path.is_dir():
        raise D2OError(f"{path}: a directory, not a recipe file (give a YAML file to -c)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise D2OError(f"{path}: not a YAML recipe (not UTF-8 text at byte {e.start})") from None
    except OSError as e:
        raise D2OError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise D2OError(f"{path}{line}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise D2OError(f"{path}: a recipe must be a mapping of settings")
    return flatten(data, path)


def flatten(settings: dict, path, where: str = "") -> dict:
    """SETTINGS with flag-style keys (`learning-rate` -> `learning_rate`) and mlx-lm's nested
    blocks made flat (`lora_parameters.rank` -> `lora_rank`); WHERE prefixes the field a
    message names (a section: "train.")."""
    flat = {}
    for k, v in settings.items():
        k = str(k).replace("-", "_")
        if k in _NESTED and isinstance(v, dict):
            for nk, nv in v.items():
                if nk not in _NESTED[k]:
                    raise D2OError(
                        f"{path}: field '{where}{k}.{nk}': unknown setting (known: {', '.join(_NESTED[k])})"
                    )
                flat[_NESTED[k][nk]] = nv
        else:
            flat[k] = v
    return flat


SECTIONS = ("sample", "train", "eval", "fuse")


def merge(
    cli: dict,
    recipe_path: Optional[str | Path],
    defaults: dict,
    section: Optional[str] = None,
    shared: frozenset = frozenset(),
) -> dict:
    """Settings from CLI (None = not given), then the recipe, then DEFAULTS.

    A recipe may hold one section per command (`sample:`, `train:`, ...) beside shared top-level
    keys such as `model`; SECTION picks this command's. Every other key must be a known setting:
    a typo in a recipe is an error, not a silently ignored line. In a sectioned recipe a
    top-level key may belong to another command: SHARED names every command's settings, and a
    top-level key in none of them is a typo.
    """
    recipe = load_recipe(recipe_path)
    sectioned = any(k in SECTIONS for k in recipe)
    own = recipe.pop(section, None) if section else None
    known = set(defaults) | set(cli)
    for k in recipe:
        if sectioned and k not in SECTIONS and k not in known | shared and k != "config":
            raise D2OError(
                f"{recipe_path}: field '{k}': unknown setting for any command "
                f"(known here: {', '.join(sorted(known))})"
            )
    recipe = {
        k: v for k, v in recipe.items() if k not in SECTIONS and (k in known or not sectioned)
    }
    if isinstance(own, dict):  # lora_parameters inside a section, too
        recipe.update(flatten(own, recipe_path, f"{section}."))
    for k in recipe:
        if k not in known and k != "config":
            raise D2OError(
                f"{recipe_path}: field '{k}': unknown setting for this command (known: {', '.join(sorted(known))})"
            )
    out = dict(defaults)
    out.update({k: v for k, v in recipe.items() if k in known})
    out.update({k: v for k, v in cli.items() if v is not None})
    return out
