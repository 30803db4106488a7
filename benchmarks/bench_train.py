"""Training throughput: `mlx-d2o train` (D2O) against mlx-lm's own supervised LoRA trainer,
both doing the same work.

Same model (default: the embedded SmolLM2-135M-Instruct, float32 on the CPU), same LoRA
settings (r 8, scale 20, no dropout, on the last 16 layers), same optimizer (Adam 1e-5), same
sequences in the same batches: for B prompts with K samples and the negative each, one D2O step
trains on the B*(K+1) sequences of its batch; the baseline is `mlx_lm.tuner.trainer.train`
(what `mlx_lm.lora` runs) given, step for step, those very sequences whole (prompt +
response, the prompt masked out of its loss), padded as D2O pads them (`logprobs.pad`, to a
multiple of 8) and built inside its loop as D2O builds its own (`examples.collate`).

Both are timed alike, from outside: the interval between the train reports of step 1 and of
the last step (steps_per_report = 1), i.e. steps 2..N whole (batch building, forward, backward,
update, report), the first step (compilation) left out. Tokens are the same number on both
sides: prompt + response of every sequence of the timed steps. D2O's step may run each prompt
once for its K + 1 continuations (`shared_prompt`, where the model allows it); the output says
which, and counts the same sequence tokens either way. Peak memory is `mx.get_peak_memory`.

The cache is built here (no `mlx-d2o sample` needed): prompts from data/train.jsonl, the K
"samples" of a prompt are other records' responses (real text, realistic lengths), scored by the
base model so the D2O loss is the real one.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 python benchmarks/bench_train.py
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlx_d2o import data as D  # noqa: E402
from mlx_d2o.logprobs import score  # noqa: E402
from mlx_d2o.models import load  # noqa: E402
from mlx_d2o.sample.cache import FORMAT_VERSION, write_manifest  # noqa: E402


def build_cache(model_name: str, out: Path, prompts: int, k: int, seed: int) -> tuple[Path, list]:
    """A sample cache of PROMPTS records, K samples each; returns (dir, sequences as token lists)."""
    model, tok, info = load(model_name, return_info=True)
    records = D.load_records(REPO / "data" / "train.jsonl")
    rng = random.Random(seed)
    pool = [r.chosen for r in records if r.chosen] + [r.rejected for r in records]
    rows, seqs = [], []
    for r in records[:prompts]:
        samples = rng.sample(pool, k)
        p = D.prompt_tokens(tok, r.messages)
        resp = [D.response_tokens(tok, r.messages, t, p) for t in samples + [r.rejected]]
        lp, n = score(model, [(p, x) for x in resp])
        rows.append(
            {
                "id": r.id,
                "messages": r.messages,
                "rejected": r.rejected,
                "samples": samples,
                "sample_tokens": [len(x) for x in resp[:k]],
                "sample_finish": ["stop"] * k,
                "ref_logps": {"samples": lp[:k], "rejected": lp[k]},
                "ref_tokens": {"samples": n[:k], "rejected": n[k]},
            }
        )
        seqs += [p + x for x in resp]
    write_manifest(
        out,
        {
            "format_version": FORMAT_VERSION,
            "complete": True,
            "records": len(rows),
            "num_samples": k,
            "world_size": 1,
            "model_fingerprint": info.fingerprint,
            "data_fingerprint": "bench",
            "max_tokens": 0,
            "temp": 1.0,
            "top_p": 1.0,
            "seed": seed,
        },
    )
    D.write_jsonl_atomic(out / "samples.jsonl", rows)
    return out, seqs


class Clock:
    """The time of each train report, so both trainers are timed alike from outside: the
    interval between the reports of steps 1 and N holds steps 2..N whole (batch building,
    forward, backward, update, report), the first step (compilation) left out."""

    def __init__(self):
        self.times = []

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def seconds(self) -> float:
        return self.times[-1] - self.times[0]


def step_batches(a, model_name: str, cache: Path, iters: int) -> tuple[list, list, bool]:
    """Each D2O step's batch as the D2O trainer builds it (same examples, same batches in the
    same order, `examples.collate`), its real token count, and whether D2O's step runs each
    prompt once (`shared_prompt.supports`): what the baseline trains on, step for step."""
    from mlx_d2o import losses
    from mlx_d2o.shared_prompt import supports
    from mlx_d2o.train import TrainArgs
    from mlx_d2o.train.examples import batch_at, build_examples, collate, make_batches, read_cache

    model, tokenizer = load(model_name)
    targs = TrainArgs(model=model_name, samples=str(cache), batch_size=a.batch_size)
    _, rows = read_cache(cache)
    examples, _ = build_examples(rows, tokenizer, targs, cache)
    batches, layout = make_batches(examples, a.batch_size), losses.get("d2o").layout()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out, tokens = [], []
    for it in range(iters):
        batch, ntoks = collate([examples[i] for i in batch_at(batches, it, a.seed)], layout, pad_id)
        out.append(batch)
        tokens.append(ntoks)
    return out, tokens, supports(model)


def run_d2o(a, cache: Path, out: Path, iters: int, tokens: list) -> dict:
    from mlx_d2o.train import TrainArgs, train

    mx.reset_peak_memory()
    clock, lines = Clock(), []

    def on_report(line):
        if line["split"] == "train":
            clock.tick()
            lines.append(line)

    train(
        TrainArgs(
            model=a.model,
            samples=str(cache),
            adapter_path=str(out),
            loss="d2o",
            iters=iters,
            batch_size=a.batch_size,
            num_layers=a.num_layers,
            lora_rank=a.lora_rank,
            learning_rate=1e-5,
            steps_per_report=1,
            steps_per_eval=0,
            save_every=0,
            seed=a.seed,
            overwrite=True,
        ),
        on_report=on_report,
        log=lambda s: None,
    )
    return _result(clock, tokens, lines[-1]["loss"], len(lines))


def run_mlx_lm(a, batches: list, tokens: list, out: Path) -> dict:
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(a.model)
    model.freeze()
    linear_to_lora_layers(model, a.num_layers, {"rank": a.lora_rank, "scale": 20.0, "dropout": 0.0})
    clock, losses = Clock(), []

    class Collect(TrainingCallback):
        def on_train_loss_report(self, info):
            clock.tick()
            losses.append(info["train_loss"])

    def iterate_batches(**kw):
        # D2O's batches, step for step: the same full sequences padded alike (logprobs.pad,
        # as D2O's whole-sequence path), built here inside the timed interval as D2O builds
        # its own; mlx-lm's (offset, length) pairs mask the prompt out of the loss.
        for batch in batches:
            inputs = batch.inputs(shared=False)
            yield inputs["tokens"], mx.stack([inputs["prompt_lengths"], inputs["lengths"]], 1)

    mx.random.seed(a.seed)
    out.mkdir(parents=True, exist_ok=True)
    mx.reset_peak_memory()
    train(
        model,
        optim.Adam(learning_rate=1e-5),
        [None] * len(batches),  # iterate_batches above ignores it
        None,
        args=TrainingArgs(
            batch_size=len(batches[0]),
            iters=len(batches),
            steps_per_report=1,
            steps_per_eval=10**9,
            steps_per_save=10**9,
            adapter_file=str(out / "adapters.safetensors"),
            max_seq_length=1 << 20,
        ),
        iterate_batches=iterate_batches,
        training_callback=Collect(),
    )
    return _result(clock, tokens, losses[-1], len(losses))


def _result(clock: Clock, tokens: list, final_loss: float, steps: int) -> dict:
    seconds = clock.seconds()
    return {
        "tokens_per_sec": sum(tokens[1:]) / seconds,
        "seconds_per_step": seconds / (len(tokens) - 1),
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
        "steps": steps,
        "final_loss": final_loss,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("-k", type=int, default=4, help="samples per prompt")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    p.add_argument("--num-layers", type=int, default=16)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each trainer, in ABBA order (d2o, mlx-lm, mlx-lm, d2o, ...) so that a "
        "change in the machine's load over time hits both alike",
    )
    a = p.parse_args()
    iters = a.prompts // a.batch_size
    if iters < 2:
        p.error("--prompts must give at least 2 steps of --batch-size (the first is not timed)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, _ = build_cache(a.model, tmp / "cache", a.prompts, a.k, a.seed)
        batches, tokens, shared = step_batches(a, a.model, cache, iters)
        print(_settings(a, iters, batches, tokens, shared), flush=True)
        order = [
            n
            for i in range(a.repeats)
            for n in (("d2o", "mlx-lm") if i % 2 == 0 else ("mlx-lm", "d2o"))
        ]
        runs = {"d2o": [], "mlx-lm": []}
        for name in order:
            t = time.perf_counter()
            if name == "d2o":
                r = run_d2o(a, cache, tmp / "d2o", iters, tokens)
            else:
                r = run_mlx_lm(a, batches, tokens, tmp / "sft")
            r["wall_s"] = time.perf_counter() - t
            runs[name].append(r)
            print(
                f"  run {name}: {r['tokens_per_sec']:.1f} tokens/s, "
                f"{r['seconds_per_step']:.2f} s/step, peak {r['peak_memory_gb']:.3f} GB",
                flush=True,
            )
    _table(a, runs)


def _settings(a, iters: int, batches: list, tokens: list, shared: bool) -> str:
    shapes = [tuple(b.inputs(shared=False)["tokens"].shape) for b in batches]
    path = "each prompt once (shared_prompt)" if shared else "whole sequences"
    return (
        f"model {a.model}, LoRA r={a.lora_rank} scale 20 on {a.num_layers} layers, Adam 1e-5; "
        f"{a.prompts} prompts x (K={a.k} + 1) sequences, {iters} steps of {a.batch_size} prompts "
        f"= {a.batch_size * (a.k + 1)} sequences (the same batches, in the same order, on both "
        f"sides); padded to a multiple of 8 on both (logprobs.pad): {shapes}; "
        f"{sum(tokens)} tokens, prompt + response of every sequence, counted alike on both "
        f"sides; timed: steps 2..{iters} from outside (report to report: batch building, step, "
        f"report); D2O runs {path}, mlx-lm the whole sequences (prompt masked); "
        f"{platform.machine()}, device {mx.default_device()}, MLX {mx.__version__}"
    )


def _table(a, runs: dict) -> None:
    # Harmonic mean of the runs' tokens/s = total tokens / total time (each run has the same tokens).
    res = {
        n: {
            "tokens_per_sec": len(rs) / sum(1 / r["tokens_per_sec"] for r in rs),
            "seconds_per_step": sum(r["seconds_per_step"] for r in rs) / len(rs),
            "peak_memory_gb": max(r["peak_memory_gb"] for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs) / len(rs),
            "runs": rs,
        }
        for n, rs in runs.items()
    }
    print()
    print(
        f"{'trainer':<30}{'tokens/s':>10}{'s/step':>9}{'peak GB':>10}{'wall s':>9}"
        f"   ({a.repeats} runs each)"
    )
    for name, label in (("mlx-lm", "mlx_lm.tuner (SFT, baseline)"), ("d2o", "mlx-d2o train (D2O)")):
        r = res[name]
        print(
            f"{label:<30}{r['tokens_per_sec']:>10.1f}{r['seconds_per_step']:>9.2f}"
            f"{r['peak_memory_gb']:>10.3f}{r['wall_s']:>9.1f}"
        )
    tps = res["d2o"]["tokens_per_sec"] / res["mlx-lm"]["tokens_per_sec"]
    mem = res["d2o"]["peak_memory_gb"] / res["mlx-lm"]["peak_memory_gb"]
    print(
        f"ratio D2O / mlx-lm: tokens/s {tps:.3f}x (goal >= 0.9), peak memory {mem:.3f}x "
        "(goal <= 1.1)"
    )
    print(json.dumps({"ratio_tokens_per_sec": tps, "ratio_peak_memory": mem, **res}))


if __name__ == "__main__":
    main()
