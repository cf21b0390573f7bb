"""ROI mining for the GAN refiner (Bai et al., CVPR 2018; Zhang et al., ECCV 2018): proposal
labelling, Fast R-CNN box coding and sampling, and the LR/HR crops (docs/design.md, D5, D6).

Crop geometry, shared by training and inference: a box is enlarged by ``context`` around its
centre and made square on its longer side (side = ``context * max(w, h)``), so the object keeps
its aspect ratio and sits at the crop centre. Pixels outside the image are 0 in [-1, 1] (mid-grey),
which is also what ``roi_align`` yields there. Because the crop is centred on the proposal,
mirroring the crop mirrors the ground-truth offset: a horizontal flip negates ``dx`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, clip_boxes_to_image, roi_align

from gan_detect.data.records import ImageRecord, Proposals

if TYPE_CHECKING:
    from gan_detect.config.sections import RoiDataConfig

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CODER = BoxCoder(BOX_CODER_WEIGHTS)


def encode_boxes(gt: Tensor, proposals: Tensor) -> Tensor:
    """Fast R-CNN deltas (N, 4) (dx, dy, dw, dh; weights 10, 10, 5, 5) from proposals to gt (N, 4)."""
    return _CODER.encode_single(gt.float(), proposals.float())


def decode_boxes(deltas: Tensor, proposals: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: (N, 4) deltas applied to (N, 4) xyxy proposals."""
    return _CODER.decode_single(deltas.float(), proposals.float())


def encode_roi_targets(gt: Tensor, proposals: Tensor, context: float) -> Tensor:
    """Box-regression targets (N, 4) of (N, 4) xyxy proposals towards their matched gt (N, 4).

    Encoded against the box that is actually cropped (the squared, ``context``-enlarged window of
    :func:`square_boxes`), not the proposal: D sees only that window, so two proposals with the
    same centre and long side (identical crops) get identical targets. Training and ROI-store
    targets use this, inference its inverse :func:`decode_roi_deltas`.
    """
    return encode_boxes(gt, square_boxes(proposals.float(), context))


def decode_roi_deltas(deltas: Tensor, proposals: Tensor, context: float) -> Tensor:
    """Inverse of :func:`encode_roi_targets`: (N, 4) deltas -> (N, 4) xyxy boxes, applied to the
    squared, ``context``-enlarged crop window of each (N, 4) xyxy proposal."""
    return decode_boxes(deltas, square_boxes(proposals.float(), context))


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip (N, 4) xyxy boxes to an image of size (H, W)."""
    return clip_boxes_to_image(boxes, image_size)


def clip_proposals(
    boxes: Tensor, image_size: tuple[int, int], min_size: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The border rule shared by ROI mining and inference: clip (K, 4) xyxy boxes to the (H, W)
    image, then drop those under ``min_size`` px a side (after clipping).

    External proposals often cross the image edge; clipping both in training and at inference
    keeps the crop window (hence what D sees and the box-delta reference) the same.

    Returns:
        the kept clipped boxes (K', 4) and their indices (K',) int64 into ``boxes``.
    """
    clipped = clip_boxes(boxes, image_size)
    keep = torch.nonzero(((clipped[:, 2:] - clipped[:, :2]) >= min_size).all(dim=1)).flatten()
    return clipped[keep], keep


