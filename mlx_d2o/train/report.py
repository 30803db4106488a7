"""How training reports: window sums, metrics.jsonl and the progress bar.

How training reports: sums over a report window, and a `TrainingCallback` (mlx-lm's own
class, so its WandB / SwanLab callbacks plug in too) that writes metrics.jsonl and shows progress.

Metric names are TRL's (`rewards/…`, `logps/…`), with `samples` for the K self-generated
responses and `negative` for the human one; each loss declares its own (`losses.Loss`).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx_lm.tuner.callbacks import TrainingCallback

from ..distributed import Shard
from ..losses import Loss


def fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass
class Window:
    """Sums over the steps since the last report; `report` averages them over steps and ranks."""

    loss: Loss  # the declaration of --loss, whose metrics the window sums
    loss_sum: object = 0.0
    metrics: dict = field(default_factory=dict)
    grad_norm: object = 0.0
    updates: int = 0
    steps: int = 0
    tokens: int = 0
    time: float = 0.0

    def add(self, loss_value, metrics: dict, grad_norm, tokens: int) -> None:
        self.loss_sum = self.loss_sum + loss_value
        for k, v in self.loss.with_aliases(metrics).items():
            self.metrics[k] = self.metrics.get(k, 0.0) + v
        if grad_norm is not None:  # only steps that updated have a gradient norm
            self.grad_norm = self.grad_norm + grad_norm
            self.updates += 1
        self.steps += 1
        self.tokens += tokens

    def report(self, step: int, shard: Shard, learning_rate: float, tokens_before: int) -> dict:
        """The metrics line of STEP (one all_sum for everything). `trained_tokens` counts from
        the start of the run (TOKENS_BEFORE this window)."""
        names = sorted(self.metrics)
        sums = [self.loss_sum, *(self.metrics[k] for k in names), self.grad_norm, self.tokens]
        vec = shard.sum(mx.array(sums, dtype=mx.float32)).tolist()
        n = self.steps * shard.size
        tokens = int(round(vec[-1]))
        return {
            "step": step,
            "split": "train",
            "loss": vec[0] / n,
            **{k: vec[1 + j] / n for j, k in enumerate(names)},
            "grad_norm": vec[-2] / shard.size / max(1, self.updates),
            "tokens_per_sec": tokens / max(self.time, 1e-9),
            "trained_tokens": tokens_before + tokens,
            "learning_rate": learning_rate,
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
        }


class Reporter(TrainingCallback):
    """Appends every report to metrics.jsonl (rank 0), hands it to ON_REPORT and WRAPPED (every
    rank), and keeps the progress bar and the validation lines of the log (rank 0)."""

    def __init__(
        self,
        path: Path,
        shard: Shard,
        total: int,
        start: int,
        say: Callable[[str], None],
        on_report: Optional[Callable[[dict], None]] = None,
        wrapped: Optional[TrainingCallback] = None,
    ):
        self.path, self.main, self.say, self.step = path, shard.rank == 0, say, start
        self.on_report, self.wrapped, self.total, self.bar = on_report, wrapped, total, None

    def _bar(self, initial: int):
        from tqdm import tqdm

        return tqdm(
            total=self.total,
            initial=initial,
            desc="train",
            file=sys.stderr,
            disable=not self.main,
            dynamic_ncols=True,
        )

    def _write(self, line: dict) -> None:
        if self.main:
            _append_line(self.path, json.dumps(line) + "\n")
        if self.on_report is not None:
            self.on_report(line)

    def on_step_start(self, step: int) -> None:
        if self.bar is None:
            start = getattr(self.wrapped, "open", None)  # the trackers' runs, before step 1
            if callable(start):
                start()
            self.say(f"step {step}: compiling the step (the progress bar starts after it)...")

    def on_step(self, step: int) -> None:
        """STEP is done (the step a stopped run names). The bar starts after the first step,
        which compiles (seconds to minutes), so its ETA is not the compilation's."""
        if self.bar is None:
            self.bar = self._bar(step)
        else:
            self.bar.update(1)
        self.step = step

    def on_train_loss_report(self, train_info: dict) -> None:
        self._write(train_info)
        if self.wrapped is not None:
            self.wrapped.on_train_loss_report(train_info)
        margin = train_info.get("rewards/margins", float("nan"))
        tok_s = f"{train_info['tokens_per_sec']:.0f}"
        if self.bar is not None:
            self.bar.set_postfix(
                loss=fmt(train_info["loss"]), margin=fmt(margin), tok_s=tok_s, refresh=False
            )

    def on_val_loss_report(self, val_info: dict) -> None:
        self._write(val_info)
        if self.wrapped is not None:
            self.wrapped.on_val_loss_report(val_info)
        margin = val_info.get("rewards/margins", float("nan"))
        self.say(f"step {val_info['step']}: val loss {fmt(val_info['loss'])}, margin {fmt(margin)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        close = getattr(self.wrapped, "close", None)  # the trackers' runs end with the loop's
        if callable(close):
            close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on an error, so that its message starts a line of its own


def _append_line(path: Path, line: str) -> None:
    """Append LINE whole or not at all: a write cut short (a full disk) is taken back, so the
    file never holds half a line."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
