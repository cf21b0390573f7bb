"""Paired bootstrap over evaluation images for AP differences (WIDER FACE and COCO).

Two methods A and B are scored on the same images. A bootstrap replicate draws the images with
replacement (a multinomial count per image, the same counts for A and B: the comparison is
paired) and recomputes both APs on that resample; the spread of B - A over replicates gives a
95 % percentile interval and a one-sided p of "B is not better than A".

Re-running an evaluation protocol 1,000 times would be far too slow, so each protocol is split in
two:

1. per-image contributions, computed once per method (matching predictions to ground truth is
   the expensive part and does not depend on the resample: a resample only repeats or drops
   whole images);
2. a weighted re-accumulation, where an image drawn ``w`` times counts ``w`` times in every sum
   (true positives, predictions, ground truth). For the WIDER FACE protocol this is one matrix
   product of the (R, n_images) count matrix with (n_images, 1000) per-image tables.

Approximations (both tested to move the point estimate by < 0.01 AP points):

* WIDER FACE: the official protocol min-max normalises the scores over the whole prediction
  set. The normalisation is taken once, on the full set; a resample that misses the image
  holding the extreme score would, strictly, be normalised differently (the thresholds would
  cut at slightly different raw scores). With all weights 1 the bootstrap path is the official
  protocol (same numbers up to float summation order).
* COCO: a detection of an image drawn ``w`` times counts with weight ``w`` at its place in the
  global score order. This equals evaluating ``w`` copies of the image except for the order of
  copies inside a tie of equal scores (which COCOeval breaks by image order).

Values inside this module are fractions in [0, 1]; differences and intervals in the result
objects are in AP points (percent), as the command line prints them.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gan_detect.metrics.wider_face_ap import (
    IOU_THRESH,
    THRESH_NUM,
    THRESHOLDS,
    _flatten_tree,
    _normalize_scores,
    _official_iou,
)
from gan_detect.metrics.wider_gt import SETTINGS, WiderGroundTruth

LEVEL = 0.95
# The COCO metric names of the package (``coco_map.COCO_KEYS`` is this tuple): defined here, where
# no torch is imported, so that the bootstrap and the comparisons load without it.
COCO_METRICS: tuple[str, ...] = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "map_tiny",
)
WIDER_METRICS: tuple[str, ...] = SETTINGS
WIDER_APPROXIMATION = (
    "WIDER FACE global min-max score normalisation taken once on the full prediction set, "
    "not per resample"
)
COCO_APPROXIMATION = (
    "an image drawn w times counts its detections with weight w (ties of equal scores between "
    "copies are not re-ordered)"
)


class ImageTables(Protocol):
    """Per-image contributions of one method, ready for weighted re-accumulation."""

    metrics: tuple[str, ...]

    @property
    def n_images(self) -> int:
        """Number of evaluation images (columns of the weight matrix)."""
        ...

    def ap(self, weights: np.ndarray) -> np.ndarray:
        """(R, n_images) image counts -> (R, len(metrics)) AP fractions (NaN: undefined)."""
        ...


# ------------------------------------------------------------------------------------------------
# Resampling and summaries


def bootstrap_weights(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) int64: how often each image is drawn in each resample (rows sum to n).

    Drawn as ``n_images`` indices with replacement per replicate, from ``default_rng(seed)``:
    the same seed gives the same matrix on every machine and numpy version that keeps PCG64.
    """
    if n_boot <= 0 or n_images <= 0:
        return np.zeros((max(n_boot, 0), max(n_images, 0)), np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(n_boot, n_images))
    # One bincount over row-offset indices instead of a Python loop over replicates.
    flat = (idx + n_images * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_images).reshape(n_boot, n_images)


@dataclass(frozen=True)
class Difference:
    """B - A in AP points (percent) with its bootstrap interval.

    Attributes:
        point: B - A on the evaluation set itself.
        low, high: the ``level`` percentile interval of B - A over the resamples (NaN when
            ``n_boot`` is 0 or the metric is undefined).
        p_not_better: fraction of resamples with B - A <= 0 (one-sided p of "B is not better").
        resolved: the interval excludes 0.
        n_valid: resamples where both APs were defined (a resample can lack every face of a
            setting on a tiny set).
    """

    point: float
    low: float
    high: float
    p_not_better: float
    resolved: bool
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        return {
            "point": _json_float(self.point),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "p_not_better": _json_float(self.p_not_better),
            "resolved": self.resolved,
            "n_valid": self.n_valid,
        }


