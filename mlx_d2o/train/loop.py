"""`train(args)`: the training loop, in one screen.

`train(args)`: the training loop, read top to bottom; the parts live beside it (set-up in
`run`, the step in `step`, files in `checkpoints`, reports in `report`, online D2O in
`refresh`). It follows mlx-lm's tuner/trainer.py `train`, reporting through a callback."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx_lm.tuner.callbacks import TrainingCallback

from ..adapters import METRICS_FILE
from ..distributed import Shard, peer_exit
from ..errors import D2OError
from ..signals import graceful_stop
from .args import TrainArgs, check_args
from .checkpoints import nan_message, stopped_message
from .examples import collate
from .memory import fit_memory
from .output import claim_output, disk_errors, open_output
from .refresh import refresh_due, refresh_note
from .report import Reporter, Window
from .run import prepare
from .step import make_loss_fn, make_step, step_seed
from .tracking import with_trackers
from .trainable import checkpointed_layers


def train(
    args: TrainArgs,
    on_report: Optional[Callable[[dict], None]] = None,
    log: Optional[Callable[[str], None]] = None,
    training_callback: Optional[TrainingCallback] = None,
) -> dict:
    """Train ARGS.model on the cache ARGS.samples; write adapters, checkpoints and metrics to
    ARGS.adapter_path. Returns a summary (steps, last metrics, log π(negative) before/after).
    SIGINT/SIGTERM finish the current update, save a checkpoint and raise `TrainInterrupted`.

    Args:
        args: the settings (see `TrainArgs`).
        on_report: called with each metrics line (after it is written), e.g. by tests.
        log: where progress lines go (default: stderr, rank 0 only).
        training_callback: an mlx-lm `TrainingCallback`, given every metrics line too.
    """
    shard = Shard.current()
    say = _speaker(log, shard)
    check_args(args, shard.size)
    training_callback = with_trackers(args, shard, training_callback)
    with disk_errors(Path(args.adapter_path)), claim_output(args, shard, say):
        run = prepare(args, shard, say)
        args, model, optimizer, iters = run.args, run.model, run.optimizer, run.iters  # resolved
        G = args.grad_accumulation_steps
        start, trained_tokens = open_output(args, model, optimizer, run.manifest, shard, say)
        if start >= iters:
            return run.already_finished(start)
        loss_fn = make_loss_fn(run.loss, run.settings, args.grad_checkpoint)
        step, state = make_step(model, optimizer, loss_fn, G)
        model.train()
        mx.reset_peak_memory()
        refresh_note(args.refresh_every, start, say)
        grad, window, last = None, Window(run.loss), {}
        stopped = lambda cause: stopped_message(run.out, reporter.step, cause)  # noqa: E731
        with (
            checkpointed_layers(model, args.grad_checkpoint),
            Reporter(
                run.out / METRICS_FILE, shard, iters, start, say, on_report, training_callback
            ) as reporter,
            graceful_stop() as stop,  # outside peer_exit: under mlx.launch SIGTERM is a lost peer
            peer_exit(shard, stopped),
        ):
            # The plan's chunk size, checked by a measured step on the batch that peaks.
            chunk_size = fit_memory(step, run.peak_batch, run.memory, say)
            if start == 0 and args.steps_per_eval and run.val_examples:
                validate(run.validation, 0, reporter)
            for it in range(start + 1, iters + 1):
                if refresh_due(args.refresh_every, it, start):
                    run.refresh(it)
                mx.random.seed(step_seed(args.seed, it, shard.rank))
                reporter.on_step_start(it)
                tic = time.perf_counter()
                batch, ntoks = collate(run.local_batch(it), run.loss.layout(), run.pad_id)
                loss_value, metrics, grad_norm, grad = step(batch, grad, it % G == 0, chunk_size)
                mx.eval(state, loss_value, metrics, grad_norm, grad)
                window.time += time.perf_counter() - tic
                reporter.on_step(it)
                stopping = stop_all_ranks(shard, loss_value, stop.requested, it, run.out)
                window.add(loss_value, metrics, grad_norm if it % G == 0 else None, ntoks)
                if it % args.steps_per_report == 0 or it == iters:
                    lr = float(optimizer.learning_rate.item())
                    last = window.report(it, shard, lr, trained_tokens)
                    trained_tokens = last["trained_tokens"]
                    reporter.on_train_loss_report(last)
                    window = Window(run.loss)
                if args.steps_per_eval and run.val_examples:
                    if it % args.steps_per_eval == 0 or it == iters:
                        validate(run.validation, it, reporter)
                if stopping and it % G == 0:  # the update is whole: save it, and stop
                    reporter.close()
                    raise run.interrupted(stop.signal_name, it, trained_tokens)
                if args.save_every and it % args.save_every == 0 and it < iters:
                    run.checkpoint(it, trained_tokens)
            reporter.close()
            say(f"saving the adapters of step {iters} in {run.out}...")
            run.checkpoint(iters, trained_tokens)
        return run.finish(last)


def stop_all_ranks(shard: Shard, loss_value: mx.array, requested: bool, it: int, out) -> bool:
    """Whether any rank was asked to stop; `D2OError` when any rank's loss of step IT is not
    finite. Summed over the ranks, so a NaN on one rank, or a signal to one, stops all alike."""
    flags = mx.stack([loss_value.astype(mx.float32), mx.array(float(requested))])
    loss_total, stopping = shard.sum(flags).tolist()
    if not math.isfinite(loss_total):
        raise D2OError(nan_message(loss_total, it, out))
    return bool(stopping)


def validate(validation: Callable[[int], dict], it: int, reporter: Reporter) -> None:
    """Report VALIDATION(IT) (`Run.validation`: the held-out loss and metrics) and its time."""
    tic = time.perf_counter()
    line = validation(it)
    reporter.on_val_loss_report({**line, "val_time": time.perf_counter() - tic})


def _speaker(log: Optional[Callable[[str], None]], shard: Shard) -> Callable[[str], None]:
    """Where progress lines go: LOG (default stderr), on rank 0 only."""
    if shard.rank != 0:
        return lambda s: None
    return log or (lambda s: print(s, file=sys.stderr, flush=True))
