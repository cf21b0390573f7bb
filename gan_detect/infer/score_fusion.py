"""How a re-scored proposal's final score combines the detector's score and D's.

``d_only`` (the papers: D's probability replaces the detector's) and ``geometric_mean`` (a fixed
50/50 blend) need no fitting. Two fitted combiners decide per object size how much each source
deserves:

- ``learned``: a logistic regression per size band on ``[1, logit(detector score),
  logit(D probability)]`` (scikit-learn's ``LogisticRegression``, L2, no hand-written
  optimiser). Its output is a calibrated probability that the candidate is a true positive.
- ``size_gated``: D's probability for proposals smaller than a threshold (px, sqrt of the
  proposal's area), the detector's score above; the threshold is the one that maximises average
  precision on the same held-out proposals. The baseline the learned one must beat.

Both are fit on proposals of training images that D never trained on (``data.fusion_holdout_
fraction`` keeps them out of ROI mining), never on evaluation images: D's scores on its own
training crops are over-confident, and fitting on the evaluation images would leak. For several
classes (COCO) one combiner is shared by every class (no class term): per-class fits would see a
few dozen positives each on a CPU-sized holdout.

Class-aware re-scoring (multi-class variants, ``evaluate.class_aware``, the default): each
proposal keeps the detector's class, D's probability is that of the detector's class, and the
``learned`` combiner also sees ``logit(D's background probability)`` and whether D's top class
agrees with the detector's (``"features": "class_aware"``, 5 weights per band). With an
uninformative class head those inputs carry nothing and the fit falls back on the detector's
score, so the detector's AP is kept (tests/infer/test_class_aware.py).

A fitted combiner is a plain dict (JSON in ``<run>/score_fusion.json``, and inside
``InferenceOptions.fusion_params``, so pipeline files carry it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from gan_detect.config.schema import SCORE_FUSIONS
from gan_detect.utils.errors import InputError
from gan_detect.utils.registry import Registry

# Size bands (px, sqrt(w h) of the proposal): < 10, 10-20, 20-40, 40-80, >= 80.
DEFAULT_EDGES: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)
_EPS = 1e-4


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def band_index(sizes: Tensor, edges: Sequence[float]) -> Tensor:
    """(K,) long: the size band of each proposal (0 .. len(edges))."""
    return torch.bucketize(
        sizes.float(), torch.tensor(list(edges), dtype=torch.float32), right=True
    )


def proposal_sizes(boxes: Tensor) -> Tensor:
    """(K,) sqrt(w h) of xyxy boxes (K, 4), in pixels."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0)
    return (wh[:, 0] * wh[:, 1]).sqrt()


@dataclass
class ScoreFusion:
    """A registered fusion: ``fn(det (K, K'), d (K, K'), sizes (K,), params) -> (K, K')``."""

    fn: Callable[[Tensor, Tensor, Tensor, dict[str, Any] | None], Tensor]
    fitted: bool  # needs a fitted combiner (score_fusion.json)


class _FusionRegistry(Registry[ScoreFusion]):
    """Fusions by name; a plugin's name is added to the config's ``SCORE_FUSIONS`` too."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._added: set[str] = set()  # names this registry put into SCORE_FUSIONS

    def _check_add(self, name: str, obj: ScoreFusion) -> None:
        if name not in SCORE_FUSIONS:
            doc = (obj.fn.__doc__ or name).strip().splitlines()[0]
            SCORE_FUSIONS[name] = doc
            self._added.add(name)

    def _on_remove(self, name: str, obj: ScoreFusion) -> None:
        if name in self._added:
            self._added.discard(name)
            del SCORE_FUSIONS[name]


FUSIONS: Registry[ScoreFusion] = _FusionRegistry("score fusion")
F = TypeVar("F", bound=Callable[..., Tensor])


def register_fusion(name: str, fitted: bool = False) -> Callable[[F], F]:
    """Decorator: add a score fusion under ``name`` (an ``evaluate.score_fusion`` value).

    ``fitted``: it needs the run's fitted combiner (``params``), as ``learned`` does.
    """

    def add(fn: F) -> F:
        FUSIONS[name] = ScoreFusion(fn, fitted)
        return fn

    return add


class _FittedNames(AbstractSet[str]):
    """The names of the fusions that need a fitted combiner (a live view of ``FUSIONS``)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in FUSIONS and FUSIONS[name].fitted

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, f in FUSIONS.items() if f.fitted])

    def __len__(self) -> int:
        return sum(1 for _ in self)


