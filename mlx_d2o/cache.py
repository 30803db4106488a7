"""TRANSITIONAL: moved to `mlx_d2o.sample.cache`; deleted once nothing imports this path."""

from .sample.cache import *  # noqa: F403
from .sample.cache import FORMAT_VERSION, IDENTITY_FIELDS, MANIFEST, SAMPLES  # noqa: F401
