"""`python -m mlx_d2o.cli`: the console script."""

from . import main

main()