FITTED_FUSIONS: AbstractSet[str] = _FittedNames()


@register_fusion("d_only")
def _d_only(det: Tensor, d: Tensor, sizes: Tensor, params: dict[str, Any] | None) -> Tensor:
    """D's probability replaces the detector's score (the papers)."""
    return d


@register_fusion("geometric_mean")
def _geometric_mean(det: Tensor, d: Tensor, sizes: Tensor, params: dict[str, Any] | None) -> Tensor:
    """sqrt(D's probability x the detector's score)."""
    return torch.sqrt(d.clamp_min(0) * det)


@register_fusion("learned", fitted=True)
def _learned(
    det: Tensor,
    d: Tensor,
    sizes: Tensor,
    params: dict[str, Any] | None,
    extra: dict[str, Tensor] | None = None,
) -> Tensor:
    """Logistic regression per size band on [1, logit(detector), logit(D)] (class-aware fits:
    also logit(D background) and D-agrees, from ``extra``)."""
    assert params is not None
    w = torch.tensor(params["weights"], dtype=torch.float32, device=d.device)  # (B, F)
    band = band_index(sizes, params["edges"]).to(d.device)
    wb = w[band]  # (K, F)
    z = wb[:, :1] + wb[:, 1:2] * _logit(det) + wb[:, 2:3] * _logit(d)
    if params.get("features") == "class_aware":
        if extra is None:
            raise ValueError(
                "this learned fusion was fit class-aware (D's background probability and "
                "class agreement as inputs): evaluate with evaluate.class_aware=true"
            )
        bg = extra["bg"].float().to(d.device)[:, None]
        agree = extra["agree"].float().to(d.device)[:, None]
        z = z + wb[:, 3:4] * _logit(bg) + wb[:, 4:5] * agree
    return torch.sigmoid(z)


@register_fusion("size_gated", fitted=True)
def _size_gated(det: Tensor, d: Tensor, sizes: Tensor, params: dict[str, Any] | None) -> Tensor:
    """D's probability below a fitted proposal size, the detector's score above."""
    assert params is not None
    small = (sizes < float(params["threshold"])).to(d.device)[:, None]
    return torch.where(small, d, det)


