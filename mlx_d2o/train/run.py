"""One training run's fixed context (`Run`): the data, the model and its optimizer, set up by
`prepare` before the loop, and what the run writes at its checkpoints and at its end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from .. import losses
from ..adapters import last_metrics
from ..distributed import Shard
from ..models import check_made_for, load, precision
from ..shared_prompt import fallback_note
from .args import TrainArgs
from .checkpoints import (
    SUMMARY_FILE,
    adapter_config,
    resume_identity,
    save_adapters,
    save_checkpoint,
    write_json,
)
from .examples import batch_at, build_examples, make_batches, read_cache, rescore
from .memory import MemoryPlan, plan_memory
from .step import mean_negative_logp
from .trainable import build_optimizer, setup_trainable


@dataclass
class Run:
    """What the loop works on; set up once by `prepare`, not changed by the loop (except
    examples' samples, refreshed online)."""

    args: TrainArgs
    shard: Shard
    say: Callable[[str], None]
    loss: losses.Loss
    model: object
    tokenizer: object
    info: object  # models.load's ModelInfo: fingerprint, dequantized
    manifest: dict
    examples: list
    val_examples: Optional[list]
    batches: list = field(default_factory=list)
    iters: int = 0
    optimizer: object = None
    ref_params: Optional[dict] = None  # full fine-tune + online refresh: the starting weights
    meta: dict = field(default_factory=dict)  # adapter_config.json's "d2o" block
    memory: Optional[MemoryPlan] = None  # the chunk size and what it was chosen under

    @property
    def out(self) -> Path:
        return Path(self.args.adapter_path)

    @property
    def settings(self) -> dict:
        """The loss's parameters."""
        return {"alpha": self.args.alpha, "beta": self.args.beta}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else 0

    def local_batch(self, it: int) -> list:
        """This rank's share of the examples of step IT (1-based)."""
        batch = batch_at(self.batches, it - 1, self.args.seed)
        return [self.examples[i] for i in self.shard.local(batch)]

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
        """The summary of a --resume whose run had already trained its steps: nothing to do."""
        loss = (
            last_metrics(self.out).get("train", (None, None))[0] if self.shard.rank == 0 else None
        )
        self.say(
            f"{self.out}: this run already finished ({step} steps, --iters {self.iters}); "
            "nothing to do (resume with a larger --iters or --epochs to train on)"
        )
        return {
            "steps": step,
            "last": {} if loss is None else {"loss": loss},
            "adapter_path": str(self.out),
            "rank": self.shard.rank,
            "already_finished": True,
        }


def prepare(args: TrainArgs, shard: Shard, say: Callable[[str], None]) -> Run:
    """Read the caches, load the model, build examples and batches, make it trainable."""
    manifest, rows = read_cache(args.samples)
    model, tokenizer, info = load(args.model, dequantize=args.dequantize, return_info=True)
    check_made_for(args.samples, manifest, info.fingerprint, "this cache")
    _check_precision(manifest, model, info, say)
    if note := fallback_note(model):
        say(note)
    examples, to_rescore = build_examples(rows, tokenizer, args, args.samples)
    val_examples = None
    if args.val_samples:
        vman, vrows = read_cache(args.val_samples)
        check_made_for(args.val_samples, vman, info.fingerprint, "this cache")
        val_examples, more = build_examples(vrows, tokenizer, args, args.val_samples)
        to_rescore += more
    if to_rescore:  # before any adapter exists, the model is the reference
        n_chosen = sum(w == "chosen" for _, w, _ in to_rescore)
        say(
            f"scoring {len(to_rescore)} sequences with the reference ({n_chosen} 'chosen' "
            f"responses the cache has no reference score for, {len(to_rescore) - n_chosen} cut "
            f"to --max-seq-length {args.max_seq_length})"
        )
        rescore(model, to_rescore)
    loss = losses.get(args.loss)
    args = _fit_layers(args, len(model.layers), say)
    run = Run(args, shard, say, loss, model, tokenizer, info, manifest, examples, val_examples)
    run.batches = make_batches(examples, args.batch_size)
    run.iters = args.iters or max(1, int(round((args.epochs or 1) * len(run.batches))))
    run.memory = plan_memory(run)
    _make_trainable(run)
    return run


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


def _make_trainable(run: Run) -> None:
    args, model = run.args, run.model
    mx.random.seed(args.seed)
    setup_trainable(model, args)
    if args.fine_tune_type == "full" and args.refresh_every:
        # Online refresh scores with the starting weights: keep a copy of the trained ones.
        run.ref_params = {k: mx.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    # Every rank starts from rank 0's adapter init, whatever each one's RNG did.
    model.update(run.shard.broadcast(model.trainable_parameters()))
    run.optimizer = build_optimizer(args, run.iters // args.grad_accumulation_steps)
    run.optimizer.init(model.trainable_parameters())
    K = (
        len(run.examples[0].samples)
        if run.loss.uses("samples")
        else run.manifest.get("num_samples")
    )
    run.meta = {
        "loss": args.loss,
        "alpha": args.alpha,
        "beta": args.beta,
        "K": K,
        "iters": run.iters,
        "batch_size": args.batch_size,
        "grad_accumulation_steps": args.grad_accumulation_steps,
        "refresh_every": args.refresh_every,
        "samples": str(args.samples),
        "dataset": run.manifest.get("data"),
        "data_fingerprint": run.manifest.get("data_fingerprint"),
        "base_model": args.model,
        "base_model_fingerprint": run.info.fingerprint,
        "dequantized": run.info.dequantized,
        "world_size": run.shard.size,
        "steps": 0,
    }