@dataclass(frozen=True)
class MetricComparison:
    """One metric: A's and B's AP (points, percent) and their difference."""

    metric: str
    a: float
    b: float
    difference: Difference


@dataclass(frozen=True)
class PairedBootstrap:
    """Result of :func:`paired_bootstrap`: one :class:`MetricComparison` per metric."""

    metrics: dict[str, MetricComparison]
    n_boot: int
    seed: int
    level: float
    n_images: int
    approximation: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``{"a": {m: ap}, "b": {...}, "difference": {m: {...}}, "bootstrap": {...}}``."""
        return {
            "a": {m: _json_float(c.a) for m, c in self.metrics.items()},
            "b": {m: _json_float(c.b) for m, c in self.metrics.items()},
            "difference": {m: c.difference.to_dict() for m, c in self.metrics.items()},
            "bootstrap": {
                "n_boot": self.n_boot,
                "seed": self.seed,
                "level": self.level,
                "interval": "percentile",
                "resampled": "images, with replacement, the same draw for A and B",
                "n_images": self.n_images,
                "unit": "AP points (percent)",
                "approximation": self.approximation,
            },
        }


def _json_float(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _difference(point: float, diffs: np.ndarray, level: float) -> Difference:
    """Summarise (R,) resampled differences (points; NaN = undefined) around ``point``."""
    d = diffs[np.isfinite(diffs)]
    if not np.isfinite(point) or d.size == 0:
        return Difference(float(point), np.nan, np.nan, np.nan, False, int(d.size))
    alpha = (1.0 - level) / 2.0
    low, high = (float(v) for v in np.percentile(d, [100 * alpha, 100 * (1 - alpha)]))
    return Difference(
        float(point), low, high, float(np.mean(d <= 0)), bool(low > 0 or high < 0), int(d.size)
    )


def _ap_chunked(tables: ImageTables, weights: np.ndarray, chunk: int = 250) -> np.ndarray:
    """``tables.ap`` over row blocks of ``weights`` (bounds the per-call memory)."""
    if len(weights) == 0:
        return np.zeros((0, len(tables.metrics)))
    return np.concatenate(
        [tables.ap(weights[i : i + chunk]) for i in range(0, len(weights), chunk)]
    )


def _check_pair(a: ImageTables, b: ImageTables) -> None:
    if a.n_images != b.n_images or tuple(a.metrics) != tuple(b.metrics):
        raise ValueError(
            f"A and B must be evaluated on the same images and metrics: {a.n_images} vs "
            f"{b.n_images} images, {a.metrics} vs {b.metrics}"
        )


def paired_bootstrap(
    tables_a: ImageTables,
    tables_b: ImageTables,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    approximation: str = "",
) -> PairedBootstrap:
    """Paired image bootstrap of B - A for every metric of the tables.

    Args:
        tables_a, tables_b: per-image contributions (:func:`wider_tables`, :func:`coco_tables`)
            over the same images in the same order.
        n_boot: resamples; 0 gives the point values only (interval NaN, ``resolved`` False).
        seed: seed of the image draw; the same seed gives the same result.
        level: central coverage of the percentile interval.
    """
    _check_pair(tables_a, tables_b)
    ones = np.ones((1, tables_a.n_images), np.int64)
    point_a = 100.0 * tables_a.ap(ones)[0]
    point_b = 100.0 * tables_b.ap(ones)[0]
    w = bootstrap_weights(tables_a.n_images, n_boot, seed)
    diffs = 100.0 * (_ap_chunked(tables_b, w) - _ap_chunked(tables_a, w))
    out = {
        m: MetricComparison(
            m,
            float(point_a[j]),
            float(point_b[j]),
            _difference(float(point_b[j] - point_a[j]), diffs[:, j], level),
        )
        for j, m in enumerate(tables_a.metrics)
    }
    return PairedBootstrap(out, n_boot, seed, level, tables_a.n_images, approximation)


# ------------------------------------------------------------------------------------------------
# Seeds as an axis


@dataclass(frozen=True)
class SeedMetric:
    """One metric over S training seeds (AP points).

    Attributes:
        a, b, diff: (S,) per-seed values (diff = b - a on the full evaluation set).
        mean_a, mean_b: seed means; std_a, std_b, std_diff: between-seed standard deviations
            (ddof 1; NaN with one seed).
        difference: the seed-averaged B - A with the hierarchical (seeds x images) interval.
    """

    metric: str
    a: np.ndarray
    b: np.ndarray
    diff: np.ndarray
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    std_diff: float
    difference: Difference

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "a": [_json_float(v) for v in self.a],
            "b": [_json_float(v) for v in self.b],
            "diff": [_json_float(v) for v in self.diff],
            "mean_a": _json_float(self.mean_a),
            "mean_b": _json_float(self.mean_b),
            "std_a": _json_float(self.std_a),
            "std_b": _json_float(self.std_b),
            "std_diff": _json_float(self.std_diff),
            "difference": self.difference.to_dict(),
        }


@dataclass(frozen=True)
class SeedBootstrap:
    """Result of :func:`seed_bootstrap`."""

    metrics: dict[str, SeedMetric]
    n_seeds: int
    n_boot: int
    seed: int
    level: float
    n_images: int
    approximation: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per metric the per-seed values, means, spreads and the interval."""
        return {
            "metrics": {m: s.to_dict() for m, s in self.metrics.items()},
            "bootstrap": {
                "n_boot": self.n_boot,
                "seed": self.seed,
                "level": self.level,
                "interval": "percentile",
                "resampled": "seeds and images, independently, with replacement (crossed)",
                "n_seeds": self.n_seeds,
                "n_images": self.n_images,
                "unit": "AP points (percent)",
                "approximation": self.approximation,
            },
        }


