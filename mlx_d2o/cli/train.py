"""`mlx-d2o train`: flags (a loss's own hyperparameters too) + recipe -> `TrainArgs`.

`mlx-d2o train`: flags as in `mlx_lm.lora`, merged with a recipe (`-c`) into `TrainArgs`,
then `train.train`."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import shlex
import sys
from typing import Optional

import typer

from ..losses import PARAMS, cli_help
from ..train.args import DEFAULTS
from .common import option


def _opt(kind, *names: str, help: str, default: Optional[str] = None):
    """An optional flag: None means "not given", so the recipe or the default decides. The help
    ends with the default: TrainArgs' own (`DEFAULTS`), or DEFAULT where that is None or a
    switch."""
    field = names[0].split("/")[0].lstrip("-").replace("-", "_")
    shown = default if default is not None else DEFAULTS[field]
    return option(kind, *names, help=f"{help} (default: {shown})")


Model = _opt(
    str,
    "--model",
    "-m",
    help="Embedded name, .gguf, mlx-lm dir or Hub id (the one the cache was made with).",
)
Samples = _opt(
    str, "--samples", help="Sample cache directory made by `mlx-d2o sample`.", default="none"
)
AdapterPath = _opt(
    str, "--adapter-path", help="Output directory: adapters, checkpoints, metrics.jsonl."
)
Loss = _opt(str, "--loss", help=cli_help())
Alpha = _opt(float, "--alpha", help=PARAMS["alpha"].help.rstrip("."))
Beta = _opt(float, "--beta", help=PARAMS["beta"].help.rstrip("."))
Iters = _opt(int, "--iters", help="Batches to train on.", default="one epoch")
Epochs = _opt(float, "--epochs", help="Passes over the cache (instead of --iters).", default="1")
BatchSize = _opt(
    int, "--batch-size", help="Prompts per global batch (each brings K samples + its negative)."
)
LearningRate = _opt(float, "--learning-rate", help="Peak learning rate.")
LrSchedule = _opt(
    str,
    "--lr-schedule",
    help="constant | cosine | linear (decay to 0 over the run).",
    default="constant",
)
Warmup = _opt(int, "--warmup", help="Linear warm-up updates from 0.")
Optimizer = _opt(str, "--optimizer", help="adam | adamw | sgd.")
FineTuneType = _opt(str, "--fine-tune-type", help="lora | dora | full.")
NumLayers = _opt(
    int,
    "--num-layers",
    help="Number of last layers to train (-1: all; more than the model has: all).",
)
LoraRank = _opt(int, "--lora-rank", help="Rank r of the LoRA/DoRA factors.")
LoraScale = _opt(float, "--lora-scale", help="LoRA scale: the update is scale x B A.")
LoraDropout = _opt(float, "--lora-dropout", help="Dropout on the LoRA input, in [0, 1).")
GradCheckpoint = _opt(
    bool,
    "--grad-checkpoint/--no-grad-checkpoint",
    help="Recompute activations in backward (less memory).",
    default="off",
)
GradAccumulationSteps = _opt(
    int,
    "--grad-accumulation-steps",
    help="Micro-batches whose gradients add up to one update.",
)
MaxSeqLength = _opt(
    int,
    "--max-seq-length",
    help="Longer sequences lose the end of their response (and are re-scored by the reference).",
)
StepsPerReport = _opt(
    int, "--steps-per-report", help="Steps per line of metrics.jsonl (mean over them)."
)
StepsPerEval = _opt(
    int, "--steps-per-eval", help="Validate on --val-samples every N steps (0: never)."
)
ValSamples = _opt(
    str,
    "--val-samples",
    help="Sample cache of held-out prompts for validation.",
    default="none",
)
SaveEvery = _opt(int, "--save-every", help="Checkpoint every N steps (0: only at the end).")
Resume = _opt(
    bool,
    "--resume/--no-resume",
    help="Continue from the newest whole checkpoint in --adapter-path.",
    default="off",
)
Overwrite = _opt(
    bool,
    "--overwrite",
    help="Replace an earlier run in --adapter-path (without it, or --resume, it is refused).",
    default="off",
)
RefreshEvery = _opt(
    int,
    "--refresh-every",
    help="Online D2O: resample with the current policy every N steps (0: offline).",
)
Seed = _opt(int, "--seed", help="Seed of the adapter init, the data order and dropout.")
Dequantize = _opt(
    bool,
    "--dequantize/--keep-quantized",
    help="Train on float32 weights or keep them quantized (QLoRA).",
    default="dequantize on the CPU",
)
MemoryLimit = _opt(
    float,
    "--memory-limit",
    help="GB a training step may use: the plan printed at the start picks the chunk size under "
    "it, and a run that cannot fit is refused.",
    default="the device's recommended working set",
)
ChunkSize = _opt(
    int,
    "--chunk-size",
    help="Sequences back-propagated at once (any size gives the same gradient).",
    default="chosen by the plan",
)
ReportTo = _opt(
    str,
    "--report-to",
    help="Also log every metrics line to these trackers, a comma list of wandb, swanlab, "
    "tensorboard (pip install 'mlx-d2o[track]'); TRL's names under train/ and eval/.",
    default="none",
)
ProjectName = _opt(
    str, "--project-name", help="Project of the wandb / swanlab run.", default="mlx-d2o"
)
Config = _opt(
    str, "--config", "-c", help="YAML recipe; flags given here win over it.", default="none"
)


CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def command(
    ctx: typer.Context,
    model: Model = None,
    samples: Samples = None,
    adapter_path: AdapterPath = None,
    loss: Loss = None,
    alpha: Alpha = None,
    beta: Beta = None,
    iters: Iters = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    lr_schedule: LrSchedule = None,
    warmup: Warmup = None,
    optimizer: Optimizer = None,
    fine_tune_type: FineTuneType = None,
    num_layers: NumLayers = None,
    lora_rank: LoraRank = None,
    lora_scale: LoraScale = None,
    lora_dropout: LoraDropout = None,
    grad_checkpoint: GradCheckpoint = None,
    grad_accumulation_steps: GradAccumulationSteps = None,
    max_seq_length: MaxSeqLength = None,
    steps_per_report: StepsPerReport = None,
    steps_per_eval: StepsPerEval = None,
    val_samples: ValSamples = None,
    save_every: SaveEvery = None,
    resume: Resume = None,
    overwrite: Overwrite = None,
    refresh_every: RefreshEvery = None,
    seed: Seed = None,
    dequantize: Dequantize = None,
    memory_limit: MemoryLimit = None,
    chunk_size: ChunkSize = None,
    report_to: ReportTo = None,
    project_name: ProjectName = None,
    config: Config = None,
):
    """Train LoRA/DoRA/full adapters from a sample cache with D2O (or d2o-instance, dpo, npo, ga)."""
    cli = {k: v for k, v in locals().items() if k not in ("config", "ctx")}
    from ..train import TrainArgs, train
    from ..train.checkpoints import TrainInterrupted

    args = _iters_or_epochs(_train_args(TrainArgs, cli, loss_flags(ctx), config), cli)
    try:
        summary = train(args)
    except TrainInterrupted as e:
        if e.rank != 0:  # under mlx.launch, rank 0 speaks for the run
            raise SystemExit(e.exit_code) from None
        e.resume_command = _resume_command()
        raise
    if summary["rank"] != 0:
        return
    last, steps, where = summary["last"], summary["steps"], summary["adapter_path"]
    loss = f"loss {last['loss']:.4f}; " if "loss" in last else ""
    done = "already finished" if summary.get("already_finished") else "trained"
    typer.echo(f"{done} {steps} steps: {loss}adapters in {where}")


def _iters_or_epochs(args, cli: dict):
    """--iters and --epochs are one setting spelled two ways: the one on the command line
    replaces the recipe's, whichever spelling the recipe used."""
    if cli["iters"] is not None and cli["epochs"] is None:
        return dataclasses.replace(args, epochs=None)
    if cli["epochs"] is not None and cli["iters"] is None:
        return dataclasses.replace(args, iters=None)
    return args


