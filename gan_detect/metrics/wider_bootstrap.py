"""Per-image tables of the official WIDER FACE protocol for the paired bootstrap.

Matching predictions to faces is done once per method (``wider_face_ap``'s own matching); a
resample then only re-weights whole images: one matrix product of the (R, n_images) count matrix
with (n_images, 1000) per-image counts per setting. Approximation (tested to move the point
estimate by < 0.01 AP points): the official global min-max score normalisation is taken once, on
the full prediction set, not per resample. With all weights 1 this is the official protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gan_detect.metrics.resampling import LEVEL, PairedBootstrap, paired_bootstrap
from gan_detect.metrics.wider_face_ap import (
    IOU_THRESH,
    THRESH_NUM,
    THRESHOLDS,
    flatten_predictions,
    normalize_scores,
    official_iou,
)
from gan_detect.metrics.wider_gt import SETTINGS, WiderGroundTruth

WIDER_METRICS: tuple[str, ...] = SETTINGS
WIDER_APPROXIMATION = (
    "WIDER FACE global min-max score normalisation taken once on the full prediction set, "
    "not per resample"
)


def _threshold_column(scores: np.ndarray) -> np.ndarray:
    """(N,) first column c of ``THRESHOLDS`` (descending) with ``scores >= THRESHOLDS[c]``.

    The count #{t > s} = #{-t < -s}: a searchsorted on the negated (ascending) thresholds, the
    same ``>=`` comparison the plain protocol makes. 1000 means "never counted".
    """
    return np.searchsorted(-THRESHOLDS, -np.asarray(scores, np.float64), side="left")


def _per_image_cumulative(image: np.ndarray, column: np.ndarray, n_images: int) -> np.ndarray:
    """(n_images, 1000) counts: items of image i whose column is <= c (i.e. counted at t_c)."""
    hist = np.bincount(
        image * (THRESH_NUM + 1) + column, minlength=n_images * (THRESH_NUM + 1)
    ).reshape(n_images, THRESH_NUM + 1)[:, :THRESH_NUM]
    return np.cumsum(hist, axis=1)


@dataclass
class WiderTables:
    """Per-image contributions of one method to the official WIDER FACE protocol.

    Attributes:
        image_ids: (I,) ``"event/name"`` in ground-truth order.
        table: (I, 3 * 2 * 1000) counts, float32 when exact (< 2**24) else float64; for each
            setting (easy, medium, hard) the number of counted predictions with normalised
            score >= t, then the number of kept faces recalled at t (matched first by a
            prediction with score >= t), for the 1000 official thresholds t.
        faces: (I, 3) float64: kept faces per image and setting (the recall denominators).
    """

    image_ids: list[str]
    table: np.ndarray
    faces: np.ndarray
    metrics: tuple[str, ...] = field(default=WIDER_METRICS)

    @property
    def n_images(self) -> int:
        """Number of images I."""
        return len(self.image_ids)

    def curves(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, I) image counts -> precision, recall, each (R, 3, 1000) float64."""
        w = np.asarray(weights, dtype=self.table.dtype)
        sums = (w @ self.table).astype(np.float64).reshape(len(w), 3, 2, THRESH_NUM)
        n_face = np.asarray(weights, np.float64) @ self.faces  # (R, 3)
        n_prop, n_rec = sums[:, :, 0], sums[:, :, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = n_rec / n_prop  # NaN where nothing is proposed, as the protocol
            recall = n_rec / n_face[:, :, None]
        return precision, recall

    def ap(self, weights: np.ndarray) -> np.ndarray:
        """(R, I) image counts -> (R, 3) AP fractions; NaN where a setting has no kept face."""
        precision, recall = self.curves(weights)
        r, s = precision.shape[:2]
        ap = _voc_ap_rows(recall.reshape(r * s, -1), precision.reshape(r * s, -1)).reshape(r, s)
        n_face = np.asarray(weights, np.float64) @ self.faces
        ap[n_face <= 0] = np.nan
        return ap


def _voc_ap_rows(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``voc_ap`` on each row of (N, T) recall / precision -> (N,).

    Terms where recall does not change are exact zeros (the envelope is finite: the fmax from
    the right starts at 0 and skips NaN, as MATLAB's max does), so summing every step equals
    summing the changed ones.
    """
    n = len(recall)
    zeros, ones = np.zeros((n, 1)), np.ones((n, 1))
    mrec = np.concatenate([zeros, recall, ones], axis=1)
    mpre = np.concatenate([zeros, precision, zeros], axis=1)
    env = np.fmax.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    return np.sum((mrec[:, 1:] - mrec[:, :-1]) * env[:, 1:], axis=1)


def wider_tables(preds: Mapping[str, np.ndarray], gt: WiderGroundTruth) -> WiderTables:
    """Match once and tabulate per image (official protocol, see ``wider_face_ap``).

    Args:
        preds: image id -> (K, 5) ``x, y, w, h, score``; images absent count as empty.
        gt: the ground truth (its image order is the table's row order).
    """
    boxes, scores, p_img, g_boxes, keep, g_img = flatten_predictions(preds, gt)
    scores = normalize_scores(np.asarray(scores, np.float64))
    n = len(gt)
    # The matching loop of the plain protocol, per image: each prediction's best-IoU face (first
    # maximum) if IoU >= 0.5; predictions of images without any face are not counted.
    matched = np.full(len(scores), -1, np.int64)
    counted = np.zeros(len(scores), bool)
    p_bounds = np.searchsorted(p_img, np.arange(n + 1))  # _flatten_tree groups by image in order
    g_bounds = np.searchsorted(g_img, np.arange(n + 1))
    for i in range(n):
        a, b, c, d = p_bounds[i], p_bounds[i + 1], g_bounds[i], g_bounds[i + 1]
        if a == b or c == d:
            continue
        iou = official_iou(boxes[a:b], g_boxes[c:d])
        best = iou.argmax(axis=1)
        hit = iou[np.arange(b - a), best] >= IOU_THRESH
        counted[a:b] = True
        matched[np.arange(a, b)[hit]] = c + best[hit]

    hit = matched >= 0
    column = _threshold_column(scores)
    parts = []
    faces = np.zeros((n, 3))
    for k in range(3):
        kept = keep[:, k]
        hit_keep = np.zeros_like(hit)
        hit_keep[hit] = kept[matched[hit]]
        proposal = counted & ~(hit & ~hit_keep)  # a match to an ignored face is excluded
        best_score = np.full(len(kept), -np.inf)
        np.maximum.at(best_score, matched[hit_keep], scores[hit_keep])
        recalled = np.isfinite(best_score)
        parts.append(_per_image_cumulative(p_img[proposal], column[proposal], n))
        parts.append(
            _per_image_cumulative(g_img[recalled], _threshold_column(best_score[recalled]), n)
        )
        faces[:, k] = np.bincount(g_img[kept], minlength=n)
    table = np.stack(parts, axis=1).reshape(n, -1)
    # float32 sums of integers are exact while every partial sum stays below 2**24; a resample's
    # row sum is at most n_images * the largest entry.
    exact32 = n * max(int(table.max(initial=0)), 1) < 2**24
    return WiderTables(
        list(gt.image_ids), table.astype(np.float32 if exact32 else np.float64), faces
    )


def wider_paired_bootstrap(
    preds_a: Mapping[str, np.ndarray],
    preds_b: Mapping[str, np.ndarray],
    gt: WiderGroundTruth,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedBootstrap:
    """Easy / medium / hard AP of A and B and the paired bootstrap of B - A (AP points)."""
    return paired_bootstrap(
        wider_tables(preds_a, gt), wider_tables(preds_b, gt), n_boot, seed, level,
        WIDER_APPROXIMATION,
    )  # fmt: skip


__all__ = [
    "WIDER_APPROXIMATION",
    "WIDER_METRICS",
    "WiderTables",
    "wider_paired_bootstrap",
    "wider_tables",
]