def seed_bootstrap(
    pairs: Sequence[tuple[ImageTables, ImageTables]],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    approximation: str = "",
) -> SeedBootstrap:
    """Interval for the seed-averaged B - A that counts both image and seed variation.

    ``pairs[s]`` holds methods A and B trained with seed ``s`` and evaluated on the same images.
    Each replicate draws S seeds with replacement AND the images with replacement; every drawn
    seed is scored on that one image resample, and the replicate's value is the mean of the
    drawn seeds' B - A.

    Why this construction: seeds and images are crossed random factors (every seed's model sees
    every image), and the seed-averaged difference varies with both. Resampling images alone
    treats the seeds as fixed and is too narrow for a claim about the training procedure;
    resampling seeds alone (a t-interval over 3 seeds) ignores that the test images are a
    sample too. Resampling both factors independently (Owen's "pigeonhole" bootstrap for crossed
    designs, 2007) keeps the pairing (A and B, and all seeds, share the image draw, so an image
    that is hard for everyone stays hard for everyone) and is slightly conservative: the
    seed x image interaction is counted in both factors. With 3 seeds the seed factor has only
    10 distinct multisets; the interval cannot be sharper than 3 seeds allow, so the per-seed
    values are reported beside it.

    Returns:
        :class:`SeedBootstrap`; ``n_boot=0`` gives per-seed values, means and spreads only.
    """
    if not pairs:
        raise ValueError("seed_bootstrap needs at least one (A, B) pair")
    for a, b in pairs:
        _check_pair(a, b)
        _check_pair(pairs[0][0], a)
    n_seeds, n_img = len(pairs), pairs[0][0].n_images
    names = tuple(pairs[0][0].metrics)
    ones = np.ones((1, n_img), np.int64)
    pa = np.stack([100.0 * a.ap(ones)[0] for a, _ in pairs])  # (S, M)
    pb = np.stack([100.0 * b.ap(ones)[0] for _, b in pairs])
    pd = pb - pa
    # The image draw is paired_bootstrap's (same seed, same counts), so S identical seeds give
    # its interval; the seed draw has its own stream.
    w = bootstrap_weights(n_img, n_boot, seed)
    seed_idx = np.random.default_rng((seed, 1)).integers(0, n_seeds, size=(max(n_boot, 0), n_seeds))
    if n_boot > 0:
        d = np.stack(
            [100.0 * (_ap_chunked(b, w) - _ap_chunked(a, w)) for a, b in pairs]
        )  # (S, R, M): every seed on every image resample
        # Mean over the drawn seeds (with multiplicity); NaN if any drawn seed is undefined.
        reps = d[seed_idx.T, np.arange(n_boot)[None, :], :].mean(axis=0)  # (R, M)
    else:
        reps = np.zeros((0, len(names)))

    def std(x: np.ndarray) -> float:
        return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")

    out = {}
    for j, m in enumerate(names):
        out[m] = SeedMetric(
            m,
            pa[:, j],
            pb[:, j],
            pd[:, j],
            float(pa[:, j].mean()),
            float(pb[:, j].mean()),
            std(pa[:, j]),
            std(pb[:, j]),
            std(pd[:, j]),
            _difference(float(pd[:, j].mean()), reps[:, j], level),
        )
    return SeedBootstrap(out, n_seeds, n_boot, seed, level, n_img, approximation)


