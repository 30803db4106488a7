"""The ranks of an `mlx.launch` run: the one set of distributed helpers of sample and train.

Without `mlx.launch` there is one rank and every helper here is a no-op, so library code calls
them unconditionally. Collectives run on the CPU stream (the ring backend has no GPU kernels).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten


def group():
    """The `mlx.launch` group, or None when running alone."""
    if not mx.distributed.is_available():
        return None
    g = mx.distributed.init()
    return g if g.size() > 1 else None


def all_sum(x, group) -> mx.array:
    """X summed over the ranks of GROUP (X itself when running alone)."""
    if group is None or group.size() == 1:
        return x
    return mx.distributed.all_sum(x, group=group, stream=mx.cpu)


def all_ok(group, ok: bool) -> bool:
    """True when every rank says OK (one all_sum; also a barrier, so every rank must call it)."""
    if group is None or group.size() == 1:
        return ok
    return all_sum(mx.array(0.0 if ok else 1.0), group).item() == 0


@dataclass
class Shard:
    """This process's place among the ranks of `mlx.launch` (rank 0 of size 1 without it)."""

    group: Optional[object]
    rank: int
    size: int

    @classmethod
    def current(cls) -> Shard:
        g = group()
        return cls(g, g.rank(), g.size()) if g is not None else cls(None, 0, 1)

    def local(self, batch: list) -> list:
        # Strided, so each rank gets short and long examples alike from a length-sorted batch.
        return batch[self.rank :: self.size]

    def sum(self, x):
        return all_sum(x, self.group) if self.size > 1 else x

    def all_ok(self, ok: bool) -> bool:
        return all_ok(self.group, ok)

    def broadcast(self, tree):
        """Rank 0's values everywhere (all_sum of rank 0's arrays and everybody else's zeros).

        One collective at a time, in name order, evaluated at once: left lazy, the ranks' graphs
        (values here, zeros there) may run the collectives in different orders and deadlock."""
        if self.size == 1:
            return tree
        flat = []
        # Sorted by name: a tree loaded from a file (rank 0's, on resume) may list its leaves in
        # another order than the one built in memory (the other ranks').
        for k, a in sorted(tree_flatten(tree), key=lambda kv: kv[0]):
            x = self.sum(a if self.rank == 0 else mx.zeros_like(a))
            mx.eval(x)
            flat.append((k, x))
        return tree_unflatten(flat)


@contextmanager
def peer_exit(shard: Shard, message: Callable[[str], str]):
    """Under mlx.launch, a rank that dies ends the run with a clear message on rank 0.

    Two ways it shows here: the launcher SIGTERMs the surviving ranks, or, first, a collective
    fails because the peer's socket closed. Either way rank 0 prints `error: MESSAGE(cause)`
    (say there what was saved and how to go on), and every surviving rank exits with status 3:
    the launcher would end it anyway. Running alone, the block runs as it is.
    """
    import signal

    if shard.size == 1:
        yield
        return

    def stop(cause: str):
        # Say it and leave at once: the launcher's SIGTERM may come any moment, and after it
        # nothing more gets printed.
        if shard.rank == 0:
            sys.stderr.write(f"\nerror: {message(cause)}\n")
            sys.stderr.flush()
        os._exit(3)

    previous = signal.signal(
        signal.SIGTERM, lambda signum, frame: stop("the launcher ended this one")
    )
    try:
        yield
    except RuntimeError as e:
        if not collective_failed(e):
            raise  # a real error (shapes, memory): its traceback shows on the rank that hit it
        stop(f"the distributed backend failed: {e}")
    finally:
        signal.signal(signal.SIGTERM, previous)


# How MLX's backends say that a collective lost its peer: ring ("[ring] connection to a peer was
# lost", "Send/Recv failed with errno=..."), MPI, JACCL, NCCL; any other MLX error is not a
# lost peer and must not read as one.
_COLLECTIVE_ERRORS = ("[ring]", "[mpi]", "[jaccl]", "[nccl]", "Send failed", "Recv failed")


def collective_failed(e: RuntimeError) -> bool:
    """True when E is a failed collective (a peer that is gone), not an error of the work."""
    return any(tag in str(e) for tag in _COLLECTIVE_ERRORS)
