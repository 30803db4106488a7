"""Atomic writes (old file or new, never half), run locks and place errors.

Writing files so that a failure at any moment leaves either the old file or the new one,
never half of one: write beside the target, then rename (atomic on POSIX and APFS).

Temp files and folders come from `tempfile`, which makes them private (0600 / 0700); what we
rename into place gets the modes any other tool would give it under the user's umask.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from .errors import D2OError

# Errors of the place written to, not of the program: a full disk, a read-only mount, no
# permission, a file where a folder should be. They become one line naming the path.
_PLACE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.ENOENT,
}


def place_error(e: BaseException, path: str | Path, full_hint: str = "") -> Optional[D2OError]:
    """A one-line D2OError when E says PATH cannot be written there (disk full, read-only,
    not a directory, ...), else None: other errors are bugs and keep their traceback.
    FULL_HINT (e.g. how to resume) follows the message when the disk is full."""
    if isinstance(e, OSError) and e.errno in _PLACE_ERRNOS:
        hint = f"; {full_hint}" if full_hint and e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return D2OError(f"{path}: cannot write here ({e.strerror or e}){hint}")
    # MLX's writers raise RuntimeError("[write] Unable to write N bytes...") without an errno
    if isinstance(e, RuntimeError) and str(e).startswith(
        ("[write]", "[save", "[load_safetensors] Failed to open")
    ):
        return D2OError(
            f"{path}: cannot write here ({str(e).splitlines()[0]}; disk full or not writable?)"
        )
    return None


@contextmanager
def writing(path: str | Path, full_hint: str = "") -> Iterator[None]:
    """Errors of the place written to inside the block become one line naming PATH."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        err = place_error(e, path, full_hint)
        if err is None:
            raise
        raise err from None


def check_output_dir(out: str | Path, flag: str) -> None:
    """A one-line D2OError, before any work, when the folder OUT (given as FLAG) cannot be
    written: a file where a folder must be, no permission, a read-only or pseudo file system.
    Nothing is created: a temp file is made and removed in the nearest folder that exists."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise D2OError(f"{flag} {out}: exists and is not a directory")
    anc = out
    while not anc.exists() and anc.parent != anc:
        anc = anc.parent
    if not anc.is_dir():
        raise D2OError(f"{flag} {out}: {anc} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as e:
        raise D2OError(f"{flag} {out}: cannot write in {anc} ({os.strerror(e.errno)})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: str | Path, directory: bool = False) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[str]:
    """A temp path beside PATH; renamed onto PATH when the block succeeds, removed when it fails.

    SUFFIX keeps writers that add an extension (mx.save_safetensors) writing to the temp name.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=suffix, dir=path.parent)
        os.close(fd)
    try:
        with writing(path):
            yield tmp
            if os.path.exists(tmp):
                _public(tmp)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str, fsync: bool = False) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temp folder beside PATH; it replaces PATH when the block succeeds, is removed when it fails.

    The old PATH is moved aside only once the new folder is complete, and removed after the
    swap, so a failure at any point leaves the old PATH (or, between the two renames, the old
    folder under `.NAME.old-*` beside it).
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name, "tmp-"), dir=path.parent))
    old = None
    try:
        try:
            with writing(path):
                yield tmp
        except D2OError as e:
            # a nested atomic writer named its file inside the temp folder, which is about to go:
            # name the folder the user asked for instead
            if str(tmp) not in str(e):
                raise
            raise D2OError(str(e).replace(str(tmp), str(path))) from None
        _public(tmp, directory=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name, "old-"), dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old / "x", path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def temp_prefix(name: str, kind: str = "") -> str:
    """`.NAME.KINDPID-`: what a temp file or folder for NAME starts with; the writer's pid in
    it tells a leftover of a dead process from the temp of a live one."""
    return f".{name}.{kind}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(folder: str | Path, name: str) -> list[Path]:
    """Temp files and folders that `atomic_path` / `atomic_dir` (or another writer using
    `temp_prefix`) left for NAME in FOLDER when its process was killed between creating and
    renaming them; those of a process still running are not stale."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob(f".{name}.*")):
        m = re.match(rf"\.{re.escape(name)}\.(?:tmp-|old-)?(\d+)-", p.name)
        if m is None or int(m.group(1)) == os.getpid() or not _alive(int(m.group(1))):
            out.append(p)
    return out


def remove_stale_temps(folder: str | Path, name: str) -> int:
    """Remove what `stale_temps` finds; the number of bytes freed."""
    freed = 0
    for p in stale_temps(folder, name):
        if p.is_dir():
            freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            shutil.rmtree(p, ignore_errors=True)
        else:
            freed += p.stat().st_size
            p.unlink(missing_ok=True)
    return freed


class RunLock:
    """An exclusive lock on a folder that one run writes (a sample cache, an adapter path).

    A second run on the same folder is refused at once, naming the first (pid, host). The lock
    is `flock` on `DIR/.lock`: the kernel drops it when the holder dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind.
    """

    NAME = ".lock"

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what, self._fd = Path(folder), what, None

    def __enter__(self) -> RunLock:
        import fcntl
        import socket

        from .errors import D2OError

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise D2OError(
                f"{self.folder}: another {self.what} is writing here ({holder}); wait for it to "
                "finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (harmless, tiny)
            self._fd = None


def check_safetensors(f: Path) -> None:
    """A torn or damaged .safetensors file, from its header alone (8-byte length, JSON)."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if not 0 < n <= size - 8:
            raise ValueError("header length past the end of the file")
        header = json.loads(fh.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) > size:
        raise ValueError(f"{size} bytes, the header names {8 + n + max(ends)}: truncated")
