"""``fit`` and ``validate`` of a GAN config: run-folder guard, resumable data, the Trainer."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from gan_detect.config.validate import ExperimentConfig, check_checkpoint_fits, to_container
from gan_detect.data import build_datamodule
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.run_folder import RUN_MARKER
from gan_detect.train.trainer import _launch_rank, apply_speed_options, build_trainer

# 128 + SIGTERM, what a shell reports for a process the signal ended: scripts see a failure.
EXIT_SIGTERM = 143


class FitInterrupted(SystemExit):
    """Ctrl-C stopped training; ``last.ckpt`` was saved first when ``saved`` (exit status 130).

    Lightning itself answers Ctrl-C with ``sys.exit(1)``, which looks like any failure and says
    nothing of the checkpoint.
    """

    def __init__(self, saved: Path | None) -> None:
        super().__init__(EXIT_INTERRUPT)
        self.saved = saved


# 128 + SIGINT.
EXIT_INTERRUPT = 130


def run_trainer_fit(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit`` whose Ctrl-C leaves as :class:`FitInterrupted` (after the save)."""
    from gan_detect.train.callbacks import ResumeCallback

    try:
        trainer.fit(*args, **kwargs)
    except SystemExit as err:
        cb = next((c for c in trainer.callbacks if isinstance(c, ResumeCallback)), None)  # type: ignore[attr-defined]
        if cb is None or not cb.interrupted or isinstance(err, SIGTERMException):
            raise
        raise FitInterrupted(cb.path if cb.saved_on_interrupt else None) from None


@contextlib.contextmanager
def run_folder_guard(cfg: ExperimentConfig, resuming: bool = False) -> Iterator[None]:
    """Rank 0: refuse an old run's folder (unless resuming / ``overwrite``), lock it, check that
    ``checkpoints/`` is writable, write ``config.yaml``. ``resuming`` (or ``cfg.resume``): the
    run continues from a checkpoint, so its folder may hold outputs. Every rank: SIGTERM leaves as
    ``SIGTERMException(143)`` (a ``SystemExit``), so even a Python caller exits non-zero."""
    from gan_detect.train.run_folder import (
        check_writable,
        prepare_run_folder,
        run_lock,
        write_run_marker,
    )

    try:
        if _launch_rank() != 0:
            yield
            return
        out = Path(cfg.output_dir)
        with run_lock(out):
            prepare_run_folder(
                out, resuming=resuming or cfg.resume is not None, overwrite=cfg.overwrite
            )
            check_writable(out / "checkpoints")
            write_run_marker(out)
            write_run_config(cfg)
            yield
    except SIGTERMException as err:
        # Lightning raises SystemExit(None), exit status 0: a half-trained run would look done.
        if err.code in (None, 0):
            raise SIGTERMException(EXIT_SIGTERM) from None
        raise


def _resumable_train_data(dm: L.LightningDataModule) -> None:
    """Make ``dm.train_dataloader()`` return a loader that resumes mid-epoch (see distributed)."""
    from gan_detect.train.distributed import make_resumable

    build = dm.train_dataloader

    def train_dataloader() -> Any:
        return make_resumable(build())

    # Until the DataModules build resumable loaders themselves (a no-op once they do).
    dm.train_dataloader = train_dataloader  # type: ignore[method-assign]


