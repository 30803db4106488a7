"""The adapter folder around a run: one run at a time, earlier runs kept, leftovers removed.

The adapter folder before and around a run: one run at a time (`io.RunLock`), an earlier run
kept unless --resume continues it or --overwrite replaces it, the leftovers of writes that a
kill interrupted removed, and a folder that cannot be written told in one line."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from ..adapters import ADAPTERS_FILE, CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE
from ..errors import D2OError
from ..io import RunLock, place_error, remove_stale_temps, stale_temps
from .checkpoints import (
    LATEST_FILE,
    SUMMARY_FILE,
    checkpoint_dirs,
    resume,
    resume_identity,
    truncate_metrics,
)

ONLINE_DIR = "online"

# Where the atomic writers of a run put their temp files (`.NAME.*` beside NAME), by folder.
TEMP_NAMES = {
    "": (ADAPTERS_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE),
    CHECKPOINTS_DIR: (LATEST_FILE, "[0-9]" * 7),
    ONLINE_DIR: ("samples-step*.jsonl",),
}

# What a run writes: --overwrite removes these, and nothing else the folder may hold.
RUN_FILES = (ADAPTERS_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINTS_DIR, ONLINE_DIR)


def earlier_run(out: Path) -> Optional[str]:
    """What OUT holds of an earlier run that is worth keeping (None: nothing)."""
    parts = ["adapters"] if (out / ADAPTERS_FILE).exists() else []
    dirs = checkpoint_dirs(out)
    if dirs:
        parts.append(f"checkpoints up to step {int(dirs[0].name)}")
    return ", ".join(parts) or None


def remove_leftovers(out: Path) -> tuple[int, int]:
    """Remove the temp files and folders that killed writes left in OUT; (how many, bytes)."""
    count = freed = 0
    for sub, names in TEMP_NAMES.items():
        for name in names:
            count += len(stale_temps(out / sub, name))
            freed += remove_stale_temps(out / sub, name)
    return count, freed


@contextmanager
def claim_output(args, shard, say) -> Iterator[Path]:
    """The adapter folder, held by this run (rank 0 locks it): a second run on it is refused
    at once, naming this one. An earlier run there is refused unless --resume or --overwrite;
    temp files of killed writes are removed. A folder this call created is removed again if
    the run fails before writing anything into it."""
    out = Path(args.adapter_path)
    if shard.rank != 0:
        yield out
        return
    created = not out.exists()
    try:
        with RunLock(out, "train run"):
            _check_earlier_run(out, args, created)
            count, freed = remove_leftovers(out)
            if count:
                say(
                    f"removed {count} temp files left in {out} by an interrupted run "
                    f"({freed / 1e6:.1f} MB freed)"
                )
            yield out
    except BaseException:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {RunLock.NAME}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _check_earlier_run(out: Path, args, created: bool) -> None:
    if args.resume and args.overwrite:
        raise D2OError("give --resume (continue the run) or --overwrite (replace it), not both")
    if args.resume and created:  # a typo in --adapter-path, not a run to continue
        raise D2OError(
            f"{out}: --resume: no checkpoint to resume from (no run was started in this folder); "
            "drop --resume to start one"
        )
    what = earlier_run(out)
    if what and not (args.resume or args.overwrite):
        raise D2OError(
            f"{out}: holds an earlier run ({what}); --resume continues it, --overwrite "
            "replaces it, or give another --adapter-path"
        )


def open_output(args, model, optimizer, manifest: dict, shard, say) -> tuple[int, int]:
    """Resume in the adapter folder (--resume: MODEL and OPTIMIZER loaded from the newest
    checkpoint, made from the cache of MANIFEST with ARGS' settings) or start afresh there (what
    an earlier run left is removed: `claim_output` let it through with --overwrite only);
    returns (start step, tokens trained so far). Rank 0 alone touches the files."""
    out = Path(args.adapter_path)
    # a run killed before its first checkpoint left its folder and nothing to resume from:
    # --resume starts it (a folder that was not there is refused in `claim_output`)
    fresh = args.resume and shard.all_ok(shard.rank != 0 or not checkpoint_dirs(out))
    if fresh:
        say(f"--resume: {out} holds no checkpoint yet (none was saved); starting at step 0")
    if args.resume and not fresh:
        identity = resume_identity(args)
        state = resume(out, model, optimizer, manifest, shard, say, identity)
        if shard.rank == 0:
            truncate_metrics(out / METRICS_FILE, state["step"])
        return state["step"], int(state.get("trained_tokens", 0))
    if shard.rank == 0:
        if earlier_run(out) and not fresh:
            say(f"--overwrite: the earlier run in {out} is replaced")
        for name in RUN_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        out.mkdir(parents=True, exist_ok=True)
    return 0, 0


@contextmanager
def disk_errors(out: Path):
    """A folder that cannot be written (full disk, read-only, no permission, not a directory)
    ends the run in one line naming the path and the cause (`io.place_error`), and how to go
    on. The writers are atomic, so nothing is left half-written; a rerun after freeing space
    resumes. Errors of other paths (the model, the cache) are not this folder's."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        filename = getattr(e, "filename", None)
        err = place_error(e, filename or out) if _concerns(out, filename) else None
        if err is None:
            raise
        full = isinstance(e, RuntimeError) or e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise D2OError(f"--adapter-path {out}: {err}{_hint(out) if full else ''}") from None


def _concerns(out: Path, filename) -> bool:
    """True when FILENAME is OUT, inside it, or a folder on the way to it (or not known)."""
    if filename is None:
        return True
    path, folder = os.path.abspath(os.fsdecode(filename)), os.path.abspath(out)
    return path == folder or path.startswith(folder + os.sep) or folder.startswith(path + os.sep)


def _hint(out: Path) -> str:
    if checkpoint_dirs(out):
        return "; free some space, then run the same command with --resume"
    return "; free some space, then run the same command again"
