"""The memory planner (`mlx_d2o.train.plan`, `mlx-d2o plan`): predicted against measured peak.

(a) Accuracy here: random float32 llama models of SmolLM2-135M, SmolLM2-360M and Llama-3.2-1B
    shapes (mlx-lm's llama `Model`, random weights, nothing downloaded), LoRA r8 on 16 layers,
    one prompt with K = 4 and 11 samples, checkpointing off and on, all sequences at once and
    in chunks of 4: the peak of a training step (`mx.reset_peak_memory` / `mx.get_peak_memory`,
    the largest of --steps steps, the first of which compiles) against `plan(...)` for the same
    settings. Goal: within +-15 %. Each step shape is one callable in `STEP_FUNCTIONS` (name =
    `PlanInputs.step`): "shared" is the trainer's `train.step.make_step` (prompt once, chunks);
    "full" the step before issue 11 (one forward and backward over all B*(K+1) whole
    sequences, whole logits), kept here as a copy so that it can still be measured.
(b) The 7B table: Mistral-7B, Llama-3.1-8B and Qwen2.5-7B shapes (the configs shipped in
    mlx_d2o/model_configs) at 4 bits, K = 11, HH-RLHF lengths (prompt 143, response 48 tokens:
    the mean prompt of ../shared/data's first 400 rows and ~48-token samples), on a 16 GB Mac
    (limit 2/3 of 16 GiB): what fits as given, and the settings `Plan.suggest()` names.

(c) At a 7B model's width, never under: Mistral-7B's widths but 2 layers, SmolLM2's vocabulary
    (3.36 GB of float32 weights), LoRA on both layers, K = 11, the HH-RLHF step that peaks,
    batch 1-4, checkpointing off and on: the trainer's step (the largest of --steps steps)
    against the plan, which must be at or above it and within +15 % (~7 min a batch-1 step
    under load here; --runs-7b keeps each measurement, so a run that stops resumes).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_plan.py
    python benchmarks/bench_plan.py --only-7b      # (b) alone: no model is run
    python benchmarks/bench_plan.py --width-7b --batch 1 2 4 --steps 2 --runs-7b runs.jsonl

The constants of `plan.CALIBRATION` were fitted on smaller random shapes: --calibrate measures
them again (`CALIBRATION_GRID`, 10-30 min per step here) and prints the constants fitted by
non-negative least squares on the planner's own terms, to recalibrate after a change of the step
or of MLX (--runs keeps the measurements, so a second call only refits):
    python benchmarks/bench_plan.py --calibrate --step shared --shapes --runs /tmp/cal
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlx_d2o import losses  # noqa: E402
from mlx_d2o.train.plan import GB, SHIPPED, ModelShape, PlanInputs, load_shape, plan  # noqa: E402

# Public config.json shapes (tied embeddings, as the models have them).
SHAPES = {
    "SmolLM2-135M": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, vocab_size=49152),
    "SmolLM2-360M": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, intermediate_size=2560, vocab_size=49152),
    "Llama-3.2-1B": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=8192, vocab_size=128256,
                         head_dim=64),
}  # fmt: skip
MAC_16GB = 16 * 2**30 * 2 / 3  # macOS lets the GPU wire about 2/3 of the RAM


def random_model(name: str):
    """(mlx-lm llama Model with random float32 weights, its config dict)."""
    from mlx_lm.models import llama

    config = {"model_type": "llama", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": True, "torch_dtype": "float32", **SHAPES[name]}  # fmt: skip
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model, config


def _trainable(model, inputs: PlanInputs):
    """LoRA layers and Adam, as `mlx-d2o train` sets them up."""
    from mlx_d2o.train.args import TrainArgs
    from mlx_d2o.train.trainable import build_optimizer, setup_trainable

    args = TrainArgs(
        fine_tune_type=inputs.fine_tune_type,
        lora_rank=inputs.lora_rank,
        num_layers=inputs.num_layers,
        grad_checkpoint=inputs.grad_checkpoint,
    )
    setup_trainable(model, args)
    optimizer = build_optimizer(args, 100)
    optimizer.init(model.trainable_parameters())
    return optimizer


def full_batch(inputs: PlanInputs, vocab: int, seed: int = 0) -> tuple:
    """Today's batch: B*(K+1) prompt + response sequences (samples prompt-major, then the
    negatives), padded by `logprobs.pad`, and reference log-probs [B, K] and [B]."""
    from mlx_d2o.logprobs import pad

    rng = np.random.default_rng(seed)
    B, K, P, R = inputs.batch_size, inputs.k, inputs.prompt_tokens, inputs.response_tokens
    prompts = [rng.integers(3, vocab, P).tolist() for _ in range(B)]
    seqs = [p + rng.integers(3, vocab, R).tolist() for p in prompts for _ in range(K)]
    seqs += [p + rng.integers(3, vocab, R).tolist() for p in prompts]
    tokens, lengths = pad(seqs)
    plens = mx.array([P] * len(seqs), dtype=mx.int32)
    refs = (mx.full((B, K), -50.0), mx.full((B,), -50.0))
    return (tokens, plens, lengths, *refs)


def compiled_step(model, optimizer, loss_fn):
    """Today's `train.step.make_step` (git 2cd612e), without accumulation: value_and_grad,
    gradient norm and Adam's update compiled over model, optimizer and RNG state. A copy, so
    that "full" keeps measuring this path while the trainer's step changes."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    loss_value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch):
        (lvalue, _), grad = loss_value_and_grad(model, *batch)
        grad = nn.average_gradients(grad)
        grad_norm = mx.sqrt(sum(mx.sum(g.astype(mx.float32) ** 2) for _, g in tree_flatten(grad)))
        optimizer.update(model, grad)
        return lvalue, grad_norm

    return step, state


