"""Training throughput: `mlx-d2o train` (D2O) against mlx-lm's own supervised LoRA trainer.

Same model (default: the embedded SmolLM2-135M-Instruct, float32 on the CPU), same LoRA
settings, same sequences: for B prompts with K samples and the negative each, one D2O step runs
one forward and backward over the B*(K+1) sequences; the baseline is `mlx_lm.tuner.trainer.train`
(what `mlx_lm.lora` runs) with those very sequences as supervised examples, B*(K+1) per batch.
Both run the same number of batches (one pass over the data).

Reported per trainer: tokens/s over the steps after the first (the first compiles), peak memory,
and the ratios D2O / mlx-lm (goal: >= 0.9x tokens/s, <= 1.1x memory). Tokens are the real
(unpadded) tokens of the sequences; mlx-lm counts one token less per sequence (its targets), so
its figure is scaled by sum(len) / sum(len - 1) to count the same thing.

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


def run_d2o(a, cache: Path, out: Path, iters: int) -> dict:
    from mlx_d2o.train import TrainArgs, train

    mx.reset_peak_memory()
    lines = []
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
        ),
        on_report=lambda line: lines.append(line) if line["split"] == "train" else None,
        log=lambda s: None,
    )
    timed = lines[1:]  # the first step compiles
    tokens = sum(line["trained_tokens"] - p["trained_tokens"] for p, line in zip(lines, timed))
    seconds = sum(
        (line["trained_tokens"] - p["trained_tokens"]) / line["tokens_per_sec"]
        for p, line in zip(lines, timed)
    )
    return {
        "tokens_per_sec": tokens / seconds,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
        "steps": len(lines),
        "final_loss": lines[-1]["loss"],
    }


def run_mlx_lm(a, seqs: list, iters: int, out: Path) -> dict:
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(a.model)
    model.freeze()
    linear_to_lora_layers(model, a.num_layers, {"rank": a.lora_rank, "scale": 20.0, "dropout": 0.0})
    reports = []

    class Collect(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(info)

    mx.random.seed(a.seed)
    out.mkdir(parents=True, exist_ok=True)
    mx.reset_peak_memory()
    batch = a.batch_size * (a.k + 1)
    dataset = [(s, 0) for s in seqs]  # (tokens, offset): what iterate_batches takes
    train(
        model,
        optim.Adam(learning_rate=1e-5),
        dataset,
        None,
        args=TrainingArgs(
            batch_size=batch,
            iters=iters,
            steps_per_report=1,
            steps_per_eval=10**9,
            steps_per_save=10**9,
            adapter_file=str(out / "adapters.safetensors"),
            max_seq_length=4096,
        ),
        training_callback=Collect(),
    )
    timed = reports[1:]
    tokens = sum(r["trained_tokens"] - p["trained_tokens"] for p, r in zip(reports, timed))
    seconds = sum(
        (r["trained_tokens"] - p["trained_tokens"]) / r["tokens_per_second"]
        for p, r in zip(reports, timed)
    )
    # mlx-lm counts targets (len - 1 per sequence); scale to the sequences' real tokens.
    scale = sum(len(s) for s in seqs) / sum(len(s) - 1 for s in seqs)
    return {
        "tokens_per_sec": tokens / seconds * scale,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
        "steps": len(reports),
        "final_loss": reports[-1]["train_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("-k", type=int, default=4, help="samples per prompt")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per batch")
    p.add_argument("--num-layers", type=int, default=16)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each trainer, in ABBA order (d2o, mlx-lm, mlx-lm, d2o, ...) so that a change in "
        "the machine's load over time hits both alike",
    )
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, seqs = build_cache(a.model, tmp / "cache", a.prompts, a.k, a.seed)
        iters = a.prompts // a.batch_size
        lens = [len(s) for s in seqs]
        print(
            f"model {a.model}, LoRA r={a.lora_rank} on {a.num_layers} layers; {a.prompts} prompts x (K={a.k} + 1) = "
            f"{len(seqs)} sequences, {sum(lens)} tokens (mean {sum(lens) / len(lens):.0f}); {iters} steps of "
            f"{a.batch_size * (a.k + 1)} sequences; {platform.machine()}, device {mx.default_device()}",
            flush=True,
        )
        order = [
            n
            for i in range(a.repeats)
            for n in (("d2o", "mlx-lm") if i % 2 == 0 else ("mlx-lm", "d2o"))
        ]
        runs = {"d2o": [], "mlx-lm": []}
        for name in order:
            t = time.perf_counter()
            r = (
                run_d2o(a, cache, tmp / "d2o", iters)
                if name == "d2o"
                else run_mlx_lm(a, seqs, iters, tmp / "sft")
            )
            r["wall_s"] = time.perf_counter() - t
            runs[name].append(r)
            print(
                f"  run {name}: {r['tokens_per_sec']:.1f} tokens/s, peak {r['peak_memory_gb']:.3f} GB",
                flush=True,
            )
    # Harmonic mean of the runs' tokens/s = total tokens / total time (each run has the same tokens).
    res = {
        n: {
            "tokens_per_sec": len(rs) / sum(1 / r["tokens_per_sec"] for r in rs),
            "peak_memory_gb": max(r["peak_memory_gb"] for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs) / len(rs),
            "runs": rs,
        }
        for n, rs in runs.items()
    }
    print()
    print(f"{'trainer':<28}{'tokens/s':>10}{'peak GB':>10}{'wall s':>9}   ({a.repeats} runs each)")
    for name, label in (("mlx-lm", "mlx_lm.tuner (SFT, baseline)"), ("d2o", "mlx-d2o train (D2O)")):
        r = res[name]
        print(
            f"{label:<28}{r['tokens_per_sec']:>10.1f}{r['peak_memory_gb']:>10.3f}{r['wall_s']:>9.1f}"
        )
    tps = res["d2o"]["tokens_per_sec"] / res["mlx-lm"]["tokens_per_sec"]
    mem = res["d2o"]["peak_memory_gb"] / res["mlx-lm"]["peak_memory_gb"]
    print(
        f"ratio D2O / mlx-lm: tokens/s {tps:.3f}x (goal >= 0.9), peak memory {mem:.3f}x (goal <= 1.1)"
    )
    print(
        json.dumps(
            {
                "ratio_tokens_per_sec": tps,
                "ratio_peak_memory": mem,
                **{k: v for k, v in res.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
