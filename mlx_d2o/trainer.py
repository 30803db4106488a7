"""`mlx-d2o train`: LoRA / DoRA / full fine-tuning from a sample cache with D2O and its baselines.

The loop follows mlx-lm's tuner/trainer.py (a compiled step over model + optimizer + RNG state,
gradient accumulation, `average_gradients` across ranks) with what preference training adds:

- one example is a prompt with its K cached samples and the human negative (+ `chosen` for DPO);
  a step runs ONE batched forward over all B*(K+1) sequences and splits the summed log-probs
  into [B, K] and [B] for the loss (`losses.LOSSES`). Reference log-probs come from the cache.
- batches are built once from examples sorted by token length, then shuffled by seed (mlx-lm
  0.32's own sorting is broken, issue #596, so none of its batching is reused);
- checkpoints hold everything a resumed run needs to repeat the uninterrupted one step for step;
- under `mlx.launch` each rank takes its share of every global batch (see `Shard`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from . import data as D
from .errors import D2OError
from .io import atomic_dir, atomic_path, write_text_atomic
from .logprobs import pad, score, sequence_logps
from .losses import LOSSES

# Which sequences a loss reads: D2O needs the samples, DPO the chosen, all the negative.
USES_SAMPLES = {"d2o", "d2o-instance"}
USES_CHOSEN = {"dpo"}
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class TrainArgs:
    """Settings of `mlx-d2o train`; names are `mlx_lm.lora`'s where it has them."""

    model: str = "smollm2-135m"
    samples: Optional[str] = None  # cache directory made by `mlx-d2o sample`
    adapter_path: str = "adapters"
    loss: str = "d2o"
    alpha: float = 0.1
    beta: float = 0.1
    iters: Optional[int] = None  # micro-batches, as in mlx_lm.lora; default: one epoch
    epochs: Optional[float] = None
    batch_size: int = 4  # prompts per global batch
    learning_rate: float = 1e-5
    lr_schedule: Optional[object] = None  # "cosine" | "linear" | "constant" | mlx-lm's {name, arguments, warmup}
    warmup: int = 0
    optimizer: str = "adam"
    fine_tune_type: str = "lora"
    num_layers: int = 16
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_dropout: float = 0.0
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    max_seq_length: int = 2048
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_samples: Optional[str] = None
    save_every: int = 100
    resume: bool = False
    refresh_every: int = 0
    seed: int = 0
    dequantize: Optional[bool] = None  # None: on the CPU yes (fast float32); False: QLoRA

    def lora_parameters(self) -> dict:
        return {"rank": self.lora_rank, "scale": self.lora_scale, "dropout": self.lora_dropout}


DEFAULTS = {k: v for k, v in asdict(TrainArgs()).items()}


# ---------------------------------------------------------------------------------------------
# Cache -> examples
# ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    """One prompt, tokenized exactly as the reference scored it."""

    id: str
    messages: list
    prompt: list
    negative: list
    samples: list  # K token lists
    ref_negative: float
    ref_samples: list
    chosen: Optional[list] = None
    ref_chosen: Optional[float] = None
    row: dict = field(default_factory=dict, repr=False)

    def length(self) -> int:
        longest = max([len(self.negative)] + [len(s) for s in self.samples] + [len(self.chosen or [])])
        return len(self.prompt) + longest


def read_cache(path) -> tuple[dict, list]:
    """(manifest, rows) of a sample cache, through `mlx_d2o.cache` (the sample step's reader)."""
    path = Path(path)
    if not path.is_dir():
        raise D2OError(f"{path}: no such sample cache (make one with `mlx-d2o sample`)")
    try:
        from .cache import read_cache as _read
    except ImportError:  # the sample step's module is not there: read its documented layout
        _read = _read_cache_files
    manifest, rows = _read(path)
    if not rows:
        raise D2OError(f"{path}: the cache holds no rows")
    return manifest, rows


def _read_cache_files(path: Path) -> tuple[dict, list]:
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise D2OError(f"{path}: not a sample cache (manifest.json is missing)")
    manifest = json.loads(mpath.read_text())
    rows = [obj for _, obj in D.read_json_rows(path / "samples.jsonl")]
    return manifest, rows


def manifest_fingerprint(manifest: dict) -> Optional[str]:
    for key in ("model_fingerprint", "base_model_fingerprint"):
        if manifest.get(key):
            return manifest[key]
    m = manifest.get("model")
    return m.get("fingerprint") if isinstance(m, dict) else None


def check_cache_model(path, manifest: dict, fingerprint: str) -> None:
    made_for = manifest_fingerprint(manifest)
    if made_for is None:
        raise D2OError(f"{path}/manifest.json: field 'model_fingerprint': missing, cannot tell which model made this cache")
    if made_for != fingerprint:
        raise D2OError(
            f"{path}: this cache was sampled and scored with another model (fingerprint {made_for}, "
            f"the model given has {fingerprint}); sample again with this model, or pass the model the cache was made with"
        )


