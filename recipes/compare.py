"""The paper's comparison, small: base, D2O, D2O-instance, NPO and GA on the embedded SmolLM2-135M
and data/, on a CPU-sized budget.

    python recipes/compare.py                      # about 20 minutes on a 2-core x86-64 CPU
    python recipes/compare.py --out runs/cmp --iters 40 --num-samples 8   # a bigger budget

One shared sample cache (`mlx-d2o sample`: K responses per training prompt, scored by the
reference), then `mlx-d2o train --loss X` for each loss with the same steps, learning rate,
LoRA settings, seed and data, then one `mlx-d2o eval` over all adapters. Writes
`OUT/report/` (report.json, report.md, plots) and `OUT/compare.md` (the table, the commands,
the machine and the wall time of each step), and prints the table and the total wall time.

Every command is the public CLI, so this is also a worked example of the whole pipeline.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOSSES = ("d2o", "d2o-instance", "npo", "ga")


def cli() -> list[str]:
    """The `mlx-d2o` beside this Python (a venv's bin/), else on PATH, else `python -m`."""
    here = Path(sys.executable).parent / "mlx-d2o"
    if here.exists():
        return [str(here)]
    found = shutil.which("mlx-d2o")
    return [found] if found else [sys.executable, "-m", "mlx_d2o.cli"]


def machine() -> str:
    import mlx.core as mx

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, "
        f"MLX {mx.__version__} ({mx.default_device()})"
    )


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument(
        "--out", default="runs/compare", help="Output directory (cache, adapters, report)."
    )
    p.add_argument("--losses", default=",".join(LOSSES), help="Comma-separated losses to train.")
    p.add_argument("--train-data", default="data/train.jsonl")
    p.add_argument(
        "--limit",
        type=int,
        default=32,
        help="Training prompts to sample for (first N of --train-data).",
    )
    p.add_argument(
        "--num-samples", type=int, default=4, help="K self-generated responses per prompt."
    )
    p.add_argument("--sample-max-tokens", type=int, default=48)
    p.add_argument(
        "--sample-batch-size",
        type=int,
        default=8,
        help="Prompts per sampling batch (x K sequences).",
    )
    p.add_argument("--iters", type=int, default=24, help="Training steps, the same for every loss.")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--num-layers", type=int, default=8, help="LoRA on the last N layers.")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--eval-prompts", type=int, default=24, help="First N of each evaluation file.")
    p.add_argument("--eval-max-tokens", type=int, default=48)
    p.add_argument(
        "--eval-batch-size", type=int, default=48, help="Sequences generated together in eval."
    )
    p.add_argument("--judge", default="keyword")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="Delete OUT first (otherwise a finished sample cache is reused).",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    os.chdir(REPO)
    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    losses = [x.strip() for x in a.losses.split(",") if x.strip()]
    d2o = cli()
    s = str(a.seed)
    steps = [
        (
            "sample",
            [
                "sample",
                "--model",
                a.model,
                "--data",
                a.train_data,
                "--output",
                str(out / "samples"),
                "--limit",
                str(a.limit),
                "--num-samples",
                str(a.num_samples),
                "--max-tokens",
                str(a.sample_max_tokens),
                "--batch-size",
                str(a.sample_batch_size),
                "--seed",
                s,
            ],
        )
    ]
    for loss in losses:
        steps.append(
            (
                f"train {loss}",
                [
                    "train",
                    "--model",
                    a.model,
                    "--samples",
                    str(out / "samples"),
                    "--loss",
                    loss,
                    "--adapter-path",
                    str(out / "adapters" / loss),
                    "--iters",
                    str(a.iters),
                    "--batch-size",
                    str(a.batch_size),
                    "--learning-rate",
                    str(a.learning_rate),
                    "--num-layers",
                    str(a.num_layers),
                    "--alpha",
                    str(a.alpha),
                    "--beta",
                    str(a.beta),
                    "--steps-per-report",
                    "2",
                    "--save-every",
                    "0",
                    "--seed",
                    s,
                ],
            )
        )
    ev = ["eval", "--model", a.model]
    for loss in losses:
        ev += ["--adapter-path", str(out / "adapters" / loss)]
    ev += [
        "--negatives",
        "data/test.jsonl",
        "--prompts",
        "data/harmful_prompts.jsonl",
        "--benign",
        "data/benign.jsonl",
        "--output",
        str(out / "report"),
        "--num-prompts",
        str(a.eval_prompts),
        "--max-tokens",
        str(a.eval_max_tokens),
        "--batch-size",
        str(a.eval_batch_size),
        "--judge",
        a.judge,
        "--seed",
        s,
    ]
    steps.append(("eval", ev))

    times, t0, load0 = [], time.time(), _load()
    for name, args in steps:
        cmd = d2o + args
        print(f"==> {name}: mlx-d2o {shlex.join(args)}", flush=True)
        tic = time.time()
        r = subprocess.run(cmd)
        times.append((name, time.time() - tic))
        if r.returncode != 0:
            print(f"error: step '{name}' failed with exit code {r.returncode}", file=sys.stderr)
            return r.returncode
    total = time.time() - t0

    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in report.splitlines() if line.startswith("|"))
    lines = [
        "# D2O vs baselines, small (recipes/compare.py)",
        "",
        table,
        "",
        f"Command: `{('python recipes/compare.py ' + shlex.join(argv if argv is not None else sys.argv[1:])).strip()}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Wall time: {total / 60:.1f} min in all ("
        + ", ".join(f"{n} {t:.0f} s" for n, t in times)
        + "); "
        f"load average at start {load0}, at end {_load()} (other jobs on the machine slow every step).",
        "",
        "Steps (all through the `mlx-d2o` CLI):",
        "",
        "```",
        *[f"mlx-d2o {shlex.join(args)}" for _, args in steps],
        "```",
        "",
        f"Full report with column definitions and plots: `{out / 'report' / 'report.md'}`.",
    ]
    (out / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print()
    print(table)
    print(
        f"\nwall time: {total / 60:.1f} min (" + ", ".join(f"{n} {t:.0f} s" for n, t in times) + ")"
    )
    print(f"written: {out / 'compare.md'}, {out / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