def nested_seed_bootstrap(
    pairs: Sequence[tuple[ImageTables, ImageTables]],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, dict[str, Any]]:
    """The seed-averaged B - A when every seed has its OWN evaluation images (the demo: each seed
    generates its data), so seeds and images are nested, not crossed.

    Each replicate draws S seeds with replacement and, for every draw, an independent image
    resample of that seed's images; its value is the mean of the drawn B - A. Returns, per
    metric, the per-seed differences, their mean and spread, and the interval.
    """
    if not pairs:
        raise ValueError("nested_seed_bootstrap needs at least one (A, B) pair")
    for a, b in pairs:
        _check_pair(a, b)
    n_seeds = len(pairs)
    names = tuple(pairs[0][0].metrics)
    per_seed, reps = [], []
    for s, (a, b) in enumerate(pairs):
        ones = np.ones((1, a.n_images), np.int64)
        per_seed.append(100.0 * (b.ap(ones)[0] - a.ap(ones)[0]))
        # n_boot * S image resamples of this seed, one per (replicate, draw) slot.
        w = bootstrap_weights(a.n_images, max(n_boot, 0) * n_seeds, seed + 7919 * (s + 1))
        reps.append(100.0 * (_ap_chunked(b, w) - _ap_chunked(a, w)) if n_boot > 0 else None)
    pd = np.stack(per_seed)  # (S, M)
    out: dict[str, dict[str, Any]] = {}
    if n_boot > 0:
        draw = np.random.default_rng((seed, 2)).integers(0, n_seeds, size=(n_boot, n_seeds))
        slot = np.arange(n_boot)[:, None] * n_seeds + np.arange(n_seeds)[None, :]
        stacked = np.stack([r for r in reps if r is not None])  # (S, R*S, M)
        values = stacked[draw, slot, :].mean(axis=1)  # (R, M)
    else:
        values = np.zeros((0, len(names)))
    for j, m in enumerate(names):
        d = _difference(float(pd[:, j].mean()), values[:, j], level)
        out[m] = {
            "diff": [_json_float(v) for v in pd[:, j]],
            "mean": _json_float(float(pd[:, j].mean())),
            "std": _json_float(float(np.std(pd[:, j], ddof=1))) if n_seeds > 1 else None,
            "difference": d.to_dict(),
        }
    return out


# ------------------------------------------------------------------------------------------------
# WIDER FACE


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
    boxes, scores, p_img, g_boxes, keep, g_img = _flatten_tree(preds, gt)
    scores = _normalize_scores(np.asarray(scores, np.float64))
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
        iou = _official_iou(boxes[a:b], g_boxes[c:d])
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


# ------------------------------------------------------------------------------------------------
# COCO


COCO_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
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