def build_examples(rows: list, tokenizer, args: TrainArgs, path) -> tuple[list, list]:
    """Tokenize cache rows; returns (examples, rows_to_rescore).

    A sequence longer than --max-seq-length keeps its prompt and loses the end of its response;
    its cached reference score was for the whole response, so it is listed for re-scoring with
    the reference model (`rescore`), never paired with a score of other tokens. Rows whose
    prompt alone leaves no room for a response are skipped with a warning.
    """
    need_samples, need_chosen = args.loss in USES_SAMPLES, args.loss in USES_CHOSEN
    examples, to_rescore, skipped, K = [], [], [], None
    for i, row in enumerate(rows, 1):
        rid = str(row.get("id", i))
        ref = row.get("ref_logps")
        if not isinstance(ref, dict) or "rejected" not in ref or (need_samples and "samples" not in ref):
            raise D2OError(f"{path}: row {rid!r}: field 'ref_logps': missing; the cache has no reference scores "
                           "(run `mlx-d2o sample` to the end, or let it resume)")
        if need_chosen and not row.get("chosen"):
            raise D2OError(f"{path}: row {rid!r}: field 'chosen': missing; --loss dpo needs data with a 'chosen' "
                           "response for every prompt (use d2o, npo or ga for negatives-only data)")
        # The row's own messages: `sample` puts --system-prompt first while generating only, and
        # scores (so we train) on the record's prompt.
        msgs = row["messages"]
        prompt = D.prompt_tokens(tokenizer, msgs)
        if len(prompt) >= args.max_seq_length - 1:
            skipped.append(rid)
            continue
        room = args.max_seq_length - len(prompt)
        ref_tokens = row.get("ref_tokens") or {}

        def tokens_of(text, cached_count, what):
            ids = D.response_tokens(tokenizer, msgs, text, prompt)
            if cached_count is not None and cached_count != len(ids):
                raise D2OError(f"{path}: row {rid!r}: field 'ref_tokens.{what}': the reference scored {cached_count} tokens "
                               f"but this model's tokenizer gives {len(ids)}; the cache was made with another tokenizer or system prompt")
            return ids[:room], len(ids) > room

        negative, cut = tokens_of(row["rejected"], ref_tokens.get("rejected"), "rejected")
        ex = Example(rid, msgs, prompt, negative, [], float(ref["rejected"]), [], row=row)
        if cut:
            to_rescore.append((ex, "negative", None))
        if need_samples:
            texts, counts = row["samples"], ref_tokens.get("samples") or [None] * len(row["samples"])
            if K is None:
                K = len(texts)
            if len(texts) != K or len(ref["samples"]) != K:
                raise D2OError(f"{path}: row {rid!r}: field 'samples': {len(texts)} samples, expected K={K} like the rows before")
            for k, (text, n) in enumerate(zip(texts, counts)):
                ids, cut = tokens_of(text, n, f"samples[{k}]")
                ex.samples.append(ids)
                ex.ref_samples.append(float(ref["samples"][k]))
                if cut:
                    to_rescore.append((ex, "samples", k))
        if need_chosen:
            ex.chosen, cut = tokens_of(row["chosen"], ref_tokens.get("chosen"), "chosen")
            ex.ref_chosen = ref.get("chosen")
            if cut or ex.ref_chosen is None:
                to_rescore.append((ex, "chosen", None))
        examples.append(ex)
    if skipped:
        print(f"warning: {len(skipped)} rows skipped: their prompt alone fills --max-seq-length {args.max_seq_length} "
              f"({', '.join(skipped[:5])}{'...' if len(skipped) > 5 else ''})", file=sys.stderr)
    if not examples:
        raise D2OError(f"{path}: no row fits --max-seq-length {args.max_seq_length}")
    return examples, to_rescore


def rescore(model, rescore_list: list, batch_size: int = 8) -> None:
    """Reference log-probs of truncated sequences (and of `chosen` when the cache lacks them).

    MODEL must be the reference: the base before any adapter exists, or inside `reference_model`."""
    if not rescore_list:
        return
    pairs = []
    for ex, what, k in rescore_list:
        resp = ex.samples[k] if what == "samples" else ex.negative if what == "negative" else ex.chosen
        pairs.append((ex.prompt, resp))
    logps, _ = score(model, pairs, batch_size)
    for (ex, what, k), lp in zip(rescore_list, logps):
        if what == "samples":
            ex.ref_samples[k] = lp
        elif what == "negative":
            ex.ref_negative = lp
        else:
            ex.ref_chosen = lp


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------

def make_batches(examples: list, batch_size: int) -> list:
    """Global batches of BATCH_SIZE example indices, grouped by token length.

    Examples sorted by length, then cut into consecutive groups: a batch holds examples of
    similar length, so padding stays small. A remainder smaller than a batch is dropped
    (as mlx-lm does), so every rank always gets an equal share.
    """
    if len(examples) < batch_size:
        raise D2OError(f"--batch-size {batch_size} is larger than the {len(examples)} usable prompts in the cache")
    order = sorted(range(len(examples)), key=lambda i: (examples[i].length(), i))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def batch_at(batches: list, it: int, seed: int) -> list:
    """The batch of iteration IT (0-based): epoch e visits all batches in an order drawn from seed + e.

    A pure function of (it, seed): resuming at step s needs no saved iterator, only s.
    """
    epoch, pos = divmod(it, len(batches))
    order = np.random.default_rng(seed + epoch).permutation(len(batches))
    return batches[order[pos]]


