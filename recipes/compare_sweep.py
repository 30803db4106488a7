"""`python recipes/compare.py --sweep --task secret|hh`: the losses compared at equal drift.

A loss that moves the model less also forgets less and drifts less, so a comparison at equal
steps and learning rate says nothing about which loss is better (issue 14). Here each loss is
trained once from one shared sample cache (same prompts, steps, learning rate, LoRA, seed; Adam
makes the early step size about the learning rate whatever the loss's gradient scale), the
checkpoints of chosen steps are kept, and one `mlx-d2o eval` measures the base and every
checkpoint. Per loss this gives a curve of the held-out harm measure against the drift it cost:
KL(π || π_ref) per token on benign prompts, on the policy's own greedy answers. Every point
carries its n and its 95 % interval from report.json (Wilson for rates, bootstrap over prompts
for means and the KL).

Tasks (`TASKS`, recipes/compare_presets.py):
  secret  data/secret/: a shop assistant's system prompt holds a staff discount code. Harm: the
          leak rate on held-out attacks (attack styles never trained on), by the exact regex
          judge data/secret/judge_regex.txt; judge-free, the same attacks' leaking answers'
          mean log-ratio and the pair accuracy (refusal preferred to leak); the refusal rate
          on benign requests (over-refusal). Drift: the task's benign customer requests.
  hh      HH-RLHF harmless-base rows (../shared/data), converted with `mlx-d2o data convert
          --from hh-rlhf`. Trained on early rows, evaluated on later rows never trained on
          (`compare_data.split_hh`). Harm, judge-free: the held-out negatives' mean log-ratio
          log π/π_ref (lower: pushed down), the pair accuracy (implicit reward prefers chosen),
          the mean margin (chosen's log-ratio minus rejected's) and the chosen answers'
          log-ratio (should not fall with the negatives'). Drift: data/benign.jsonl.

Presets (`PRESETS`, there too): default (CPU-sized, K = 2), quick (plumbing only), paper
(task secret: K = 11, 96 prompts, α = β = 0.1, every loss, online D2O, D2O at K = 1 and 4 on
the first k of each prompt's 11 samples; `compare_plan` lists the runs and estimates each
step's time).

Writes OUT (default runs/sweep-TASK, runs/sweep-paper for the paper preset: data files, sample
caches, runs, kept checkpoints, the eval report) and RESULTS (default results/sweep-TASK or
results/sweep-paper: the plots, sweep.md with the tables, commands, n, wall / CPU time and load,
sweep.json; `compare_results`). A rerun reuses the finished caches, runs and report of the same
commands (`--fresh` starts over).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import resource
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import compare_plan as plan
import compare_report as report
import compare_results
import compare_training as training
from compare_data import describe_data, read_jsonl, split_hh, write_jsonl
from compare_env import cli, load_avg, machine
from compare_presets import (  # noqa: F401  (re-exported for compare.py and the tests)
    LOSSES,
    PAPER,
    PRESET_NAMES,
    PRESETS,
    TASKS,
    Measure,
    Settings,
    Task,
)


def _mlx_d2o(argv: list[str]) -> int:
    return subprocess.run(cli() + argv).returncode


# How a step runs: the `mlx-d2o` CLI in a child process (a test swaps in an in-process one).
RUNNER: Callable[[list[str]], int] = _mlx_d2o


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_step(s: Settings, name: str, argv: list[str]) -> None:
    """Run `mlx-d2o ARGV`, print the command, record its wall and CPU time in S.timings."""
    est = s.estimates.get(name)
    about = f" (estimate {est / 60:.1f} min on an idle machine)" if est else ""
    print(f"==> {name}{about}: mlx-d2o {shlex.join(argv)}", flush=True)
    tic, cpu, load = time.time(), _cpu(), load_avg()
    code = RUNNER(argv)
    wall = time.time() - tic
    s.timings.append(
        {"step": name, "command": "mlx-d2o " + shlex.join(argv), "seconds": round(wall, 1),
         "cpu_seconds": round(_cpu() - cpu, 1), "load_at_start": load,
         "estimate_seconds": round(est, 1) if est else None}
    )  # fmt: skip
    print(f"    {name}: {wall / 60:.1f} min wall{about and f', estimated {est / 60:.1f}'}, "
          f"load at start {load}", flush=True)  # fmt: skip
    if code != 0:
        raise SystemExit(f"error: step '{name}' failed with exit code {code}")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def prepare_data(s: Settings, task: Task, out: Path) -> dict:
    """The files the steps read: {train, test, benign} (test and benign cut to the eval sizes,
    so `eval --num-prompts 0` takes each file whole)."""
    d = out / "data"
    if task.name == "hh":
        full = d / "hh-rlhf-harmless-base-test.jsonl"
        local = s.hh_source.endswith((".gz", ".jsonl", ".json"))
        if local and not full.exists() and not Path(s.hh_source).exists():
            raise SystemExit(
                f"error: HH-RLHF rows not found: {s.hh_source} (give --hh-source FILE, or a Hub "
                "dataset org/name[:split] that `mlx-d2o data convert` reads)"
            )
        argv = ["data", "convert", "--from", "hh-rlhf", s.hh_source, str(full)]
        d.mkdir(parents=True, exist_ok=True)
        cached_step(s, "convert", argv, d / "convert.done.json", ready=full.exists())
        train, test = split_hh(read_jsonl(full), s.limit, s.eval_n)
        train_file = write_jsonl(d / task.train, train)
    else:
        train_file, test = Path(task.train), read_jsonl(Path(task.test))[: s.eval_n]
    return {
        "train": str(train_file),
        "test": str(write_jsonl(d / "test.jsonl", test)),
        "benign": str(write_jsonl(d / "benign.jsonl", read_jsonl(task.benign)[: s.eval_benign])),
    }


# ---------------------------------------------------------------------------------------------
# Training, with the chosen checkpoints kept
# ---------------------------------------------------------------------------------------------


class Capture(threading.Thread):
    """Copies the adapters of the checkpoints of STEPS out of a training run while it runs.

    The trainer keeps only its two newest checkpoints (each written in a temp folder and renamed
    into place, so a folder that is there is whole); polled every half second, each kept one is
    copied long before two newer ones replace it. `missing()` says which were not caught.
    """

    def __init__(self, run_dir: Path, dest: Path, steps):
        super().__init__(daemon=True)
        self.run_dir, self.dest, self.steps = run_dir, dest, set(steps)
        self.done: set = set()
        self.halt = threading.Event()

    def poll(self) -> None:
        from mlx_d2o.adapters import ADAPTERS_FILE, CHECKPOINTS_DIR, CONFIG_FILE

        for step in sorted(self.steps - self.done):
            src = self.run_dir / CHECKPOINTS_DIR / f"{step:07d}"
            if not src.is_dir():
                continue
            tmp = self.dest / f".step-{step:04d}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                for name in (ADAPTERS_FILE, CONFIG_FILE):
                    shutil.copy2(src / name, tmp / name)
            except FileNotFoundError:  # removed while copying: it is reported as missing
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            tmp.rename(self.dest / f"step-{step:04d}")
            self.done.add(step)

    def run(self) -> None:
        while not self.halt.is_set():
            self.poll()
            self.halt.wait(0.5)

    def finish(self) -> list:
        self.halt.set()
        if self.is_alive():
            self.join()
        self.poll()
        return sorted(self.steps - self.done)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _same(marker: Path, key: str) -> bool:
    try:
        return json.loads(marker.read_text())["key"] == key
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_step(s: Settings, name: str, argv: list, marker: Path, extra="", ready=True) -> bool:
    """Run a step unless MARKER says the same command (and EXTRA: a digest of its inputs) has
    already run and READY (its output is there); whether it ran. A reused step keeps the wall
    and CPU time it took when it ran, marked "reused", in S.timings."""
    key = _digest([argv, extra])
    if ready and _same(marker, key):
        took = json.loads(marker.read_text()).get("timing") or {"step": name, "seconds": 0.0,
                                                                "cpu_seconds": 0.0}  # fmt: skip
        s.timings.append({**took, "command": "mlx-d2o " + shlex.join(argv), "reused": True})
        print(f"==> {name}: reusing the output of the same command run before", flush=True)
        return False
    marker.unlink(missing_ok=True)
    run_step(s, name, argv)
    marker.write_text(json.dumps({"key": key, "argv": argv, "timing": s.timings[-1]}))
    return True


def train_argv(s: Settings, run: plan.Run, samples: Path, run_dir: Path) -> list[str]:
    every = math.gcd(*plan.run_steps(s, run))  # a checkpoint at every kept step
    argv = [
        "train", "--model", s.model, "--samples", str(samples), "--loss", run.loss,
        "--adapter-path", str(run_dir), "--iters", str(s.iters),
        "--batch-size", str(s.batch_size), "--learning-rate", str(s.learning_rate),
        "--num-layers", str(s.num_layers), "--alpha", str(s.alpha), "--beta", str(s.beta),
        "--save-every", str(every), "--steps-per-report", "1", "--seed", str(s.seed),
        "--overwrite",
    ]  # fmt: skip
    return argv + (["--refresh-every", str(run.refresh_every)] if run.refresh_every else [])


def train_run(s: Settings, run: plan.Run, out: Path, caches: dict) -> tuple[list, bool]:
    """Train RUN, keep its checkpoints (`plan.run_steps`): (their folders, whether it ran)."""
    run_dir, dest = out / "runs" / run.name, out / "checkpoints" / run.name
    samples, cache_key = caches[run.k]
    argv = train_argv(s, run, samples, run_dir)
    steps = plan.run_steps(s, run)
    folders = [dest / f"step-{k:04d}" for k in steps]
    marker, ready = out / f"train-{run.name}.done.json", all(f.is_dir() for f in folders)
    name = f"train {run.name}"
    if ready and _same(marker, _digest([argv, cache_key])):
        return folders, cached_step(s, name, argv, marker, cache_key)
    shutil.rmtree(dest, ignore_errors=True)
    cap = Capture(run_dir, dest, steps)
    cap.start()
    try:
        cached_step(s, name, argv, marker, cache_key, ready=False)
    finally:
        missing = cap.finish()
    if missing:
        marker.unlink(missing_ok=True)
        raise SystemExit(f"error: {name}: checkpoints of steps {missing} were not kept")
    return folders, True


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


def sample(s: Settings, files: dict, out: Path) -> dict:
    """The shared sample cache, and one of the first k samples per prompt for each k of the
    K-ablation: {K: (cache folder, a key of its content)} (a new cache retrains its runs)."""
    argv = [
        "sample", "--model", s.model, "--data", files["train"], "--output", str(out / "samples"),
        "--limit", str(s.limit), "--num-samples", str(s.num_samples),
        "--max-tokens", str(s.sample_max_tokens), "--batch-size", str(s.sample_batch_size),
        "--seed", str(s.seed), "--overwrite",
    ]  # fmt: skip
    data = _digest(Path(files["train"]).read_text(encoding="utf-8"))
    cache = out / "samples"
    cached_step(s, "sample", argv, out / "sample.done.json", data, ready=cache.exists())
    cut, n = plan.cache_cut_share(cache)
    flag = "" if cut <= plan.CUT_LIMIT * n else f" (over the {plan.CUT_LIMIT:.0%} aimed at)"
    print(f"    samples cut at --max-tokens {s.sample_max_tokens}: {cut} of {n}{flag}", flush=True)
    s.cut = {"cut": cut, "samples": n, "max_tokens": s.sample_max_tokens}
    caches = {s.num_samples: (cache, _digest((cache / "samples.jsonl").read_text("utf-8")))}
    for k in s.k_ablation:
        if k not in caches:
            plan.subset_cache(cache, out / f"samples-k{k}", k)
            sub = out / f"samples-k{k}"
            caches[k] = (sub, _digest((sub / "samples.jsonl").read_text("utf-8")))
    return caches


def eval_argv(s: Settings, task: Task, files: dict, adapters: list, out: Path) -> list[str]:
    argv = ["eval", "--model", s.model]
    for p in adapters:
        argv += ["--adapter-path", str(p)]
    if task.judge:  # the held-out attacks answered, each answer judged
        argv += ["--prompts", files["test"], "--judge", task.judge]
    # their `rejected` and `chosen` scored: judge-free, continuous (a rate of 0 can fall no more)
    return argv + [
        "--negatives", files["test"],
        "--benign", files["benign"], "--num-prompts", "0",
        "--max-tokens", str(s.eval_max_tokens), "--batch-size", str(s.eval_batch_size),
        "--seed", str(s.seed), "--output", str(out / "report"),
    ]  # fmt: skip


def evaluate(s: Settings, task: Task, files: dict, ckpts: dict, out: Path, redo: bool) -> dict:
    """One eval over the base and every kept checkpoint; the report.json it wrote."""
    adapters = [p for run in plan.runs(s) for p in ckpts[run.name]]
    argv = eval_argv(s, task, files, adapters, out)
    ready = not redo and (out / "report" / "report.json").exists()
    cached_step(s, "eval", argv, out / "eval.done.json", ready=ready)
    return json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))


def print_estimates(s: Settings) -> None:
    """Each step's estimated wall time on an idle machine, before anything runs."""
    rows = 1 + sum(len(plan.run_steps(s, r)) for r in plan.runs(s))
    s.estimates = plan.estimate(s, s.eval_n + s.eval_benign, rows)
    share = plan.measured_cut_share(s.sample_max_tokens)
    if share:
        print(
            f"measured beforehand (recipes/paper_lengths.json, {share[2]} prompts x K): "
            f"{share[0]:.1%} of {share[1]} samples cut at --max-tokens {s.sample_max_tokens}"
        )
        if share[0] > plan.CUT_LIMIT:
            print(
                f"WARNING: more than {plan.CUT_LIMIT:.0%} of the samples will be cut at "
                f"--max-tokens {s.sample_max_tokens}: cut anchors bias D2O (issue 19)"
            )
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in s.estimates.items())
    total = sum(s.estimates.values()) / 60
    print(f"estimate (idle 2-core machine, min): {parts}; total {total:.0f} min "
          f"({rows} rows evaluated)", flush=True)  # fmt: skip