def whole_sequence_logps(model, tokens, prompt_lengths, lengths):
    """`logprobs.sequence_logps` before issue 11 (git 2cd612e): float32 logits at every
    position of every sequence at once."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs).astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    token_logps = picked - mx.logsumexp(logits, axis=-1)
    pos = mx.arange(1, tokens.shape[1])[None, :]
    mask = (pos >= prompt_lengths[:, None]) & (pos < lengths[:, None])
    return (token_logps * mask).sum(axis=-1), mask.sum(axis=-1)


def measure_full_step(model, inputs: PlanInputs, steps: int) -> float:
    """Peak bytes of the D2O step before issue 11: one forward and backward of all B*(K+1)
    whole sequences, whole logits (`whole_sequence_logps`, `compiled_step`), checkpointing by
    mlx-lm's patched layers as `train` does it."""
    from mlx_d2o.train.trainable import checkpointed_layers

    sequence_logps = whole_sequence_logps

    loss = losses.get("d2o")
    optimizer = _trainable(model, inputs)

    def loss_fn(model, tokens, plens, lens, ref_samples, ref_negative):
        logps, counts = sequence_logps(model, tokens, plens, lens)
        n = ref_samples.size
        arrays = {
            "policy_samples": logps[:n].reshape(ref_samples.shape),
            "tokens_samples": counts[:n].reshape(ref_samples.shape),
            "ref_samples": ref_samples,
            "policy_negative": logps[n:],
            "tokens_negative": counts[n:],
            "ref_negative": ref_negative,
        }
        return loss(arrays, alpha=0.1, beta=0.1)

    batch = full_batch(inputs, model.args.vocab_size)
    mx.eval(batch)
    step, state = compiled_step(model, optimizer, loss_fn)
    model.train()
    peak = 0
    with checkpointed_layers(model, inputs.grad_checkpoint):
        for _ in range(steps):
            mx.reset_peak_memory()
            lvalue, grad_norm = step(batch)
            mx.eval(state, lvalue, grad_norm)
            peak = max(peak, mx.get_peak_memory())
    return float(peak)


