"""The paper's comparison, small: the losses on the embedded SmolLM2-135M, CPU-sized.

    python recipes/compare.py --sweep --task secret   # at equal drift, exact judge (~25-45 min)
    python recipes/compare.py --sweep --task hh       # at equal drift, HH-RLHF held out
    python recipes/compare.py --sweep --task secret --quick   # plumbing only, minutes
    python recipes/compare.py --sweep --task secret --preset paper   # K=11, every loss (~100 min)
    python recipes/compare.py                         # equal steps and lr, data/ (~20 min)

--sweep (recipes/compare_sweep.py) is the comparison to read: each loss (d2o, d2o-instance,
npo, ga, dpo) is trained once from one shared sample cache, checkpoints along the run are
evaluated, and the held-out harm measure is plotted against the drift it cost (KL/token to the
base on benign prompts), with n and 95 % intervals; results/sweep-TASK/ gets the plot and tables.

Without --sweep: one shared sample cache (`mlx-d2o sample`), `mlx-d2o train --loss X` for each
loss with the same steps, learning rate, LoRA settings, seed and data, then one `mlx-d2o eval`
over all adapters; writes OUT/report/ and OUT/compare.md (table, commands, machine, wall time).
A loss that moves less drifts less and forgets less, so this equal-steps table cannot say which
loss is better; it stays as a worked example of the whole pipeline.

Every command is the public CLI, printed before it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import compare_sweep
from compare_env import cli, load_avg, machine

REPO = Path(__file__).resolve().parent.parent
LOSSES = ("d2o", "d2o-instance", "npo", "ga")
# The equal-steps mode's defaults (the sweep takes its own from compare_sweep.PRESETS).
LEGACY = dict(
    model="smollm2-135m", out="runs/compare", losses=",".join(LOSSES),
    train_data="data/train.jsonl", limit=32, num_samples=4, sample_max_tokens=48,
    sample_batch_size=8, iters=24, batch_size=2, learning_rate=3e-5, num_layers=8, alpha=0.1,
    beta=0.1, eval_prompts=24, eval_max_tokens=48, eval_batch_size=48, judge="keyword", seed=0,
)  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sweep", action="store_true", help="Compare the losses at equal drift.")
    p.add_argument("--model", help=f"Base model (default {LEGACY['model']}).")
    p.add_argument("--out", help="Output directory (cache, adapters, report).")
    p.add_argument("--losses", help="Comma-separated losses to train.")
    p.add_argument("--train-data", help="Training records (equal-steps mode).")
    p.add_argument("--limit", type=int, help="Training prompts to sample for (first N).")
    p.add_argument("--num-samples", type=int, help="K self-generated responses per prompt.")
    p.add_argument("--sample-max-tokens", type=int)
    p.add_argument("--sample-batch-size", type=int, help="Prompts per sampling batch.")
    p.add_argument("--iters", type=int, help="Training steps, the same for every loss.")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--num-layers", type=int, help="LoRA on the last N layers.")
    p.add_argument("--alpha", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--eval-prompts", type=int, help="First N of each evaluation file.")
    p.add_argument("--eval-max-tokens", type=int)
    p.add_argument("--eval-batch-size", type=int, help="Sequences generated together in eval.")
    p.add_argument("--judge", help="Equal-steps mode's judge (default keyword).")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--fresh", action="store_true", help="Delete OUT first (else finished steps are reused)."
    )
    add_sweep_arguments(p)
    return p.parse_args(argv)


def legacy_steps(a) -> list:
    """(name, mlx-d2o argv) of the equal-steps comparison."""
    out, s = Path(a.out), str(a.seed)
    losses = [x.strip() for x in a.losses.split(",") if x.strip()]
    steps = [("sample", [
        "sample", "--model", a.model, "--data", a.train_data, "--output", str(out / "samples"),
        "--limit", str(a.limit), "--num-samples", str(a.num_samples),
        "--max-tokens", str(a.sample_max_tokens), "--batch-size", str(a.sample_batch_size),
        "--seed", s,
    ])]  # fmt: skip
    for loss in losses:
        steps.append((f"train {loss}", [
            "train", "--model", a.model, "--samples", str(out / "samples"), "--loss", loss,
            "--adapter-path", str(out / "adapters" / loss), "--iters", str(a.iters),
            "--batch-size", str(a.batch_size), "--learning-rate", str(a.learning_rate),
            "--num-layers", str(a.num_layers), "--alpha", str(a.alpha), "--beta", str(a.beta),
            "--steps-per-report", "2", "--save-every", "0", "--seed", s, "--overwrite",
        ]))  # fmt: skip
    ev = ["eval", "--model", a.model]
    for loss in losses:
        ev += ["--adapter-path", str(out / "adapters" / loss)]
    ev += [
        "--negatives", "data/test.jsonl", "--prompts", "data/harmful_prompts.jsonl",
        "--benign", "data/benign.jsonl", "--output", str(out / "report"),
        "--num-prompts", str(a.eval_prompts), "--max-tokens", str(a.eval_max_tokens),
        "--batch-size", str(a.eval_batch_size), "--judge", a.judge, "--seed", s,
    ]  # fmt: skip
    return steps + [("eval", ev)]


def legacy_summary(a, steps, times, total, load0, argv) -> tuple:
    out = Path(a.out)
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in report.splitlines() if line.startswith("|"))
    took = ", ".join(f"{n} {t:.0f} s" for n, t in times)
    lines = [
        "# D2O vs baselines at equal steps, small (recipes/compare.py)",
        "",
        "Equal steps and learning rate, not equal drift: a loss that moves less drifts less, so "
        "this table cannot say which loss is better (see `--sweep`).",
        "",
        table,
        "",
        f"Command: `{('python recipes/compare.py ' + shlex.join(argv)).strip()}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Wall time: {total / 60:.1f} min in all ({took}); load average at start {load0}, "
        f"at end {load_avg()} (other jobs on the machine slow every step).",
        "",
        "Steps (all through the `mlx-d2o` CLI):",
        "",
        "```",
        *[f"mlx-d2o {shlex.join(args)}" for _, args in steps],
        "```",
        "",
        f"Full report with column definitions and plots: `{out / 'report' / 'report.md'}`.",
    ]
    return "\n".join(lines) + "\n", table, took


def legacy_main(a, argv: list[str]) -> int:
    for k, v in LEGACY.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    steps = legacy_steps(a)
    times, t0, load0 = [], time.time(), load_avg()
    for name, args in steps:
        print(f"==> {name}: mlx-d2o {shlex.join(args)}", flush=True)
        tic = time.time()
        r = subprocess.run(cli() + args)
        times.append((name, time.time() - tic))
        if r.returncode != 0:
            print(f"error: step '{name}' failed with exit code {r.returncode}", file=sys.stderr)
            return r.returncode
    total = time.time() - t0
    text, table, took = legacy_summary(a, steps, times, total, load0, argv)
    (out / "compare.md").write_text(text, encoding="utf-8")
    print(f"\n{table}\n\nwall time: {total / 60:.1f} min ({took})")
    print(f"written: {out / 'compare.md'}, {out / 'report'}")
    return 0


# ---------------------------------------------------------------------------------------------
# --sweep (recipes/compare_sweep.py runs it)
# ---------------------------------------------------------------------------------------------


def _steps(text: str) -> tuple:
    try:
        steps = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of steps: {text!r}") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError("steps are integers >= 1, e.g. 4,8")
    return steps


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's own flags; the shared ones left out take the task's preset (`PRESETS`)."""
    g = p.add_argument_group("--sweep (flags not given: the task's CPU-sized preset)")
    g.add_argument("--task", choices=sorted(compare_sweep.TASKS), default="secret")
    g.add_argument("--quick", action="store_true", help="Tiny sizes: checks the plumbing only.")
    g.add_argument(
        "--preset", choices=compare_sweep.PRESET_NAMES, help="Sizes: default, quick (= --quick), "
        "paper (K=11, 96 prompts, every loss, online D2O, K=1/4/11; task secret)."
    )  # fmt: skip
    g.add_argument("--results", help="Where the plot and tables go (default results/sweep-TASK).")
    g.add_argument("--save-steps", type=_steps, help="Checkpoints evaluated, e.g. 4,8.")
    g.add_argument("--eval-n", type=int, help="Held-out records evaluated.")
    g.add_argument("--eval-benign", type=int, help="Benign prompts for the drift (KL/token).")
    g.add_argument("--hh-source", help="Task hh: HH-RLHF rows (file or Hub id).")
    g.add_argument(
        "--refresh-every", type=int,
        help="Also train online D2O (d2o-online), sampling again every N steps (0: not).",
    )  # fmt: skip
    g.add_argument(
        "--k-ablation", type=_steps,
        help="Also train D2O on the first k samples of each prompt, for each k, e.g. 1,4.",
    )  # fmt: skip


