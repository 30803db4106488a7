"""`mlx-d2o run`: sample -> train -> eval (-> fuse) as one resumable pipeline.

Each step is the library function its command calls. A step is skipped when its output is
whole and was made from the same inputs; both are read from what the steps themselves write:

    sample  manifest.json `complete` and its identity fields, the samples files' fingerprints
    train   adapter_config.json at its last step (`d2o.steps == d2o.iters`), the adapters' bytes
    eval    report.json
    fuse    the fused model's config.json and weights (their fingerprint)

A step's *key* is a hash of its settings and the fingerprints of its inputs: the model's
weights, the data files, and the outputs of the steps before it. The run's state file records,
per step, the key it was started with and, once done, the fingerprint of what it wrote. A step
whose key and output are those of the state is skipped; a step started with the same key and
cut short (a kill at any point) continues: sample resumes its cache, train `--resume`s from
its newest whole checkpoint, eval and fuse start again. Anything else runs as its section says
(`overwrite: true` to replace an earlier output made from other inputs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .adapters import ADAPTERS_FILE, CONFIG_FILE
from .errors import D2OError
from .io import write_text_atomic

STATE_VERSION = 1
# Settings that say how a step runs, not what it makes: not part of its key.
NOT_IDENTITY = {"overwrite", "resume", "report_to", "project_name", "private", "dry_run"}


def _hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_fp(path) -> Optional[str]:
    """The fingerprint of a data file (a name that is not a local file: the name itself)."""
    from .models import file_fingerprint

    if path is None:
        return None
    p = Path(path)
    return file_fingerprint(p) if p.is_file() else str(path)


def model_fp(model: str) -> str:
    from .models import model_dir, model_fingerprint

    return model_fingerprint(model_dir(model))


# ------------------------------------------------------------------------------------------
# What each step wrote: its fingerprint, or None while it is not whole
# ------------------------------------------------------------------------------------------


def cache_fp(cache_dir) -> Optional[str]:
    """A complete sample cache: its manifest's identity and its samples files' fingerprints."""
    from .models import file_fingerprint
    from .sample.cache import IDENTITY_FIELDS, read_manifest

    d = Path(cache_dir)
    manifest = read_manifest(d, strict=False)
    if not manifest or not manifest.get("complete"):
        return None
    files = sorted(d.glob("samples*.jsonl"))
    return _hash(
        {
            "identity": {k: manifest.get(k) for k in IDENTITY_FIELDS},
            "files": {f.name: file_fingerprint(f) for f in files},
        }
    )


def adapter_fp(adapter_dir) -> Optional[str]:
    """A finished adapter folder: its config at the last step and the adapters' bytes."""
    from .models import file_fingerprint

    d = Path(adapter_dir)
    try:
        config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = config.get("d2o") or {}
    if not (d / ADAPTERS_FILE).is_file() or meta.get("steps") != meta.get("iters"):
        return None
    return _hash({"config": config, "adapters": file_fingerprint(d / ADAPTERS_FILE)})


def report_fp(report_dir) -> Optional[str]:
    from .evaluate.report import REPORT_JSON

    p = Path(report_dir) / REPORT_JSON
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    # what eval measured, not how long it took: the same numbers made again are the same input
    report.pop("seconds", None)
    return hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16]


def fused_fp(save_path) -> Optional[str]:
    from .models import model_fingerprint

    d = Path(save_path)
    if not (d / "config.json").is_file() or not any(d.glob("*.safetensors")):
        return None
    return model_fingerprint(d)


# ------------------------------------------------------------------------------------------
# Steps and the state of a run
# ------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step: ARGS (its args dataclass), the fingerprints of its INPUTS (called when the
    steps before it are done), what it writes (OUTPUT, checked by FINGERPRINT), and RUN. READY,
    given the args and whether the step continues a run of the same key cut short, returns the
    args to run with, or refuses (before the state records the step as started)."""

    name: str
    args: object
    inputs: Callable[[], dict]
    output: Path
    fingerprint: Callable[[Path], Optional[str]]
    run: Callable[[object], object]
    ready: Callable[[object, bool], object] = lambda args, continuing: args

    def key(self) -> str:
        settings = {k: v for k, v in dataclasses.asdict(self.args).items() if k not in NOT_IDENTITY}
        return _hash({"step": self.name, "settings": settings, "inputs": self.inputs()})


class State:
    """The run's state file: per step, the key it was started with and, when done, the
    fingerprint of its output. Written atomically after every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.steps = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise D2OError(f"{self.path}: cannot read the run state ({e}); remove it") from None
            self.steps = data.get("steps", {}) if isinstance(data, dict) else {}

    def set(self, name: str, **entry) -> None:
        self.steps[name] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": STATE_VERSION, "steps": self.steps}
        write_text_atomic(self.path, json.dumps(data, indent=2))


def run_steps(steps: list[Step], state_path: Path, echo: Callable[[str], None]) -> dict:
    """Run (or skip) STEPS in order; {step name: output path}. A line per step: running, then
    done with its time, or skipped."""
    state = State(state_path)
    width = max(len(s.name) for s in steps)
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name:<{width}}"
        key, entry = step.key(), state.steps.get(step.name, {})
        made = step.fingerprint(step.output)
        if made is not None and entry.get("key") == key and entry.get("output") == made:
            echo(f"{head}  skipped  {step.output} (whole, made from the same inputs)")
            continue
        continuing = entry.get("started") == key
        args = step.ready(step.args, continuing)
        state.set(step.name, started=key)
        how = "continuing" if continuing else "running"
        echo(f"{head}  {how}  -> {step.output}")
        tic = time.perf_counter()
        step.run(args)
        seconds = round(time.perf_counter() - tic, 1)
        made = step.fingerprint(step.output)
        if made is None:  # the step returned without its output: a bug, not the user's input
            raise RuntimeError(f"{step.name} finished, but {step.output} is not whole")
        state.set(step.name, started=key, key=key, output=made, seconds=seconds)
        echo(f"{head}  done     {seconds:.1f} s")
    return {s.name: s.output for s in steps}
