"""Which checkpoint a run resumes from (``resume=auto`` or a path, or a newer SLURM requeue save)."""

from __future__ import annotations

from pathlib import Path

from gan_detect.config.validate import ExperimentConfig
from gan_detect.utils.checkpoints import load_checkpoint, newest_loadable


def newest_checkpoint(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """``ckpt_path`` or a newer SLURM requeue checkpoint (``hpc_ckpt_*.ckpt``) in ``run_dir``."""
    if ckpt_path is None:
        return None  # no resume asked for (Lightning itself resumes hpc_ckpt under SLURM)
    hpc = sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if hpc and hpc[-1].stat().st_mtime > Path(ckpt_path).stat().st_mtime:
        return str(hpc[-1])
    return ckpt_path


def resume_checkpoint(cfg: ExperimentConfig) -> str | None:
    """The checkpoint ``cfg.resume`` names, checked to load and to be of ``cfg.task``'s kind.

    ``resume=auto``: the newest loadable of ``checkpoints/*.ckpt`` and ``hpc_ckpt_*.ckpt`` in
    ``output_dir`` (an unloadable one, e.g. truncated by a kill, is skipped with a warning naming
    it); None when there is none (a fresh start). ``resume=PATH``: that file or a newer
    ``hpc_ckpt``.

    Raises:
        FileNotFoundError: ``resume=PATH`` does not exist.
        CheckpointError: ``resume=PATH`` is unreadable or of the other task's kind.
    """
    if cfg.resume is None:
        return None
    expect = "detector" if cfg.task == "detector" else "gan"
    out = Path(cfg.output_dir)
    if cfg.resume == "auto":
        found = newest_loadable(
            [*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")],
            expect,  # type: ignore[arg-type]
        )
        return None if found is None else str(found)
    path = newest_checkpoint(cfg.resume, out) if Path(cfg.resume).is_file() else cfg.resume
    load_checkpoint(path, expect)  # type: ignore[arg-type]
    return path