def measure_shared_step(
    model, inputs: PlanInputs, steps: int, peaks: Optional[list] = None
) -> float:
    """Peak bytes of the trainer's step (`train.step.make_step`): each prompt once, the
    continuations back-propagated INPUTS.chunk sequences at a time, logits by position chunks,
    checkpointing through `make_loss_fn(grad_checkpoint=)`."""
    from mlx_d2o.train.examples import Example, collate
    from mlx_d2o.train.step import make_loss_fn, make_step

    optimizer = _trainable(model, inputs)
    loss = losses.get("d2o")
    rng, V = np.random.default_rng(0), model.args.vocab_size
    B, K, P, R = inputs.batch_size, inputs.k, inputs.prompt_tokens, inputs.response_tokens
    toks = lambda n: rng.integers(3, V, n).tolist()  # noqa: E731
    examples = [Example(str(b), [], toks(P), toks(R), [toks(R) for _ in range(K)], -50.0,
                        [-50.0] * K) for b in range(B)]  # fmt: skip
    batch = collate(examples, loss.layout(), 0)[0]
    loss_fn = make_loss_fn(loss, {"alpha": 0.1, "beta": 0.1}, inputs.grad_checkpoint)
    step, state = make_step(model, optimizer, loss_fn, 1, inputs.chunk, shared=True)
    model.train()
    peak = 0
    for _ in range(steps):
        mx.reset_peak_memory()
        lvalue, _, grad_norm, _ = step(batch, None, True)
        mx.eval(state, lvalue, grad_norm)
        peak = max(peak, mx.get_peak_memory())
        if peaks is not None:  # the second step peaks higher than the first (a few %)
            peaks.append(mx.get_peak_memory())
    return float(peak)


# PlanInputs.step -> the callable that measures one step of that shape
STEP_FUNCTIONS = {"full": measure_full_step, "shared": measure_shared_step}


def accuracy(args) -> list[dict]:
    runs = [
        (name, step, k, ckpt, chunk)
        for name in args.shapes
        for step in args.step
        for k in args.k
        for ckpt in (False, True)
        for chunk in (args.chunks if step == "shared" else [0])
        if 2 * chunk <= k + 1  # chunk sizes up to half the step's sequences (0: all at once)
    ]
    rows = []
    for name, step, k, ckpt, chunk in runs:
        model, config = random_model(name)
        inputs = PlanInputs(
            ModelShape.from_config(config, name), k=k, batch_size=1, step=step,
            prompt_tokens=args.prompt_tokens, response_tokens=args.response_tokens,
            num_layers=16, lora_rank=8, grad_checkpoint=ckpt, chunk_size=chunk or None,
        )  # fmt: skip
        tic = time.perf_counter()
        measured = STEP_FUNCTIONS[step](model, inputs, args.steps)
        p = plan(inputs, 1e12)
        rows.append(dict(model=name, step=step, k=k, ckpt=ckpt, chunk=inputs.chunk,
                         measured=measured, predicted=p.total, plan=p))  # fmt: skip
        print(f"  {name} {step} K={k} ckpt={ckpt} chunk={inputs.chunk}: measured "
              f"{measured / GB:.3f} GB, predicted {p.total / GB:.3f} GB "
              f"({time.perf_counter() - tic:.0f} s)", flush=True)  # fmt: skip
        del model
        gc.collect()
        mx.clear_cache()
    return rows


