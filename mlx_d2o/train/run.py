"""One training run's context (`Run`), decided whole by `prepare` and frozen.

It holds the resolved settings, the data, the model and its optimizer, the memory plan; and
writes the run's checkpoints and its summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from .. import losses
from ..adapters import CHECKPOINTS_DIR, last_metrics
from ..data import write_jsonl_atomic
from ..distributed import Shard
from ..logprobs import pad_id
from ..models import check_made_for, load, precision
from ..shared_prompt import fallback_note, supports
from .args import TrainArgs
from .checkpoints import (
    SUMMARY_FILE,
    TrainInterrupted,
    adapter_config,
    resume_identity,
    save_adapters,
    save_checkpoint,
    write_json,
)
from .examples import Batch, batch_at, build_examples, collate, make_batches, read_cache, rescore
from .memory import MemoryPlan, batch_lengths, memory_limit, model_shape, plan_inputs, plan_memory
from .output import ONLINE_DIR
from .refresh import refresh_samples, refresh_window
from .step import evaluate, mean_negative_logp, step_seed
from .trainable import build_optimizer, setup_trainable


@dataclass(frozen=True)
class Run:
    """What the loop works on, every field decided by `prepare`; nothing is assigned after
    (the examples' samples aside, which online D2O refreshes in place)."""

    args: TrainArgs  # --num-layers as the number of layers it trains
    shard: Shard
    say: Callable[[str], None]  # the one output channel: progress lines, rank 0 only
    loss: losses.Loss  # the declaration of --loss (`args.loss` is its name)
    settings: dict  # the loss's hyperparameters by name (`losses.settings`)
    model: object
    tokenizer: object
    info: object  # models.load's ModelInfo: fingerprint, dequantized
    manifest: dict
    examples: list
    val_examples: Optional[list]
    batches: list
    iters: int
    optimizer: object
    ref_params: Optional[dict]  # full fine-tune + online refresh: the starting weights
    meta: dict  # adapter_config.json's "d2o" block
    memory: MemoryPlan  # the planned chunk size and what it was chosen under
    pad_id: int

    @property
    def out(self) -> Path:
        return Path(self.args.adapter_path)

    def local_batch(self, it: int) -> list:
        """This rank's share of the examples of step IT (1-based)."""
        batch = batch_at(self.batches, it - 1, self.args.seed)
        return [self.examples[i] for i in self.shard.local(batch)]

    def peak_batch(self) -> Batch:
        """This rank's share of the batch the memory plan says peaks, collated."""
        exs = [self.examples[i] for i in self.shard.local(self.memory.peak_batch)]
        return collate(exs, self.loss.layout(), self.pad_id)[0]

    def validation(self, it: int) -> dict:
        """The validation line of step IT (mean loss and metrics over the held-out cache)."""
        v = evaluate(
            self.model,
            self.val_examples,
            self.loss,
            self.settings,
            self.args.batch_size,
            self.pad_id,
            self.shard,
        )
        return {"step": it, "split": "val", **v}

    def refresh(self, it: int) -> None:
        """Online D2O: sample again, with the policy of step IT, for this rank's share of the
        batches of IT's refresh window; rank 0 keeps its rows in OUT/online/ for inspection."""
        args, shard = self.args, self.shard
        window = refresh_window(args.refresh_every, it, self.iters)
        mine = {i for j in window for i in shard.local(batch_at(self.batches, j, args.seed))}
        examples = [self.examples[i] for i in sorted(mine)]
        seed = step_seed(args.seed, it, shard.rank)
        fresh = refresh_samples(
            self.model, self.tokenizer, examples, self.manifest, seed, self.ref_params,
            args.max_seq_length,
        )  # fmt: skip
        if shard.rank == 0:  # what the policy sampled (rank 0's share under mlx.launch)
            write_jsonl_atomic(self.out / ONLINE_DIR / f"samples-step{it:07d}.jsonl", fresh)

    def probe(self) -> tuple[list, str]:
        """The prompts whose mean log π(negative) the summary reports before and after: the
        validation set, or a fixed share of the training prompts (256 at most: a forward pass
        over every negative of a large set would cost a good part of an epoch)."""
        if self.val_examples:
            return self.val_examples, "validation"
        return self.examples[:: max(1, len(self.examples) // 256)][:256], "training"

    def checkpoint(self, step: int, trained_tokens: int) -> None:
        """Adapters and a resumable checkpoint of STEP (rank 0 writes)."""
        if self.shard.rank != 0:
            return
        cfg = adapter_config(self.args, {**self.meta, "steps": step})
        state = {
            "step": step,
            "samples_fingerprint": self.manifest.get("data_fingerprint"),
            "trained_tokens": trained_tokens,
            "identity": resume_identity(self.args),
            "epoch": step // len(self.batches),
            "batch_in_epoch": step % len(self.batches),
        }
        save_checkpoint(self.out, step, self.model, self.optimizer, cfg, state)
        save_adapters(self.out, self.model, cfg)

    def interrupted(self, signal_name: Optional[str], it: int, tokens: int) -> TrainInterrupted:
        """Save the checkpoint of step IT after a SIGINT/SIGTERM; the exception that says so."""
        self.say(f"{signal_name or 'a signal'}: saving a checkpoint of step {it}...")
        self.checkpoint(it, tokens)
        # Under mlx.launch every rank stops at this step: the others wait until rank 0 has
        # saved, or their exit could make the launcher end rank 0 in the middle of the write.
        self.shard.all_ok(True)
        ckpt = self.out / CHECKPOINTS_DIR / f"{it:07d}"
        shard = self.shard
        return TrainInterrupted(signal_name or "a signal", it, ckpt, shard.rank, shard.size)

    def finish(self, last: dict) -> dict:
        """The summary of the run (written to train_summary.json by rank 0)."""
        probe, name = self.probe()
        self.say(f"measuring log π(negative) on the {name} set ({len(probe)} prompts)...")
        # "Before" is the reference's log π(negative), which the cache holds for these tokens.
        before = sum(e.ref_negative for e in probe) / len(probe)
        after = mean_negative_logp(self.model, probe, self.args.batch_size, self.pad_id, self.shard)
        summary = {
            "steps": self.iters,
            "last": last,
            "adapter_path": str(self.out),
            "probe_set": name,
            "rank": self.shard.rank,
            "logps_negative_before": before,
            "logps_negative_after": after,
        }
        self.say(
            f"mean log π(negative) on the {name} set ({len(probe)} prompts): before "
            f"{before:.3f}, after {after:.3f} ({after - before:+.3f})"
        )
        if self.shard.rank == 0:
            write_json(self.out / SUMMARY_FILE, summary)
        return summary

    def already_finished(self, step: int) -> dict:
        """The summary of a --resume whose run had already trained its steps: nothing to do,
        but the final measurement when a stop during it left no train_summary.json."""
        loss_value = (
            last_metrics(self.out).get("train", (None, None))[0] if self.shard.rank == 0 else None
        )
        if not self.shard.all_ok(self.shard.rank != 0 or (self.out / SUMMARY_FILE).exists()):
            return self.finish({} if loss_value is None else {"loss": loss_value})
        self.say(
            f"{self.out}: this run already finished ({step} steps, --iters {self.iters}); "
            "nothing to do (resume with a larger --iters or --epochs to train on)"
        )
        return {
            "steps": step,
            "last": {} if loss_value is None else {"loss": loss_value},
            "adapter_path": str(self.out),
            "rank": self.shard.rank,
            "already_finished": True,
        }


def prepare(args: TrainArgs, shard: Shard, say: Callable[[str], None]) -> Run:
    """Read the caches, load the model, build examples and batches, plan the memory, make it
    trainable: every setting resolved here, once."""
    loss = losses.get(args.loss)
    settings = losses.settings(loss, args)
    manifest, rows = read_cache(args.samples)
    model, tokenizer, info = load(args.model, dequantize=args.dequantize, return_info=True)
    check_made_for(args.samples, manifest, info.fingerprint, "this cache")
    _check_precision(manifest, model, info, say)
    if note := fallback_note(model):
        say(note)
    examples, val_examples = _examples(args, model, tokenizer, info, rows, say)
    args = _fit_layers(args, len(model.layers), say)
    batches = make_batches(examples, args.batch_size)
    iters = args.iters or max(1, int(round((args.epochs or 1) * len(batches))))
    K = len(examples[0].samples) if loss.uses("samples") else 1
    shape, step = model_shape(info, args.model), "shared" if supports(model) else "full"
    memory = plan_memory(
        lambda p, r, chunk: plan_inputs(
            shape, loss.layout(), K, vars(args), p, r, chunk, step, args.batch_size // shard.size
        ),
        batch_lengths(batches, examples, loss.layout()),
        memory_limit(args.memory_limit),
        args.chunk_size,
        say,
    )
    optimizer, ref_params = _make_trainable(model, args, shard, iters)
    K = len(examples[0].samples) if loss.uses("samples") else manifest.get("num_samples")
    meta = run_meta(args, K, iters, manifest, info, shard.size)
    return Run(
        args, shard, say, loss, settings, model, tokenizer, info, manifest, examples,
        val_examples, batches, iters, optimizer, ref_params, meta, memory, pad_id(tokenizer),
    )  # fmt: skip


def _examples(args: TrainArgs, model, tokenizer, info, rows: list, say) -> tuple[list, list]:
    """(training examples, validation examples or None), the sequences cut to
    --max-seq-length (or lacking a reference score) scored by the model, still the reference."""
    examples, to_rescore = build_examples(rows, tokenizer, args, args.samples, say)
    val_examples = None
    if args.val_samples:
        vman, vrows = read_cache(args.val_samples)
        check_made_for(args.val_samples, vman, info.fingerprint, "this cache")
        val_examples, more = build_examples(vrows, tokenizer, args, args.val_samples, say)
        to_rescore += more
    if to_rescore:  # before any adapter exists, the model is the reference
        n_chosen = sum(w == "chosen" for _, w, _ in to_rescore)
        say(
            f"scoring {len(to_rescore)} sequences with the reference ({n_chosen} 'chosen' "
            f"responses the cache has no reference score for, {len(to_rescore) - n_chosen} cut "
            f"to --max-seq-length {args.max_seq_length})"
        )
        rescore(model, to_rescore)
    return examples, val_examples


def _check_precision(manifest: dict, model, info, say: Callable[[str], None]) -> None:
    """Warn when the cache's reference was scored in another precision than the policy trains
    in (`reference_precision`, or for older caches the generator's `dequantized` flag)."""
    ref = manifest.get("reference_precision")
    if ref is not None:
        now = precision(model)
        if ref != now:
            say(
                f"warning: the cache's reference was scored in {ref}, and the policy trains in "
                f"{now} now: policy and reference differ at step 0 (sample and train with the "
                "same --dequantize / --keep-quantized)"
            )
        return
    if manifest.get("dequantized") is not None and manifest["dequantized"] != info.dequantized:
        then = "de" if manifest["dequantized"] else "kept "
        now = "de" if info.dequantized else "kept "
        say(
            f"warning: the cache was scored with the model {then}quantized, and it trains "
            f"{now}quantized now: policy and reference differ slightly at step 0"
        )


def _fit_layers(args: TrainArgs, n_layers: int, say: Callable[[str], None]) -> TrainArgs:
    """--num-layers as the number of layers it trains: -1 (all) and, as mlx-lm does, more than
    the model has (said) become the model's count, so adapter_config.json tells the truth."""
    if args.num_layers > n_layers:
        say(f"note: --num-layers {args.num_layers}: the model has {n_layers} layers; training all")
    if args.num_layers == -1 or args.num_layers > n_layers:
        return dataclasses.replace(args, num_layers=n_layers)
    return args


def _make_trainable(model, args: TrainArgs, shard: Shard, iters: int) -> tuple:
    """(optimizer, starting weights or None): MODEL made trainable as ARGS say, in place."""
    mx.random.seed(args.seed)
    setup_trainable(model, args)
    ref_params = None
    if args.fine_tune_type == "full" and args.refresh_every:
        # Online refresh scores with the starting weights: keep a copy of the trained ones.
        ref_params = {k: mx.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    # Every rank starts from rank 0's adapter init, whatever each one's RNG did.
    model.update(shard.broadcast(model.trainable_parameters()))
    optimizer = build_optimizer(args, iters // args.grad_accumulation_steps)
    optimizer.init(model.trainable_parameters())
    return optimizer, ref_params


def run_meta(
    args: TrainArgs, K: Optional[int], iters: int, manifest: dict, info, world_size: int
) -> dict:
    """adapter_config.json's "d2o" block: what the run was, for eval, fuse and the card."""
    return {
        "loss": args.loss,
        "alpha": args.alpha,
        "beta": args.beta,
        **(args.loss_params or {}),
        "K": K,
        "iters": iters,
        "batch_size": args.batch_size,
        "grad_accumulation_steps": args.grad_accumulation_steps,
        "refresh_every": args.refresh_every,
        "samples": str(args.samples),
        "dataset": manifest.get("data"),
        "data_fingerprint": manifest.get("data_fingerprint"),
        "base_model": args.model,
        "base_model_fingerprint": info.fingerprint,
        "dequantized": info.dequantized,
        "world_size": world_size,
        "steps": 0,
    }