def collate(examples: list, loss: str, pad_id: int):
    """Token arrays for one forward pass over a batch, and the reference log-probs.

    Rows: B*K samples (prompt-major), then B negatives, then B chosen. Returns
    ((tokens, prompt_lengths, lengths, refs...), number of real tokens).
    """
    seqs, plens = [], []
    if loss in USES_SAMPLES:
        for e in examples:
            seqs += [e.prompt + s for s in e.samples]
            plens += [len(e.prompt)] * len(e.samples)
    seqs += [e.prompt + e.negative for e in examples]
    plens += [len(e.prompt) for e in examples]
    if loss in USES_CHOSEN:
        seqs += [e.prompt + e.chosen for e in examples]
        plens += [len(e.prompt) for e in examples]
    tokens, lengths = pad(seqs, pad_id)
    refs = [mx.array([e.ref_negative for e in examples], dtype=mx.float32)]
    if loss in USES_SAMPLES:
        refs.append(mx.array([e.ref_samples for e in examples], dtype=mx.float32))
    if loss in USES_CHOSEN:
        refs.append(mx.array([e.ref_chosen for e in examples], dtype=mx.float32))
    return (tokens, mx.array(plens, dtype=mx.int32), lengths, *refs), sum(len(s) for s in seqs)


def make_loss(loss: str, beta: float, alpha: float) -> Callable:
    """loss_fn(model, tokens, prompt_lengths, lengths, ref_negative[, ref_samples | ref_chosen])
    -> (loss, metrics); one forward pass, split by the row layout of `collate`."""
    if loss not in LOSSES:
        raise D2OError(f"unknown --loss {loss!r} (expected one of {', '.join(LOSSES)})")
    fn = LOSSES[loss]

    def loss_fn(model, tokens, plens, lens, ref_negative, *refs):
        logps, counts = sequence_logps(model, tokens, plens, lens)
        B = ref_negative.shape[0]
        if loss in USES_SAMPLES:
            ref_samples = refs[0]
            n = ref_samples.size
            return fn(logps[:n].reshape(ref_samples.shape), logps[n:], ref_samples, ref_negative, beta=beta, alpha=alpha)
        if loss in USES_CHOSEN:
            value, metrics = fn(logps[B:], logps[:B], refs[0], ref_negative, beta=beta)
            # dpo_loss reports the same value as rewards/rejected and rewards/negative; two
            # outputs that compile's simplification merges into one crash mx.compile (MLX
            # 0.32.4, "_Map_base::at"), so the copy is made outside (`with_aliases`).
            metrics.pop("rewards/negative", None)
            return value, metrics
        if loss == "npo":
            return fn(logps, ref_negative, beta=beta)
        return fn(logps, counts)  # ga

    return loss_fn


def with_aliases(metrics: dict) -> dict:
    """Metrics under the names every loss shares (see the DPO note in `make_loss`)."""
    if "rewards/rejected" in metrics and "rewards/negative" not in metrics:
        metrics = {**metrics, "rewards/negative": metrics["rewards/rejected"]}
    return metrics


# ---------------------------------------------------------------------------------------------
# Model set-up
# ---------------------------------------------------------------------------------------------

def setup_trainable(model, args: TrainArgs) -> None:
    """Freeze the base, then add LoRA/DoRA layers (mlx-lm's own) or unfreeze the last layers."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers)
    if args.num_layers > n_layers:
        raise D2OError(f"--num-layers {args.num_layers}: the model has only {n_layers} layers")
    model.freeze()
    if args.fine_tune_type == "full":
        for layer in model.layers[-max(args.num_layers, 0):]:
            layer.unfreeze()
    elif args.fine_tune_type in ("lora", "dora"):
        linear_to_lora_layers(model, args.num_layers, args.lora_parameters(), use_dora=args.fine_tune_type == "dora")
    else:
        raise D2OError(f"unknown --fine-tune-type {args.fine_tune_type!r} (expected lora, dora or full)")


@contextmanager
def reference_model(model, ref_params: Optional[dict] = None):
    """The model as the frozen reference, in place and without loading it twice: LoRA/DoRA layers
    swapped for the base layers they wrap (the sample step's `adapters_disabled`), or, for full
    fine-tuning, the saved starting weights REF_PARAMS put back for the duration."""
    from .sampling import adapters_disabled

    current = None
    if ref_params:
        current = dict(tree_flatten(model.trainable_parameters()))
        model.update(tree_unflatten(list(ref_params.items())))
    try:
        with adapters_disabled(model):
            yield model
    finally:
        if current is not None:
            model.update(tree_unflatten(list(current.items())))


@contextmanager
def checkpointed_layers(model, enabled: bool):
    """mlx-lm's grad_checkpoint patches the layer class for the whole process; undo it afterwards
    so that one training run does not change the next one's model in the same process."""
    if not enabled:
        yield
        return
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(model.layers[0])
    original = cls.__call__
    grad_checkpoint(model.layers[0])
    try:
        yield
    finally:
        cls.__call__ = original


def build_optimizer(args: TrainArgs, total_updates: int):
    from mlx_lm.tuner.utils import build_schedule

    lr = args.learning_rate
    sched = args.lr_schedule
    if isinstance(sched, dict):
        lr = build_schedule(sched)
    elif sched not in (None, "constant"):
        if sched not in LR_SCHEDULES:
            raise D2OError(f"unknown --lr-schedule {sched!r} (expected {', '.join(LR_SCHEDULES)})")
        decay = max(1, total_updates - args.warmup)
        main = optim.cosine_decay(lr, decay) if sched == "cosine" else optim.linear_schedule(lr, 0.0, decay)
        lr = main
        if args.warmup:
            lr = optim.join_schedules([optim.linear_schedule(0.0, args.learning_rate, args.warmup), main], [args.warmup])
    elif args.warmup:
        lr = optim.join_schedules([optim.linear_schedule(0.0, args.learning_rate, args.warmup),
                                   lambda _: args.learning_rate], [args.warmup])
    opts = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}
    if args.optimizer not in opts:
        raise D2OError(f"unknown --optimizer {args.optimizer!r} (expected {', '.join(opts)})")
    return opts[args.optimizer](learning_rate=lr)


