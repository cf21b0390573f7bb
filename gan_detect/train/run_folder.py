"""One run per ``output_dir``: refuse an old run's folder, hold a lock, check it is writable.

Two fits into one folder would mix their checkpoints and metrics (and a fresh fit would leave the
old ``last.ckpt`` for ``resume=auto`` or ``evaluate`` to pick up), so ``fit`` refuses a folder
that already holds a run unless it resumes it or ``overwrite=true`` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "RunFolderError", "check_writable", "prepare_run_folder", "run_lock"]

LOCK_FILE = ".gan-detect.lock"
# What a fit leaves in output_dir (the data cache may live there too: it is not a run's output).
_RUN_OUTPUTS = ("config.yaml", "checkpoints", "logs", "tb", "wandb")


class RunFolderError(RuntimeError):
    """The run folder is in use, holds another run, or cannot be written (the message says)."""


def _old_run_outputs(out: Path) -> list[Path]:
    found = [out / n for n in _RUN_OUTPUTS if (out / n).exists()]
    return found + sorted(out.glob("hpc_ckpt_*.ckpt"))


def prepare_run_folder(out: str | Path, resuming: bool, overwrite: bool) -> None:
    """Refuse an ``out`` holding a previous run unless ``resuming``; ``overwrite`` deletes it.

    Raises:
        RunFolderError: ``out`` holds another run's outputs (they are listed).
    """
    out = Path(out)
    old = _old_run_outputs(out) if out.is_dir() else []
    if not old or resuming:
        return
    if not overwrite:
        names = ", ".join(p.name for p in old)
        raise RunFolderError(
            f"output_dir {out} already holds a run ({names}): continue it with resume=auto, "
            "delete it with overwrite=true, or choose another output_dir"
        )
    for p in old:  # the old run's checkpoints and logs must not mix with the new ones
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` and a probe file in it, so a run fails at start, not at its first save.

    Raises:
        RunFolderError: the folder cannot be created or written (it is named).
    """
    folder = Path(folder)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(
            f"cannot write checkpoints to {folder}: {err.strerror or err}"
        ) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``out/.gan-detect.lock`` (``PID HOST [SLURM_JOB_ID]``) while training.

    A lock is taken over (with a warning) when its PID is dead on this host, or when it was
    left by this same SLURM job before a requeue (possibly on another node).

    Raises:
        RunFolderError: another live process holds the lock (its PID and host are named).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    job = os.environ.get("SLURM_JOB_ID", "")
    me = f"{os.getpid()} {socket.gethostname()} {job}".strip() + "\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = lock.read_text().split() if lock.is_file() else []
            pid = int(text[0]) if text and text[0].isdigit() else -1
            host = text[1] if len(text) > 1 else "?"
            same_host = host == socket.gethostname()
            requeued = bool(job) and len(text) > 2 and text[2] == job
            if pid > 0 and not requeued and (not same_host or _pid_alive(pid)):
                raise RunFolderError(
                    f"{lock}: output_dir is in use by another run (PID {pid} on {host}); "
                    "wait for it, or delete the lock file if that process is gone"
                ) from None
            why = "the same SLURM job, requeued" if requeued else "no such process"
            warnings.warn(f"{lock}: taking over a stale lock of PID {pid} ({why})", stacklevel=3)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise RunFolderError(f"{lock}: could not take the lock")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()
