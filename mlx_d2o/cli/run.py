"""`mlx-d2o run -c recipe.yaml`: sample -> train -> eval (-> fuse, when the recipe has a
`fuse:` section) from one sectioned recipe, each step skipped when its output is whole and made
from the same inputs, and resumable after a kill by running the same command (`pipeline`).

The steps' settings are those their own commands read from the same recipe (`-c`); where a
section leaves out the path of the step before, it is wired in: train's `samples` is sample's
`output`, eval's and fuse's `adapter_path` is train's, fuse's `report` is eval's `output`.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import load_recipe
from ..errors import D2OError
from .common import args_from

Config = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Sectioned YAML recipe: sample:, train:, eval: (and fuse:) beside shared keys "
        "such as model:.",
    ),
]
State = Annotated[
    Optional[Path],
    typer.Option(
        help="The run's state file (what each step was made from). "
        "(default: RECIPE-NAME.run.json beside train's adapter folder)"
    ),
]

REQUIRED = ("sample", "train", "eval")


def command(config: Config, state: State = None):
    """Sample, train, evaluate (and fuse) from one recipe; a step whose output is whole and
    made from the same inputs is skipped, a killed run continues where it stopped."""
    from ..pipeline import run_steps

    recipe = load_recipe(config)
    missing = [s for s in REQUIRED if not isinstance(recipe.get(s), dict)]
    if missing:
        raise D2OError(
            f"{config}: no {', '.join(m + ':' for m in missing)} section; `mlx-d2o run` needs "
            "sample:, train: and eval: (and fuse: to fuse)"
        )
    steps = build_steps(config, recipe)
    train_out = Path(steps[1].args.adapter_path)
    state = state or train_out.parent / f"{Path(config).stem}.run.json"
    outputs = run_steps(steps, state, typer.echo)
    typer.echo(f"report: {outputs['eval'] / 'report.md'}")
    if "fuse" in outputs:
        typer.echo(f"fused model: {outputs['fuse']}")
    typer.echo(f"state: {state}")


def build_steps(config: Path, recipe: dict) -> list:
    """The steps of RECIPE, their args built as their commands build them."""
    from ..export import FuseArgs
    from ..models import DEFAULT_MODEL
    from ..pipeline import Step
    from ..sample import SampleArgs
    from ..train import TrainArgs
    from .eval import eval_args

    s_args = args_from(SampleArgs, {}, config, "sample", model=DEFAULT_MODEL)
    t_args = args_from(TrainArgs, {}, config, "train", samples=s_args.output)
    given = "adapter_path" in recipe or "adapter_path" in recipe["eval"]
    e_args = eval_args({"adapter_path": None if given else [t_args.adapter_path]}, config)
    steps = [
        Step("sample", s_args, _sample_inputs(s_args), Path(s_args.output), _fp("cache"), _sample, _sample_ready),
        Step("train", t_args, _train_inputs(t_args), Path(t_args.adapter_path), _fp("adapter"), _train, _train_ready),
        Step("eval", e_args, _eval_inputs(e_args), Path(e_args.output), _fp("report"), _eval),
    ]  # fmt: skip
    if isinstance(recipe.get("fuse"), dict):
        wired = dict(adapter_path=t_args.adapter_path, report=e_args.output)
        f_args = args_from(FuseArgs, {}, config, "fuse", **wired)
        steps.append(
            Step("fuse", f_args, _fuse_inputs(f_args), Path(f_args.save_path), _fp("fused"), _fuse)
        )
    return steps


def _fp(kind: str):
    from .. import pipeline

    return getattr(pipeline, f"{kind}_fp")


def _sample_inputs(a):
    from ..pipeline import file_fp, model_fp

    return lambda: {
        "model": model_fp(a.model),
        "data": file_fp(a.data),
        "adapter": _adapter_or_none(a.adapter_path),
    }


def _train_inputs(a):
    from ..pipeline import cache_fp, model_fp

    return lambda: {
        "model": model_fp(a.model),
        "samples": cache_fp(a.samples),
        "val_samples": cache_fp(a.val_samples) if a.val_samples else None,
    }


def _eval_inputs(a):
    from ..pipeline import file_fp, model_fp

    files = {k: file_fp(getattr(a, k)) for k in ("negatives", "prompts", "benign", "overrefusal")}
    return lambda: {
        "model": model_fp(a.model),
        "adapters": [_adapter_or_none(p) for p in a.adapter_paths],
        **files,
    }


def _fuse_inputs(a):
    from ..pipeline import file_fp, model_fp, report_fp

    return lambda: {
        "model": model_fp(a.model) if a.model else None,
        "adapter": _adapter_or_none(a.adapter_path),
        "report": report_fp(a.report) if a.report else None,
        "fidelity_prompts": file_fp(a.fidelity_prompts),
    }


def _adapter_or_none(path):
    from ..pipeline import adapter_fp

    return adapter_fp(path) if path else None


def _sample_ready(args, continuing: bool):
    # a cache this run started with the same key is continued, never cleared
    return dataclasses.replace(args, overwrite=False) if continuing else args


def _sample(args):
    from ..sample import sample

    return sample(args)


def _train_ready(args, continuing: bool):
    from ..train.output import earlier_run

    earlier = earlier_run(Path(args.adapter_path))
    if continuing and earlier:
        return dataclasses.replace(args, resume=True, overwrite=False)
    if earlier and not (args.overwrite or args.resume):
        raise D2OError(
            f"{args.adapter_path}: holds a run ({earlier}) made from other settings or inputs; "
            "`overwrite: true` in the recipe's train: section replaces it, or give another "
            "adapter_path"
        )
    return args


def _train(args):
    from ..train import train
    from ..train.checkpoints import TrainInterrupted

    try:
        return train(args)
    except TrainInterrupted as e:
        # this same command continues it (train --resumes the run it started)
        e.resume_command = shlex.join(["mlx-d2o", *sys.argv[1:]])
        raise


def _eval(args):
    from ..evaluate import evaluate, markdown_table

    report = evaluate(args)
    typer.echo(markdown_table(report["rows"], intervals=False))
    return report


def _fuse(args):
    from ..export import fuse

    result = fuse(args, log=typer.echo)
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    return result
