"""Stage 1 of the pipeline from the CLI: train the baseline detector, write its proposals.

``gan-detect fit experiments/detector_wider.yaml`` trains it on the same DataModules' full-image
loaders; ``gan-detect propose ... ckpt=...`` writes proposals (COCO results JSON and/or a WIDER
txt tree) that the ROI miner (``data.train_proposals``) and ``evaluate`` (``data.val_proposals``)
read directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from gan_detect.checkpoints import load_checkpoint
from gan_detect.config import ExperimentConfig
from gan_detect.data import build_datamodule
from gan_detect.detector.builtin import BUILTIN_ARCHS, builtin_from_config
from gan_detect.detector.module import DetectorConfig, DetectorModule
from gan_detect.detector.propose import run_proposals, write_proposals


def detector_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The detector's own config as plain containers; classes and metric follow ``data``."""
    det = cfg.detector if isinstance(cfg.detector, DetectorConfig) else DetectorConfig()
    out = dataclasses.asdict(det)
    out["num_classes"] = cfg.data.num_classes
    out["eval_metric"] = "wider" if cfg.data.name == "wider_face" else "coco"
    return out


def fit_detector(cfg: ExperimentConfig, ckpt_path: str | None = None, **trainer_kw: Any) -> Path:
    """Train the detector; returns the path of ``checkpoints/last.ckpt``."""
    from gan_detect.schema import ConfigError
    from gan_detect.training import build_trainer, new_run_folder, run_folder_guard

    if cfg.detector is not None and cfg.detector.arch in BUILTIN_ARCHS:
        arch = cfg.detector.arch
        raise ConfigError(
            f"config key 'detector.arch': {arch} is the built-in pretrained detector; it is "
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
        kwargs: dict[str, Any] = dict(
            strategy="ddp" if strategy in ("ddp_gan", "ddp") else strategy, callbacks=[ckpt_cb]
        )
        kwargs.update(trainer_kw)
        trainer = build_trainer(cfg, **kwargs)
        trainer.fit(
            module,
            train_dataloaders=dm.detection_dataloader("train", shuffle=True),
            val_dataloaders=dm.detection_dataloader("val"),
            ckpt_path=ckpt_path,
        )
    return out / "checkpoints" / "last.ckpt"


def load_detector(ckpt: str | Path) -> DetectorModule:
    """Load a trained detector with ``weights_only=True`` (a checkpoint cannot run code)."""
    state = load_checkpoint(ckpt, expect="detector")
    module = DetectorModule(state["hyper_parameters"]["config"])
    module.load_state_dict(state["state_dict"])
    return module.eval()


def propose(
    cfg: ExperimentConfig,
    ckpt: str | Path | None,
    split: str,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Run a detector over a split; write its proposals in the official layouts.

    ``ckpt=None`` with ``detector.arch=retinaface`` runs the built-in pretrained RetinaFace;
    ``detector.arch=fastestdet detector.weights=PATH`` the built-in COCO FastestDet.
    """
    from gan_detect.training import resolve_device

    module: DetectorModule | nn.Module
    if ckpt is None:
        if cfg.detector is None or cfg.detector.arch not in BUILTIN_ARCHS:
            raise ValueError(
                "propose needs a detector checkpoint or detector.arch=retinaface|fastestdet"
            )
        module = builtin_from_config(cfg.detector, cfg.evaluate.proposal_score_thresh)
    else:
        module = load_detector(ckpt)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    records = dm.records(split)
    device = resolve_device(cfg.evaluate.device)
    dets = run_proposals(
        module.to(device),
        records,
        top_k=cfg.evaluate.top_k,
        score_thresh=cfg.evaluate.proposal_score_thresh,
        batch_size=cfg.data.val_batch_size if hasattr(cfg.data, "val_batch_size") else 2,
        device=device,
        progress=progress,
    )
    out = Path(out_dir or Path(cfg.output_dir) / "proposals" / split)
    # FastestDet's labels are its own 80 COCO classes, whatever categories the data lists.
    cat_ids = getattr(module, "category_ids", None)
    if cat_ids is None and hasattr(dm, "category_ids"):
        cat_ids = dm.category_ids()
    return write_proposals(dets, out, category_ids=cat_ids)