# ---------------------------------------------------------------------------------------------
# Files: adapters, checkpoints, metrics
# ---------------------------------------------------------------------------------------------

def _save_safetensors_atomic(path: Path, arrays: dict, metadata: Optional[dict] = None) -> None:
    # mx.save_safetensors appends ".safetensors" to names without it, so the temp name keeps it.
    with atomic_path(path, suffix=".safetensors") as tmp:
        mx.save_safetensors(tmp, arrays, metadata=metadata or {})


def _write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def adapter_config(args: TrainArgs, d2o_meta: dict) -> dict:
    """mlx-lm's adapter_config.json (what `mlx_lm.load(..., adapter_path=)` reads), plus ours under "d2o"."""
    cfg = {k: v for k, v in asdict(args).items() if k not in ("lora_rank", "lora_scale", "lora_dropout")}
    cfg["lora_parameters"] = args.lora_parameters()
    cfg["d2o"] = d2o_meta
    return cfg


def save_adapters(out: Path, model, config: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors_atomic(out / "adapters.safetensors", dict(tree_flatten(model.trainable_parameters())))
    _write_json_atomic(out / "adapter_config.json", config)


CKPT_DIR = "checkpoints"


def save_checkpoint(out: Path, step: int, model, optimizer, config: dict, state: dict, keep: int = 2) -> Path:
    """OUT/checkpoints/<step>/: adapters + config (a loadable adapter directory itself), optimizer
    state, step and data position. The RNG needs no saving: each step seeds it from (seed, step,
    rank), see `step_seed`, because MLX offers no way to set `mx.random.state` to a saved key.
    Written in a temp directory then renamed; `latest` is switched last, so an interruption at any moment leaves the previous checkpoint as the latest."""
    root = out / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:07d}"
    with atomic_dir(final) as tmp:
        save_adapters(tmp, model, config)
        opt_state = dict(tree_flatten(optimizer.state))
        _save_safetensors_atomic(tmp / "optimizer.safetensors", opt_state)
        _write_json_atomic(tmp / "state.json", state)
    _write_json_atomic(root / "latest.json", {"step": step, "dir": final.name})
    for old in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Optional[Path]:
    ptr = out / CKPT_DIR / "latest.json"
    if not ptr.exists():
        return None
    d = out / CKPT_DIR / json.loads(ptr.read_text())["dir"]
    return d if (d / "state.json").exists() else None


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    model.load_weights(list(mx.load(str(ckpt / "adapters.safetensors")).items()), strict=False)
    optimizer.state = tree_unflatten(list(mx.load(str(ckpt / "optimizer.safetensors")).items()))
    return json.loads((ckpt / "state.json").read_text())


# Settings a resumed run must share with the interrupted one, or it would not be its continuation.
RESUME_IDENTITY = ("loss", "alpha", "beta", "batch_size", "grad_accumulation_steps", "seed", "fine_tune_type", "num_layers",
                   "lora_rank", "lora_scale", "lora_dropout", "learning_rate", "lr_schedule", "warmup", "optimizer",
                   "max_seq_length", "refresh_every")  # not iters: a run may be resumed to go on longer


def resume_identity(args: TrainArgs) -> dict:
    return {k: getattr(args, k) for k in RESUME_IDENTITY}


def resume(out: Path, model, optimizer, manifest: dict, shard: "Shard", identity: Optional[dict] = None) -> int:
    """Load the latest checkpoint on rank 0 and hand its state to every rank; returns its step.

    Only rank 0 reads files, so ranks on other machines need no copy of the adapter directory."""
    step = 0
    if shard.rank == 0:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise D2OError(f"{out}: --resume: no checkpoint to resume from (none was saved yet)")
        state = load_checkpoint(ckpt, model, optimizer)
        if state.get("samples_fingerprint") != manifest.get("data_fingerprint"):
            raise D2OError(f"{ckpt}: --resume: the checkpoint was trained on another cache "
                           f"(data fingerprint {state.get('samples_fingerprint')}, this cache {manifest.get('data_fingerprint')})")
        saved = state.get("identity") or {}
        diffs = [f"{k}: checkpoint {saved[k]!r}, now {identity[k]!r}" for k in (identity or {}) if k in saved and saved[k] != identity[k]]
        if diffs:
            raise D2OError(f"{ckpt}: --resume with other settings than the run it continues ({'; '.join(diffs)}); "
                           "resume with the same settings, or start afresh in another --adapter-path")
        step = int(state["step"])
    if shard.size > 1:
        model.update(shard.broadcast(model.trainable_parameters()))
        optimizer.state = shard.broadcast(optimizer.state)
        step = int(shard.broadcast(mx.array(step)).item())
    return step


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after STEP: a resumed run rewrites them, so the file reads as one run."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


