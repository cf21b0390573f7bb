"""Per-image tables of COCO box AP for the paired bootstrap (weighted re-accumulation).

The matching (``COCOeval.evaluate``, through :func:`~gan_detect.metrics.coco_eval.coco_evaluator`)
runs once per method; a resample re-runs only ``accumulate`` with each image counted ``w`` times.
Approximation (tested to move the point estimate by < 0.01 AP points): a detection of an image
drawn ``w`` times counts with weight ``w`` at its place in the global score order, which equals
evaluating ``w`` copies of the image except for the order of copies inside a tie of equal scores
(which COCOeval breaks by image order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.metrics.coco_eval import (
    COCO_METRICS,
    DEFAULT_MAX_DETS,
    TINY_AREA,
    area_ranges,
    coco_evaluator,
    coco_results_to_dt,
    load_coco_gt,
)
from gan_detect.metrics.resampling import LEVEL, PairedBootstrap, paired_bootstrap

COCO_APPROXIMATION = (
    "an image drawn w times counts its detections with weight w (ties of equal scores between "
    "copies are not re-ordered)"
)
# metric -> (area label, IoU threshold index or None for the mean over 0.50:0.95)
_COCO_METRIC_DEF: dict[str, tuple[str, int | None]] = {
    "map": ("all", None),
    "map_50": ("all", 0),
    "map_75": ("all", 5),
    "map_small": ("small", None),
    "map_medium": ("medium", None),
    "map_large": ("large", None),
    "map_tiny": ("tiny", None),
}


@dataclass
class _CocoBlock:
    """One (category, area range): the true-positive stream of each IoU threshold.

    Attributes:
        area: area label. gt_img, gt_count: images with non-ignored ground truth and how many
            (the recall denominator is ``weights[:, gt_img] @ gt_count``).
        tp_img: (T, L) image index of the l-th true positive in global score order at IoU
            threshold t; padded with ``n_images`` (a zero-weight image) to the longest T row.
        fp_gap: (T * L, I) sparse CSR: false positives of image i ranked between true positive
            l - 1 and l (row t * L + l); false positives after the last one never matter.
    """

    area: str
    gt_img: np.ndarray
    gt_count: np.ndarray
    tp_img: np.ndarray
    fp_gap: Any


@dataclass
class CocoTables:
    """Per-image COCO matching of one method (pycocotools ``evaluate()``), for re-accumulation.

    ``ap(weights)`` re-runs COCOeval's ``accumulate`` with each image counted ``weights[r, i]``
    times: cumulative true / false positives become weighted sums, the recall denominator too.
    Only the points where a true positive arrives are kept: the 101-point interpolated precision
    reads the precision envelope at the first point reaching each recall level, which is always
    such a point (false positives only lower precision and do not move recall).
    """

    image_ids: list[int]
    blocks: list[_CocoBlock]
    rec_thrs: np.ndarray
    n_iou: int
    metrics: tuple[str, ...] = field(default=COCO_METRICS)
    # metric -> (area label, IoU threshold index or None for the mean over the thresholds)
    metric_defs: dict[str, tuple[str, int | None]] = field(
        default_factory=lambda: dict(_COCO_METRIC_DEF)
    )

    @property
    def n_images(self) -> int:
        """Number of images I."""
        return len(self.image_ids)

    def ap(self, weights: np.ndarray) -> np.ndarray:
        """(R, I) image counts -> (R, 7) AP fractions in ``COCO_METRICS`` order (NaN: no gt)."""
        w = np.asarray(weights, np.float64)
        n_r = len(w)
        # Transposed, with an extra zero row for the padding image index.
        wt = np.zeros((self.n_images + 1, n_r))
        wt[: self.n_images] = w.T
        # metric -> per-replicate sum of per-category mean precision and count of categories.
        sums = {m: np.zeros(n_r) for m in self.metrics}
        counts = {m: np.zeros(n_r) for m in self.metrics}
        by_area: dict[str, list[str]] = {}
        for m in self.metrics:
            by_area.setdefault(self.metric_defs[m][0], []).append(m)
        for blk in self.blocks:
            if blk.area not in by_area:
                continue
            npig = blk.gt_count @ wt[blk.gt_img]  # (R,)
            valid = npig > 0
            if not valid.any():
                continue
            prec = self._block_precision(blk, wt, npig)  # (T, R) mean over recall thresholds
            for m in by_area[blk.area]:
                t_idx = self.metric_defs[m][1]
                v = prec.mean(axis=0) if t_idx is None else prec[t_idx]
                sums[m] += np.where(valid, v, 0.0)
                counts[m] += valid
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.stack([sums[m] / counts[m] for m in self.metrics], axis=1)

    def _block_precision(self, blk: _CocoBlock, wt: np.ndarray, npig: np.ndarray) -> np.ndarray:
        """(T, R) mean interpolated precision of one block under the weights ``wt`` (I + 1, R)."""
        n_t, n_l = blk.tp_img.shape
        n_r = wt.shape[1]
        # Only the points where a true positive arrives (see the class docstring).
        tp = np.cumsum(wt[blk.tp_img], axis=1)  # (T, L, R) weighted true positives so far
        fp = np.cumsum(np.asarray(blk.fp_gap @ wt[:-1]).reshape(n_t, n_l, n_r), axis=1)
        pr = tp / (fp + tp + np.spacing(1))  # COCOeval's own formula (same float ops)
        env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
        # COCOeval reads env at l_q = the first point with recall >= q, for each recall threshold
        # q. Summed over q that is sum_l env[l] * #{q first reached at l}, and the number of
        # thresholds reached by recall rc is searchsorted(recThrs, rc, "right"): one vectorised
        # search against the 101 thresholds instead of one per (IoU, replicate) row.
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = tp / npig  # (T, L, R); rows with npig = 0 are masked by the caller
        reached = np.searchsorted(self.rec_thrs, rc.ravel(), side="right").reshape(rc.shape)
        first = np.diff(reached, axis=1, prepend=0)  # thresholds first reached at each point
        return np.einsum("tlr,tlr->tr", env, first) / len(self.rec_thrs)


def coco_tables(
    gt: Any,
    dt: Any,
    max_dets: int = DEFAULT_MAX_DETS[-1],
    tiny_area: float = TINY_AREA,
    areas: Sequence[tuple[str, float, float]] | None = None,
    iou_thrs: Sequence[float] | None = None,
) -> CocoTables:
    """Per-image COCO matching (``COCOeval.evaluate``) of one method, tabulated.

    Settings follow ``CocoMeanAP``: pycocotools' float64 IoU thresholds 0.50:0.05:0.95 and 101
    recall thresholds, every AP at ``max_dets`` detections per image (the package default 1000),
    areas all / small / medium / large and ``tiny`` (area < ``tiny_area``), categories of the
    ground truth, all ground-truth images.

    Args:
        gt, dt: pycocotools ``COCO`` objects (:func:`load_coco_gt`, :func:`coco_results_to_dt`).
        areas, iou_thrs: other area ranges ``(label, low, high)`` in px² and IoU thresholds
            (e.g. AP50 per object-size bucket); the metrics are then ``ap50_<label>`` (the
            first threshold) per area.
    """
    custom = areas is not None
    areas = list(areas) if areas is not None else list(area_ranges(tiny_area))
    ev = coco_evaluator(gt, dt, [max_dets], areas, iou_thrs, per_image=True)
    p = ev.params
    n_img, n_area, n_t = len(p.imgIds), len(areas), len(p.iouThrs)
    img_index = {img: i for i, img in enumerate(p.imgIds)}
    blocks = []
    for k in range(len(p.catIds)):
        for a in range(n_area):
            base = (k * n_area + a) * n_img
            evs = [e for e in ev.evalImgs[base : base + n_img] if e is not None]
            if not evs:
                continue
            blocks.append(_coco_block(evs, img_index, areas[a][0], max_dets, n_t, n_img))
    if custom:
        defs: dict[str, tuple[str, int | None]] = {f"ap50_{a}": (a, 0) for a, _, _ in areas}
        return CocoTables(
            list(p.imgIds), blocks, np.asarray(p.recThrs, np.float64), n_t, tuple(defs), defs
        )
    return CocoTables(list(p.imgIds), blocks, np.asarray(p.recThrs, np.float64), n_t)


def _coco_block(
    evs: list[dict[str, Any]],
    img_index: dict[int, int],
    area: str,
    max_dets: int,
    n_t: int,
    n_img: int,
) -> _CocoBlock:
    """The true-positive streams of one (category, area) from its per-image ``evalImgs``."""
    from scipy import sparse

    ids = np.array([img_index[e["image_id"]] for e in evs])
    n_det = np.array([min(len(e["dtScores"]), max_dets) for e in evs])
    gt_count = np.array([int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)) for e in evs])
    has_gt = gt_count > 0
    if n_det.sum() == 0:
        tp_img = np.full((n_t, 1), n_img)
        empty = sparse.csr_matrix((n_t, n_img))
        return _CocoBlock(area, ids[has_gt], gt_count[has_gt].astype(np.float64), tp_img, empty)
    # COCOeval.accumulate: concatenate in image order, stable sort by descending score.
    scores = np.concatenate([np.asarray(e["dtScores"][:max_dets]) for e in evs])
    order = np.argsort(-scores, kind="mergesort")
    det_img = np.repeat(ids, n_det)[order]
    dtm = np.concatenate([np.asarray(e["dtMatches"])[:, :max_dets] for e in evs], axis=1)[:, order]
    dtig = np.concatenate([np.asarray(e["dtIgnore"])[:, :max_dets] for e in evs], axis=1)[:, order]
    # As COCOeval: a match is a non-zero gt id; ignored detections are neither TP nor FP.
    tps = (dtm != 0) & ~dtig.astype(bool)
    fps = (dtm == 0) & ~dtig.astype(bool)
    n_tp = tps.sum(axis=1)
    n_l = max(int(n_tp.max()), 1)
    tp_img = np.full((n_t, n_l), n_img)
    rows, cols = [], []
    for t in range(n_t):
        tp_img[t, : n_tp[t]] = det_img[tps[t]]
        gap = np.cumsum(tps[t])[fps[t]]  # true positives ranked before each false positive
        keep = gap < n_tp[t]  # after the last true positive: no effect on any kept point
        rows.append(t * n_l + gap[keep])
        cols.append(det_img[fps[t]][keep])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    fp_gap = sparse.csr_matrix(
        (np.ones(len(r)), (r, c)), shape=(n_t * n_l, n_img)
    )  # duplicates are summed: counts per (gap, image)
    return _CocoBlock(area, ids[has_gt], gt_count[has_gt].astype(np.float64), tp_img, fp_gap)


def coco_paired_bootstrap(
    instances: str | Path | Mapping[str, Any],
    results_a: str | Path | Sequence[Mapping[str, Any]],
    results_b: str | Path | Sequence[Mapping[str, Any]],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    max_dets: int = DEFAULT_MAX_DETS[-1],
    tiny_area: float = TINY_AREA,
) -> PairedBootstrap:
    """COCO AP (``COCO_METRICS``) of A and B and the paired image bootstrap of B - A."""
    gt = load_coco_gt(instances)
    ta = coco_tables(gt, coco_results_to_dt(gt, results_a), max_dets, tiny_area)
    tb = coco_tables(gt, coco_results_to_dt(gt, results_b), max_dets, tiny_area)
    return paired_bootstrap(ta, tb, n_boot, seed, level, COCO_APPROXIMATION)


__all__ = [
    "COCO_APPROXIMATION",
    "CocoTables",
    "coco_paired_bootstrap",
    "coco_tables",
]
