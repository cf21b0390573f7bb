"""Paired image bootstrap for AP differences, independent of the evaluation protocol.

A protocol supplies per-image tables (:class:`ImageTables`: ``wider_bootstrap.WiderTables``,
``coco_bootstrap.CocoTables``) whose ``ap(weights)`` re-accumulates its AP with image ``i``
counted ``weights[r, i]`` times; this module draws the weights and summarises B - A over the
resamples (one image draw shared by A and B, optionally seeds as a second axis). Values are
fractions in [0, 1] inside, AP points (percent) in the result objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

LEVEL = 0.95
# AP differences are printed to 0.01 points. An interval that clears 0 by no more than that is
# not called resolved: differences that small are float summation order and the rounding of
# boxes and scores in results files (a JSON round trip moved a WIDER AP by 0.0004 points), and
# an interval printed as [+0.00, +0.00] must not read "better".
RESOLUTION = 0.01


def is_resolved(low: float | None, high: float | None, resolution: float = RESOLUTION) -> bool:
    """True when the interval [low, high] (AP points) clears 0 by more than ``resolution``."""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return False
    return bool(low > resolution or high < -resolution)


def interval_scope(n_images: int | str | None = None, n_seeds: int = 1) -> str:
    """What a bootstrap interval covers, in words printed beside every interval.

    One seed: resampling the evaluation images of one trained model, nothing else (another
    seed or another machine trains another model, whose predictions differ by more than this
    interval can say). Several seeds: the seeds and the images, not the machine.
    """
    images = f"the {n_images} evaluation images" if n_images else "the evaluation images"
    if n_seeds > 1:
        return (
            f"over {n_seeds} training seeds and {images}; it does not cover another machine "
            "or other data"
        )
    return (
        f"over {images} only, for these predictions; it does not cover training noise "
        "(another seed or machine trains other models)"
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
        resolved: the interval clears 0 by more than :data:`RESOLUTION` (:func:`is_resolved`).
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
                "resolution": RESOLUTION,
                "covers": interval_scope(self.n_images),
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
        float(point), low, high, float(np.mean(d <= 0)), is_resolved(low, high), int(d.size)
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
                "resolution": RESOLUTION,
                "covers": interval_scope(self.n_images, self.n_seeds),
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


__all__ = [
    "LEVEL",
    "RESOLUTION",
    "Difference",
    "ImageTables",
    "MetricComparison",
    "PairedBootstrap",
    "SeedBootstrap",
    "SeedMetric",
    "bootstrap_weights",
    "interval_scope",
    "is_resolved",
    "nested_seed_bootstrap",
    "paired_bootstrap",
    "seed_bootstrap",
]
