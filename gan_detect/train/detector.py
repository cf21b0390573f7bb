"""``fit`` of a ``task: detector`` config: train the baseline detector that writes proposals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from gan_detect.config import ExperimentConfig
from gan_detect.data import build_datamodule
from gan_detect.detector.module import DetectorModule, detector_config
from gan_detect.train.callbacks import ResumeCallback


def fit_detector(cfg: ExperimentConfig, ckpt_path: str | None = None, **trainer_kw: Any) -> Path:
    """Train the detector; returns the path of ``checkpoints/last.ckpt``."""
    from gan_detect.config.validate import ConfigError
    from gan_detect.detector.builtin import BUILTIN_ARCHS
    from gan_detect.train.fit import (
        new_run_folder,
        run_folder_guard,
        run_trainer_fit,
        write_run_modes,
    )
    from gan_detect.train.trainer import build_trainer

    if cfg.detector is not None and cfg.detector.arch in BUILTIN_ARCHS:
        arch = cfg.detector.arch
        raise ConfigError(
            f"config key 'detector.arch': {arch} is a built-in pretrained detector; it is "
            f"not trained (use it directly: gan-detect propose ... detector.arch={arch})"
        )
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    with new_run_folder(cfg.output_dir), run_folder_guard(cfg, resuming=ckpt_path is not None):
        dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
        module = DetectorModule(detector_config(cfg))
        # The detector is one network: Lightning's own DDP, not the GAN's per-submodule strategy.
        strategy = cfg.trainer.strategy
        ckpt_cb = ModelCheckpoint(
            dirpath=str(out / "checkpoints"),
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,  # last.ckpt is always the newest, never last-v1.ckpt
        )
        # The resume callback too (mid-epoch and SIGTERM saves into last.ckpt): a list passed
        # as ``callbacks`` replaces the one build_trainer would make, so both are named here.
        resume_cb = ResumeCallback(out / "checkpoints", cfg.trainer.checkpoint_every_n_batches)
        kwargs: dict[str, Any] = dict(
            strategy="ddp" if strategy in ("ddp_gan", "ddp") else strategy,
            callbacks=[resume_cb, ckpt_cb],
        )
        kwargs.update(trainer_kw)
        trainer = build_trainer(cfg, **kwargs)
        if trainer.is_global_zero:
            write_run_modes(module, trainer, cfg)
        run_trainer_fit(
            trainer,
            module,
            train_dataloaders=dm.detection_dataloader("train", shuffle=True),
            val_dataloaders=dm.detection_dataloader("val"),
            ckpt_path=ckpt_path,
        )
    return out / "checkpoints" / "last.ckpt"
