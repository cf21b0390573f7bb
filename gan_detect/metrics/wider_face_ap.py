"""The official WIDER FACE evaluation (Yang et al., CVPR 2016 ``eval_tools``), vectorised.

Protocol: predictions sorted by score per image, one global min-max score normalisation, IoU with
the +1 pixel convention, per-prediction max-IoU matching (ignored faces exclude the prediction),
1000 thresholds and VOC all-point AP, for the easy / medium / hard settings.

Box convention: the official tool reads ``x y w h`` and forms ``x2 = x + w, y2 = y + h``; our xyxy
boxes are exactly those ``(x, y, x + w, y + h)``. IoU then adds 1 pixel to widths and heights.

This module is the pure-numpy protocol core (numpy + stdlib only, so ``gan-detect wider-eval`` starts
without torch); the torchmetrics ``WiderFaceAP`` lives in ``gan_detect.metrics.wider_face_metric``
and is re-exported here lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from gan_detect.data.records import xywh_to_xyxy
from gan_detect.metrics.wider_gt import SETTINGS, WiderGroundTruth

THRESH_NUM = 1000
IOU_THRESH = 0.5
# Thresholds t = 1 - k/1000, k = 1..1000, as the official loop computes them (same float ops).
THRESHOLDS: np.ndarray = 1.0 - np.arange(1, THRESH_NUM + 1) / THRESH_NUM


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP (``VOCap.m``): precision envelope, then sum of delta recall x precision.

    NaN precision (a threshold where no prediction counts) is skipped by the envelope, as MATLAB's
    ``max`` skips NaN; the Python port would return NaN instead.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, np.float64), [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def official_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K, M) IoU of xyxy boxes with the +1 pixel convention of ``boxoverlap.m``.

    Hand-written rather than torchvision's ``box_iou``: the +1 areas and the exact float
    operations are what make the result match the official numbers digit for digit.
    """
    # In-place arithmetic: a dense WIDER val image pairs ~700 faces with ~750 predictions.
    # Clamping w, h at 0 gives inter = 0 exactly where the official code zeroes the overlap, and
    # the same float operations elsewhere.
    tmp = np.maximum(pred[:, None, 0], gt[None, :, 0])
    iw = np.minimum(pred[:, None, 2], gt[None, :, 2])
    iw -= tmp
    iw += 1
    np.maximum(pred[:, None, 1], gt[None, :, 1], out=tmp)
    ih = np.minimum(pred[:, None, 3], gt[None, :, 3])
    ih -= tmp
    ih += 1
    np.maximum(iw, 0, out=iw)
    np.maximum(ih, 0, out=ih)
    inter = iw
    inter *= ih
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    np.add(area_p[:, None], area_g[None, :], out=tmp)
    tmp -= inter
    with np.errstate(divide="ignore", invalid="ignore"):
        inter /= tmp
    # Degenerate boxes (val has a face with w = -2) can make the union 0. As in MATLAB, a
    # positive overlap over it stays Inf (and matches); 0/0 where the overlap was zeroed is 0.
    inter[np.isnan(inter)] = 0.0
    return inter


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """Global min-max normalisation ``(s - min) / (max - min)`` over every prediction."""
    if scores.size == 0:
        return scores
    lo, hi = float(scores.min()), float(scores.max())
    if lo < 0.0 or hi > 1.0:
        warnings.warn(
            f"WIDER FACE scores outside [0, 1] (min {lo:.4g}, max {hi:.4g}): min-max normalisation "
            "keeps the AP defined, but one outlier compresses every other score",
            stacklevel=3,
        )
    if hi == lo:
        # The official tool divides by zero here (every score NaN, AP 0); one operating point is
        # the only meaningful reading of constant scores.
        warnings.warn("all WIDER FACE scores are equal; treating them as 1.0", stacklevel=3)
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def wider_face_ap_compute(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_keep: np.ndarray,
    gt_image: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """AP and PR curves of the three settings from flat arrays.

    Args:
        pred_boxes: (N, 4) float64 xyxy (x2 = x + w). pred_scores: (N,) raw scores.
        pred_image: (N,) int64 image key of each prediction.
        gt_boxes: (M, 4) float64 xyxy. gt_keep: (M, 3) bool, kept in easy/medium/hard.
        gt_image: (M,) int64 image key of each face, faces of one image in annotation order.

    Returns:
        ``aps`` (3,) float64 (-1 where a setting has no kept face) and ``curves`` (3, 1000, 2)
        [precision, recall] per threshold, as the official ``pr_cruve``.
    """
    scores = normalize_scores(np.asarray(pred_scores, np.float64))
    order_p = np.argsort(pred_image, kind="stable")
    order_g = np.argsort(gt_image, kind="stable")  # stable: keeps annotation order for argmax ties
    p_img, g_img = pred_image[order_p], gt_image[order_g]
    images = np.unique(g_img)
    p_lo, p_hi = np.searchsorted(p_img, images, "left"), np.searchsorted(p_img, images, "right")
    g_lo, g_hi = np.searchsorted(g_img, images, "left"), np.searchsorted(g_img, images, "right")
    matched = np.full(len(scores), -1, np.int64)  # global gt row with IoU >= 0.5, else -1
    counted = np.zeros(len(scores), bool)  # predictions of images without faces are not counted
    for a, b, c, d in zip(p_lo, p_hi, g_lo, g_hi, strict=True):
        if a == b:
            continue
        rows, gts = order_p[a:b], order_g[c:d]
        iou = official_iou(pred_boxes[rows], gt_boxes[gts])
        best = iou.argmax(axis=1)  # first maximum, as MATLAB's max
        hit = iou[np.arange(len(rows)), best] >= IOU_THRESH
        counted[rows] = True
        matched[rows[hit]] = gts[best[hit]]

    # Sort-free form of the per-image prefix sums: the predictions with score >= t are a prefix of
    # the score-sorted list, so the official per-image counts summed over images become global
    # counts: proposals(t) = #{counted, not excluded, score >= t};
    # recall(t) = #{kept faces whose best matching score >= t} (the first match in sorted order).
    aps = np.full(3, -1.0)
    curves = np.full((3, THRESH_NUM, 2), np.nan)
    hit = matched >= 0
    for k in range(3):
        keep = gt_keep[:, k]
        hit_keep = np.zeros_like(hit)
        hit_keep[hit] = keep[matched[hit]]
        proposal = counted & ~(hit & ~hit_keep)  # matching an ignored face: excluded
        best_score = np.full(len(keep), -np.inf)
        np.maximum.at(best_score, matched[hit_keep], scores[hit_keep])
        recalled = np.sort(best_score[np.isfinite(best_score)])
        proposed = np.sort(scores[proposal])
        n_prop = len(proposed) - np.searchsorted(proposed, THRESHOLDS, "left")
        n_rec = len(recalled) - np.searchsorted(recalled, THRESHOLDS, "left")
        count_face = int(keep.sum())
        if count_face == 0:
            warnings.warn(
                f"WIDER FACE {SETTINGS[k]}: no kept face; AP reported as -1", stacklevel=2
            )
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            curves[k, :, 0] = n_rec / n_prop
        curves[k, :, 1] = n_rec / count_face
        aps[k] = voc_ap(curves[k, :, 1], curves[k, :, 0])
    return aps, curves


def flatten_predictions(
    preds: Mapping[str, np.ndarray], gt: WiderGroundTruth
) -> tuple[np.ndarray, ...]:
    """Flat arrays for ``wider_face_ap_compute`` from xywh+score arrays keyed by image id."""
    missing = [i for i in gt.image_ids if i not in preds]
    extra = set(preds).difference(gt.image_ids)
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(gt)} images have no predictions (e.g. "
            f"{missing[0]!r}); counted as empty, as the official tool does",
            stacklevel=3,
        )
    if extra:
        warnings.warn(
            f"{len(extra)} predicted images are not in the ground truth; ignored", stacklevel=3
        )
    p_list = [
        np.asarray(preds.get(i, np.zeros((0, 5))), np.float64).reshape(-1, 5) for i in gt.image_ids
    ]
    p = np.concatenate(p_list) if p_list else np.zeros((0, 5))
    g = np.concatenate(gt.boxes) if gt.boxes else np.zeros((0, 4))
    p_img = np.repeat(np.arange(len(gt)), [len(x) for x in p_list])
    g_img = np.repeat(np.arange(len(gt)), [len(x) for x in gt.boxes])
    keep = np.concatenate(gt.keep) if gt.keep else np.zeros((0, 3), bool)
    # x2 = x + w, the official conversion (no +1 here; the IoU adds it).
    return xywh_to_xyxy(p[:, :4]), p[:, 4], p_img, xywh_to_xyxy(g), keep, g_img


