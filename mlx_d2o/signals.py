"""Stopping long work cleanly on Ctrl-C (SIGINT) or SIGTERM.

Inside `graceful_stop()`, the first signal only sets `stop.requested`: the loop finishes (or
drops) its current step or batch, writes what it has, says how to resume, and raises
`Interrupted`. A second signal interrupts at once (KeyboardInterrupt), for a user who does not
want to wait. The CLI turns `Interrupted` into its message and exit code 130.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional


class Interrupted(Exception):
    """Work stopped by a signal after saving; the message says how to resume."""

    exit_code = 130


@dataclass
class Stop:
    requested: bool = False
    signal_name: Optional[str] = None


@contextmanager
def graceful_stop():
    """Yield a `Stop` whose `requested` turns true on the first SIGINT/SIGTERM."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested, stop.signal_name = True, signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