def accuracy_table(rows: list[dict], args) -> list[str]:
    out = [
        f"(a) planner vs measured peak, this machine ({platform.machine()}, MLX {mx.__version__}, "
        f"{mx.default_device()}), float32 random weights, LoRA r8 on 16 layers, B = 1, prompt "
        f"{args.prompt_tokens} + response {args.response_tokens} tokens, max over {args.steps} steps",
        "",
        "| model | step | K | checkpointing | chunk | measured GB | predicted GB | error "
        "| error of the step's own memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = (r["predicted"] - r["measured"]) / r["measured"] * 100
        # the step's own memory: the peak less weights, adapter and optimizer (predicted exactly)
        fixed = r["plan"].breakdown["weights"] + r["plan"].breakdown["adapter + optimizer"]
        own = (r["predicted"] - r["measured"]) / (r["measured"] - fixed) * 100
        out.append(
            f"| {r['model']} | {r['step']} | {r['k']} | {'on' if r['ckpt'] else 'off'} | "
            f"{r['chunk']} | {r['measured'] / GB:.3f} | {r['predicted'] / GB:.3f} | {err:+.1f} % "
            f"| {own:+.1f} % |"
        )
    worst = max(abs(r["predicted"] - r["measured"]) / r["measured"] for r in rows)
    out.append(f"\nlargest error {worst * 100:.1f} % (goal: 15 %)")
    return out


def _flags(change: dict) -> str:
    if not change:
        return "as given"
    names = {"grad_checkpoint": "--grad-checkpoint", "chunk_size": "--chunk-size",
             "batch_size": "--batch-size", "grad_accumulation_steps": "--grad-accumulation-steps"}  # fmt: skip
    return " ".join(names[k] if v is True else f"{names[k]} {v}" for k, v in change.items())


def table_7b(prompt: int = 143, response: int = 48, k: int = 11) -> list[str]:
    """(b): each shipped 7B config at 4 bits on a 16 GB Mac, as given and as suggested."""
    out = [
        f"(b) planner, 7B-class models at 4 bits (mlx-community group 64), K = {k}, "
        f"prompt {prompt} + response {response} tokens, LoRA r8 on 16 layers, 16 GB Mac "
        f"(limit {MAC_16GB / GB:.2f} GB)",
        "",
        "| model | B | step | as given: peak GB | fits | settings that fit | predicted peak GB "
        "| with checkpointing: peak GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, B, step in [(n, b, s) for n in SHIPPED for b in (1, 4) for s in ("full", "shared")]:
        inputs = PlanInputs(load_shape(name), k=k, batch_size=B, prompt_tokens=prompt,
                            response_tokens=response, step=step)  # fmt: skip
        p = plan(inputs, MAC_16GB)
        change = p.suggest()
        fixed = plan(replace(inputs, **change), MAC_16GB) if change is not None else None
        out.append(
            f"| {name} | {B} | {step} | {p.total / GB:.2f} | {'yes' if p.fits else 'no'} | "
            f"{_flags(change) if change is not None else 'none'} | "
            f"{fixed.total / GB if fixed else float('nan'):.2f} | "
            f"{plan(replace(inputs, grad_checkpoint=True), MAC_16GB).total / GB:.2f} |"
        )
    return out


# (c) Mistral-7B's widths (hidden 4096, FFN 14336, 32 heads, 8 KV heads) but 2 layers, untied
# embeddings, SmolLM2's 49,152-token vocabulary: 3.36 GB of float32 weights, LoRA r8 on both
# layers, K = 11, HH-RLHF lengths: the step that peaks on the 4 prompts of issue 17 (median 214,
# longest 328 prompt tokens, responses up to 88; the planner plans every row at the longest).
WIDTH_7B = dict(hidden_size=4096, num_hidden_layers=2, num_attention_heads=32,
                num_key_value_heads=8, intermediate_size=14336, vocab_size=49152,
                tie_word_embeddings=False)  # fmt: skip
HH_LENGTHS = (328, 88)


def width_7b_model(layers: int = 2):
    """(mlx-lm llama Model of WIDTH_7B with random float32 weights, its config dict)."""
    from mlx_lm.models import llama

    config = {"model_type": "llama", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "torch_dtype": "float32", **WIDTH_7B, "num_hidden_layers": layers}  # fmt: skip
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model, config


def width_7b_inputs(config: dict, batch: int, ckpt: bool, lengths=HH_LENGTHS) -> PlanInputs:
    return PlanInputs(
        ModelShape.from_config(config, "7B-width x2"), k=11, batch_size=batch,
        prompt_tokens=lengths[0], response_tokens=lengths[1], num_layers=-1, lora_rank=8,
        grad_checkpoint=ckpt,
    )  # fmt: skip


def accuracy_7b(args) -> list[dict]:
    """(c): the trainer's step on the 7B-width model, batch ARGS.batch x checkpointing off/on;
    each measurement is kept in ARGS.runs_7b (JSONL) and not repeated (~1 min a prompt here)."""
    path = Path(args.runs_7b) if args.runs_7b else None
    done = (
        [json.loads(ln) for ln in path.read_text().splitlines()] if path and path.exists() else []
    )
    rows = []
    for B, ckpt in itertools.product(args.batch, (False, True)):
        key = dict(
            batch=B, ckpt=ckpt, prompt=HH_LENGTHS[0], response=HH_LENGTHS[1], steps=args.steps
        )
        old = [r for r in done if all(r.get(k) == v for k, v in key.items())]
        if old:
            measured = old[-1]["measured"]
            config = {"model_type": "llama", "torch_dtype": "float32", **WIDTH_7B}
        else:
            gc.collect()
            mx.clear_cache()
            model, config = width_7b_model()
            tic = time.perf_counter()
            peaks = []
            measured = measure_shared_step(
                model, width_7b_inputs(config, B, ckpt), args.steps, peaks
            )
            del model
            gc.collect()
            mx.clear_cache()
            if path:
                with path.open("a") as f:
                    f.write(json.dumps({**key, "measured": measured, "peaks": peaks,
                                        "seconds": time.perf_counter() - tic}) + "\n")  # fmt: skip
        p = plan(width_7b_inputs(config, B, ckpt), 1e12)
        rows.append(dict(model="7B-width x2", step="shared", k=11, ckpt=ckpt, chunk=p.inputs.chunk,
                         batch=B, measured=measured, predicted=p.total, plan=p))  # fmt: skip
        print(f"  7B-width B={B} ckpt={ckpt}: measured {measured / GB:.3f} GB, predicted "
              f"{p.total / GB:.3f} GB", flush=True)  # fmt: skip
    return rows


def table_7b_width(rows: list[dict]) -> list[str]:
    P, R = HH_LENGTHS
    out = [
        f"(c) planner vs measured peak at a 7B model's width ({platform.machine()}, MLX "
        f"{mx.__version__}, {mx.default_device()}): Mistral-7B's widths, 2 layers, vocabulary "
        f"49,152, float32 random weights (3.36 GB), LoRA r8 on both layers, K = 11, prompt {P} + "
        f"response {R} tokens, all sequences at once",
        "",
        "| batch | checkpointing | measured GB | predicted GB | error |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        err = (r["predicted"] - r["measured"]) / r["measured"] * 100
        out.append(f"| {r['batch']} | {'on' if r['ckpt'] else 'off'} | {r['measured'] / GB:.2f} "
                   f"| {r['predicted'] / GB:.2f} | {err:+.1f} % |")  # fmt: skip
    errs = [(r["predicted"] - r["measured"]) / r["measured"] * 100 for r in rows]
    out.append(f"\nerror from {min(errs):+.1f} % to {max(errs):+.1f} % (goal: 0 to +15 %)")
    return out


# (hidden, layers, heads, kv heads, intermediate, vocab, trained layers), (prompt, response)
# tokens, K and chunk sizes (0: all) that plan.CALIBRATION[step] is fitted on
CALIBRATION_GRID = {
    "full": dict(
        shapes=[(256, 8, 4, 2, 768, 8192, 8), (256, 8, 4, 2, 768, 8192, 4),
                (512, 8, 8, 2, 768, 8192, 8), (256, 8, 4, 2, 2048, 8192, 8),
                (1024, 4, 16, 4, 512, 32768, 2), (1024, 4, 16, 4, 512, 32768, 4),
                (256, 4, 4, 2, 512, 16384, 4), (256, 4, 4, 2, 512, 65536, 4),
                (512, 8, 8, 2, 2048, 32768, 8)],
        lengths=[(64, 32), (192, 64)], k=[4], chunks=[0]),
    "shared": dict(
        shapes=[(256, 8, 4, 2, 768, 32768, 8), (256, 8, 4, 2, 768, 32768, 4),
                (1024, 4, 16, 4, 512, 32768, 4), (512, 8, 8, 2, 2048, 32768, 8),
                (256, 4, 4, 2, 512, 65536, 4)],
        lengths=[(48, 24), (144, 48)], k=[11], chunks=[0, 4]),
}  # fmt: skip


def grid_runs(step: str, steps: int) -> list:
    """(PlanInputs, measured peak bytes) over CALIBRATION_GRID[step]."""
    from mlx_lm.models import llama

    g, runs = CALIBRATION_GRID[step], []
    for (h, L, nh, kv, inter, V, lt), (P, R), k, chunk, ckpt in itertools.product(
        g["shapes"], g["lengths"], g["k"], g["chunks"], (False, True)
    ):
        config = dict(model_type="llama", hidden_size=h, num_hidden_layers=L, num_attention_heads=nh,
                      num_key_value_heads=kv, intermediate_size=inter, vocab_size=V, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, torch_dtype="float32")  # fmt: skip
        mx.random.seed(0)
        model = llama.Model(llama.ModelArgs.from_dict(config))
        mx.eval(model.parameters())
        inputs = PlanInputs(ModelShape.from_config(config, "grid"), k=k, prompt_tokens=P,
                            response_tokens=R, num_layers=lt, grad_checkpoint=ckpt, step=step,
                            chunk_size=chunk or None)  # fmt: skip
        runs.append((inputs, STEP_FUNCTIONS[step](model, inputs, steps)))
        print(f"  grid {step} {h}x{L} I{inter} V{V} trained {lt}, {P}+{R} tokens, K={k} "
              f"chunk={inputs.chunk} ckpt={ckpt}: {runs[-1][1] / GB:.3f} GB", flush=True)  # fmt: skip
        del model
        gc.collect()
        mx.clear_cache()
    return runs


# What a trained layer keeps (layer_*, ckpt_layer_h) is the same decoder block in both steps:
# the shared step's fit keeps the full step's values and fits the rest.
HELD = {
    "full": [],
    "shared": ["layer_h", "layer_i", "layer_scores", "ckpt_layer_h", "ckpt_work_scores"],
}


def fit(runs: list, step: str) -> tuple[dict, float]:
    """Least squares of each run's step memory on the planner's own terms: `plan.step_terms`
    is linear in the constants, so a constant's feature is the terms with it alone set to 1;
    HELD[step] constants keep their `plan.CALIBRATION` values, and so do constants no run uses."""
    from mlx_d2o.train.plan import CALIBRATION, adapter_bytes, step_terms, weight_bytes

    current = CALIBRATION[step]
    held = {k: v if k in HELD[step] else 0.0 for k, v in current.items()}
    keys = [k for k in current if k not in HELD[step]]
    X, y, own = [], [], []
    for i, measured in runs:
        fixed = sum(step_terms(i, held).values())
        X.append([sum(step_terms(i, {**held, k: 1.0}).values()) - fixed for k in keys])
        own.append(measured - weight_bytes(i.shape) - adapter_bytes(i))
        y.append(own[-1] - fixed)
    X, y = np.array(X), np.array(y)
    used = [j for j in range(len(keys)) if np.any(X[:, j])]
    zeroed = []
    while True:  # non-negative least squares: a negative constant is set to 0, the rest refitted
        c, *_ = np.linalg.lstsq(X[:, used], y, rcond=None)
        if c.min() >= 0:
            break
        zeroed.append(used.pop(int(np.argmin(c))))
    used, c = used + zeroed, np.concatenate([c, np.zeros(len(zeroed))])
    worst = float(np.max(np.abs(X[:, used] @ c - y) / np.array(own)))
    fitted = {**current, **{keys[j]: round(float(v), 2) for j, v in zip(used, c)}}
    return fitted, worst


def save_runs(runs: list, path: str) -> None:
    rows = [{"inputs": asdict(i), "measured": m} for i, m in runs]
    Path(path).write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def load_runs(path: str) -> list:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        shape = ModelShape(**r["inputs"].pop("shape"))
        out.append((PlanInputs(shape, **r["inputs"]), r["measured"]))
    return out


def calibrate(args) -> list[str]:
    lines = ["", "CALIBRATION fitted on this machine (elements per token):"]
    for step in args.step:
        path = f"{args.runs}.{step}.jsonl" if args.runs else None
        if path and Path(path).exists():
            runs = load_runs(path)  # measured before: refit only
        else:
            runs = grid_runs(step, args.steps)
            if path:
                save_runs(runs, path)
        fitted, worst = fit(runs, step)
        lines.append(
            f'  "{step}": {fitted}  (largest error {worst * 100:.1f} % of the step\'s own memory)'
        )
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--k", nargs="+", type=int, default=[4, 11])
    ap.add_argument("--step", nargs="+", default=list(STEP_FUNCTIONS), choices=list(STEP_FUNCTIONS))
    ap.add_argument("--chunks", nargs="+", type=int, default=[0, 4], help="shared step; 0: all")
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--response-tokens", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2, help="steps measured (the first compiles)")
    ap.add_argument("--only-7b", action="store_true", help="print table (b) only")
    ap.add_argument("--calibrate", action="store_true", help="fit plan.CALIBRATION again")
    ap.add_argument(
        "--runs",
        help="calibration: keep the measurements in RUNS.<step>.jsonl (and refit from them)",
    )
    ap.add_argument("--width-7b", action="store_true", help="table (c) alone: 7B widths")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4], help="(c): batch sizes")
    ap.add_argument("--runs-7b", help="(c): keep the measurements in this JSONL (and reuse them)")
    ap.add_argument("--out", help="also write the tables to this file")
    args = ap.parse_args()
    lines = []
    if args.width_7b:
        lines += table_7b_width(accuracy_7b(args)) + [""]
    elif not args.only_7b and args.shapes:
        lines += accuracy_table(accuracy(args), args) + [""]
    if args.calibrate and not args.only_7b:
        lines += calibrate(args) + [""]
    lines += [] if args.width_7b else table_7b()
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
