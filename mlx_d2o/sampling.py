"""TRANSITIONAL: moved to the `mlx_d2o.sample` package; deleted once nothing imports this path."""

from .sample import *  # noqa: F403
from .sample import SampleArgs, adapters_disabled, generate_samples, sample, score_records  # noqa: F401