def write_run_config(cfg: ExperimentConfig) -> Path:
    """``output_dir/config.yaml``: the resolved config, so a run directory describes itself.

    ``overwrite`` is left out: it is a request to this one command, and saved it would make the
    next ``fit`` of this ``config.yaml`` delete the run it describes.
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    body = to_container(cfg)
    body.pop("overwrite", None)
    OmegaConf.save(OmegaConf.create(body), path)
    return path


def write_run_modes(module: torch.nn.Module, trainer: L.Trainer, cfg: ExperimentConfig) -> Path:
    """``output_dir/run_modes.json``: the precision, memory format and compile mode the run
    actually used (Lightning may swap a requested precision, e.g. ``16-mixed`` on the CPU), with
    the torch version and the CPU, so speed or accuracy differences between runs can be traced."""
    from gan_detect.utils.device import cpu_model

    conv = next((m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    channels_last = bool(
        conv is not None
        and conv.dim() == 4
        and conv.is_contiguous(memory_format=torch.channels_last)
        and not conv.is_contiguous()
    )
    body = {
        "precision": str(trainer.precision),
        "precision_requested": str(cfg.trainer.precision),
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compile": bool(cfg.trainer.compile),
        "accelerator": type(trainer.accelerator).__name__,
        "devices": trainer.num_devices,
        "torch": torch.__version__,
        "cpu": cpu_model(),
    }
    path = Path(cfg.output_dir) / "run_modes.json"
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


@contextlib.contextmanager
def new_run_folder(output_dir: str | Path) -> Iterator[None]:
    """Remove a run folder that this run created if it fails before writing more than its
    ``config.yaml`` and ``run_modes.json`` (a bad data path, a missing proposals file): a failed
    start leaves no half-made run behind. A run that wrote checkpoints or logs is kept."""
    out = Path(output_dir)
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created and _launch_rank() == 0 and out.is_dir():
            files = [p for p in out.rglob("*") if p.is_file()]
            own = ("config.yaml", "run_modes.json", RUN_MARKER)
            if all(p.parent == out and p.name in own for p in files):
                shutil.rmtree(out, ignore_errors=True)
        raise


def _set_aside_unresumable_log(out: Path) -> None:
    """``resume=auto`` found no checkpoint (a run stopped before its first save, e.g. requeued
    by SLURM): training starts at epoch 0, so the old ``metrics.csv`` is moved aside (kept,
    named), not appended to with the same steps again."""
    log = out / "logs" / "metrics.csv"
    if _launch_rank() != 0 or not log.is_file():
        return
    n = 1
    while (kept := log.with_name(f"metrics.before-restart-{n}.csv")).exists():
        n += 1
    log.rename(kept)
    print(
        f"resume: no checkpoint to continue {log} from; starting at epoch 0, old rows kept in {kept}"
    )


def fit(
    cfg: ExperimentConfig, ckpt_path: str | None = None, **trainer_overrides: Any
) -> tuple[GANDetectionModule, L.Trainer]:
    """Train ``cfg.variant`` on ``cfg.data``; resumes from ``ckpt_path`` when given.

    Raises:
        RunFolderError: ``output_dir`` holds another run, is locked, or cannot be written.
        SIGTERMException: stopped by SIGTERM (``last.ckpt`` was saved first).
    """
    L.seed_everything(cfg.seed, workers=True)
    with new_run_folder(cfg.output_dir), run_folder_guard(cfg, resuming=ckpt_path is not None):
        dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
        holdout = float(getattr(cfg.data, "fusion_holdout_fraction", 0) or 0)
        if holdout > 0:  # what would fail after the whole training fails now (every rank)
            from gan_detect.infer.fusion_fit import check_holdout_can_fit

            check_holdout_can_fit(dm, holdout)
        _resumable_train_data(dm)
        module = GANDetectionModule(to_container(cfg))
        apply_speed_options(module, cfg)
        trainer = build_trainer(cfg, **trainer_overrides)
        if trainer.is_global_zero:
            write_run_modes(module, trainer, cfg)
        if ckpt_path is None and cfg.resume is not None:
            _set_aside_unresumable_log(Path(cfg.output_dir))
        # Exactly the checkpoint asked for (train/resume.py chose and checked it).
        run_trainer_fit(trainer, module, datamodule=dm, ckpt_path=ckpt_path)
        if getattr(cfg.data, "fusion_holdout_fraction", 0) > 0 and trainer.is_global_zero:
            fit_score_fusion(module, dm, cfg)
    return module, trainer


def fit_score_fusion(module: GANDetectionModule, dm: Any, cfg: ExperimentConfig) -> Path:
    """Fit the ``learned`` and ``size_gated`` combiners on the held-out train images and write
    ``<output_dir>/score_fusion.json`` (printed in a readable form)."""
    from gan_detect.infer.fusion_fit import fit_run_fusion, save_fusion
    from gan_detect.infer.score_fusion import describe

    was_training = module.training
    module.eval()
    variant = module.variant
    opts = module.inference_options()
    ds = dm.detection_dataset("fusion")
    params = fit_run_fusion(variant, ds, opts, refine=cfg.evaluate.refine_boxes)
    module.train(was_training)
    path = save_fusion(params, cfg.output_dir)
    print(
        f"score fusion fit on {len(ds)} held-out train images "
        f"({params['num_positives']}/{params['num_candidates']} true candidates) -> {path}"
    )
    print(describe(params["learned"]))
    print(describe(params["size_gated"]))
    if "refine_boxes" in params:
        r = params["refine_boxes"]
        ious = (
            f" (mean IoU with the object {r['mean_iou_refined']:.3f} refined vs "
            f"{r['mean_iou_detector']:.3f} the detector's)"
            if "mean_iou_refined" in r
            else f" ({r['reason']})"
        )
        print(f"evaluate.refine_boxes=auto: D's boxes {'applied' if r['use'] else 'not applied'}"
              f" on {r['matched']} held-out matched proposals{ious}")  # fmt: skip
    return path


def validate(cfg: ExperimentConfig, ckpt: str | Path, **trainer_overrides: Any) -> dict[str, float]:
    """Run validation of a checkpoint on ``cfg.data``; returns the logged metrics."""
    module = GANDetectionModule.from_checkpoint(ckpt)
    check_checkpoint_fits(ckpt, module.cfg, cfg)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    trainer = build_trainer(cfg, **trainer_overrides)
    results = trainer.validate(module, datamodule=dm)
    merged: dict[str, float] = {}
    for r in results:
        merged.update({k: float(v) for k, v in r.items()})
    return merged
