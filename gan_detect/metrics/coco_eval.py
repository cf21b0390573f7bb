"""COCO box evaluation (Lin et al., ECCV 2014) in one place: the area ranges, the backend, one run.

Every COCO AP of the package (``CocoMeanAP``, ``evaluate_coco_files``, the bootstrap tables, the
experiment scripts) goes through :func:`coco_evaluator`, the only place that constructs a
``COCOeval``. AP_tiny (area < 16^2 px, the bucket SOD-MTGAN's small objects fall into) is a fifth
area range of that same run, not a second evaluation. Torch-free (numpy + the COCO API), so the
bootstrap and ``gan-detect coco-eval --compare`` load without torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gan_detect.utils.errors import InputError

Backend = Literal["faster_coco_eval", "pycocotools"]
BACKENDS: tuple[Backend, ...] = ("faster_coco_eval", "pycocotools")
# Set to "pycocotools" to force the reference implementation everywhere (e.g. to rule out the
# faster backend when two numbers disagree).
BACKEND_ENV = "GAN_DETECT_COCO_BACKEND"

# Size buckets, in px^2 of an object's area, for every COCO AP of the package (``evaluate``,
# ``coco-eval``, the bootstrap tables, the experiments). The area of a ground-truth object is
# COCO's: the annotation's ``area`` (the mask's, for real COCO) when it has a positive one, else
# the box's w * h (:func:`object_areas`); a detection's is its box's w * h (as ``loadRes``).
TINY_AREA = 16.0**2
MAX_AREA = 1e5**2  # COCOeval's own upper bound for "all" and "large"
# (label, low, high) in px^2, COCOeval's default ranges; an object counts when low <= area < high.
COCO_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, MAX_AREA),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, MAX_AREA),
)
# The metric names of the package, in this order everywhere (tables, reports, JSON).
COCO_METRICS: tuple[str, ...] = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "map_tiny",
)
# COCO's maxDets=100 truncates recall in crowded images (WIDER has up to 709 faces in one image),
# so the main AP is computed at 1000 detections per image; pass [1, 10, 100] for COCO parity.
DEFAULT_MAX_DETS: tuple[int, int, int] = (1, 100, 1000)
# pycocotools' own float64 thresholds. torchmetrics builds them with float32 torch.linspace
# (0.55 -> 0.550000011920929), which moves AP by ~1e-3 (0.5035 vs 0.5046 on the cocoapi demo).
IOU_THRESHOLDS: list[float] = np.linspace(0.5, 0.95, 10).tolist()
REC_THRESHOLDS: list[float] = np.linspace(0.0, 1.0, 101).tolist()


def area_ranges(tiny_area: float = TINY_AREA) -> tuple[tuple[str, float, float], ...]:
    """COCO's four ranges plus ``("tiny", 0, tiny_area)``, last so that index 0 stays "all"."""
    if tiny_area <= 0:
        raise ValueError(f"tiny_area must be positive, got {tiny_area}")
    return (*COCO_AREAS, ("tiny", 0.0, float(tiny_area)))


def side_bands(tiny_area: float = TINY_AREA) -> list[tuple[str, float, float]]:
    """The same size buckets as side lengths ``sqrt(area)`` in px, disjoint and smallest first
    (``<16``, ``16-32``, ``32-96``, ``>96``), for diagnostics that bin objects by
    ``sqrt(w * h)``; derived from :data:`COCO_AREAS` and ``tiny_area``, not written twice."""
    tiny = float(np.sqrt(tiny_area))
    edges = [0.0, tiny] + [float(np.sqrt(hi)) for label, _, hi in COCO_AREAS[1:]]
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        label = (
            f"<{hi:g}" if lo == 0 else (f">{lo:g}" if hi >= np.sqrt(MAX_AREA) else f"{lo:g}-{hi:g}")
        )
        bands.append((label, lo, hi))
    return bands


def object_areas(boxes_xywh: Any, areas: Any = None) -> np.ndarray:
    """Ground-truth areas as COCO buckets them: ``areas[i]`` where it is positive (an annotated
    ``area``, e.g. a mask's), else the box's ``w * h``.

    Args:
        boxes_xywh: (M, 4) boxes x, y, w, h in px.
        areas: (M,) annotated areas, 0 (or None: all) where the annotation has none.
    """
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    box = b[:, 2] * b[:, 3]
    if areas is None:
        return box
    a = np.asarray(areas, np.float64).reshape(-1)
    if len(a) != len(box):
        raise ValueError(f"{len(a)} areas for {len(box)} boxes")
    return np.where(a > 0, a, box)


