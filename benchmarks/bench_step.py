"""One D2O training step on HH-RLHF lengths: shared prompt vs mlx-lm's supervised LoRA step.

Three sides train the same model (default: the embedded SmolLM2-135M-Instruct, float32 on the
CPU) with the same LoRA settings (mlx-lm's defaults: 16 layers, rank 8, scale 20) on the same
sequences: B prompts, each with K samples and its negative.

    d2o       `train.step.make_step`: each prompt once, its K + 1 continuations after it, the
              head at response positions only (issue 11), one pass (no chunking).
    today     the step before issue 11: B*(K+1) whole sequences (prompt + response) in one
              forward and backward, float32 logits at every position.
    mlx-lm    mlx-lm's supervised LoRA step (`mlx_lm.tuner.trainer.default_loss` under
              `nn.value_and_grad` and `mx.compile`, then the optimizer, as its trainer does) on
              the same B*(K+1) whole sequences, prompt masked.

Each side does full steps (forward, backward, Adam update). After one warm-up step per side
(compilation), the sides alternate (d2o, mlx-lm, today, d2o, ...) and the medians are reported:
wall-clock and CPU time (this process, all threads: steadier than wall-clock on a shared
machine) per step, tokens/s counting the same tokens on every side (prompt + response of each
of the B*(K+1) sequences), and peak memory (`mx.get_peak_memory`, reset before each step, less
the other sides' weights and optimizer state, which are in memory too).

Data: HH-RLHF rows converted by `mlx-d2o data convert --from hh-rlhf` (prompt = the dialogue up
to the last assistant turn, negative = the rejected answer). The B prompts are those nearest the
median prompt length; the K samples of a prompt are other rows' answers of at least --max-tokens
tokens cut there (generation with `mlx-d2o sample --max-tokens 48` mostly stops at the cap); the
negative is the row's own; reference scores are constants (they change the loss's value, not
the work).

    mlx-d2o data convert ../shared/data/hh-rlhf-harmless-base-test-0-1599.jsonl.gz \\
        /tmp/hh.jsonl --from hh-rlhf
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 \\
        python benchmarks/bench_step.py --data /tmp/hh.jsonl -k 4 11
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlx_d2o import data as D  # noqa: E402
from mlx_d2o.losses import LOSSES  # noqa: E402
from mlx_d2o.models import load  # noqa: E402
from mlx_d2o.train.examples import Example, collate  # noqa: E402
from mlx_d2o.train.step import make_loss_fn, make_step  # noqa: E402
from mlx_d2o.train.trainable import build_optimizer, setup_trainable  # noqa: E402

LORA = SimpleNamespace(
    fine_tune_type="lora",
    num_layers=16,
    lora_parameters=lambda: {"rank": 8, "scale": 20.0, "dropout": 0.0},
    learning_rate=1e-5,
    lr_schedule=None,
    warmup=0,
    optimizer="adam",
)


def examples(path: str, tok, n: int, k: int, max_tokens: int, seed: int) -> list:
    """N examples whose prompts are nearest the median prompt length, K samples each."""
    records = D.load_records(path)
    rng = random.Random(seed)
    prompts = [D.prompt_tokens(tok, r.messages) for r in records]
    median = statistics.median(len(p) for p in prompts)
    order = sorted(range(len(records)), key=lambda i: (abs(len(prompts[i]) - median), i))
    pool = [r.rejected for r in records] + [r.chosen for r in records if r.chosen]
    out = []
    for i in order[:n]:
        r, p = records[i], prompts[i]
        neg = D.response_tokens(tok, r.messages, r.rejected, p)
        samples = []
        while len(samples) < k:  # answers that reach the --max-tokens cap, cut there
            ids = D.response_tokens(tok, r.messages, rng.choice(pool), p)
            if len(ids) >= max_tokens:
                samples.append(ids[:max_tokens])
        out.append(Example(r.id, r.messages, p, neg, samples, -60.0, [-60.0] * k))
    return out


def trainable(model_name: str):
    model, tok = load(model_name)
    mx.random.seed(0)
    setup_trainable(model, LORA)
    opt = build_optimizer(LORA, 1000)
    opt.init(model.trainable_parameters())
    mx.eval(model.parameters(), opt.state)
    return model, tok, opt


def resident(model, opt) -> int:
    """Bytes of a side's own weights and optimizer state (the other sides' are in memory too,
    and are taken out of its peak)."""
    arrays = tree_flatten(model.parameters()) + tree_flatten(opt.state)
    return sum(a.nbytes for _, a in arrays if isinstance(a, mx.array))


def d2o_side(model_name: str):
    model, tok, opt = trainable(model_name)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.1, "beta": 0.1})
    step, state = make_step(model, opt, objective, 1)

    def run(batch):
        out = step(batch, None, True)
        mx.eval(state, out[0])

    run.resident = resident(model, opt)
    return run, tok


def whole_logps(model, x):
    """The step before issue 11: every sequence whole, [N, T, V] float32 logits."""
    tokens = x["tokens"]
    logits = model(tokens[:, :-1]).astype(mx.float32)
    picked = mx.take_along_axis(logits, tokens[:, 1:, None], axis=-1).squeeze(-1)
    token_logps = picked - mx.logsumexp(logits, axis=-1)
    pos = mx.arange(1, tokens.shape[1])[None]
    mask = (pos >= x["prompt_lengths"][:, None]) & (pos < x["lengths"][:, None])
    return (token_logps * mask).sum(-1), mask.sum(-1)


def today_side(model_name: str):
    model, _, opt = trainable(model_name)
    objective = make_loss_fn(LOSSES["d2o"], {"alpha": 0.1, "beta": 0.1})
    value_and_grad = nn.value_and_grad(
        model, lambda m, x, refs: objective.value(*whole_logps(m, x), refs)
    )
    state = [model.state, opt.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, refs):
        (loss, _), grad = value_and_grad(model, x, refs)
        opt.update(model, grad)
        return loss

    def run(batch):
        mx.eval(state, step(batch.inputs(shared=False), batch.refs))

    run.resident = resident(model, opt)
    return run


def mlx_lm_side(model_name: str):
    from mlx_lm.tuner.trainer import default_loss

    model, _, opt = trainable(model_name)
    value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, opt.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, lengths):
        (loss, ntoks), grad = value_and_grad(model, tokens, lengths)
        opt.update(model, grad)
        return loss, ntoks

    def run(batch):
        x = batch.inputs(shared=False)
        # mlx-lm's batch: tokens and (prompt offset, length) per row; the prompt is masked.
        lengths = mx.stack([x["prompt_lengths"], x["lengths"]], axis=1)
        mx.eval(state, step(x["tokens"], lengths))

    run.resident = resident(model, opt)
    return run


def timed(run, batch) -> tuple[float, float, float]:
    """(wall-clock s, CPU s of this process, peak GB of this side alone) of one step."""
    mx.synchronize()
    mx.clear_cache()
    others = mx.get_active_memory() - run.resident
    mx.reset_peak_memory()
    tic, cpu = time.perf_counter(), time.process_time()
    run(batch)
    mx.synchronize()
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu
    return wall, cpu, (mx.get_peak_memory() - others) / 1e9


def bench(args, k: int, sides: dict, tok) -> list:
    exs = examples(args.data, tok, args.batch_size, k, args.max_tokens, args.seed)
    batch, ntoks = collate(exs, LOSSES["d2o"].layout(), tok.pad_token_id or 0)
    for run in sides.values():
        run(batch)  # compile
    got = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, run in sides.items():
            got[name].append(timed(run, batch))
    plen = statistics.median(len(e.prompt) for e in exs)
    rlen = statistics.median(len(r) for e in exs for r in [e.negative, *e.samples])
    rows = []
    for name in sides:
        t, c, p = (statistics.median(x[i] for x in got[name]) for i in range(3))
        rows.append((k, name, len(batch), plen, rlen, t, c, ntoks / t, p))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="records .jsonl (mlx-d2o data convert)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("-k", type=int, nargs="+", default=[4, 11])
    ap.add_argument("--batch-size", type=int, default=2, help="prompts per step")
    ap.add_argument("--max-tokens", type=int, default=48, help="sample length cap")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    d2o, tok = d2o_side(args.model)
    sides = {"d2o": d2o, "mlx-lm": mlx_lm_side(args.model), "today": today_side(args.model)}
    rows = []
    for k in args.k:
        rows += bench(args, k, sides, tok)
    print(f"# {platform.machine()}, MLX {mx.__version__}, {mx.default_device()}, {args.model}")
    print(f"# B={args.batch_size} prompts/step, medians of {args.reps} alternated steps")
    print(
        "| K | side | seqs | prompt tok | resp tok | s/step | CPU s/step | tok/s | peak GB "
        "| speed-up (wall) | speed-up (CPU) | peak/today |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in args.k:
        mine = {r[1]: r for r in rows if r[0] == k}
        for _, name, n, pl, rl, t, c, tps, p in mine.values():
            up, cup = mine["mlx-lm"][5] / t, mine["mlx-lm"][6] / c
            rel = p / mine["today"][8]
            print(
                f"| {k} | {name} | {n} | {pl:.0f} | {rl:.0f} | {t:.2f} | {c:.2f} | {tps:.0f} | "
                f"{p:.2f} | {up:.2f}x | {cup:.2f}x | {rel:.2f}x |"
            )


if __name__ == "__main__":
    main()
