"""`--report-to wandb,swanlab,tensorboard`: every metrics line of metrics.jsonl, also to the
experiment trackers users already run, with the run's settings as the run config.

Weights & Biases and SwanLab go through mlx-lm's own callbacks (`mlx_lm.tuner.callbacks`,
built by `get_reporting_callbacks`, as `mlx_lm.lora --report-to` does). TensorBoard goes through
`tensorboardX`: a stable writer that needs protobuf and numpy alone, where
`torch.utils.tensorboard` needs torch and the `tensorboard` package's own torch-free
`tensorboard.summary.Writer` is marked experimental, "subject to backwards-incompatible changes
without notice" (the package is in the `track` extra as the viewer: `tensorboard --logdir`).

Names are TRL's as its trackers show them (the Hugging Face trainer's `rewrite_logs`): a train
line's metrics under `train/` (`train/loss`, `train/rewards/margins`, ...), a validation line's
under `eval/`, at the line's step. Only rank 0 reports under `mlx.launch`; every rank checks that
the trackers are installed, before any work, so that all of them stop alike.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from mlx_lm.tuner.callbacks import TrainingCallback, get_reporting_callbacks

from ..errors import D2OError

# --report-to name -> (module imported, pip package that provides it)
TRACKERS = {
    "wandb": ("wandb", "wandb"),
    "swanlab": ("swanlab", "swanlab"),
    "tensorboard": ("tensorboardX", "tensorboardX"),
}
DEFAULT_PROJECT = "mlx-d2o"
TENSORBOARD_DIR = "tensorboard"  # under the adapter folder, one subfolder per run
PREFIX = {"train": "train/", "val": "eval/"}  # TRL's (the HF trainer's) names of the splits


def parse_report_to(value) -> list[str]:
    """The tracker names of --report-to VALUE ("wandb,tensorboard", or a YAML list); unknown
    names are a one-line error."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    for n in names:
        if n not in TRACKERS:
            raise D2OError(f"--report-to {n}: unknown tracker (known: {', '.join(TRACKERS)})")
    return list(dict.fromkeys(names))


def check_installed(names: list[str]) -> None:
    """A tracker whose package does not import: one line naming the pip package, exit 2."""
    for n in names:
        module, package = TRACKERS[n]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise D2OError(
                f"--report-to {n}: the package '{package}' is not installed ({e}); "
                f"pip install {package}   (or pip install 'mlx-d2o[track]')"
            ) from None


def tracker_line(line: dict) -> tuple[int, dict]:
    """(step, {TRL name: value}) of one metrics line: its numbers under train/ or eval/."""
    prefix = PREFIX.get(line.get("split"), f"{line.get('split')}/")
    values = {
        prefix + k: float(v)
        for k, v in line.items()
        if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return int(line["step"]), values


class TensorBoardCallback(TrainingCallback):
    """Scalars of every metrics line into LOG_DIR's event files (tensorboardX)."""

    def __init__(self, log_dir: Path, config: dict):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(log_dir))
        # the run config as TensorBoard's text plugin shows it (mlx-lm's callbacks pass it on init)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def _log(self, line: dict) -> None:
        step, values = tracker_line(line)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    on_train_loss_report = _log
    on_val_loss_report = _log

    def close(self) -> None:
        self.writer.close()


class Trackers(TrainingCallback):
    """The trackers of --report-to, opened at the first metrics line (so that a run refused
    before it trains leaves no tracker run behind), then WRAPPED (the caller's callback)."""

    def __init__(
        self,
        names: list[str],
        project_name: Optional[str],
        log_dir: Path,
        config: dict,
        wrapped: Optional[TrainingCallback] = None,
    ):
        self.names, self.project = names, project_name or DEFAULT_PROJECT
        self.log_dir, self.config, self.wrapped = Path(log_dir), config, wrapped
        self.opened: Optional[list] = None

    def open(self) -> list:
        """Start the tracker runs (once). A tracker that cannot start (SwanLab not logged in,
        say) is the user's set-up: one line naming it."""
        if self.opened is None:
            self.opened = []
            self.log_dir.mkdir(parents=True, exist_ok=True)
            hosted = [n for n in self.names if n in ("wandb", "swanlab")]
            with _starting(",".join(hosted)):
                chain = get_reporting_callbacks(
                    ",".join(hosted), self.project, str(self.log_dir), self.config
                )
            if chain is not None:
                self.opened.append(_MlxLmChain(chain, hosted))
            if "tensorboard" in self.names:
                run = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
                with _starting("tensorboard"):
                    tb = TensorBoardCallback(self.log_dir / TENSORBOARD_DIR / run, self.config)
                self.opened.append(tb)
        return self.opened

    def on_train_loss_report(self, train_info: dict) -> None:
        for t in self.open():
            t.on_train_loss_report(train_info)
        if self.wrapped is not None:
            self.wrapped.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        for t in self.open():
            t.on_val_loss_report(val_info)
        if self.wrapped is not None:
            self.wrapped.on_val_loss_report(val_info)

    def close(self) -> None:
        """Flush and end the tracker runs (once; the loop closes its reporter twice)."""
        for t in self.opened or []:
            t.close()
        self.opened = [] if self.opened is not None else None


class _MlxLmChain(TrainingCallback):
    """mlx-lm's WandB / SwanLab callbacks, given our lines in TRL's names: they log the dict
    at its "iteration"."""

    def __init__(self, chain: TrainingCallback, names: list[str]):
        self.chain = chain
        self.modules = [importlib.import_module(TRACKERS[n][0]) for n in names]

    def _line(self, line: dict) -> dict:
        step, values = tracker_line(line)
        return {"iteration": step, **values}

    def on_train_loss_report(self, train_info: dict) -> None:
        self.chain.on_train_loss_report(self._line(train_info))

    def on_val_loss_report(self, val_info: dict) -> None:
        self.chain.on_val_loss_report(self._line(val_info))

    def close(self) -> None:
        # mlx-lm's callbacks leave the runs to the packages' exit hooks; end them here, so
        # that the files are whole when train returns and a second run in one process is new
        for module in self.modules:
            module.finish()


@contextmanager
def _starting(names: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise D2OError(
            f"--report-to {names}: the tracker could not start its run ({cause})"
        ) from None


def with_trackers(
    args, shard, training_callback: Optional[TrainingCallback] = None
) -> Optional[TrainingCallback]:
    """TRAINING_CALLBACK wrapped in the trackers of ARGS.report_to (on rank 0; checked on
    every rank, before any work)."""
    names = parse_report_to(getattr(args, "report_to", None))
    if not names:
        return training_callback
    check_installed(names)
    if shard.rank != 0:
        return training_callback
    config = {k: v for k, v in asdict(args).items() if k not in ("report_to", "project_name")}
    return Trackers(names, args.project_name, Path(args.adapter_path), config, training_callback)
