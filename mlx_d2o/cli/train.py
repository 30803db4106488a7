"""`mlx-d2o train`: flags as in `mlx_lm.lora`, merged with a recipe (`-c`) into `TrainArgs`,
then `train.train`."""

from __future__ import annotations

import dataclasses
from typing import Optional

import typer

from ..losses import cli_help


def command(
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Embedded name, .gguf, mlx-lm dir or Hub id (the one the cache was made with).",
    ),
    samples: Optional[str] = typer.Option(
        None, "--samples", help="Sample cache directory made by `mlx-d2o sample`."
    ),
    adapter_path: Optional[str] = typer.Option(
        None, "--adapter-path", help="Output directory: adapters, checkpoints, metrics.jsonl."
    ),
    loss: Optional[str] = typer.Option(None, "--loss", help=cli_help()),
    alpha: Optional[float] = typer.Option(
        None, "--alpha", help="Weight of the negative's log-ratio (D2O)."
    ),
    beta: Optional[float] = typer.Option(
        None, "--beta", help="Weight of the samples' log-ratio (D2O), DPO/NPO temperature."
    ),
    iters: Optional[int] = typer.Option(
        None, "--iters", help="Batches to train on (default: one epoch)."
    ),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", help="Passes over the cache (instead of --iters)."
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        help="Prompts per global batch (each brings K samples + its negative).",
    ),
    learning_rate: Optional[float] = typer.Option(
        None, "--learning-rate", help="Peak learning rate."
    ),
    lr_schedule: Optional[str] = typer.Option(
        None, "--lr-schedule", help="constant | cosine | linear (decay to 0 over the run)."
    ),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Linear warm-up updates from 0."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam | adamw | sgd."),
    fine_tune_type: Optional[str] = typer.Option(
        None, "--fine-tune-type", help="lora | dora | full."
    ),
    num_layers: Optional[int] = typer.Option(
        None, "--num-layers", help="Number of last layers to train (-1: all)."
    ),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank"),
    lora_scale: Optional[float] = typer.Option(None, "--lora-scale"),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout"),
    grad_checkpoint: Optional[bool] = typer.Option(
        None,
        "--grad-checkpoint/--no-grad-checkpoint",
        help="Recompute activations in backward (less memory).",
    ),
    grad_accumulation_steps: Optional[int] = typer.Option(None, "--grad-accumulation-steps"),
    max_seq_length: Optional[int] = typer.Option(
        None,
        "--max-seq-length",
        help="Longer sequences lose the end of their response (and are re-scored by the reference).",
    ),
    steps_per_report: Optional[int] = typer.Option(None, "--steps-per-report"),
    steps_per_eval: Optional[int] = typer.Option(None, "--steps-per-eval"),
    val_samples: Optional[str] = typer.Option(
        None, "--val-samples", help="Sample cache of held-out prompts for validation."
    ),
    save_every: Optional[int] = typer.Option(
        None, "--save-every", help="Checkpoint every N steps (0: only at the end)."
    ),
    resume: Optional[bool] = typer.Option(
        None, "--resume/--no-resume", help="Continue from the latest checkpoint in --adapter-path."
    ),
    refresh_every: Optional[int] = typer.Option(
        None,
        "--refresh-every",
        help="Online D2O: resample with the current policy every N steps (0: offline).",
    ),
    seed: Optional[int] = typer.Option(None, "--seed"),
    dequantize: Optional[bool] = typer.Option(
        None,
        "--dequantize/--keep-quantized",
        help="Train on float32 weights (default on the CPU) or keep them quantized (QLoRA).",
    ),
    config: Optional[str] = typer.Option(
        None, "--config", "-c", help="YAML recipe; flags given here win over it."
    ),
):
    """Train LoRA/DoRA/full adapters from a sample cache with D2O (or d2o-instance, dpo, npo, ga)."""
    cli = {k: v for k, v in locals().items() if k != "config"}
    from ..train import TrainArgs, train
    from .common import args_from

    args = args_from(TrainArgs, cli, config, "train")
    # --iters and --epochs are one setting spelled two ways: the one on the command line
    # replaces the recipe's, whichever spelling the recipe used.
    if cli["iters"] is not None and cli["epochs"] is None:
        args = dataclasses.replace(args, epochs=None)
    if cli["epochs"] is not None and cli["iters"] is None:
        args = dataclasses.replace(args, iters=None)
    summary = train(args)
    if summary["rank"] != 0:  # under mlx.launch, rank 0 speaks for the run
        return
    last = summary["last"]
    typer.echo(
        f"trained {summary['steps']} steps: loss {last.get('loss', float('nan')):.4f}; "
        f"adapters in {summary['adapter_path']}"
    )
