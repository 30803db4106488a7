"""Old trainer against new, side by side: the same set-ups trained by two trees of mlx-d2o (e.g.
/work/main and this worktree), every metrics line and every file of the adapter folder compared.

    python scripts/compare_trainers.py --old /work/main --new . [--work DIR] [--only NAME]

When main has moved on since the branch point, compare against the branch point itself:
`git archive BASE | tar -x -C /tmp/base` and `--old /tmp/base`.

Each set-up runs in a fresh process per tree (PYTHONPATH=<tree>) on the same tiny random llama
and the same sample cache (built once, by the NEW tree's test helper). Compared:
- metrics.jsonl line by line: every key except the timings (tokens_per_sec, val_time) and the
  allocator's peak_memory_gb (reported, not compared), after mapping the renamed metric keys
  (old -> new, `RENAMED`); values must be equal exactly;
- the adapter folder: adapters.safetensors and every checkpoint file byte for byte,
  adapter_config.json and train_summary.json as JSON (equal);
- the `plan:` lines of the log (the memory plan and the measured chunk).
Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RENAMED = {"rewards/margin": "rewards/margins", "accuracy": "rewards/accuracies"}
NOT_COMPARED = {"tokens_per_sec", "val_time", "peak_memory_gb"}

BASE = dict(batch_size=2, num_layers=2, learning_rate=1e-3, steps_per_report=1, save_every=0)

# name -> list of TrainArgs keyword sets, run one after the other in the same adapter folder
SETUPS = {
    "lora-d2o-val": [dict(iters=4, val_samples="CACHE", steps_per_eval=2)],
    "chunk-size-2": [dict(iters=4, chunk_size=2, grad_accumulation_steps=2)],
    "memory-limit": [dict(iters=4, memory_limit="LIMIT")],
    "npo": [dict(iters=4, loss="npo", beta=0.2)],
    "dpo": [dict(iters=4, loss="dpo", val_samples="CACHE", steps_per_eval=2)],
    "d2o-instance-dora-ckpt": [
        dict(iters=4, loss="d2o-instance", fine_tune_type="dora", grad_checkpoint=True)
    ],
    "grad-checkpoint-dropout": [
        dict(iters=4, grad_checkpoint=True, lora_dropout=0.1, lr_schedule="cosine", warmup=1)
    ],
    "resume": [
        dict(iters=4, save_every=2),
        dict(iters=8, save_every=2, resume=True),
    ],
    "full-online": [dict(iters=4, fine_tune_type="full", num_layers=1, refresh_every=2)],
}

RUNNER = r"""
import json, sys
from mlx_d2o.train import TrainArgs, train
lines = []
for kw in json.loads(sys.argv[1]):
    train(TrainArgs(**kw), log=lambda s: lines.append(s))
