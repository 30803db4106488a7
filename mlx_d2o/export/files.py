"""The fused model's directory, written all-or-nothing (or listed, in a dry run).

The fused model's directory: written all-or-nothing, or (dry run) listed with the sizes it
would have, without writing it."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

from ..errors import D2OError
from ..io import atomic_dir


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise D2OError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise D2OError(f"{out} exists and is not empty (use --overwrite to replace it)")


def write_model(
    out: Path, overwrite: bool, base: Path, net, tokenizer, config, card: str, extra=()
) -> list:
    """Write the fused model to OUT, all or nothing; [(file name, bytes)] of what was written.

    mlx-lm's save writes the shards, index, config (quantization included), tokenizer with its
    chat template and generation_config.json, and a bare model card, which ours replaces. All of
    it goes to a temp folder beside OUT first: a failure midway leaves no OUT (and, with
    --overwrite, the old OUT untouched). EXTRA: files already written (the GGUF), moved in.
    """
    from mlx_lm.utils import save

    with atomic_dir(out) as tmp:
        save(tmp, str(base), net, tokenizer, config, donate_model=False)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in extra:
            os.replace(f, tmp / Path(f).name)
        check_out_dir(out, overwrite)  # again: something may have appeared while we worked
    return sorted((p.name, p.stat().st_size) for p in out.iterdir() if p.is_file())


def weight_files(net) -> list:
    """[(file name, bytes)] of the shards `mlx_lm.utils.save_model` would write (from shapes)."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import make_shards

    shards = make_shards(dict(tree_flatten(net.parameters())))
    fmt = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    sizes = [sum(v.nbytes for v in s.values()) for s in shards]
    return [(fmt.format(i + 1, len(shards)), size) for i, size in enumerate(sizes)]


def planned_files(net, tokenizer, config: dict, card: str) -> list:
    """What `write_model` would produce, without writing OUT: weight sizes from shapes, the rest
    rendered. The tokenizer files are rendered in a private temp folder (a few MB), removed
    right after."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import get_total_parameters, save_config

    files = weight_files(net)
    weights = dict(tree_flatten(net.parameters()))
    index = {
        "metadata": {
            "total_size": sum(v.nbytes for v in weights.values()),
            "total_parameters": get_total_parameters(net),
        },
        # the shard names all have the same length
        "weight_map": {k: files[0][0] for k in sorted(weights)},
    }
    files.append(("model.safetensors.index.json", len(json.dumps(index, indent=4))))
    with tempfile.TemporaryDirectory(prefix="mlx-d2o-dry-run-") as tmp:
        save_config(copy.deepcopy(config), Path(tmp) / "config.json")
        tokenizer.save_pretrained(tmp)
        files += [(p.name, p.stat().st_size) for p in sorted(Path(tmp).iterdir()) if p.is_file()]
    files.append(("README.md", len(card.encode("utf-8"))))
    return files


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