def _resume_command() -> str:
    """This command line, to continue a stopped run: the same flags, with --resume."""
    drop = {"--resume", "--no-resume", "--overwrite"}
    return shlex.join(["mlx-d2o", *(a for a in sys.argv[1:] if a not in drop), "--resume"])


def extra_params() -> dict:
    """The hyperparameters losses declare beyond `TrainArgs`' own fields (alpha, beta): each is
    a flag --NAME and a recipe key NAME of this command (`losses.Param`)."""
    from ..losses import params
    from ..train.args import DEFAULTS

    return {n: p for n, p in params().items() if n not in DEFAULTS}


def loss_flags(ctx: typer.Context) -> dict:
    """{name: value} of the --NAME VALUE pairs among the words the command did not know,
    for the `extra_params`; any other word is refused as click refuses an unknown option."""
    # The click typer runs on (typer 0.2x vendors its own): its usage errors print as such.
    click = importlib.import_module(type(ctx).__module__.rsplit(".", 1)[0] + ".exceptions")
    known, words, out = extra_params(), list(ctx.args), {}
    while words:
        word = words.pop(0)
        name = word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None
        if name not in known:
            if word.startswith("-"):
                opts = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
                opts += [f"--{n.replace('_', '-')}" for n in known]
                opt = word.split("=")[0]
                near = difflib.get_close_matches(opt, opts)
                raise click.NoSuchOption(opt, possibilities=near, ctx=ctx)
            rest = " ".join([word, *words])
            raise click.UsageError(f"Got unexpected extra argument(s) ({rest})", ctx=ctx)
        value = word.split("=", 1)[1] if "=" in word else (words.pop(0) if words else None)
        if value is None:
            raise click.UsageError(
                f"Option '--{name.replace('_', '-')}' requires an argument.", ctx
            )
        try:
            out[name] = float(value)
        except ValueError:
            known[name].check(value)  # the one-line D2OError of a non-number
    return out


def _train_args(cls, cli: dict, flags: dict, config):
    """TrainArgs from flags > recipe > defaults; the `extra_params` go to `loss_params`."""
    from .common import settings_from

    extra = extra_params()
    s = settings_from(cls, {**cli, **{n: flags.get(n) for n in extra}}, config, "train",
                      **{n: None for n in extra})  # fmt: skip
    fields = {f.name for f in dataclasses.fields(cls)}
    loss_params = {n: s[n] for n in extra if s.get(n) is not None}
    given = {k: v for k, v in s.items() if k in fields and k != "loss_params"}
    return cls(**given, loss_params=loss_params)
