"""What a report calls each row: the run (loss and its settings), not the folder it was saved in.

An adapter trained by `mlx-d2o train` has its settings in `adapter_config.json`; its row reads
e.g. "d2o α=0.1 β=0.1 lr 3e-5". An adapter without them (made by mlx-lm, or by hand) is named
after its folder. When two rows would read the same, each gets its folder name as a suffix, and
its path when the folders are named the same too. Files (`responses/<id>.jsonl`) keep the
folder-based id, which is short and safe as a file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

# How a loss setting is written in a row name.
SYMBOLS = {"alpha": "α", "beta": "β"}


def _num(x) -> str:
    """3e-05 -> '3e-5', 0.1 -> '0.1', 1e-05 -> '1e-5'."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    s = f"{x:g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def run_name(config: Optional[dict]) -> Optional[str]:
    """ "LOSS p=v ... lr X" from an adapter config written by `mlx-d2o train`, else None."""
    from ..losses import LOSSES

    if not isinstance(config, dict) or not isinstance(config.get("loss"), str):
        return None
    loss_name = config["loss"]
    loss = LOSSES.get(loss_name)
    params = loss.param_names() if loss is not None else ("alpha", "beta")
    parts = [loss_name]
    for p in sorted(params, key=lambda p: list(SYMBOLS).index(p) if p in SYMBOLS else 9):
        if p in config:
            parts.append(f"{SYMBOLS.get(p, p)}={_num(config[p])}")
    if "learning_rate" in config:
        parts.append(f"lr {_num(config['learning_rate'])}")
    return " ".join(parts)


def _tail(parts: tuple, k: int) -> str:
    return "/".join(parts[-k:]) if parts else "."


def row_ids(adapter_paths: Sequence[str]) -> list[str]:
    """Unique ids: `base`, then each adapter's folder name, or as many trailing parts of its
    path as tell it apart from the others (`runs/d2o/adapters`, `runs/npo/adapters` -> `d2o/adapters`,
    `npo/adapters`); the same path given twice gets `#2`."""
    parts = [Path(str(p)).parts for p in adapter_paths]
    ids = ["base"]
    for i, pp in enumerate(parts):
        others = [q for j, q in enumerate(parts) if j != i and q != pp]
        k = 1
        while k < len(pp) and (
            _tail(pp, k) == "base" or any(_tail(q, k) == _tail(pp, k) for q in others)
        ):
            k += 1
        name = _tail(pp, k)
        ids.append(name if name not in ids else f"{name}#{ids.count(name) + 1}")
    return ids


def row_names(adapter_paths: Sequence[str], configs: Optional[Sequence] = None) -> list[str]:
    """The rows' display names: `base`, then each adapter's `run_name` (its id, `row_ids`, as
    fallback), with its id added where two rows would read the same."""
    ids = row_ids(adapter_paths)
    configs = list(configs) if configs is not None else [None] * len(adapter_paths)
    names = ["base"] + [run_name(c) or i for c, i in zip(configs, ids[1:])]
    dup = {n for n in names if names.count(n) > 1}
    return [
        f"{n} ({i})" if k and n in dup and n != i else n for k, (n, i) in enumerate(zip(names, ids))
    ]