def with_object_areas(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """An instances dict whose annotations all carry ``area`` (:func:`object_areas`: an absent
    or non-positive one becomes w * h); the input is not changed."""
    anns = list(dataset.get("annotations", []))
    if all(_positive_number(a.get("area")) for a in anns):
        return dict(dataset)
    fixed = []
    for a in anns:
        if not _positive_number(a.get("area")):
            w, h = (float(v) for v in a["bbox"][2:4])
            a = {**a, "area": w * h}
        fixed.append(a)
    return {**dataset, "annotations": fixed}


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def resolve_backend(backend: str | None = None) -> Backend:
    """The COCOeval implementation to use: ``backend`` if given, else ``$GAN_DETECT_COCO_BACKEND``,
    else faster_coco_eval when importable (same numbers, C++ matching), else pycocotools."""
    name = backend or os.environ.get(BACKEND_ENV) or None
    if name is None:
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            return "pycocotools"
        return "faster_coco_eval"
    if name not in BACKENDS:
        src = f"${BACKEND_ENV}" if backend is None else "backend"
        raise InputError(f"{src}: unknown COCO backend {name!r}; use one of {', '.join(BACKENDS)}")
    return name  # type: ignore[return-value]


def _cocoeval_class(backend: Backend) -> Any:
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster
    from pycocotools.cocoeval import COCOeval

    return COCOeval


def quiet_coco(dataset: Mapping[str, Any]) -> Any:
    """A pycocotools ``COCO`` built from an in-memory dataset without its prints.

    pycocotools objects are used for both backends: ``COCOeval_faster`` reads them as its own.
    """
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dict(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_coco_json(path: str | Path) -> Any:
    """A COCO JSON file's content; a clear error naming the file when it is absent or not JSON
    (:func:`~gan_detect.metrics.validate_results.read_json`)."""
    from gan_detect.metrics.validate_results import read_json

    return read_json(path, "COCO file")


def load_coco_gt(instances: str | Path | Mapping[str, Any]) -> Any:
    """A pycocotools ``COCO`` of an instances JSON (path or already-loaded dict)."""
    from gan_detect.metrics.validate_results import check_coco_gt, read_json

    if isinstance(instances, str | Path):  # a user's file: checked, one line naming it
        data = check_coco_gt(read_json(instances, "COCO instances file"), instances)
    else:
        data = dict(instances)
    # COCOeval reads every annotation's area (a KeyError without one): COCO's rule fills it.
    return quiet_coco(with_object_areas(data))


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
    return quiet_coco(
        {
            "images": gt.dataset["images"],
            "categories": gt.dataset["categories"],
            "annotations": anns,
        }
    )


def coco_evaluator(
    gt: Any,
    dt: Any,
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    areas: Sequence[tuple[str, float, float]] | None = None,
    iou_thrs: Sequence[float] | None = None,
    rec_thrs: Sequence[float] | None = None,
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    backend: str | None = None,
    per_image: bool = False,
) -> Any:
    """One bbox ``COCOeval`` run with the package's settings; the evaluator after ``accumulate``.

    Args:
        gt, dt: ``COCO`` objects (pycocotools or faster_coco_eval) of ground truth / detections.
        max_dets: detections per image, ascending; every AP reads the last one.
        areas: ``(label, low, high)`` px^2 ranges (default :func:`area_ranges`: COCO's four and
            tiny; keep "all" first, summaries read it by label).
        iou_thrs, rec_thrs: default pycocotools' float64 0.50:0.05:0.95 and 0:0.01:1.
        img_ids, cat_ids: restrict the evaluation (default: every image / category of ``gt``).
        backend: see :func:`resolve_backend`.
        per_image: keep the per-image matching (``evalImgs``, what the bootstrap tables read) and
            skip ``accumulate``; forces pycocotools, whose C++ twin does not expose it.

    Returns:
        The evaluator: ``eval["precision"]`` (T, R, K, A, M), ``eval["recall"]`` (T, K, A, M),
        ``params``, ``ious``; with ``per_image``, ``evalImgs`` instead of ``eval``.
    """
    chosen: Backend = "pycocotools" if per_image else resolve_backend(backend)
    areas = area_ranges() if areas is None else tuple(areas)
    ev = _cocoeval_class(chosen)(gt, dt, "bbox")
    p = ev.params
    if img_ids is not None:
        p.imgIds = sorted(int(i) for i in img_ids)
    if cat_ids is not None:
        p.catIds = sorted(int(c) for c in cat_ids)
    p.iouThrs = np.asarray(IOU_THRESHOLDS if iou_thrs is None else iou_thrs, np.float64)
    p.recThrs = np.asarray(REC_THRESHOLDS if rec_thrs is None else rec_thrs, np.float64)
    p.maxDets = [int(m) for m in max_dets]
    p.areaRng = [[float(lo), float(hi)] for _, lo, hi in areas]
    p.areaRngLbl = [label for label, _, _ in areas]
    with contextlib.redirect_stdout(io.StringIO()):  # both APIs print progress lines
        ev.evaluate()
        if not per_image:
            ev.accumulate()
    return ev


def summarize_ap(
    ev: Any, area: str = "all", iou: float | None = None, max_det: int | None = None
) -> float:
    """AP of one cell of an accumulated evaluator, as COCOeval's ``summarize`` forms it.

    Mean of the interpolated precision over recall thresholds, categories (and IoU thresholds
    when ``iou`` is None), skipping the -1 of categories without ground truth; -1 when nothing is
    left (no ground truth in that range). ``max_det`` defaults to the largest.
    """
    return _summarize(ev, True, area, iou, max_det)


def summarize_ar(ev: Any, area: str = "all", max_det: int | None = None) -> float:
    """AR (recall averaged over IoU thresholds and categories) of one area and max-detections."""
    return _summarize(ev, False, area, None, max_det)


def _summarize(ev: Any, ap: bool, area: str, iou: float | None, max_det: int | None) -> float:
    p = ev.params
    a = list(p.areaRngLbl).index(area)
    m = len(p.maxDets) - 1 if max_det is None else list(p.maxDets).index(max_det)
    s = np.asarray(ev.eval["precision" if ap else "recall"])
    if iou is not None:
        # COCOeval compares exactly; the package's thresholds hold 0.5 and 0.75 exactly.
        s = s[np.where(np.asarray(p.iouThrs) == iou)[0]]
    s = s[:, :, :, a, m] if ap else s[:, :, a, m]
    valid = s[s > -1]
    return float(valid.mean()) if valid.size else -1.0


def coco_stats(ev: Any) -> dict[str, float]:
    """The ``COCO_METRICS`` plus the recalls (``mar_<d>`` per max-detections, ``mar_<area>``) of
    an accumulated evaluator with :func:`area_ranges`; every AP at the largest max-detections."""
    p = ev.params
    out = {
        "map": summarize_ap(ev),
        "map_50": summarize_ap(ev, iou=0.5),
        "map_75": summarize_ap(ev, iou=0.75),
    }
    areas = [a for a in p.areaRngLbl if a != "all"]
    out.update({f"map_{a}": summarize_ap(ev, a) for a in areas})
    out.update({f"mar_{d}": summarize_ar(ev, max_det=d) for d in p.maxDets})
    out.update({f"mar_{a}": summarize_ar(ev, a) for a in areas})
    return out


def evaluate_coco(
    gt: Any,
    dt: Any,
    max_dets: Sequence[int] = DEFAULT_MAX_DETS,
    tiny_area: float = TINY_AREA,
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    backend: str | None = None,
) -> dict[str, float]:
    """AP (``COCO_METRICS``) and AR of detections ``dt`` on ``gt``, from one COCOeval run."""
    ev = coco_evaluator(
        gt, dt, max_dets, area_ranges(tiny_area), img_ids=img_ids, cat_ids=cat_ids, backend=backend
    )
    return coco_stats(ev)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "COCO_AREAS",
    "COCO_METRICS",
    "DEFAULT_MAX_DETS",
    "IOU_THRESHOLDS",
    "REC_THRESHOLDS",
    "TINY_AREA",
    "area_ranges",
    "coco_evaluator",
    "coco_results_to_dt",
    "coco_stats",
    "evaluate_coco",
    "load_coco_gt",
    "object_areas",
    "quiet_coco",
    "read_coco_json",
    "resolve_backend",
    "side_bands",
    "summarize_ap",
    "summarize_ar",
    "with_object_areas",
]
