"""Full-image inference: proposals -> LR crops -> G -> D -> re-scored (and refined) detections.

The paper feeds 600 ROIs per image to the GAN (Bai et al., CVPR 2018, section 4.2); boxes are
re-scored by D's class head and, for SOD-MTGAN, moved by its regression deltas; class-wise NMS
follows. ROIs go through G and D in chunks so memory stays bounded whatever the proposal count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from gan_detect.data.roi import clip_boxes, crop_lr_for_inference, decode_boxes
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
    # Proposals scoring below this skip G + D (dropped); 0 re-scores every one of the top_k.
    rescore_min_score: float = 0.0
    # CPU/GPU speed options of the G + D forward (benchmarks/cpu_modes.py measures them):
    # channels_last converts G and D in place (exact); bf16 autocasts (scores move ~1e-3).
    channels_last: bool = False
    bf16: bool = False

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
    """Re-score one image's proposals with the GAN (``refine_detections_batch`` of one image).

    Args:
        variant: a trained variant (eval mode is set here).
        image: (3, H, W) float in [0, 1].
        proposals: ``boxes`` (K, 4) xyxy px, ``scores`` (K,), ``labels`` (K,).

    Returns:
        ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) int64 1..C, sorted by score.
    """
    return refine_detections_batch(variant, [image], [proposals], opts)[0]


def select_proposals(
    proposals: dict[str, Tensor], opts: InferenceOptions, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The proposals worth a G+D forward: the ``top_k`` best scoring at least
    ``rescore_min_score``. Returns boxes (K', 4) and detector scores (K',) on ``device``."""
    boxes = proposals["boxes"].float().to(device)
    det_scores = proposals["scores"].float().to(device)
    if opts.rescore_min_score > 0:
        keep = det_scores >= opts.rescore_min_score
        boxes, det_scores = boxes[keep], det_scores[keep]
    if boxes.shape[0] > opts.top_k:
        order = torch.argsort(det_scores, descending=True, stable=True)[: opts.top_k]
        boxes, det_scores = boxes[order], det_scores[order]
    return boxes, det_scores


@torch.no_grad()
def refine_detections_batch(
    variant: GANVariant,
    images: list[Tensor],
    proposals: list[dict[str, Tensor]],
    opts: InferenceOptions,
) -> list[dict[str, Tensor]]:
    """Re-score several images' proposals: their LR crops go through G + D together.

    Filling every ``chunk_size`` forward across image boundaries keeps the convolutions large
    when few proposals per image survive ``top_k`` / ``rescore_min_score``; the post-processing
    (scores, box deltas, NMS) stays per image.

    Args:
        images: I tensors (3, H_i, W_i) float in [0, 1].
        proposals: I dicts as in ``refine_detections``.

    Returns:
        I dicts ``boxes`` (D_i, 4), ``scores`` (D_i,), ``labels`` (D_i,), sorted by score.
    """
    if len(images) != len(proposals):
        raise ValueError(f"got {len(images)} images but {len(proposals)} proposal sets")
    variant.eval()
    device = next(variant.parameters()).device
    selected = [select_proposals(p, opts, device) for p in proposals]
    crops = []
    for image, (boxes, _) in zip(images, selected, strict=True):
        image = image.to(device)
        for start in range(0, boxes.shape[0], opts.chunk_size):
            chunk = boxes[start : start + opts.chunk_size]
            crops.append(
                crop_lr_for_inference(image, chunk, opts.lr_size, opts.context, scale=variant.scale)
            )
    probs_all: list[Tensor] = []
    deltas_all: list[Tensor] = []
    if opts.channels_last:
        # In place and idempotent: convolutions then follow the weights' memory format.
        variant.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if crops:
        lr_all = torch.cat(crops)
        for start in range(0, lr_all.shape[0], opts.chunk_size):
            with torch.autocast(device.type, torch.bfloat16, enabled=opts.bf16):
                probs, deltas, _ = variant.refine(lr_all[start : start + opts.chunk_size])
            probs_all.append(probs.float())
            if deltas is not None:
                deltas_all.append(deltas.float())
    counts = [int(b.shape[0]) for b, _ in selected]
    probs_split = torch.cat(probs_all).split(counts) if probs_all else [None] * len(counts)
    deltas_split = torch.cat(deltas_all).split(counts) if deltas_all else [None] * len(counts)
    return [
        _postprocess(boxes, det_scores, p, d, image.shape[-2:], opts)
        for image, (boxes, det_scores), p, d in zip(
            images, selected, probs_split, deltas_split, strict=True
        )
    ]


def _postprocess(
    boxes: Tensor,
    det_scores: Tensor,
    probs: Tensor | None,
    deltas: Tensor | None,
    hw: tuple[int, ...] | torch.Size,
    opts: InferenceOptions,
) -> dict[str, Tensor]:
    """One image: D's outputs (K, K_cls) probs and (K, 4 | 4(C+1)) deltas -> NMS'd detections."""
    device = boxes.device
    empty = {
        "boxes": boxes.new_zeros((0, 4)),
        "scores": boxes.new_zeros((0,)),
        "labels": torch.zeros(0, dtype=torch.int64, device=device),
    }
    if boxes.shape[0] == 0 or probs is None:
        return empty
    deltas_all = [] if deltas is None else [deltas]
    h, w = hw[-2], hw[-1]

    if probs.shape[1] == 1:  # face / non-face: one class, boxes unchanged
        cls_scores = probs  # (K, 1)
        cls_boxes = boxes[:, None, :]  # (K, 1, 4)
    else:  # (C + 1)-way softmax: drop background, one box per class
        cls_scores = probs[:, 1:]
        c = cls_scores.shape[1]
        if deltas_all and opts.refine_boxes:
            deltas = torch.cat(deltas_all)
            if deltas.shape[1] == 4:
                deltas = deltas[:, None, :].expand(-1, c, 4)
            else:
                deltas = deltas.view(-1, c + 1, 4)[:, 1:, :]
            k = boxes.shape[0]
            decoded = decode_boxes(
                deltas.reshape(-1, 4), boxes[:, None, :].expand(-1, c, 4).reshape(-1, 4)
            )
            cls_boxes = clip_boxes(decoded, (int(h), int(w))).view(k, c, 4)
        else:
            cls_boxes = boxes[:, None, :].expand(-1, c, 4)

    if opts.score_fusion == "geometric_mean":
        cls_scores = torch.sqrt(cls_scores.clamp_min(0) * det_scores.clamp(0, 1)[:, None])
    k, c = cls_scores.shape
    labels = torch.arange(1, c + 1, device=device).expand(k, c)
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
