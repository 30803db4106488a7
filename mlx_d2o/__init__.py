"""mlx-d2o: Distributional Dispreference Optimization (D2O) on MLX."""

__version__ = "0.1.0"
