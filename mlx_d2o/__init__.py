"""mlx-d2o: Distributional Dispreference Optimization (D2O) on MLX."""

import os as _os
import signal as _signal
import sys as _sys

__version__ = "0.1.0"


def _exit_at_once(signum, frame) -> None:
    """Ctrl-C while the `mlx-d2o` command starts (imports, nothing written yet): leave at once
    in one line, without the traceback of whatever import was running."""
    _sys.stderr.flush()
    _os.write(2, b"interrupted\n")
    _os._exit(130)


# The console script's first import is this package: from here on a Ctrl-C is one line. A
# library user's process (argv[0] is theirs) keeps its own handler.
if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "mlx-d2o":
    _signal.signal(_signal.SIGINT, _exit_at_once)
