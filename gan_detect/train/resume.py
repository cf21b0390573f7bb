"""Which checkpoint a run resumes from (``resume=auto`` or a path), checked before training starts.

A resume never silently becomes something else: ``resume=auto`` with checkpoints that all fail to
load is an error (a fresh start would log epoch 0 again into the old ``metrics.csv``); an explicit
path is the one resumed, even when a newer SLURM ``hpc_ckpt_*.ckpt`` exists (a warning names it);
and resuming from an older checkpoint while later ones stay in the run is refused, since the
resumed run would replace the later epochs' log rows while their checkpoints stayed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from gan_detect.config.validate import ExperimentConfig
from gan_detect.utils.checkpoints import (
    CheckpointError,
    checkpoint_progress,
    load_checkpoint,
    newest_loadable,
)


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """``checkpoints/*.ckpt`` and ``hpc_ckpt_*.ckpt`` (SLURM requeue saves) of a run folder."""
    out = Path(run_dir)
    return sorted([*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")])


def _refuse_older(path: Path, run_dir: Path) -> None:
    """Refuse ``path`` when a checkpoint of the run is further on (by epoch and global step)."""
    mine = checkpoint_progress(path)
    if mine is None:
        return
    later = []
    for p in run_checkpoints(run_dir):
        if p.resolve() == path.resolve():
            continue
        theirs = checkpoint_progress(p)
        if theirs is not None and theirs > mine:
            later.append(p.name)
    if later:
        raise CheckpointError(
            f"{path}: epoch {mine[0]} (step {mine[1]}) is older than {', '.join(later)} in "
            f"{run_dir}: resuming from it here would replace the later epochs' metrics.csv rows "
            "while their checkpoints stayed; continue with resume=auto, or branch from it into "
            f"a new folder: output_dir=NEW_DIR resume={path}"
        )


def resume_checkpoint(cfg: ExperimentConfig) -> str | None:
    """The checkpoint ``cfg.resume`` names, checked to load and to be of ``cfg.task``'s kind.

    ``resume=auto``: the newest loadable of :func:`run_checkpoints` (an unloadable one, e.g.
    truncated by a kill, is skipped with a warning naming it); None when the run has no
    checkpoint at all (a fresh start). ``resume=PATH``: exactly that file.

    Raises:
        FileNotFoundError: ``resume=PATH`` does not exist.
        CheckpointError: ``resume=PATH`` is unreadable, of the other task's kind, or older than
            another checkpoint of the run; ``resume=auto`` found checkpoints but none loads.
    """
    if cfg.resume is None:
        return None
    expect = "detector" if cfg.task == "detector" else "gan"
    out = Path(cfg.output_dir)
    if cfg.resume == "auto":
        candidates = run_checkpoints(out)
        found = newest_loadable(candidates, expect)  # type: ignore[arg-type]
        if found is None and candidates:
            names = ", ".join(str(p) for p in candidates)
            raise CheckpointError(
                f"resume=auto: none of the {len(candidates)} checkpoints of {out} loads ({names}; "
                "the warnings above say why): not starting again from epoch 0 over this run; "
                "resume=PATH names another checkpoint, overwrite=true starts afresh"
            )
        return None if found is None else str(found)
    path = Path(cfg.resume)
    load_checkpoint(path, expect)  # type: ignore[arg-type]
    _refuse_older(path, out)  # first: a refused resume must not say "resuming from it" before
    hpc = [p for p in out.glob("hpc_ckpt_*.ckpt") if p.stat().st_mtime > path.stat().st_mtime]
    if hpc:
        warnings.warn(
            f"resume={path}: resuming from it as asked, though {out} holds the newer SLURM "
            f"requeue save {max(hpc, key=lambda p: p.stat().st_mtime).name} (resume=auto would "
            "take the newest)",
            stacklevel=2,
        )
    return str(path)
