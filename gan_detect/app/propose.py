"""Stage 1 of the pipeline from the CLI: train the baseline detector, write its proposals.

``gan-detect fit detector_wider`` trains it on the same DataModules' full-image
loaders; ``gan-detect propose ... ckpt=...`` writes proposals (COCO results JSON and/or a WIDER
txt tree) that the ROI miner (``data.train_proposals``) and ``evaluate`` (``data.val_proposals``)
read directly.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gan_detect.config import ExperimentConfig
from gan_detect.data import build_datamodule
from gan_detect.detector.builtin import BUILTIN_ARCHS, builtin_from_config
from gan_detect.detector.module import DetectorModule
from gan_detect.detector.propose import (
    ProposalsInterrupted,
    run_proposals,
    write_partial,
    write_proposals,
)
from gan_detect.utils.errors import InputError


def propose(
    cfg: ExperimentConfig,
    ckpt: str | Path | None,
    split: str,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Run a detector over a split; write its proposals in the official layouts.

    ``ckpt=None`` with ``detector.arch=retinaface`` runs the built-in pretrained RetinaFace;
    ``detector.arch=fastestdet|yolox_nano [detector.weights=PATH]`` a built-in COCO proposer.
    """
    from gan_detect.utils.device import resolve_device

    module: DetectorModule | nn.Module
    if ckpt is None:
        if cfg.detector is None or cfg.detector.arch not in BUILTIN_ARCHS:
            raise InputError(
                "propose needs a detector checkpoint or detector.arch=" + "|".join(BUILTIN_ARCHS)
            )
        module = builtin_from_config(cfg.detector, cfg.evaluate.proposal_score_thresh)
    else:
        module = DetectorModule.from_checkpoint(ckpt)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    records = dm.records(split)
    device = resolve_device(cfg.evaluate.device)
    out = Path(out_dir or Path(cfg.output_dir) / "proposals" / split)
    # A built-in COCO proposer's labels are its own 80 COCO classes, whatever categories the data lists.
    cat_ids = getattr(module, "category_ids", None)
    if cat_ids is None and hasattr(dm, "category_ids"):
        cat_ids = dm.category_ids()
    try:
        dets = run_proposals(
            module.to(device),
            records,
            top_k=cfg.evaluate.top_k,
            score_thresh=cfg.evaluate.proposal_score_thresh,
            batch_size=cfg.data.val_batch_size if hasattr(cfg.data, "val_batch_size") else 2,
            device=device,
            progress=progress,
        )
    except ProposalsInterrupted as stop:  # keep the finished images' proposals
        write_partial(stop, out, category_ids=cat_ids)
        raise
    return write_proposals(dets, out, category_ids=cat_ids)
