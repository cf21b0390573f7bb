"""The one lock of the package: a ``flock``-ed file that also names its holder (``PID HOST [JOB]``).

Used for a run folder (``train/run_folder.py``: refuse when busy) and for building a ROI store
(``data/roi_store.py``: wait when busy). The kernel holds the ``flock`` for the holder's life and
drops it when the process dies, so taking over a dead process's lock needs no judgement of a PID
and cannot race: of several processes trying at once, exactly one gets it (the old "read the PID,
unlink, re-create" take-over let two hold it together). The holder line in the file is there for
the messages, and so that a PID-only lock (written by hand or by an older version, with no
``flock`` behind it) of a live process is still honoured in ``refuse`` mode.

The file is deleted on release while the ``flock`` is still held; a waiter that then gets the
``flock`` of the deleted file notices (its inode is no longer the path's) and opens the path again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; the holder line is still written
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockBusy", "holder_line", "hold_lock", "pid_alive"]


class LockBusy(Exception):
    """The lock is held by another live process; ``holder`` is its ``(pid, host, job)``."""

    def __init__(self, path: Path, pid: int, host: str, job: str) -> None:
        super().__init__(f"{path}: held by PID {pid} on {host}")
        self.path, self.pid, self.host, self.job = path, pid, host, job


def holder_line() -> str:
    """``PID HOST [SLURM_JOB_ID]`` of this process, newline-terminated."""
    job = os.environ.get("SLURM_JOB_ID", "")
    return f"{os.getpid()} {socket.gethostname()} {job}".strip() + "\n"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists on this host (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(text: str) -> tuple[int, str, str]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else -1
    host = parts[1] if len(parts) > 1 else "?"
    job = parts[2] if len(parts) > 2 else ""
    return pid, host, job


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def hold_lock(
    path: str | Path,
    *,
    wait: bool,
    timeout_s: float | None = None,
    on_takeover: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the lock file ``path`` for the ``with`` block; delete it on the way out.

    ``wait=False`` (a run folder): raise :class:`LockBusy` when another live process holds it,
    also when the file's holder line names a live PID on this host, or a host that cannot be
    checked, that is not this same SLURM job (requeued) -- such a lock has no ``flock`` behind
    it (an older version's). ``wait=True`` (a ROI store): block until the holder is done (up to
    ``timeout_s``; ``TimeoutError`` after). A stale holder line (its process gone) is taken over,
    calling ``on_takeover`` with the reason (default: a warning naming the old PID).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = holder_line()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                flags = fcntl.LOCK_EX | (0 if wait and deadline is None else fcntl.LOCK_NB)
                try:
                    fcntl.flock(fd, flags)
                except BlockingIOError:
                    if wait:  # with a timeout: poll
                        if deadline is not None and time.monotonic() > deadline:
                            raise TimeoutError(
                                f"waited {timeout_s:.0f} s for the lock {path}"
                            ) from None
                        os.close(fd)
                        fd = -1
                        time.sleep(0.2)
                        continue
                    pid, host, job = _parse(_read_holder(fd))
                    raise LockBusy(path, pid, host, job) from None
                if not _same_file(fd, path):  # deleted by its last holder meanwhile: retry
                    os.close(fd)
                    fd = -1
                    continue
            old = _read_holder(fd)
            if old.strip() and old != me:
                _judge_stale(path, old, refuse=not wait, on_takeover=on_takeover)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, me.encode())
            os.fsync(fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        break
    try:
        yield path
    finally:
        # Delete while the flock is held: the next taker then sees a fresh file (see above).
        with contextlib.suppress(OSError):
            if _same_file(fd, path):
                path.unlink()
        os.close(fd)


def _judge_stale(
    path: Path, old: str, refuse: bool, on_takeover: Callable[[str], None] | None
) -> None:
    """A holder line with no ``flock`` behind it: refuse a live holder (``refuse``), else take
    it over, saying why."""
    pid, host, job = _parse(old)
    my_job = os.environ.get("SLURM_JOB_ID", "")
    requeued = bool(my_job) and job == my_job
    same_host = host == socket.gethostname()
    if refuse and pid > 0 and not requeued and (not same_host or pid_alive(pid)):
        raise LockBusy(path, pid, host, job)
    why = "the same SLURM job, requeued" if requeued else "no such process"
    msg = f"{path}: taking over a stale lock of PID {pid} ({why})"
    if on_takeover is not None:
        on_takeover(msg)
    else:
        warnings.warn(msg, stacklevel=4)