# ---------------------------------------------------------------------------------------------
# Distributed
# ---------------------------------------------------------------------------------------------

@dataclass
class Shard:
    """This process's place among the ranks of `mlx.launch` (size 1 without it)."""

    group: object
    rank: int
    size: int

    @classmethod
    def current(cls) -> "Shard":
        g = mx.distributed.init()
        return cls(g, g.rank(), g.size())

    def local(self, batch: list) -> list:
        # Strided, so each rank gets short and long examples alike from a length-sorted batch.
        return batch[self.rank :: self.size]

    def sum(self, x):
        return mx.distributed.all_sum(x, group=self.group, stream=mx.cpu) if self.size > 1 else x

    def broadcast(self, tree):
        """Rank 0's values everywhere (all_sum of rank 0's arrays and everybody else's zeros).

        One collective at a time, in name order, evaluated at once: left lazy, the ranks' graphs
        (values here, zeros there) may run the collectives in different orders and deadlock."""
        if self.size == 1:
            return tree
        flat = []
        # Sorted by name: a tree loaded from a file (rank 0's, on resume) may list its leaves in
        # another order than the one built in memory (the other ranks').
        for k, a in sorted(tree_flatten(tree), key=lambda kv: kv[0]):
            x = self.sum(a if self.rank == 0 else mx.zeros_like(a))
            mx.eval(x)
            flat.append((k, x))
        return tree_unflatten(flat)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def evaluate(model, examples: list, loss_fn: Callable, loss: str, batch_size: int, pad_id: int, shard: Shard) -> dict:
    """Mean loss and metrics over EXAMPLES (no gradient), sharded across ranks.

    `logps/negative` is always there (DPO names it `logps/rejected`): the mean log π(negative)
    that training should lower."""
    was_training = model.training
    model.eval()
    mine = sorted(examples[shard.rank :: shard.size], key=lambda e: e.length())
    totals, n = {}, 0
    for i in range(0, len(mine), batch_size):
        chunk = mine[i : i + batch_size]
        lvalue, metrics = loss_fn(model, *collate(chunk, loss, pad_id)[0])
        vals = {"loss": lvalue, **with_aliases(metrics)}
        if "logps/negative" not in vals:
            vals["logps/negative"] = metrics["logps/rejected"]
        for k, v in vals.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk)
        n += len(chunk)
        mx.eval(totals)
    if was_training:
        model.train()
    # Every rank must join the all_sum, even one with no examples: the key list comes from the
    # loss, not from the data, so it is the same everywhere.
    keys = sorted(totals) or _metric_names(loss)
    vals = shard.sum(mx.array([totals.get(k, 0.0) for k in keys] + [n], dtype=mx.float32)).tolist()
    return {k: v / max(vals[-1], 1) for k, v in zip(keys, vals[:-1])}


def mean_negative_logp(model, examples: list, batch_size: int, pad_id: int, shard: Shard) -> float:
    """Mean log π(negative | prompt) over EXAMPLES: forward passes over the negatives only."""
    was_training = model.training
    model.eval()
    mine = sorted(examples[shard.rank :: shard.size], key=lambda e: e.length())
    total = mx.array(0.0)
    for i in range(0, len(mine), batch_size):
        tokens, plens, lens = collate(mine[i : i + batch_size], "npo", pad_id)[0][:3]
        total = total + sequence_logps(model, tokens, plens, lens)[0].sum()
        mx.eval(total)
    if was_training:
        model.train()
    return shard.sum(total).item() / len(examples)


def _metric_names(loss: str) -> list:
    one = mx.zeros((1,))
    args = (one[:, None], one, one[:, None], one) if loss in USES_SAMPLES else (one,) * (4 if loss in USES_CHOSEN else 2)
    _, m = LOSSES[loss](*args)
    return sorted(set(with_aliases(m)) | {"loss", "logps/negative"})


# ---------------------------------------------------------------------------------------------
# Online refresh
# ---------------------------------------------------------------------------------------------

