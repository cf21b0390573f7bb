"""One run per ``output_dir``: refuse an old run's folder, hold a lock, check it is writable.

Two fits into one folder would mix their checkpoints and metrics (and a fresh fit would leave the
old ``last.ckpt`` for ``resume=auto`` or ``evaluate`` to pick up), so ``fit`` refuses a folder
that already holds a run unless it resumes it or ``overwrite=true`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gan_detect.utils.errors import InputError
from gan_detect.utils.locks import LockBusy, hold_lock

__all__ = [
    "LOCK_FILE",
    "RUN_MARKER",
    "RunFolderError",
    "check_writable",
    "prepare_run_folder",
    "refuse_unsafe_overwrite",
    "run_lock",
    "write_run_marker",
]

LOCK_FILE = ".gan-detect.lock"
# The run marker: written when a fit starts, it says "a gan-detect run made this folder" and lists
# what such a run (and the commands that write into its folder) may create there. overwrite=true
# deletes only these names, and only in a folder holding the marker.
RUN_MARKER = ".gan-detect-run.json"
MARKER_FORMAT = "gan-detect-run/1"
# What a fit, and evaluate / propose / export_pipeline / export into the run folder, write there
# (the data cache may live there too: it is not a run's output). "hpc_ckpt_*.ckpt": SLURM
# requeue saves.
RUN_OUTPUTS = (
    "config.yaml", "checkpoints", "logs", "tb", "wandb", "val_images", "eval", "proposals",
    "pipeline.pt", "hpc_ckpt_*.ckpt", "run_modes.json", "score_fusion.json", "export",
)  # fmt: skip
# Names whose presence means "a run (perhaps of an older version, without a marker) is here".
_RUN_SIGNS = ("config.yaml", "checkpoints", "logs", "tb", "wandb")


class RunFolderError(InputError):
    """The run folder is in use, holds another run, or cannot be written (the message says)."""


def _old_run_outputs(out: Path) -> list[Path]:
    found = [out / n for n in _RUN_SIGNS if (out / n).exists()]
    return found + sorted(out.glob("hpc_ckpt_*.ckpt"))


def _listed_outputs(out: Path) -> list[Path]:
    """What the marker lists that exists, each a name of :data:`RUN_OUTPUTS` (never a path: a
    hand-edited marker cannot make overwrite delete anything else)."""
    try:
        marker = json.loads((out / RUN_MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        raise RunFolderError(
            f"{out / RUN_MARKER}: unreadable run marker; nothing was deleted"
        ) from None
    names = marker.get("outputs") if isinstance(marker, dict) else None
    if marker.get("format") != MARKER_FORMAT or not isinstance(names, list):
        raise RunFolderError(
            f"{out / RUN_MARKER}: not a gan-detect run marker; nothing was deleted"
        )
    found: list[Path] = []
    for name in names:
        if name not in RUN_OUTPUTS:
            continue
        found += sorted(out.glob(name)) if "*" in name else [out / name]
    return [p for p in found if p.exists() or p.is_symlink()]


def refuse_unsafe_overwrite(out: Path) -> None:
    """``overwrite=true`` never works on ``/``, the home folder or the current folder.

    Raises:
        RunFolderError: ``out`` is one of them (or an ancestor of the current folder).
    """
    where = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if where == Path(where.anchor) or where == home or where == cwd or where in cwd.parents:
        what = (
            "the root folder"
            if where == Path(where.anchor)
            else ("your home folder" if where == home else "the current folder (or one above it)")
        )
        raise RunFolderError(
            f"output_dir {out} is {what}: overwrite=true refuses to delete anything there; "
            "give the run its own output_dir"
        )


def write_run_marker(out: str | Path) -> Path:
    """``out/.gan-detect-run.json``: this folder is a gan-detect run, and what runs write in it."""
    path = Path(out) / RUN_MARKER
    body = {"format": MARKER_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(), "outputs": list(RUN_OUTPUTS)}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def prepare_run_folder(
    out: str | Path, resuming: bool, overwrite: bool, say: Callable[[str], None] = print
) -> None:
    """Refuse an ``out`` holding a previous run unless ``resuming``; ``overwrite`` deletes it.

    ``overwrite`` deletes only what the run marker lists (each path is printed through ``say``),
    in a folder that holds the marker and is not ``/``, the home or the current folder: so
    ``eval/``, ``val_images/`` or ``pipeline.pt`` of the old run cannot outlive it, and nothing a
    gan-detect run did not write is touched.

    Raises:
        RunFolderError: ``out`` holds another run's outputs (they are listed), or overwrite was
            asked for a folder that is not a run or must never be cleared.
    """
    out = Path(out)
    if overwrite and not resuming:
        refuse_unsafe_overwrite(out)
    old = _old_run_outputs(out) if out.is_dir() else []
    marked = (out / RUN_MARKER).is_file()
    if resuming or not (old or marked):
        return
    names = ", ".join(p.name for p in old) or RUN_MARKER
    if not overwrite:
        raise RunFolderError(
            f"output_dir {out} already holds a run ({names}): continue it with resume=auto, "
            "delete it with overwrite=true, or choose another output_dir"
        )
    if not marked:
        raise RunFolderError(
            f"output_dir {out} holds {names} but no {RUN_MARKER}, so it is not known to be a "
            "gan-detect run: overwrite=true deletes nothing there; move those away yourself or "
            "choose another output_dir"
        )
    for p in _listed_outputs(out):  # the old run's files must not mix with the new ones
        say(f"overwrite=true: deleting {p}{'/' if p.is_dir() and not p.is_symlink() else ''}")
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


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``out/.gan-detect.lock`` (``PID HOST [SLURM_JOB_ID]``) while training.

    One mechanism with the ROI store's lock (:func:`gan_detect.utils.locks.hold_lock`): a
    ``flock`` the kernel drops when the holder dies, so a dead process's lock is taken over (with
    a warning) by exactly one of the processes that try at once. A holder line of this same SLURM
    job (requeued, possibly on another node) is taken over too.

    Raises:
        RunFolderError: another live process holds the lock (its PID and host are named).
    """
    lock = Path(out) / LOCK_FILE
    try:
        with hold_lock(lock, wait=False) as held:
            yield held
    except LockBusy as busy:
        raise RunFolderError(
            f"{lock}: output_dir is in use by another run (PID {busy.pid} on {busy.host}); "
            "wait for it, or delete the lock file if that process is gone"
        ) from None