def sweep_settings(a: argparse.Namespace, argv: list[str]):
    """compare_sweep.Settings: dataclass defaults < the task's preset < flags given."""
    if a.train_data or a.judge or a.sample_batch_size:
        sys.exit("error: --train-data, --judge, --sample-batch-size: --sweep's task sets them")
    if a.quick and a.preset not in (None, "quick"):
        sys.exit(f"error: --quick and --preset {a.preset}: give one of them")
    preset = "quick" if a.quick else (a.preset or "default")
    if (a.task, preset) not in compare_sweep.PRESETS:
        sys.exit(f"error: --preset {preset} is not made for --task {a.task}")
    s = compare_sweep.Settings(
        task=a.task, preset=preset, **compare_sweep.PRESETS[(a.task, preset)]
    )
    flags = {
        "model": a.model, "limit": a.limit, "num_samples": a.num_samples,
        "sample_max_tokens": a.sample_max_tokens, "iters": a.iters, "batch_size": a.batch_size,
        "learning_rate": a.learning_rate, "num_layers": a.num_layers, "alpha": a.alpha,
        "beta": a.beta, "eval_max_tokens": a.eval_max_tokens, "eval_batch_size": a.eval_batch_size,
        "seed": a.seed, "save_steps": a.save_steps, "eval_n": a.eval_n or a.eval_prompts,
        "eval_benign": a.eval_benign, "hh_source": a.hh_source, "out": a.out, "results": a.results,
        "online_refresh_every": a.refresh_every, "k_ablation": a.k_ablation,
    }  # fmt: skip
    s = dataclasses.replace(s, **{k: v for k, v in flags.items() if v is not None})
    if a.losses is not None:
        s.losses = tuple(x.strip() for x in a.losses.split(",") if x.strip())
    # the paper preset's folders are named after it; the others after the task
    base = "sweep-paper" if preset == "paper" else f"sweep-{s.task}"
    tail = "-quick" if preset == "quick" else ""
    s.out, s.results = s.out or f"runs/{base}{tail}", s.results or f"results/{base}{tail}"
    s.fresh, s.command = a.fresh, "python recipes/compare.py " + shlex.join(argv)
    if any(k > s.num_samples for k in s.k_ablation):
        sys.exit(f"error: --k-ablation {s.k_ablation}: each k at most K = {s.num_samples}")
    if max(s.save_steps) > s.iters:
        sys.exit(f"error: --save-steps {s.save_steps} go past --iters {s.iters}")
    return s


def sweep_main(a: argparse.Namespace, argv: list[str]) -> int:
    info = compare_sweep.run_sweep(sweep_settings(a, argv))
    print()
    print(info["markdown"])
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    os.chdir(REPO)
    return sweep_main(a, argv) if a.sweep else legacy_main(a, argv)


if __name__ == "__main__":
    sys.exit(main())