def label_proposals(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_ignore: Tensor,
    fg_iou: float = 0.5,
    bg_iou_low: float = 0.0,
    ignore_iou: float = 0.5,
    context: float = 1.0,
    ignore_neg_iou: float = 0.3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Label (K, 4) xyxy proposals against (M, 4) ground truth (docs/design.md, D6).

    Rules, in order: (1) if the best-overlapping GT over *all* GT is an ignored one with
    IoU >= ``ignore_iou`` and it overlaps strictly more than every non-ignored GT -> -1 (never a
    negative); (1b) likewise a would-be background proposal whose best overlap is an ignored GT
    (WIDER invalid face, COCO crowd) at IoU >= ``ignore_neg_iou`` -> -1: its crop shows much of
    an object that is only unlabelled, not absent; (2) best non-ignored IoU >= ``fg_iou`` -> that GT's class; (3) best non-ignored
    IoU in [``bg_iou_low``, ``fg_iou``) -> 0 (background); (4) below ``bg_iou_low`` -> -1.
    Ties: between non-ignored GT the lowest GT index wins (``argmax`` returns the first maximum);
    between an ignored and a non-ignored GT at equal IoU the non-ignored one wins. Both threshold
    comparisons are inclusive (IoU == 0.5 is foreground).

    Returns:
        labels (K,) int64 (-1 ignore, 0 background, 1..C class); matched_gt_index (K,) int64,
        the GT index for foreground and -1 otherwise; box_targets (K, 4) float32 deltas
        (:func:`encode_roi_targets` with ``context``, the crop window), zero except for
        foreground.
    """
    k = proposals.shape[0]
    labels = torch.zeros(k, dtype=torch.int64)
    matched = torch.full((k,), -1, dtype=torch.int64)
    targets = torch.zeros((k, 4), dtype=torch.float32)
    if k == 0:
        return labels, matched, targets
    ignore = gt_ignore.bool()
    if gt_boxes.shape[0] == 0:
        best_valid = torch.zeros(k)
        best_idx = torch.zeros(k, dtype=torch.int64)
        best_ign = torch.full((k,), -1.0)
    else:
        iou = box_iou(proposals.float(), gt_boxes.float())  # (K, M)
        iou_valid = iou.masked_fill(ignore[None, :], -1.0)
        best_idx = iou_valid.argmax(dim=1)  # first maximum: the lowest GT index wins ties
        # No non-ignored GT at all behaves like IoU 0 (background when bg_iou_low is 0).
        best_valid = iou_valid.gather(1, best_idx[:, None])[:, 0].clamp(min=0.0)
        best_ign = iou.masked_fill(~ignore[None, :], -1.0).max(dim=1).values
    fg = best_valid >= fg_iou
    ign = (best_ign >= ignore_iou) & (best_ign > best_valid)
    labels[best_valid < bg_iou_low] = -1
    if fg.any():
        labels[fg] = gt_labels[best_idx[fg]].long()
        matched[fg] = best_idx[fg]
        targets[fg] = encode_roi_targets(gt_boxes[best_idx[fg]], proposals[fg], context)
    # Never a negative: background by the valid GT, but mostly an ignore region.
    ign |= (~fg) & (best_ign >= ignore_neg_iou) & (best_ign > best_valid)
    labels[ign] = -1
    matched[ign] = -1
    targets[ign] = 0.0
    return labels, matched, targets


def sample_rois(
    labels: Tensor,
    num: int,
    positive_fraction: float = 0.25,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fast R-CNN sampling: up to ``num * positive_fraction`` positives (labels > 0), the rest of
    ``num`` from negatives (labels == 0); -1 is never sampled. Returns indices, positives first;
    fewer than ``num`` when both pools run out."""
    pos = torch.nonzero(labels > 0).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_pos = min(int(num * positive_fraction), pos.numel())
    n_neg = min(num - n_pos, neg.numel())
    pos = pos[torch.randperm(pos.numel(), generator=generator)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[:n_neg]]
    return torch.cat([pos, neg])


def gt_jitter_proposals(
    record: ImageRecord,
    num_per_gt: int = 4,
    jitter: tuple[float, float] = (0.15, 0.1),
    num_random_bg: int = 16,
    seed: int = 0,
    *,
    num_hard_per_gt: int = 2,
    image_size: tuple[int, int] | None = None,
) -> Proposals:
    """Stand-in proposals when no detector output exists (an approximation of a detector).

    Per non-ignored GT: ``num_per_gt`` boxes with log-scale noise (std ``jitter[0]``) and centre
    shifts (std ``jitter[1]`` of the box size), mostly IoU > 0.5; ``num_hard_per_gt`` hard
    negatives shifted by 0.6-1.2 box sizes (IoU mostly < 0.3); plus ``num_random_bg`` boxes
    anywhere in the image, sized like the GT (log-uniform 8 px .. a quarter of the short side when
    there is none). Real detector proposals have other statistics (duplicates, clutter), so
    train on them when available. Scores: IoU with the source GT; random boxes get [0, 0.1).

    Args:
        image_size: (H, W); read from the record or the image header when None.
    """
    if image_size is None:
        if record.width > 0 and record.height > 0:
            image_size = (record.height, record.width)
        else:
            from gan_detect.data.image_io import image_size as _header_size

            image_size = _header_size(record.path)  # header only, as displayed (EXIF)
    h_img, w_img = image_size
    rng = np.random.default_rng(seed)
    valid = ~record.ignore & (record.boxes[:, 2] > record.boxes[:, 0])
    valid &= record.boxes[:, 3] > record.boxes[:, 1]
    gt, gl = record.boxes[valid], record.labels[valid]
    wh = gt[:, 2:] - gt[:, :2]
    ctr = gt[:, :2] + wh / 2
    out_boxes, out_labels = [], []
    for n, near in ((num_per_gt, True), (num_hard_per_gt, False)):
        if n <= 0 or len(gt) == 0:
            continue
        c, s = np.repeat(ctr, n, 0), np.repeat(wh, n, 0)
        if near:
            shift = rng.normal(0.0, jitter[1], size=c.shape)
        else:  # push the centre out by 0.6-1.2 box sizes in a random direction
            ang = rng.uniform(0, 2 * np.pi, size=len(c))
            shift = rng.uniform(0.6, 1.2, size=(len(c), 1)) * np.stack(
                [np.cos(ang), np.sin(ang)], 1
            )
        size = s * np.exp(rng.normal(0.0, jitter[0], size=c.shape))
        c = c + shift * s
        out_boxes.append(np.concatenate([c - size / 2, c + size / 2], 1))
        out_labels.append(np.repeat(gl, n))
    if num_random_bg > 0:
        if len(gt):
            side = np.sqrt(wh.prod(1))[rng.integers(0, len(gt), num_random_bg)]
            side = side * np.exp(rng.normal(0.0, 0.3, num_random_bg))
        else:
            hi = max(min(h_img, w_img) / 4, 9.0)
            side = np.exp(rng.uniform(np.log(8.0), np.log(hi), num_random_bg))
        c = rng.uniform([0, 0], [w_img, h_img], size=(num_random_bg, 2))
        out_boxes.append(np.concatenate([c - side[:, None] / 2, c + side[:, None] / 2], 1))
        lab = gl[rng.integers(0, len(gl), num_random_bg)] if len(gl) else np.ones(num_random_bg)
        out_labels.append(lab)
    if not out_boxes:
        return Proposals(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    all_boxes = torch.from_numpy(np.concatenate(out_boxes)).float()
    boxes, keep = clip_proposals(all_boxes, (h_img, w_img))
    scores = rng.uniform(0, 0.1, len(boxes)).astype(np.float32)
    if len(gt):
        iou = box_iou(boxes, torch.from_numpy(gt)).max(1).values.numpy()
        scores = np.maximum(scores, iou)
    return Proposals(boxes.numpy(), scores, np.concatenate(out_labels)[keep.numpy()])


def square_boxes(boxes: Tensor, context: float) -> Tensor:
    """(K, 4) xyxy -> (K, 4) squares of side ``context * max(w, h)`` (>= 1 px) around the centres."""
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values.mul(context).clamp(min=1.0)
    return torch.cat([ctr - side[:, None] / 2, ctr + side[:, None] / 2], dim=1)


def _region(img: Tensor, x0: int, y0: int, x1: int, y1: int) -> Tensor:
    """img[:, y0:y1, x0:x1] (a view when inside the image), zeros where the window leaves it."""
    h, w = img.shape[-2:]
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return img[:, y0:y1, x0:x1]
    out = img.new_zeros((img.shape[0], y1 - y0, x1 - x0))
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[:, sy0:sy1, sx0:sx1]
    return out


def _resample_matrix(start: float, side: float, out: int, n_in: int) -> np.ndarray:
    """(out, n_in) float32 weights resampling the window [start, start + side) of n_in pixels.

    Output pixel i is centred at ``start + (i + 0.5) * side / out``; the Keys cubic kernel
    (a = -0.5, as PIL and torch's antialiased bicubic) is stretched by ``side / out`` when
    downscaling (antialiasing); rows are normalised to sum to 1.
    """
    support = max(side / out, 1.0)
    ctr = start + (np.arange(out) + 0.5) * (side / out)
    x = np.abs((np.arange(n_in) + 0.5)[None, :] - ctr[:, None]) / support
    a = -0.5
    w = np.where(
        x <= 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
    )
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _crop_resample(img: Tensor, boxes: Tensor, size: int, context: float) -> Tensor:
    """Shared crop: (C, H, W) in [-1, 1] -> (K, C, size, size) via separable weight matrices.

    One loop step per box: weights are built in NumPy (low small-array overhead), the products
    run in torch (its GEMM is several times faster than NumPy's stacked matmul here). Measured
    slower on 2 CPU cores: a batched version bucketed by window size (padding waste) and a sparse
    gather-of-taps version (torch fancy indexing costs more than the dense GEMM it saves).
    """
    sq = square_boxes(boxes.float(), context)
    c = img.shape[0]
    out = img.new_zeros((sq.shape[0], c, size, size))
    for i, (x0, y0, x1, y1) in enumerate(sq.tolist()):
        side = x1 - x0
        m = math.ceil(2.0 * max(side / size, 1.0)) + 1  # kernel reach beyond the window
        rx0, ry0 = math.floor(x0) - m, math.floor(y0) - m
        reg = _region(img, rx0, ry0, math.ceil(x1) + m, math.ceil(y1) + m)
        rh, rw = reg.shape[-2:]
        wy = torch.from_numpy(_resample_matrix(y0 - ry0, side, size, rh))
        wx = torch.from_numpy(_resample_matrix(x0 - rx0, side, size, rw))
        # Columns first as one 2-D GEMM over all channels, then rows.
        tmp = reg.reshape(c * rh, rw) @ wx.T
        out[i] = wy @ tmp.reshape(c, rh, size)
    return out


def _to_pm1(image: Tensor) -> Tensor:
    """(3, H, W) [0, 1] -> float32 in [-1, 1], on the CPU."""
    return image.detach().float().cpu() * 2.0 - 1.0


def crop_hr(image: Tensor, boxes: Tensor, hr_size: int, context: float = 1.0) -> Tensor:
    """Real HR crops of the (context-enlarged, squared) boxes at sub-pixel accuracy.

    One separable bicubic resampling (a = -0.5) of the exact fractional window: antialiased when
    the box is larger than ``hr_size`` (kernel stretched, as ``F.interpolate(antialias=True)``),
    plain bicubic interpolation when it is smaller. Pixels outside the image count as 0.

    Args:
        image: (3, H, W) float in [0, 1].
        boxes: (K, 4) xyxy absolute pixels.

    Returns:
        (K, 3, hr_size, hr_size) float32 in [-1, 1].
    """
    return _crop_resample(_to_pm1(image), boxes, hr_size, context).clamp_(-1.0, 1.0)


@functools.lru_cache(maxsize=16)
def _downsample_matrix(n_in: int, scale: int) -> Tensor:
    """(n_in / scale, n_in) antialiased bicubic weights; equal to torch's ``antialias=True``."""
    return torch.from_numpy(_resample_matrix(0.0, float(n_in), n_in // scale, n_in))


def make_lr(hr: Tensor, scale: int) -> Tensor:
    """(K, 3, H, W) -> (K, 3, H/scale, W/scale): antialiased bicubic downsample, in [-1, 1].

    Same numbers as ``F.interpolate(mode="bicubic", antialias=True)`` (to 1e-7), computed as two
    small matmuls with cached weights, which is faster for small crops on the CPU
    (benchmarks/README.md).
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by scale {scale}")
    py = _downsample_matrix(h, scale).to(hr.device)
    px = _downsample_matrix(w, scale).to(hr.device)
    return (py @ hr.float() @ px.T).clamp_(-1.0, 1.0)


def crop_lr_for_inference(
    image: Tensor,
    boxes: Tensor,
    lr_size: int,
    context: float = 1.0,
    *,
    scale: int = 4,
    method: str = "roi_align_hr",
) -> Tensor:
    """LR crops (K, 3, lr, lr) in [-1, 1] straight from a (3, H, W) [0, 1] image, batched.

    Methods (speed and difference from the training path: benchmarks/README.md, ``--bench data``):
    ``"roi_align_hr"`` (default): one ``roi_align`` to ``lr * scale`` with adaptive sampling
    (``sampling_ratio=0``: ceil(side / size) bilinear samples per bin side, averaged, a box
    filter standing in for antialiasing), then :func:`make_lr`, so the final LR kernel is the
    training one; ``"roi_align"``: ``roi_align`` straight to ``lr`` (fastest, least faithful);
    ``"exact"``: literally ``make_lr(crop_hr(box, lr * scale), scale)`` (slowest, identical to
    the training path).
    """
    if boxes.shape[0] == 0:
        return image.new_zeros((0, 3, lr_size, lr_size))
    hr = lr_size * scale
    if method == "exact":
        return make_lr(crop_hr(image, boxes, hr, context), scale)
    if method not in ("roi_align", "roi_align_hr"):
        raise ValueError(
            f"crop_lr_for_inference: unknown method {method!r} (roi_align_hr | roi_align | exact)"
        )
    img = image.float()[None] * 2.0 - 1.0
    sq = square_boxes(boxes.float().to(img.device), context)
    size = hr if method == "roi_align_hr" else lr_size
    out = roi_align(img, [sq], size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return make_lr(out, scale) if method == "roi_align_hr" else out.clamp_(-1.0, 1.0)


@dataclass(frozen=True)
class MiningParams:
    """How the ROIs of one image are labelled, sampled and cropped (the ``data.*`` mining keys).

    One object for :func:`mine_rois`, the ROI store and the on-the-fly dataset, so the three
    cannot drift apart. The field names are the ROI store's fingerprint keys.

    Attributes:
        hr_size: side of the HR crop, px; a multiple of ``scale``.
        scale: LR -> HR factor of the variant.
        context: crop enlargement around the box (1.0: the box itself, made square).
        rois_per_image: ROIs sampled per image.
        positive_fraction: share of the sample that is foreground, at most.
        fg_iou: IoU with a ground-truth box from which a proposal is foreground.
        bg_iou_low: lowest IoU of a background proposal.
        include_gt: add the non-ignored ground-truth boxes as proposals (Fast R-CNN training).
        ignore_neg_iou: a would-be negative overlapping an ignore region this much is dropped.
    """

    hr_size: int = 64
    scale: int = 4
    context: float = 1.0
    rois_per_image: int = 32
    positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.0
    include_gt: bool = True
    ignore_neg_iou: float = 0.3

    def __post_init__(self) -> None:
        if self.hr_size % self.scale:
            raise ValueError(f"hr_size {self.hr_size} must be divisible by scale {self.scale}")

    @classmethod
    def from_config(cls, cfg: RoiDataConfig, scale: int) -> MiningParams:
        """The mining keys of a ROI DataModule's config, with the variant's ``scale``."""
        keys = (f.name for f in dataclasses.fields(cls) if f.name != "scale")
        return cls(scale=scale, **{k: getattr(cfg, k) for k in keys})


def mine_rois(
    image: Tensor,
    record: ImageRecord,
    proposals: Proposals,
    params: MiningParams = MiningParams(),
    *,
    generator: torch.Generator | None = None,
    image_index: int = 0,
) -> dict[str, np.ndarray]:
    """Label, sample and crop the ROIs of one image (``params.rois_per_image`` at most).

    Proposals are clipped to the image first; boxes under 1 px a side are dropped. With
    ``params.include_gt`` the non-ignored GT boxes join the proposals as perfect positives,
    which guarantees positives even for weak proposals.

    Returns:
        ``hr`` (N, hr, hr, 3) uint8; ``labels`` (N,) int64; ``box_targets`` (N, 4) float32;
        ``src_sizes`` (N, 2) float32 (w, h) of the matched GT, of the proposal for background;
        ``boxes`` (N, 4) float32 proposal xyxy; ``image_index`` (N,) int64.
    """
    p = params
    h, w = image.shape[-2:]
    boxes = torch.from_numpy(proposals.boxes).float()
    gt = torch.from_numpy(record.boxes).float()
    if p.include_gt:
        keep_gt = ~torch.from_numpy(record.ignore)
        boxes = torch.cat([gt[keep_gt], boxes])
    boxes, _ = clip_proposals(boxes, (h, w))
    labels, matched, targets = label_proposals(
        boxes, gt, torch.from_numpy(record.labels), torch.from_numpy(record.ignore),
        fg_iou=p.fg_iou, bg_iou_low=p.bg_iou_low, context=p.context,
        ignore_neg_iou=p.ignore_neg_iou,
    )  # fmt: skip
    idx = sample_rois(labels, p.rois_per_image, p.positive_fraction, generator)
    boxes, labels, matched, targets = boxes[idx], labels[idx], matched[idx], targets[idx]
    src = boxes.clone()
    fg = matched >= 0
    src[fg] = gt[matched[fg]]
    hr = crop_hr(image, boxes, p.hr_size, p.context)
    hr_u8 = ((hr + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return {
        "hr": hr_u8.contiguous().numpy(),
        "labels": labels.numpy(),
        "box_targets": targets.numpy().astype(np.float32),
        "src_sizes": (src[:, 2:] - src[:, :2]).numpy().astype(np.float32),
        "boxes": boxes.numpy().astype(np.float32),
        "image_index": np.full(len(idx), image_index, dtype=np.int64),
    }


def hr_from_uint8(hr: np.ndarray | Tensor) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    t = torch.as_tensor(np.asarray(hr))
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
