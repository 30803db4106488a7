"""What training writes into the adapter folder: adapters, checkpoints, resume.

What training writes into the adapter folder (its layout is `adapters.py`'s): the adapters
and their config, checkpoints that resume a run step for step, and metrics.jsonl kept as one run.

    checkpoints/NNNNNNN/   adapters + config (itself a loadable adapter folder), optimizer
                           state, state.json (step, data position, settings it was made with)
    checkpoints/latest.json  the newest whole checkpoint, switched last
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from .. import adapters
from ..adapters import CHECKPOINTS_DIR
from ..distributed import Shard
from ..errors import D2OError
from ..io import atomic_dir, write_text_atomic
from ..signals import Interrupted
from .args import TrainArgs

OPTIMIZER_FILE = "optimizer.safetensors"
SUMMARY_FILE = "train_summary.json"
STATE_FILE = "state.json"
LATEST_FILE = "latest.json"

# Settings a resumed run must share with the interrupted one, or it would not be its
# continuation. Not iters: a run may be resumed to go on longer.
RESUME_IDENTITY = (
    "loss", "alpha", "beta", "batch_size", "grad_accumulation_steps", "seed", "fine_tune_type",
    "num_layers", "lora_rank", "lora_scale", "lora_dropout", "learning_rate", "lr_schedule",
    "warmup", "optimizer", "max_seq_length", "refresh_every",
)  # fmt: skip


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def adapter_config(args: TrainArgs, d2o_meta: dict) -> dict:
    """mlx-lm's adapter_config.json (what `mlx_lm.load(..., adapter_path=)` reads), plus ours
    under "d2o"."""
    nested = ("lora_rank", "lora_scale", "lora_dropout", "loss_params")
    cfg = {k: v for k, v in asdict(args).items() if k not in nested}
    cfg.update(args.loss_params)  # beside alpha and beta, as recipe keys are
    cfg["lora_parameters"] = args.lora_parameters()
    cfg["d2o"] = d2o_meta
    return cfg


def save_adapters(out: Path, model, config: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    adapters.save_weights(out, dict(tree_flatten(model.trainable_parameters())))
    adapters.write_config(out, config)


def save_checkpoint(
    out: Path, step: int, model, optimizer, config: dict, state: dict, keep: int = 2
) -> Path:
    """OUT/checkpoints/<step>/: adapters + config, optimizer state, step and data position.

    The RNG needs no saving: each step seeds it from (seed, step, rank), see `step.step_seed`.
    Written in a temp directory then renamed; `latest` is switched last, so an interruption at
    any moment leaves the previous checkpoint as the latest. Only the KEEP newest are kept."""
    root = out / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:07d}"
    with atomic_dir(final) as tmp:
        save_adapters(tmp, model, config)
        adapters.save_weights(tmp / OPTIMIZER_FILE, dict(tree_flatten(optimizer.state)))
        write_json(tmp / STATE_FILE, state)
    write_json(root / LATEST_FILE, {"step": step, "dir": final.name})
    for old in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_dirs(out: Path) -> list[Path]:
    """OUT's checkpoint folders, newest first."""
    root = out / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The newest checkpoint folder with its state (for messages; `find_resumable` checks it)."""
    return next((d for d in checkpoint_dirs(out) if (d / STATE_FILE).is_file()), None)


def read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict]:
    """(state, adapter weights, optimizer state) of the checkpoint CKPT, read whole before any of
    it is used; a D2OError saying what is missing or torn."""
    for name in (STATE_FILE, adapters.ADAPTERS_FILE, OPTIMIZER_FILE):
        if not (ckpt / name).is_file():
            raise D2OError(f"{name} is missing")
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise D2OError(f"{STATE_FILE} is torn ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise D2OError(f"{STATE_FILE} holds no step")
    weights = adapters.load_weights(ckpt)
    optimizer_state = adapters.load_weights(ckpt / OPTIMIZER_FILE)
    return state, weights, optimizer_state


def _pointer_note(out: Path) -> Optional[str]:
    """What is wrong with latest.json, if anything (it only says which checkpoint is newest, so
    the folders themselves decide; a torn pointer loses nothing)."""
    ptr = out / CHECKPOINTS_DIR / LATEST_FILE
    if not ptr.exists():
        return None
    try:
        name = json.loads(ptr.read_text(encoding="utf-8"))["dir"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return f"{LATEST_FILE} is torn"
    if not (out / CHECKPOINTS_DIR / str(name)).is_dir():
        return f"{LATEST_FILE} names {name}, which is missing"
    return None


def find_resumable(out: Path) -> tuple[Path, dict, dict, dict, list]:
    """The newest whole checkpoint of OUT: (folder, state, weights, optimizer state, notes on
    what was passed over and why). A one-line D2OError when there is none."""
    notes = [n for n in [_pointer_note(out)] if n]
    dirs = checkpoint_dirs(out)
    for ckpt in dirs:
        try:
            return (ckpt, *read_checkpoint(ckpt), notes)
        except D2OError as e:
            notes.append(f"{ckpt.name} is not whole: {e}")
    if not dirs:
        raise D2OError(f"{out}: --resume: no checkpoint to resume from (none was saved yet)")
    raise D2OError(
        f"{out / CHECKPOINTS_DIR}: --resume: no whole checkpoint to resume from "
        f"({'; '.join(notes)}); start again with --overwrite"
    )


def resume_identity(args: TrainArgs) -> dict:
    return {**{k: getattr(args, k) for k in RESUME_IDENTITY}, **args.loss_params}


def _check_resumable(ckpt: Path, state: dict, manifest: dict, identity: Optional[dict]) -> None:
    if state.get("samples_fingerprint") != manifest.get("data_fingerprint"):
        raise D2OError(
            f"{ckpt}: --resume: the checkpoint was trained on another cache (data fingerprint "
            f"{state.get('samples_fingerprint')}, this cache {manifest.get('data_fingerprint')})"
        )
    saved = state.get("identity") or {}
    diffs = [
        f"{k}: checkpoint {saved[k]!r}, now {identity[k]!r}"
        for k in (identity or {})
        if k in saved and saved[k] != identity[k]
    ]
    if diffs:
        raise D2OError(
            f"{ckpt}: --resume with other settings than the run it continues "
            f"({'; '.join(diffs)}); resume with the same settings, or start afresh with "
            "--overwrite (or in another --adapter-path)"
        )


def resume(
    out: Path, model, optimizer, manifest: dict, shard: Shard, say, identity: Optional[dict] = None
) -> dict:
    """Load the newest whole checkpoint on rank 0 and hand it to every rank; returns its state
    (on other ranks only its step).

    Only rank 0 reads files, so ranks on other machines need no copy of the adapter folder."""
    state = {"step": 0}
    if shard.rank == 0:
        ckpt, state, weights, optimizer_state, notes = find_resumable(out)
        _check_resumable(ckpt, state, manifest, identity)
        model.load_weights(list(weights.items()), strict=False)
        optimizer.state = tree_unflatten(list(optimizer_state.items()))
        why = f" ({'; '.join(notes)})" if notes else ""
        say(f"resuming from {ckpt} at step {state['step']}{why}")
    if shard.size > 1:
        model.update(shard.broadcast(model.trainable_parameters()))
        optimizer.state = shard.broadcast(optimizer.state)
        state = {**state, "step": int(shard.broadcast(mx.array(state["step"])).item())}
    return state


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after STEP: a resumed run rewrites them, so the file reads as one run.
    A torn line (a run killed mid-write) goes too."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def stopped_message(out: Path, step: int, cause: str) -> str:
    """What rank 0 says when another rank of an mlx.launch run exited at STEP."""
    ck = latest_checkpoint(out)
    where = (
        f"the last checkpoint is {ck}; run the same command with --resume to continue"
        if ck
        else "no checkpoint had been saved yet"
    )
    return (
        f"training stopped at step {step}: another rank of this mlx.launch run exited ({cause}); "
        f"{where}"
    )


def nan_message(loss_value: float, step: int, out: Path) -> str:
    ck = latest_checkpoint(out)
    return f"the loss became {loss_value} at step {step}; stopped without saving. " + (
        f"The last good checkpoint is {ck} (resume with --resume after lowering --learning-rate)."
        if ck
        else "No checkpoint was saved yet; lower --learning-rate and start again."
    )


class TrainInterrupted(Interrupted):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint. The CLI sets
    `resume_command` (the exact command line to continue); from Python, resume=True does."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path, rank: int, world_size: int):
        super().__init__(signal_name, step, checkpoint)
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.rank, self.world_size, self.resume_command = rank, world_size, None

    def __str__(self) -> str:
        how = (
            f"resume with: {self.resume_command}"
            if self.resume_command
            else "run the same command with --resume to continue"
        )
        if self.world_size > 1:
            how = "run the same mlx.launch command with --resume to continue"
        return f"{self.signal_name} at step {self.step}: saved {self.checkpoint}; {how}"
