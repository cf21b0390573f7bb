"""Full-image inference: proposals -> LR crops -> G -> D -> re-scored (and refined) detections.

The paper feeds 600 ROIs per image to the GAN (Bai et al., CVPR 2018, section 4.2); boxes are
re-scored and (for SOD-MTGAN) moved by the variant's :meth:`~GANVariant.detect`, which owns what
D's heads mean; score fusion and class-wise NMS follow here, the same for every variant. ROIs go
through G and D in chunks so memory stays bounded whatever the proposal count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from gan_detect.data.roi import clip_proposals, crop_lr_for_inference
from gan_detect.variants import GANVariant

SCORE_FUSIONS = ("d_only", "geometric_mean")


@dataclass
class InferenceOptions:
    """How proposals become detections (all primitives, shared by evaluate and predict)."""

    top_k: int = 600
    lr_size: int = 16  # LR crop side; hr_size / scale of the training ROIs
    context: float = 1.0  # must match the ROI mining context
    chunk_size: int = 256  # ROIs per G+D forward
    score_fusion: str = "d_only"  # d_only | geometric_mean (with the detector score)
    nms_iou: float = 0.4  # class-wise NMS after re-scoring (RetinaFace's WIDER setting)
    min_score: float = 0.001
    max_detections: int = 750
    refine_boxes: bool = True  # apply D's box deltas when the variant has a box head

    def __post_init__(self) -> None:
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(
                f"score_fusion must be one of {SCORE_FUSIONS}, got {self.score_fusion!r}"
            )


@torch.no_grad()
def refine_detections(
    variant: GANVariant,
    image: Tensor,
    proposals: dict[str, Tensor],
    opts: InferenceOptions,
) -> dict[str, Tensor]:
    """Re-score one image's proposals with the GAN.

    Args:
        variant: a trained variant (eval mode is set here).
        image: (3, H, W) float in [0, 1].
        proposals: ``boxes`` (K, 4) xyxy px, ``scores`` (K,), ``labels`` (K,); boxes are
            clipped to the image and those under 1 px a side dropped, as in ROI mining.

    Returns:
        ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) int64 1..C, sorted by score.
    """
    variant.eval()
    device = next(variant.parameters()).device
    boxes = proposals["boxes"].float().to(device)
    det_scores = proposals["scores"].float().to(device)
    h, w = (int(x) for x in image.shape[-2:])
    # The training border rule (clip to the image, drop boxes under 1 px a side), so a proposal
    # crossing the edge gives the crop (and box-delta reference) it would give in ROI mining.
    boxes, kept = clip_proposals(boxes, (h, w))
    det_scores = det_scores[kept]
    if boxes.shape[0] > opts.top_k:
        order = torch.argsort(det_scores, descending=True, stable=True)[: opts.top_k]
        boxes, det_scores = boxes[order], det_scores[order]
    empty = {
        "boxes": boxes.new_zeros((0, 4)),
        "scores": boxes.new_zeros((0,)),
        "labels": torch.zeros(0, dtype=torch.int64, device=device),
    }
    if boxes.shape[0] == 0:
        return empty
    image = image.to(device)
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, boxes.shape[0], opts.chunk_size):
        chunk = boxes[start : start + opts.chunk_size]
        lr = crop_lr_for_inference(image, chunk, opts.lr_size, opts.context, scale=variant.scale)
        # The variant decides what its heads mean: (k, K', 4) boxes, (k, K') scores and labels.
        parts.append(variant.detect(lr, chunk, (h, w), opts.refine_boxes, opts.context))
    cls_boxes = torch.cat([p[0] for p in parts]).float()
    cls_scores = torch.cat([p[1] for p in parts]).float()
    labels = torch.cat([p[2] for p in parts]).long()

    if opts.score_fusion == "geometric_mean":
        cls_scores = torch.sqrt(cls_scores.clamp_min(0) * det_scores.clamp(0, 1)[:, None])
    flat_scores, flat_boxes, flat_labels = (
        cls_scores.reshape(-1),
        cls_boxes.reshape(-1, 4),
        labels.reshape(-1),
    )
    keep = flat_scores >= opts.min_score
    flat_scores, flat_boxes, flat_labels = flat_scores[keep], flat_boxes[keep], flat_labels[keep]
    if flat_scores.numel() == 0:
        return empty
    keep = batched_nms(flat_boxes, flat_scores, flat_labels, opts.nms_iou)[: opts.max_detections]
    return {"boxes": flat_boxes[keep], "scores": flat_scores[keep], "labels": flat_labels[keep]}