def _quiet_coco(dataset: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` built from an in-memory dataset without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_gt(instances: str | Path | Mapping[str, Any]) -> Any:
    """A pycocotools ``COCO`` of an instances JSON (path or already-loaded dict)."""
    from gan_detect.metrics.validate_results import check_coco_gt, read_json

    if isinstance(instances, str | Path):  # a user's file: checked, one line naming it
        return _quiet_coco(check_coco_gt(read_json(instances, "COCO instances file"), instances))
    return _quiet_coco(dict(instances))


def coco_results_to_dt(gt: Any, results: str | Path | Sequence[Mapping[str, Any]]) -> Any:
    """A results list (or JSON path) -> pycocotools ``COCO`` of detections, as ``loadRes`` (bbox).

    Detections on images absent from the ground truth are dropped with a warning (``loadRes``
    would refuse the whole file); an empty list is allowed.
    """
    from gan_detect.metrics.validate_results import check_coco_results, read_json

    rows: Any
    if isinstance(results, str | Path):
        source, rows = str(results), read_json(results, "COCO results file")
    else:
        source, rows = "COCO results", results
    check_coco_results(rows, source, category_ids=gt.getCatIds() or None)
    known = set(gt.getImgIds())
    anns: list[dict[str, Any]] = []
    dropped = 0
    for r in rows:
        if r["image_id"] not in known:
            dropped += 1
            continue
        x, y, w, h = (float(v) for v in r["bbox"])
        # As loadRes: area = w * h, not crowd, ids from 1 (COCOeval treats match id 0 as none).
        anns.append(
            {
                "image_id": r["image_id"],
                "category_id": r["category_id"],
                "bbox": [x, y, w, h],
                "score": float(r["score"]),
                "area": w * h,
                "iscrowd": 0,
                "id": len(anns) + 1,
            }
        )
    if dropped:
        warnings.warn(
            f"{source}: {dropped} detections are on images not in the ground truth; ignored",
            stacklevel=2,
        )
    return _quiet_coco(
        {
            "images": gt.dataset["images"],
            "categories": gt.dataset["categories"],
            "annotations": anns,
        }
    )


def coco_tables(
    gt: Any,
    dt: Any,
    max_dets: int = 1000,
    tiny_area: float = 16.0**2,
    areas: Sequence[tuple[str, float, float]] | None = None,
    iou_thrs: Sequence[float] | None = None,
) -> CocoTables:
    """Per-image COCO matching (pycocotools ``evaluate()``) of one method, tabulated.

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
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, dt, "bbox")
    p = ev.params
    p.imgIds = sorted(gt.getImgIds())
    p.catIds = sorted(gt.getCatIds())
    custom = areas is not None
    p.iouThrs = np.linspace(0.5, 0.95, 10) if iou_thrs is None else np.asarray(iou_thrs, float)
    p.recThrs = np.linspace(0.0, 1.0, 101)
    p.maxDets = [max_dets]
    areas = list(areas) if areas is not None else [*COCO_AREAS, ("tiny", 0.0, float(tiny_area))]
    p.areaRng = [[lo, hi] for _, lo, hi in areas]
    p.areaRngLbl = [a for a, _, _ in areas]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
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
    max_dets: int = 1000,
    tiny_area: float = 16.0**2,
) -> PairedBootstrap:
    """COCO AP (``COCO_METRICS``) of A and B and the paired image bootstrap of B - A."""
    gt = load_coco_gt(instances)
    ta = coco_tables(gt, coco_results_to_dt(gt, results_a), max_dets, tiny_area)
    tb = coco_tables(gt, coco_results_to_dt(gt, results_b), max_dets, tiny_area)
    return paired_bootstrap(ta, tb, n_boot, seed, level, COCO_APPROXIMATION)


__all__ = [
    "COCO_METRICS",
    "WIDER_METRICS",
    "CocoTables",
    "Difference",
    "ImageTables",
    "MetricComparison",
    "PairedBootstrap",
    "SeedBootstrap",
    "SeedMetric",
    "WiderTables",
    "bootstrap_weights",
    "coco_paired_bootstrap",
    "coco_results_to_dt",
    "coco_tables",
    "load_coco_gt",
    "paired_bootstrap",
    "seed_bootstrap",
    "wider_paired_bootstrap",
    "wider_tables",
]
