"""`mlx-d2o`: a thin Typer layer. Each command parses, merges its recipe into the step's args
dataclass (`cli.common.args_from`), calls one library function, and prints. Errors from bad
input (`D2OError`, a flag typer cannot parse) print one line and exit with code 2; Ctrl-C at
any moment exits with 130 and at most one line.

One module per command, in pipeline order: data, sample, plan, train, eval, fuse, then run (the
whole pipeline from one recipe); tools holds doctor, convert-gguf and generate; `commands.py`
puts them together. This module imports nothing
heavy: `main` first makes Ctrl-C during the imports (typer, mlx) a clean exit.
"""

from __future__ import annotations

import signal
import sys
import threading

from .. import _exit_at_once


def _usage_line(e) -> str:
    """Click's usage error as one line (typer draws a 5-line box around it)."""
    where = f"{e.ctx.command_path}: " if getattr(e, "ctx", None) is not None else ""
    return where + " ".join(e.format_message().split())


def _click_exceptions():
    try:  # typer 0.29 carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _run() -> int:
    from .commands import app

    cx = _click_exceptions()
    try:
        code = app(standalone_mode=False) or 0
    except cx.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `mlx-d2o`, `mlx-d2o data`: the help
            _say(e.ctx.get_help())
        else:
            _say(f"error: {_usage_line(e)}")
        return 2
    except cx.ClickException as e:
        _say(f"error: {' '.join(e.format_message().split())}")
        return e.exit_code
    if code == 130:  # typer turns a KeyboardInterrupt into exit code 130, silently
        _say("interrupted")
    return code


def main() -> None:
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main_thread else None
    if main_thread:
        signal.signal(signal.SIGINT, _exit_at_once)
    try:
        code = _main()
    finally:
        if main_thread:  # in-process callers (tests) get their own handler back
            signal.signal(signal.SIGINT, before)
    sys.exit(code)


def _main() -> int:
    from ..errors import D2OError
    from ..io import place_error
    from ..models.blas import ensure_optimized_blas
    from ..signals import Interrupted

    ensure_optimized_blas()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # work stops cleanly from here
    try:
        return _run()
    except D2OError as e:
        _say(f"error: {e}")
        return e.exit_code
    except (OSError, RuntimeError) as e:
        # the last net for writes that did not go through io.writing: still one line, but
        # only for errors of the place written to; anything else is a bug with its traceback
        err = place_error(e, getattr(e, "filename", None) or "output")
        if err is None:
            raise
        _say(f"error: {err}")
        return err.exit_code
    except Interrupted as e:
        _say(f"interrupted: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def __getattr__(name: str):
    if name == "app":  # `from mlx_d2o.cli import app`, as before the split
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