def fuse_scores(
    fusion: str,
    det_scores: Tensor,
    d_scores: Tensor,
    sizes: Tensor,
    params: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> Tensor:
    """Final scores (K, K') of K proposals' K' candidates, by the registered fusion ``fusion``.

    Args:
        det_scores: (K,) the detector's scores in [0, 1].
        d_scores: (K, K') D's probabilities of each candidate.
        sizes: (K,) sqrt(w h) of each proposal, px.
        params: the fitted combiner (``learned`` / ``size_gated``).
        extra: class-aware inputs (K' = 1): ``bg`` (K,) D's background probability, ``agree``
            (K,) 1.0 where D's top class is the detector's; passed to fusions that take an
            ``extra`` keyword (``learned``).

    Raises:
        UnknownNameError: ``fusion`` is not registered.
        ValueError: a fitted fusion without ``params``.
    """
    entry = FUSIONS.lookup(fusion)
    if entry.fitted and params is None:
        raise ValueError(
            f"score_fusion={fusion} needs a fitted combiner (score_fusion.json of the run); "
            "train with data.fusion_holdout_fraction > 0 so one can be fit"
        )
    det = det_scores.float().clamp(0, 1)[:, None].expand_as(d_scores)
    if extra is not None and "extra" in inspect.signature(entry.fn).parameters:
        return entry.fn(det, d_scores.float(), sizes, params, extra=extra)  # type: ignore[call-arg]
    return entry.fn(det, d_scores.float(), sizes, params)


def _np_logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.log(q) - np.log1p(-q)


def _features(
    det: np.ndarray,
    d: np.ndarray,
    band: np.ndarray,
    n_bands: int,
    extra: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(N, F B) one-hot band x [1, logit det, logit D] (F = 3), plus [logit bg, agree] (F = 5)
    with class-aware ``extra``."""
    cols = [np.ones(len(det)), _np_logit(det), _np_logit(d)]
    if extra is not None:
        cols += [_np_logit(extra["bg"]), extra["agree"].astype(np.float64)]
    f = len(cols)
    x = np.zeros((len(det), f * n_bands), np.float64)
    rows = np.arange(len(det))
    for j, col in enumerate(cols):
        x[rows, f * band + j] = col
    return x


def fit_learned(
    det: np.ndarray,
    d: np.ndarray,
    sizes: np.ndarray,
    labels: np.ndarray,
    edges: Sequence[float] = DEFAULT_EDGES,
    c: float = 1.0,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Fit the per-band logistic combiner on held-out candidates.

    Args:
        det, d, sizes: (N,) detector score, D probability, proposal size (px).
        labels: (N,) 1 for a true positive (IoU >= 0.5 with an unmatched-kind ground truth),
            0 otherwise.
        c: inverse L2 strength (scikit-learn's C); a band without both classes keeps the
            prior's weights (D ignored, the detector's logit kept as it is).
        extra: class-aware inputs ``bg`` and ``agree`` (N,) (see :func:`fuse_scores`).

    Returns:
        ``{"kind": "learned", "edges": [...], "weights": [[bias, w_det, w_d], ...], "counts":
        [[pos, neg], ...]}``.
    """
    from sklearn.linear_model import LogisticRegression

    edges = [float(e) for e in edges]
    n_bands = len(edges) + 1
    band = band_index(torch.as_tensor(sizes, dtype=torch.float32), edges).numpy()
    x = _features(det, d, band, n_bands, extra)
    f = x.shape[1] // n_bands
    y = labels.astype(np.int64)
    # The detector's own logit: the fallback of a band without both classes.
    weights = [[0.0, 1.0] + [0.0] * (f - 2) for _ in range(n_bands)]
    counts = [
        [int((y[band == b] == 1).sum()), int((y[band == b] == 0).sum())] for b in range(n_bands)
    ]
    fit_bands = [b for b in range(n_bands) if min(counts[b]) > 0]
    if fit_bands:
        cols = [f * b + j for b in fit_bands for j in range(f)]
        mask = np.isin(band, fit_bands)
        model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)
        model.fit(x[mask][:, cols], y[mask])
        coef = model.coef_[0]
        for i, b in enumerate(fit_bands):
            weights[b] = [float(v) for v in coef[f * i : f * i + f]]
    out = {"kind": "learned", "edges": edges, "weights": weights, "counts": counts}
    if extra is not None:
        out["features"] = "class_aware"
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve of candidates ranked by ``scores`` (scikit-learn)."""
    from sklearn.metrics import average_precision_score

    if labels.sum() == 0:
        return float("nan")
    return float(average_precision_score(labels, scores))


def fit_size_gated(
    det: np.ndarray, d: np.ndarray, sizes: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The size threshold (px) below which D's probability replaces the detector's score,
    chosen to maximise average precision on held-out candidates (0: never D; the candidates'
    size quantiles are tried)."""
    candidates = sorted({0.0, *np.quantile(sizes, np.linspace(0.05, 0.95, 19)).round(1).tolist()})
    candidates.append(float(sizes.max()) + 1.0)  # always D
    best, best_ap = 0.0, -math.inf
    for t in candidates:
        ap = average_precision(np.where(sizes < t, d, det), labels)
        if ap > best_ap + 1e-9:
            best, best_ap = float(t), ap
    return {"kind": "size_gated", "threshold": best, "holdout_ap": best_ap}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_fusion_params(params: Any, kind: str, source: str) -> dict[str, Any]:
    """One fitted combiner (``learned`` or ``size_gated``), checked; returns it.

    ``learned``: ``edges`` increasing finite sizes (E,), ``weights`` (E + 1, 3) finite ((E + 1, 5)
    with ``"features": "class_aware"``),
    ``counts`` (E + 1, 2) non-negative integers when present; ``size_gated``: a finite
    ``threshold`` >= 0. NaN weights would drop every box silently, a short weight table would
    fail at the first large proposal: both are refused here, naming ``source``.

    Raises:
        InputError: ``"<source>: <kind>: <problem>"``.
    """

    def bad(msg: str) -> InputError:
        return InputError(
            f"{source}: {kind}: {msg}; refit it (train with data.fusion_holdout_fraction > 0)"
        )

    if not isinstance(params, dict):
        raise bad(f"expected an object, got {type(params).__name__}")
    if kind == "size_gated":
        t: Any = params.get("threshold")
        if not _finite(t) or t < 0:
            raise bad(f"'threshold' must be a finite size >= 0 (px), got {t!r}")
        return params
    if kind != "learned":
        raise bad(f"unknown fitted fusion (valid: {', '.join(FITTED_FUSIONS)})")
    edges, weights = params.get("edges"), params.get("weights")
    if not isinstance(edges, list) or not edges or not all(_finite(e) for e in edges):
        raise bad(f"'edges' must be a non-empty list of finite sizes (px), got {edges!r}")
    if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise bad(f"'edges' must increase, got {edges}")
    n = len(edges) + 1
    features = params.get("features")
    if features not in (None, "class_aware"):
        raise bad(f"'features' must be absent or 'class_aware', got {features!r}")
    # Class-aware fits add w_bg and w_agree (D's background probability, D-agrees).
    width, names = (
        (5, "[bias, w_det, w_D, w_bg, w_agree]") if features else (3, "[bias, w_det, w_D]")
    )
    if (
        not isinstance(weights, list)
        or len(weights) != n
        or not all(isinstance(w, list) and len(w) == width for w in weights)
    ):
        raise bad(f"'weights' must be {n} rows {names} ({len(edges)} edges)")
    if not all(_finite(v) for w in weights for v in w):
        raise bad("'weights' holds a non-finite number (NaN or infinity)")
    counts = params.get("counts")
    if counts is not None and (
        not isinstance(counts, list)
        or len(counts) != n
        or not all(
            isinstance(c, list)
            and len(c) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in c)
            for c in counts
        )
    ):
        raise bad(f"'counts' must be {n} rows [positives, negatives] of counts")
    return params