def refresh_samples(model, tokenizer, examples: list, manifest: dict, seed: int, ref_params, args: TrainArgs) -> list:
    """Online D2O: the current policy samples again for EXAMPLES (π_r := π_θ) through the sample
    step's code, with the cache's sampling settings; the unchanged reference scores the new
    samples. Updates EXAMPLES in place and returns the new rows (the cache's format)."""
    from .sampling import generate_samples, score_records

    if not examples:
        return []
    was_training = model.training
    model.eval()
    batch = int(manifest.get("batch_size") or 8)
    new = generate_samples(model, tokenizer, [e.row for e in examples], num_samples=len(examples[0].samples),
                           max_tokens=int(manifest.get("max_tokens") or 256), temp=float(manifest.get("temp", 1.0)),
                           top_p=float(manifest.get("top_p", 1.0)), batch_size=batch, seed=seed,
                           system_prompt=manifest.get("system_prompt"))
    keep = ("id", "messages", "rejected", "chosen")
    rows = [{**{k: e.row[k] for k in keep if k in e.row}, **g} for e, g in zip(examples, new)]
    with reference_model(model, ref_params):
        rows = score_records(model, tokenizer, rows, batch)
        cut = []
        for e, row in zip(examples, rows):
            room = args.max_seq_length - len(e.prompt)
            e.samples, e.ref_samples = [], []
            for k, text in enumerate(row["samples"]):
                ids = D.response_tokens(tokenizer, e.messages, text, e.prompt)
                e.samples.append(ids[:room])
                e.ref_samples.append(float(row["ref_logps"]["samples"][k]))
                if len(ids) > room:
                    cut.append((e, "samples", k))
            e.row = {**e.row, **row}
        rescore(model, cut)
    if was_training:
        model.train()
    return rows


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@contextmanager
def peer_exit_message(shard: Shard, out: Path, progress: dict):
    """Under mlx.launch, a rank that dies ends the run with a clear message on rank 0.

    Two ways it shows here: the launcher SIGTERMs the surviving ranks, or, first, a collective
    fails because the peer's socket closed. Either way rank 0 says what happened and where to
    resume from (checkpoints are written atomically, so the latest one is whole), and every
    surviving rank exits with status 3: the launcher would end it anyway."""
    import signal

    if shard.size == 1:
        yield
        return

    def message(cause: str) -> str:
        ck = latest_checkpoint(out)
        where_ = (f"the last checkpoint is {ck}; run the same command with --resume to continue" if ck
                  else "no checkpoint had been saved yet")
        return f"training stopped at step {progress['step']}: another rank of this mlx.launch run exited ({cause}); {where_}"

    def stop(cause: str):
        # Say it and leave at once: the launcher's SIGTERM may come any moment, and after it
        # nothing more gets printed.
        if shard.rank == 0:
            sys.stderr.write(f"\nerror: {message(cause)}\n")
            sys.stderr.flush()
        os._exit(3)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop("the launcher ended this one"))
    try:
        yield
    except RuntimeError as e:  # a collective whose peer is gone
        stop(f"the distributed backend failed: {e}")
    finally:
        signal.signal(signal.SIGTERM, previous)


def step_seed(seed: int, it: int, rank: int) -> int:
    """The RNG seed of iteration IT on RANK (dropout, online sampling): a function of the step,
    so a resumed run draws what the uninterrupted one drew."""
    return (seed * 1_000_003 + it * 131 + rank) % (2**32)