def wider_face_pr_curves(
    preds: Mapping[str, np.ndarray], gt: WiderGroundTruth
) -> dict[str, np.ndarray]:
    """Official PR curves: setting -> (1000, 2) [precision, recall], thresholds 0.999 .. 0.0.

    Args:
        preds: image id ``"event/name"`` -> (K, 5) ``x, y, w, h, score`` (any order, any scale).
        gt: from ``load_wider_ground_truth`` (or the fallback).
    """
    _, curves = wider_face_ap_compute(*flatten_predictions(preds, gt))
    return dict(zip(SETTINGS, curves, strict=True))


def wider_face_ap(preds: Mapping[str, np.ndarray], gt: WiderGroundTruth) -> dict[str, float]:
    """Official easy / medium / hard AP (fractions in [0, 1]) of xywh+score predictions.

    Returns:
        ``{"ap_easy", "ap_medium", "ap_hard", "official"}``; ``official`` is 1.0 for the
        ``gt_list`` settings, 0.0 for the height fallback (not comparable with published numbers).
    """
    aps, _ = wider_face_ap_compute(*flatten_predictions(preds, gt))
    out = {f"ap_{s}": float(a) for s, a in zip(SETTINGS, aps, strict=True)}
    out["official"] = float(gt.official)
    return out


__all__ = [
    "IOU_THRESH",
    "THRESHOLDS",
    "THRESH_NUM",
    "flatten_predictions",
    "normalize_scores",
    "official_iou",
    "voc_ap",
    "wider_face_ap",
    "wider_face_ap_compute",
    "wider_face_pr_curves",
]