def check_fitted(fitted: Any, source: str) -> dict[str, Any]:
    """A run's fitted combiners (``score_fusion.json``: ``{"learned": ..., "size_gated":
    ...}``), each checked by :func:`check_fusion_params`; returns them.

    Raises:
        InputError: naming ``source`` and the problem.
    """
    if not isinstance(fitted, dict):
        raise InputError(
            f"{source}: expected an object with fitted fusions ({', '.join(FITTED_FUSIONS)}), "
            f"got {type(fitted).__name__}"
        )
    for kind in FITTED_FUSIONS:
        if kind in fitted:
            check_fusion_params(fitted[kind], kind, source)
    return fitted


def describe(params: dict[str, Any]) -> str:
    """A readable table of a fitted combiner (weights per size band)."""
    if params.get("kind") == "size_gated":
        return (
            f"size-gated fusion: D's probability below {params['threshold']:.1f} px "
            f"(sqrt of the proposal's area), the detector's score above"
        )
    edges = params["edges"]
    names = [f"< {edges[0]:g}"]
    names += [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names.append(f">= {edges[-1]:g}")
    aware = params.get("features") == "class_aware"
    head = "learned fusion: p = sigmoid(bias + w_det * logit(detector) + w_D * logit(D)"
    head += (
        " + w_bg * logit(D background) + w_agree * [D's top class = detector's])" if aware else ")"
    )
    cols = ["bias", "w_det", "w_D"] + (["w_bg", "w_agree"] if aware else [])
    lines = [
        head + " per size band",
        f"{'size (px)':>10s} " + " ".join(f"{c:>7s}" for c in cols) + f" {'pos/neg':>12s}",
    ]
    for name, w, cnt in zip(names, params["weights"], params["counts"], strict=True):
        vals = " ".join(f"{v:7.2f}" for v in w)
        lines.append(f"{name:>10s} {vals} {cnt[0]:>5d}/{cnt[1]:<6d}")
    return "\n".join(lines)