@dataclass
class Window:
    """Sums over the steps since the last report; `report` averages them over steps and ranks."""

    loss: object = 0.0
    metrics: dict = field(default_factory=dict)
    grad_norm: object = 0.0
    updates: int = 0
    steps: int = 0
    tokens: int = 0
    time: float = 0.0

    def add(self, loss, metrics: dict, grad_norm, tokens: int) -> None:
        self.loss = self.loss + loss
        for k, v in with_aliases(metrics).items():
            self.metrics[k] = self.metrics.get(k, 0.0) + v
        if grad_norm is not None:  # only steps that updated have a gradient norm
            self.grad_norm = self.grad_norm + grad_norm
            self.updates += 1
        self.steps += 1
        self.tokens += tokens

    def report(self, step: int, shard: Shard) -> dict:
        """The metrics line of STEP (one all_sum for everything); `trained_tokens` = this window's."""
        names = sorted(self.metrics)
        vec = shard.sum(mx.array([self.loss, *(self.metrics[k] for k in names), self.grad_norm, self.tokens],
                                 dtype=mx.float32)).tolist()
        n = self.steps * shard.size
        tokens = int(round(vec[-1]))
        return {"step": step, "split": "train", "loss": vec[0] / n, **{k: vec[1 + j] / n for j, k in enumerate(names)},
                "grad_norm": vec[-2] / shard.size / max(1, self.updates),
                "tokens_per_sec": tokens / max(self.time, 1e-9), "trained_tokens": tokens}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def train(args: TrainArgs, on_report: Optional[Callable[[dict], None]] = None, log: Callable[[str], None] = None) -> dict:
    """Train ARGS.model on the cache ARGS.samples; write adapters, checkpoints and metrics to
    ARGS.adapter_path. Returns a summary (steps, last metrics, log π(negative) before/after).

    Args:
        args: the settings (see `TrainArgs`).
        on_report: called with each metrics line (after it is written), e.g. by tests.
        log: where progress lines go (default: stderr, rank 0 only).
    """
    from tqdm import tqdm

    from .models import load

    shard = Shard.current()
    main = shard.rank == 0
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    say = log if main else (lambda s: None)
    _check_args(args, shard)

    out = Path(args.adapter_path)
    manifest, rows = read_cache(args.samples)
    model, tokenizer, info = load(args.model, dequantize=args.dequantize, return_info=True)
    check_cache_model(args.samples, manifest, info.fingerprint)
    if manifest.get("dequantized") is not None and manifest["dequantized"] != info.dequantized:
        say(f"warning: the cache was scored with the model {'de' if manifest['dequantized'] else 'kept '}quantized, and it "
            f"trains {'de' if info.dequantized else 'kept '}quantized now: policy and reference differ slightly at step 0")
    examples, to_rescore = build_examples(rows, tokenizer, args, args.samples)
    val_examples = None
    if args.val_samples:
        vman, vrows = read_cache(args.val_samples)
        check_cache_model(args.val_samples, vman, info.fingerprint)
        val_examples, vres = build_examples(vrows, tokenizer, args, args.val_samples)
        to_rescore += vres
    if to_rescore:
        n_chosen = sum(w == "chosen" for _, w, _ in to_rescore)
        say(f"scoring {len(to_rescore)} sequences with the reference ({n_chosen} 'chosen' responses the cache has no "
            f"reference score for, {len(to_rescore) - n_chosen} cut to --max-seq-length {args.max_seq_length})")
        rescore(model, to_rescore)

    batches = make_batches(examples, args.batch_size)
    iters = args.iters or max(1, int(round((args.epochs or 1) * len(batches))))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    K = len(examples[0].samples) if args.loss in USES_SAMPLES else manifest.get("num_samples")

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

    d2o_meta = {
        "loss": args.loss, "alpha": args.alpha, "beta": args.beta, "K": K, "iters": iters,
        "batch_size": args.batch_size, "grad_accumulation_steps": args.grad_accumulation_steps,
        "refresh_every": args.refresh_every, "samples": str(args.samples),
        "dataset": manifest.get("data"), "data_fingerprint": manifest.get("data_fingerprint"), "base_model": args.model,
        "base_model_fingerprint": info.fingerprint, "dequantized": info.dequantized,
        "world_size": shard.size, "steps": 0,
    }

    start = 0
    metrics_path = out / "metrics.jsonl"
    if args.resume:
        start = resume(out, model, optimizer, manifest, shard, resume_identity(args))
        say(f"resuming from {out / CKPT_DIR} at step {start}")
        if main:
            truncate_metrics(metrics_path, start)
    else:
        if main and out.exists() and (out / CKPT_DIR).exists():
            say(f"note: starting afresh in {out}: the checkpoints of the earlier run there are removed (--resume continues one)")
            shutil.rmtree(out / CKPT_DIR)
        if main and metrics_path.exists():
            metrics_path.unlink()
    if main:
        out.mkdir(parents=True, exist_ok=True)

    loss_fn = make_loss(args.loss, args.beta, args.alpha)
    loss_value_and_grad = nn.value_and_grad(model, loss_fn)
    G = args.grad_accumulation_steps
    step_state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=step_state, outputs=step_state)
    def step(batch, prev_grad, do_update):
        (lvalue, metrics), grad = loss_value_and_grad(model, *batch)
        if prev_grad is not None:
            grad = tree_map(lambda a, b: a + b, grad, prev_grad)
        grad_norm = mx.array(0.0)
        if do_update:
            grad = nn.average_gradients(grad)
            if G > 1:
                grad = tree_map(lambda g: g / G, grad)
            grad_norm = mx.sqrt(sum(mx.sum(g.astype(mx.float32) ** 2) for _, g in tree_flatten(grad)))
            optimizer.update(model, grad)
            grad = None
        return lvalue, metrics, grad_norm, grad

    # "Before": the reference's mean log π(negative) on the held-out set (or the training negatives).
    # "Before" is the reference's log π(negative), which the cache holds for exactly these tokens.
    # Without a validation cache, a fixed share of the training prompts stands in (256 at most:
    # a forward pass over every negative of a large set would cost a good part of an epoch).
    probe_set, probe_name = (val_examples, "validation") if val_examples else (examples[:: max(1, len(examples) // 256)][:256], "training")
    before = sum(e.ref_negative for e in probe_set) / len(probe_set)

    def write_line(line: dict) -> None:
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(line) + "\n")
        if on_report is not None:
            on_report(line)

    def validate(it: int) -> None:
        if not val_examples:
            return
        tic = time.perf_counter()
        v = evaluate(model, val_examples, loss_fn, args.loss, args.batch_size, pad_id, shard)
        write_line({"step": it, "split": "val", **v, "val_time": time.perf_counter() - tic})
        say(f"step {it}: val loss {_fmt(v['loss'])}, margin {_fmt(v.get('rewards/margin', float('nan')))}")

    def checkpoint(it: int) -> None:
        if main:
            d2o_meta["steps"] = it
            cfg = adapter_config(args, d2o_meta)
            save_checkpoint(out, it, model, optimizer, cfg, {
                "step": it, "samples_fingerprint": manifest.get("data_fingerprint"), "trained_tokens": trained_tokens,
                "identity": resume_identity(args),
                "epoch": it // len(batches), "batch_in_epoch": it % len(batches),
            })
            save_adapters(out, model, cfg)

    model.train()
    grad_accum = None
    window = Window()
    trained_tokens = 0
    if start and main:
        trained_tokens = json.loads((latest_checkpoint(out) / "state.json").read_text()).get("trained_tokens", 0)
    mx.reset_peak_memory()
    if args.refresh_every and start % args.refresh_every:
        say("note: resuming between two refreshes; samples for the rest of this window are generated again "
            "(the curve matches an uninterrupted run exactly when --save-every is a multiple of --refresh-every)")
    bar = tqdm(total=iters, initial=start, desc="train", file=sys.stderr, disable=not main, dynamic_ncols=True)
    last = {}
    progress = {"step": start}
    with checkpointed_layers(model, args.grad_checkpoint), peer_exit_message(shard, out, progress):
        if start == 0 and args.steps_per_eval and val_examples:
            validate(0)
        for it in range(start + 1, iters + 1):
            if args.refresh_every and ((it - 1) % args.refresh_every == 0 or it == start + 1):
                upto = min(iters, (it - 1) // args.refresh_every * args.refresh_every + args.refresh_every)
                ahead = sorted({i for j in range(it - 1, upto) for i in shard.local(batch_at(batches, j, args.seed))})
                fresh = refresh_samples(model, tokenizer, [examples[i] for i in ahead], manifest,
                                        step_seed(args.seed, it, shard.rank), ref_params, args)
                if main:  # what the policy sampled, for inspection (rank 0's share under mlx.launch)
                    D.write_jsonl_atomic(out / "online" / f"samples-step{it:07d}.jsonl", fresh)
            mx.random.seed(step_seed(args.seed, it, shard.rank))
            tic = time.perf_counter()
            batch, ntoks = collate([examples[i] for i in shard.local(batch_at(batches, it - 1, args.seed))], args.loss, pad_id)
            lvalue, metrics, grad_norm, grad_accum = step(batch, grad_accum, it % G == 0)
            mx.eval(step_state, lvalue, metrics, grad_norm, grad_accum)
            window.time += time.perf_counter() - tic
            progress["step"] = it
            # Every rank checks the same (summed) value, so a NaN on one rank stops all of them alike.
            loss_val = shard.sum(lvalue).item()
            if not math.isfinite(loss_val):
                ck = latest_checkpoint(out)
                raise D2OError(
                    f"the loss became {loss_val} at step {it}; stopped without saving. "
                    + (f"The last good checkpoint is {ck} (resume with --resume after lowering --learning-rate)."
                       if ck else "No checkpoint was saved yet; lower --learning-rate and start again.")
                )
            window.add(lvalue, metrics, grad_norm if it % G == 0 else None, ntoks)
            bar.update(1)

            if it % args.steps_per_report == 0 or it == iters:
                last = window.report(it, shard)
                trained_tokens += last["trained_tokens"]
                last.update(learning_rate=float(optimizer.learning_rate.item()), trained_tokens=trained_tokens,
                            peak_memory_gb=mx.get_peak_memory() / 1e9)
                write_line(last)
                bar.set_postfix(loss=_fmt(last["loss"]), margin=_fmt(last.get("rewards/margin", float("nan"))),
                                tok_s=f"{last['tokens_per_sec']:.0f}", refresh=False)
                window = Window()
            if args.steps_per_eval and val_examples and (it % args.steps_per_eval == 0 or it == iters):
                validate(it)
            if args.save_every and it % args.save_every == 0 and it < iters:
                checkpoint(it)
        checkpoint(iters)
    bar.close()

    after = mean_negative_logp(model, probe_set, args.batch_size, pad_id, shard)
    summary = {"steps": iters, "last": last, "adapter_path": str(out), "probe_set": probe_name, "rank": shard.rank,
               "logps_negative_before": before, "logps_negative_after": after}
    say(f"mean log π(negative) on the {probe_name} set ({len(probe_set)} prompts): before {before:.3f}, "
        f"after {after:.3f} ({after - before:+.3f})")
    if main:
        _write_json_atomic(out / "train_summary.json", summary)
    return summary


def _check_args(args: TrainArgs, shard: Shard) -> None:
    if args.samples is None:
        raise D2OError("--samples: missing; give the cache directory made by `mlx-d2o sample`")
    if args.loss not in LOSSES:
        raise D2OError(f"unknown --loss {args.loss!r} (expected one of {', '.join(LOSSES)})")
    if args.iters is not None and args.epochs is not None:
        raise D2OError("give --iters or --epochs, not both")
    for name in ("batch_size", "grad_accumulation_steps", "max_seq_length", "steps_per_report"):
        if getattr(args, name) < 1:
            raise D2OError(f"--{name.replace('_', '-')} must be at least 1")
    if args.iters is not None and args.iters < 1:
        raise D2OError("--iters must be at least 1")
    G = args.grad_accumulation_steps
    if args.save_every and args.save_every % G:
        raise D2OError(f"--save-every {args.save_every} must be a multiple of --grad-accumulation-steps {G} "
                       "(a checkpoint between two updates would lose the accumulated gradient)")
    if args.refresh_every and args.loss not in USES_SAMPLES:
        raise D2OError(f"--refresh-every resamples the samples of D2O; --loss {args.loss} uses none")
    if args.refresh_every < 0:
        raise D2OError("--refresh-every must be 0 (offline) or a number of steps")
    if args.batch_size % shard.size:
        raise D2OError(f"--batch-size {args.batch_size} must be divisible by the number of ranks ({shard.size}): "
                       "each rank takes an equal share of every global batch")
