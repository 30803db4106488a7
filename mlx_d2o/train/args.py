"""The settings of `mlx-d2o train` (`TrainArgs`) and their checks before any work."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from .. import losses, ranges
from ..errors import D2OError


@dataclass
class TrainArgs:
    """Settings of `mlx-d2o train`; names are `mlx_lm.lora`'s where it has them."""

    model: str = "smollm2-135m"
    samples: Optional[str] = None  # cache directory made by `mlx-d2o sample`
    adapter_path: str = "adapters"
    loss: str = "d2o"  # a name of `losses.LOSSES`
    alpha: float = 0.1
    beta: float = 0.1
    iters: Optional[int] = None  # micro-batches, as in mlx_lm.lora; default: one epoch
    epochs: Optional[float] = None
    batch_size: int = 4  # prompts per global batch
    learning_rate: float = 1e-5
    # "cosine" | "linear" | "constant" | mlx-lm's {name, arguments, warmup}
    lr_schedule: Optional[object] = None
    warmup: int = 0
    optimizer: str = "adam"
    fine_tune_type: str = "lora"
    num_layers: int = 16
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_dropout: float = 0.0
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    max_seq_length: int = 2048
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_samples: Optional[str] = None
    save_every: int = 100
    resume: bool = False
    overwrite: bool = False  # replace an earlier run in adapter_path (else refused, or --resume)
    refresh_every: int = 0
    seed: int = 0
    dequantize: Optional[bool] = None  # None: on the CPU yes (fast float32); False: QLoRA
    memory_limit: Optional[float] = None  # GB a step may use; None: the device's (`train.plan`)
    chunk_size: Optional[int] = None  # sequences back-propagated at once; None: the plan's
    report_to: Optional[str] = None  # "wandb,swanlab,tensorboard" (mlx_lm.lora's), `tracking`
    project_name: Optional[str] = None  # the trackers' project; None: "mlx-d2o"
    # Hyperparameters of a loss declared beyond alpha and beta (`losses.Param`), by name.
    loss_params: dict = field(default_factory=dict)

    def lora_parameters(self) -> dict:
        return {"rank": self.lora_rank, "scale": self.lora_scale, "dropout": self.lora_dropout}


DEFAULTS = dict(asdict(TrainArgs()))


def check_args(args: TrainArgs, world_size: int) -> None:
    """One-line errors for settings that cannot work, before a model is loaded: the ranges
    and names of `ranges.RANGES`, then what depends on several settings at once."""
    ranges.check("train", args)
    if args.samples is None:
        raise D2OError("--samples: missing; give the cache directory made by `mlx-d2o sample`")
    loss = losses.get(args.loss)
    if args.iters is not None and args.epochs is not None:
        raise D2OError("give --iters or --epochs, not both")
    G = args.grad_accumulation_steps
    if args.save_every and args.save_every % G:
        raise D2OError(
            f"--save-every {args.save_every} must be a multiple of --grad-accumulation-steps {G} "
            "(a checkpoint between two updates would lose the accumulated gradient)"
        )
    if args.refresh_every and not loss.uses("samples"):
        raise D2OError(
            f"--refresh-every resamples the samples of D2O; --loss {args.loss} uses none"
        )
    if args.batch_size % world_size:
        raise D2OError(
            f"--batch-size {args.batch_size} must be divisible by the number of ranks "
            f"({world_size}): each rank takes an equal share of every global batch"
        )
