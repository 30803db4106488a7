"""What training writes into the adapter folder (its layout is `adapters.py`'s): the adapters
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
from ..adapters import CHECKPOINTS_DIR, METRICS_FILE
from ..distributed import Shard
from ..errors import D2OError
from ..io import atomic_dir, write_text_atomic
from .args import TrainArgs

OPTIMIZER_FILE = "optimizer.safetensors"
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
    lora = ("lora_rank", "lora_scale", "lora_dropout")
    cfg = {k: v for k, v in asdict(args).items() if k not in lora}
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


def latest_checkpoint(out: Path) -> Optional[Path]:
    ptr = out / CHECKPOINTS_DIR / LATEST_FILE
    if not ptr.exists():
        return None
    d = out / CHECKPOINTS_DIR / json.loads(ptr.read_text())["dir"]
    return d if (d / STATE_FILE).exists() else None


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    model.load_weights(list(adapters.load_weights(ckpt).items()), strict=False)
    optimizer.state = tree_unflatten(list(adapters.load_weights(ckpt / OPTIMIZER_FILE).items()))
    return json.loads((ckpt / STATE_FILE).read_text())


def resume_identity(args: TrainArgs) -> dict:
    return {k: getattr(args, k) for k in RESUME_IDENTITY}


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
            f"({'; '.join(diffs)}); resume with the same settings, or start afresh in another "
            "--adapter-path"
        )


def resume(
    out: Path, model, optimizer, manifest: dict, shard: Shard, identity: Optional[dict] = None
) -> int:
    """Load the latest checkpoint on rank 0 and hand its state to every rank; returns its step.

    Only rank 0 reads files, so ranks on other machines need no copy of the adapter folder."""
    step = 0
    if shard.rank == 0:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise D2OError(f"{out}: --resume: no checkpoint to resume from (none was saved yet)")
        state = load_checkpoint(ckpt, model, optimizer)
        _check_resumable(ckpt, state, manifest, identity)
        step = int(state["step"])
    if shard.size > 1:
        model.update(shard.broadcast(model.trainable_parameters()))
        optimizer.state = shard.broadcast(optimizer.state)
        step = int(shard.broadcast(mx.array(step)).item())
    return step


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after STEP: a resumed run rewrites them, so the file reads as one run.
    A torn line (a run killed mid-write) goes too."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line.strip() and json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def open_output(
    out: Path, args: TrainArgs, model, optimizer, manifest: dict, shard: Shard, say
) -> tuple[int, int]:
    """Resume in OUT (--resume) or start afresh there; returns (start step, tokens trained so
    far). Rank 0 alone touches the files."""
    main = shard.rank == 0
    metrics_path = out / METRICS_FILE
    start = tokens = 0
    if args.resume:
        start = resume(out, model, optimizer, manifest, shard, resume_identity(args))
        say(f"resuming from {out / CHECKPOINTS_DIR} at step {start}")
        if main:
            truncate_metrics(metrics_path, start)
    else:
        if main and out.exists() and (out / CHECKPOINTS_DIR).exists():
            say(
                f"note: starting afresh in {out}: the checkpoints of the earlier run there are "
                "removed (--resume continues one)"
            )
            shutil.rmtree(out / CHECKPOINTS_DIR)
        if main and metrics_path.exists():
            metrics_path.unlink()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if start and main:
        state = json.loads((latest_checkpoint(out) / STATE_FILE).read_text())
        tokens = state.get("trained_tokens", 0)
    return start, tokens


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
