"""Batch types flowing from the DataModules into the engine.

Plain (non-frozen) dataclasses: Lightning's ``apply_to_collection`` moves them field by field and
DDP's ``_find_tensors`` walks their fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RoiBatch:
    """N mined regions of interest as LR/HR pairs.

    Attributes:
        lr: (N, 3, h, w) float32 in [-1, 1], the bicubic x``scale`` downsample of ``hr``.
        hr: (N, 3, s*h, s*w) float32 in [-1, 1], the real crop resized to ``hr_size``.
        labels: (N,) int64; 0 = background / non-face, 1..C = object class (1 = face).
        box_targets: (N, 4) float32 Fast R-CNN deltas (weights 10, 10, 5, 5) from the proposal box
            to its matched ground truth; zeros for background.
        src_sizes: (N, 2) float32 (w, h) in source-image pixels of the matched ground-truth box
            (of the proposal for background); used by ``pixel_loss_min_size``.
    """

    lr: Tensor
    hr: Tensor
    labels: Tensor
    box_targets: Tensor
    src_sizes: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def collate(items: list[RoiBatch]) -> RoiBatch:
        """Concatenate single-ROI (or small) batches along N."""
        return RoiBatch(
            lr=torch.cat([b.lr for b in items]),
            hr=torch.cat([b.hr for b in items]),
            labels=torch.cat([b.labels for b in items]),
            box_targets=torch.cat([b.box_targets for b in items]),
            src_sizes=torch.cat([b.src_sizes for b in items]),
        )


@dataclass
class DetectionBatch:
    """Full images with their targets (and optionally proposals) for detection metrics.

    Attributes:
        images: list of B tensors (3, H_i, W_i) float32 in [0, 1].
        targets: list of B dicts: ``boxes`` (M, 4) float32 xyxy px, ``labels`` (M,) int64 1..C,
            ``ignore`` (M,) bool.
        proposals: list of B dicts ``boxes`` (K, 4), ``scores`` (K,), ``labels`` (K,), or None.
        image_ids: list of B ids (WIDER ``event/name``; COCO str(image id)).
    """

    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    proposals: list[dict[str, Tensor]] | None
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def collate(items: list[DetectionBatch]) -> DetectionBatch:
        """Join per-image batches (each of length 1 or more) into one."""
        props = None
        if all(b.proposals is not None for b in items):
            props = [p for b in items for p in b.proposals]  # type: ignore[union-attr]
        return DetectionBatch(
            images=[im for b in items for im in b.images],
            targets=[t for b in items for t in b.targets],
            proposals=props,
            image_ids=[i for b in items for i in b.image_ids],
        )