print(json.dumps(lines))
"""


def run_tree(tree: Path, runs: list, env_extra: dict) -> list:
    env = {**os.environ, "PYTHONPATH": str(tree), **env_extra}
    p = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(runs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if p.returncode != 0:
        raise SystemExit(f"{tree}: failed\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def metrics(out: Path) -> list:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{RENAMED.get(k, k): v for k, v in r.items()} for r in rows]


def files(out: Path) -> dict:
    """Relative path -> sha256 of every file in OUT but the lock and the metrics."""
    skip = {"metrics.jsonl", ".lock", "run.lock"}
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.endswith(".lock")
    }


def compare(name: str, old: Path, new: Path, old_log: list, new_log: list) -> list:
    problems = []
    mo, mn = metrics(old), metrics(new)
    if len(mo) != len(mn):
        problems.append(f"{len(mo)} metrics lines against {len(mn)}")
    for i, (a, b) in enumerate(zip(mo, mn)):
        keys = (set(a) | set(b)) - NOT_COMPARED
        for k in sorted(keys):
            if a.get(k, "<missing>") != b.get(k, "<missing>"):
                problems.append(f"line {i} {k}: {a.get(k, '<missing>')} != {b.get(k, '<missing>')}")
    fo, fn = files(old), files(new)
    for rel in sorted(set(fo) | set(fn)):
        if rel.endswith(".json"):
            ja = json.loads((old / rel).read_text()) if rel in fo else None
            jb = json.loads((new / rel).read_text()) if rel in fn else None
            for j in (ja, jb):
                if isinstance(j, dict) and "adapter_path" in j:
                    j["adapter_path"] = None  # the folder's own name
                if isinstance(j, dict) and isinstance(j.get("last"), dict):  # the summary
                    last = {RENAMED.get(k, k): v for k, v in j["last"].items()}
                    j["last"] = {k: v for k, v in last.items() if k not in NOT_COMPARED}
            if ja != jb:
                problems.append(f"{rel}: JSON differs: {ja} != {jb}")
        elif fo.get(rel) != fn.get(rel):
            problems.append(f"{rel}: bytes differ")
    plan_o = [s for s in old_log if s.startswith("plan:")]
    plan_n = [s for s in new_log if s.startswith("plan:")]
    if plan_o != plan_n:
        problems.append(f"plan lines differ:\n  {plan_o}\n  {plan_n}")
    peaks = [(a.get("peak_memory_gb"), b.get("peak_memory_gb")) for a, b in zip(mo, mn)]
    print(
        f"{name}: {len(mn)} metrics lines, {len(fn)} files, "
        f"{'SAME' if not problems else 'DIFFERENT'}; peak GB old/new {peaks[-1] if peaks else ''}"
    )
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/work/main"))
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--only", action="append", default=None)
    ap.add_argument(
        "--reuse-old", action="store_true", help="keep the OLD tree's runs already in --work"
    )
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="compare-trainers-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [str(a.new), str(a.new / "tests")]
    os.environ.setdefault("MLX_D2O_CACHE", str(work / "mlx-d2o-cache"))
    from test_train import make_cache

    from mlx_d2o.testing import make_tiny_model

    model = work / "model"
    if not (model / "config.json").exists():
        make_tiny_model(model, seed=0)
    cache = work / "cache"
    if not (cache / "manifest.json").exists():
        make_cache(model, cache, n=8, k=3)
    env = {"MLX_D2O_NO_BLAS_REEXEC": "1", "MLX_D2O_CACHE": os.environ["MLX_D2O_CACHE"]}
    failed = {}
    limit = None
    for name, runs in SETUPS.items():
        if a.only and name not in a.only:
            continue
        if "LIMIT" in json.dumps(runs) and limit is None:
            # 0.8 of an unchunked step's peak, measured by the OLD tree
            probe = work / "probe"
            if not (probe / "metrics.jsonl").exists() or not a.reuse_old:
                kw = dict(BASE, model=str(model), samples=str(cache), adapter_path=str(probe))
                run_tree(a.old, [dict(kw, iters=2, overwrite=True)], env)
            limit = 0.8 * max(r["peak_memory_gb"] for r in metrics(probe))
        logs = {}
        for tag, tree in (("old", a.old), ("new", a.new)):
            out = work / name / tag
            saved = work / name / f"{tag}.log.json"
            if tag == "old" and a.reuse_old and saved.exists():
                logs[tag] = json.loads(saved.read_text())
                continue
            filled = []
            for kw in runs:
                kw = {
                    **BASE,
                    "model": str(model),
                    "samples": str(cache),
                    "adapter_path": str(out),
                    "overwrite": not kw.get("resume", False),
                    **kw,
                }
                if kw.get("val_samples") == "CACHE":
                    kw["val_samples"] = str(cache)
                if kw.get("memory_limit") == "LIMIT":
                    kw["memory_limit"] = limit
                filled.append(kw)
            logs[tag] = run_tree(tree, filled, env)
            saved.write_text(json.dumps(logs[tag]))
        problems = compare(name, work / name / "old", work / name / "new", logs["old"], logs["new"])
        if problems:
            failed[name] = problems
    for name, problems in failed.items():
        print(f"\n{name}:")
        for p in problems[:20]:
            print(f"  {p}")
    print(f"\n{len(failed)} set-ups differ" if failed else "\nevery set-up the same")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