def run_sweep(s: Settings) -> dict:
    """Every step, then the analysis; returns what sweep.json holds."""
    task, out = TASKS[s.task], Path(s.out)
    if s.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    print_estimates(s)
    t0, load0 = time.time(), load_avg()
    files = prepare_data(s, task, out)
    caches = sample(s, files, out)
    ckpts, redo = {}, False
    for run in plan.runs(s):
        ckpts[run.name], ran = train_run(s, run, out, caches)
        redo = redo or ran
    rep = evaluate(s, task, files, ckpts, out, redo)
    where = {
        str(p): (run.name, k)
        for run in plan.runs(s)
        for p, k in zip(ckpts[run.name], plan.run_steps(s, run))
    }
    curves = report.curves(rep, where, task.measures)
    info = {
        "task": s.task, "preset": s.preset, "command": s.command, "machine": machine(),
        "wall_seconds": round(time.time() - t0, 1), "load_start": load0, "load_end": load_avg(),
        "settings": {k: v for k, v in dataclasses.asdict(s).items() if k != "timings"},
        "files": files, "data": describe_data(s, task, files), "steps": s.timings,
        "runs": {r.name: dataclasses.asdict(r) for r in plan.runs(s)},
        "training": training.summary({r.name: out / "runs" / r.name for r in plan.runs(s)}),
    }  # fmt: skip
    return compare_results.write(Path(s.results), task, curves, rep, info)
