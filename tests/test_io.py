"""io: atomic writers (old kept on failure, umask respected), the run lock, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mlx_d2o.errors import D2OError
from mlx_d2o.io import RunLock, atomic_dir, atomic_path, remove_stale_temps, stale_temps
from mlx_d2o.signals import graceful_stop


def test_atomic_dir_keeps_the_old_folder_when_the_new_one_fails(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("crash while writing")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left


def test_written_files_and_folders_respect_the_umask(tmp_path):
    # found: files were written 0600 and folders 0700 (tempfile's private modes)
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            open(tmp, "w").write("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert oct((tmp_path / "f.json").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == oct(0o755)


def test_stale_temps_are_found_and_removed(tmp_path):
    (tmp_path / ".adapters.safetensors.abc.safetensors").write_bytes(b"x" * 10)
    (tmp_path / ".0000002.tmp-xyz").mkdir()
    (tmp_path / ".0000002.tmp-xyz" / "w").write_bytes(b"y" * 5)
    (tmp_path / "adapters.safetensors").write_bytes(b"keep")
    assert len(stale_temps(tmp_path, "adapters.safetensors")) == 1
    assert remove_stale_temps(tmp_path, "0000002") == 5
    assert remove_stale_temps(tmp_path, "adapters.safetensors") == 10
    assert [p.name for p in tmp_path.iterdir()] == ["adapters.safetensors"]


HOLD = """
import sys, time
from mlx_d2o.io import RunLock
with RunLock(sys.argv[1], "sample run"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_run_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            D2OError, match=rf"another sample run is writing here \(pid {holder.pid} on "
        ):
            with RunLock(tmp_path, "sample run"):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
    with RunLock(tmp_path, "sample run"):
        pass  # the kernel released the lock with its holder


def test_graceful_stop_first_signal_asks_second_interrupts():
    with graceful_stop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 100 KB tmpfs (needs root, as on the CI machines); skipped where it cannot be mounted."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_one_line_and_leaves_nothing(tiny_tmpfs):
    import mlx.core as mx

    from mlx_d2o.adapters import save_weights

    with pytest.raises(D2OError, match=r"big.safetensors: cannot write here \(.*disk full"):
        save_weights(tiny_tmpfs / "big.safetensors", {"w": mx.zeros((100_000,))})
    with pytest.raises(D2OError, match=r"big.txt: cannot write here \(No space left on device\)"):
        with atomic_path(tiny_tmpfs / "big.txt") as tmp:
            open(tmp, "w").write("x" * 300_000)
    assert list(tiny_tmpfs.iterdir()) == []
    # a file written inside a folder being written: the message names the folder asked for
    with pytest.raises(D2OError, match=r"^\S*/full/ckpt/w.safetensors: cannot write here") as e:
        with atomic_dir(tiny_tmpfs / "ckpt") as tmp:
            save_weights(tmp / "w.safetensors", {"w": mx.zeros((100_000,))})
    assert ".tmp-" not in str(e.value)
    assert list(tiny_tmpfs.iterdir()) == []


def test_a_file_where_a_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        D2OError, match=r"afile/sub/out.json: cannot write here \(Not a directory\)"
    ):
        with atomic_path(tmp_path / "afile" / "sub" / "out.json"):
            pass
    with pytest.raises(D2OError, match=r"afile/dir: cannot write here"):
        with atomic_dir(tmp_path / "afile" / "dir"):
            pass


def test_errors_that_are_not_about_the_place_keep_their_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "x.json"):
            raise ZeroDivisionError
    with pytest.raises(RuntimeError, match="something else"):
        with atomic_dir(tmp_path / "d"):
            raise RuntimeError("something else")
