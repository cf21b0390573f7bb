"""Compare two methods' predictions with paired bootstrap intervals (what ``--compare`` runs).

The command line (``gan-detect wider-eval PRED_A --gt GT --compare PRED_B [--bootstrap N]
[--json FILE]`` and ``gan-detect coco-eval RESULTS_A.json --gt INSTANCES.json --compare
RESULTS_B.json``) calls:

* :func:`compare_wider` / :func:`compare_coco`: a JSON-ready dict (layout below);
* :func:`format_comparison_table`: the text table to print.

Several seeds of each method: :func:`compare_wider_seeds` / :func:`compare_coco_seeds`.

Layout of the returned dict (every AP and difference in AP points, i.e. percent, as printed)::

    {"protocol": "wider_face" | "coco", "metrics": [...], "unit": "AP points (percent)",
     "a": {"source": ..., "<metric>": AP, ...}, "b": {...},
     "difference": {"<metric>": {"point": B - A, "low": ..., "high": ..., "p_not_better": ...,
                                 "resolved": bool, "n_valid": ...}, ...},
     "bootstrap": {"n_boot", "seed", "level", "interval", "resampled", "n_images", "unit",
                   "approximation"},
     ...protocol details (files read, missing images), "seconds"}

``difference.<metric>.low / .high`` are None when ``n_boot`` is 0 or the metric is undefined
(e.g. AP_tiny without tiny ground truth).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.data.records import xyxy_to_xywh
from gan_detect.metrics.coco_bootstrap import COCO_APPROXIMATION, CocoTables, coco_tables
from gan_detect.metrics.coco_eval import (
    COCO_METRICS,
    DEFAULT_MAX_DETS,
    TINY_AREA,
    coco_results_to_dt,
    load_coco_gt,
    object_areas,
)
from gan_detect.metrics.resampling import (
    LEVEL,
    RESOLUTION,
    interval_scope,
    is_resolved,
    paired_bootstrap,
    seed_bootstrap,
)
from gan_detect.metrics.validate_results import check_wider_predictions, coverage_notice
from gan_detect.metrics.wider_bootstrap import (
    WIDER_APPROXIMATION,
    WIDER_METRICS,
    WiderTables,
    wider_tables,
)
from gan_detect.metrics.wider_gt import WiderGroundTruth, load_wider_ground_truth
from gan_detect.utils.errors import InputError


def read_wider_predictions(
    pred_dir: str | Path, gt: WiderGroundTruth
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Prediction arrays of the gt images under ``pred_dir`` and what was (not) found.

    Only ``<event>/<name>.txt`` is read, as the official tool does. Images without a file count
    as images without detections (one warning gives the count); files with another case of
    ``.txt`` are named in a warning.

    Returns:
        ``(image id -> (N, 5) x y w h score, info)``; info: ``source``, ``num_predictions``,
        ``missing``, ``extra`` (files of images not in ``gt``; ignored).

    Raises:
        InputError: none of the gt images has a file (the message counts what is where).
    """
    from gan_detect.data.proposals import read_wider_tree_arrays

    preds = read_wider_tree_arrays(pred_dir)
    wanted = set(gt.image_ids)
    missing = sum(1 for i in gt.image_ids if i not in preds)
    odd_case = [f for f in Path(pred_dir).glob("*/*") if f.suffix.lower() == ".txt" != f.suffix]
    if odd_case:
        warnings.warn(
            f"{len(odd_case)} files under {pred_dir} end in another case of .txt (e.g. "
            f"{odd_case[0]}) and are not read: rename them to .txt",
            stacklevel=3,
        )
    if gt.image_ids and missing == len(gt):
        deeper = len(list(Path(pred_dir).glob("*/*/*.txt")))
        shallow = len(list(Path(pred_dir).glob("*.txt")))
        raise InputError(
            f"{pred_dir}: none of the {len(gt)} ground-truth images has a prediction file "
            f"({len(preds)} <event>/<name>.txt files read, {len(odd_case)} with a .TXT-like "
            f"suffix, {deeper} one folder deeper, {shallow} one folder higher): the folder must "
            "hold <event>/<name>.txt"
        )
    if missing:
        warnings.warn(
            f"{missing} of {len(gt)} images have no prediction file under {pred_dir}; "
            "counted as images without detections",
            stacklevel=3,
        )
    kept = {i: a for i, a in preds.items() if i in wanted}
    check_wider_predictions(kept, pred_dir)
    info = {
        "source": str(pred_dir),
        "num_predictions": int(sum(len(a) for a in kept.values())),
        "missing": missing,
        "extra": sum(1 for i in preds if i not in wanted),
        "covered": sorted(i for i, a in kept.items() if len(a)),
    }
    return kept, info


def _wider_tables_of(
    pred_dir: str | Path, gt: WiderGroundTruth
) -> tuple[WiderTables, dict[str, Any]]:
    preds, info = read_wider_predictions(pred_dir, gt)
    with warnings.catch_warnings():
        # Missing files were reported above with the folder named.
        warnings.filterwarnings("ignore", message=r".*(have no predictions|not in the ground)")
        return wider_tables(preds, gt), info


def _load_wider_gt(gt_dir: str | Path, image_ids: set[str] | None) -> WiderGroundTruth:
    gt = load_wider_ground_truth(gt_dir)
    return gt.subset(image_ids) if image_ids is not None else gt


def _layout(
    protocol: str,
    result: Any,
    info_a: Mapping[str, Any],
    info_b: Mapping[str, Any],
    start: float,
    num_images: int = 0,
) -> dict[str, Any]:
    d = result.to_dict()
    info_a, info_b = dict(info_a), dict(info_b)
    cov_a, cov_b = info_a.pop("covered", ()), info_b.pop("covered", ())
    info_a["images_with_detections"], info_b["images_with_detections"] = len(cov_a), len(cov_b)
    out = {
        "protocol": protocol,
        "metrics": list(result.metrics),
        "unit": "AP points (percent)",
        "a": {**info_a, **d["a"]},
        "b": {**info_b, **d["b"]},
        "difference": d["difference"],
        "bootstrap": d["bootstrap"],
        "seconds": time.perf_counter() - start,
    }
    # Same source twice (a one-method evaluation) needs no notice.
    if info_a.get("source") != info_b.get("source"):
        notice = coverage_notice("A", cov_a, "B", cov_b, num_images)
        if notice is not None:
            warnings.warn(notice, stacklevel=3)
            out["notice"] = notice
    return out


def compare_wider(
    pred_a_dir: str | Path,
    pred_b_dir: str | Path,
    gt_dir: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    image_ids: set[str] | None = None,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Official easy / medium / hard AP of two WIDER prediction trees and B - A intervals.

    Args:
        pred_a_dir, pred_b_dir: ``<event>/<name>.txt`` trees (``x y w h score`` lines).
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``.
        n_boot: paired image resamples (0: no interval). seed: seed of the image draw.
        image_ids: evaluate only these ``"event/name"`` images (None: the whole val set).
        level: coverage of the percentile interval.

    Returns:
        The dict described in the module docstring (``protocol`` "wider_face").
    """
    start = time.perf_counter()
    gt = _load_wider_gt(gt_dir, image_ids)
    ta, info_a = _wider_tables_of(pred_a_dir, gt)
    tb, info_b = _wider_tables_of(pred_b_dir, gt)
    res = paired_bootstrap(ta, tb, n_boot, seed, level, WIDER_APPROXIMATION)
    out = _layout("wider_face", res, info_a, info_b, start, len(gt))
    out["official_gt_list"] = bool(gt.official)
    return out


def _coco_tables_of(
    gt: Any, results: str | Path, max_dets: int, tiny_area: float
) -> tuple[CocoTables, dict[str, Any]]:
    dt = coco_results_to_dt(gt, results)
    covered = sorted({int(a["image_id"]) for a in dt.dataset["annotations"]})
    info = {"source": str(results), "num_detections": len(dt.getAnnIds()), "covered": covered}
    return coco_tables(gt, dt, max_dets, tiny_area), info


def compare_coco(
    results_a_json: str | Path,
    results_b_json: str | Path,
    instances_json: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    max_dets: int = DEFAULT_MAX_DETS[-1],
    tiny_area: float = TINY_AREA,
    level: float = LEVEL,
) -> dict[str, Any]:
    """COCO AP (map, map_50, map_75, map_small/medium/large, map_tiny) of two results files
    and B - A intervals, with the package's settings (``CocoMeanAP``: 1000 detections per image,
    tiny = area < 16^2).

    Returns:
        The dict described in the module docstring (``protocol`` "coco").
    """
    start = time.perf_counter()
    gt = load_coco_gt(instances_json)
    ta, info_a = _coco_tables_of(gt, results_a_json, max_dets, tiny_area)
    tb, info_b = _coco_tables_of(gt, results_b_json, max_dets, tiny_area)
    res = paired_bootstrap(ta, tb, n_boot, seed, level, COCO_APPROXIMATION)
    out = _layout("coco", res, info_a, info_b, start, len(gt.getImgIds()))
    out["ground_truth"] = str(instances_json)
    out["max_dets"] = max_dets
    out["tiny_area"] = tiny_area
    return out


def _seed_layout(protocol: str, res: Any, a: Sequence[Any], b: Sequence[Any]) -> dict[str, Any]:
    d = res.to_dict()
    return {
        "protocol": protocol,
        "metrics": list(res.metrics),
        "unit": "AP points (percent)",
        "a": {"sources": [str(x) for x in a]},
        "b": {"sources": [str(x) for x in b]},
        "per_metric": d["metrics"],
        "difference": {m: v["difference"] for m, v in d["metrics"].items()},
        "bootstrap": d["bootstrap"],
    }


def compare_wider_seeds(
    pred_a_dirs: Sequence[str | Path],
    pred_b_dirs: Sequence[str | Path],
    gt_dir: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    image_ids: set[str] | None = None,
) -> dict[str, Any]:
    """As :func:`compare_wider` with one prediction tree per training seed for A and for B
    (``pred_a_dirs[s]`` pairs with ``pred_b_dirs[s]``): per-seed APs, seed means and spreads,
    and the seeds x images interval of the seed-averaged B - A (``seed_bootstrap``)."""
    if len(pred_a_dirs) != len(pred_b_dirs) or not pred_a_dirs:
        raise ValueError("give the same (non-zero) number of seeds for A and B")
    gt = _load_wider_gt(gt_dir, image_ids)
    pairs = [
        (_wider_tables_of(a, gt)[0], _wider_tables_of(b, gt)[0])
        for a, b in zip(pred_a_dirs, pred_b_dirs, strict=True)
    ]
    res = seed_bootstrap(pairs, n_boot, seed, approximation=WIDER_APPROXIMATION)
    return _seed_layout("wider_face", res, pred_a_dirs, pred_b_dirs)


def compare_coco_seeds(
    results_a_jsons: Sequence[str | Path],
    results_b_jsons: Sequence[str | Path],
    instances_json: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    max_dets: int = DEFAULT_MAX_DETS[-1],
    tiny_area: float = TINY_AREA,
) -> dict[str, Any]:
    """As :func:`compare_coco` with one results file per training seed (see
    :func:`compare_wider_seeds`)."""
    if len(results_a_jsons) != len(results_b_jsons) or not results_a_jsons:
        raise ValueError("give the same (non-zero) number of seeds for A and B")
    gt = load_coco_gt(instances_json)
    pairs = [
        (
            _coco_tables_of(gt, a, max_dets, tiny_area)[0],
            _coco_tables_of(gt, b, max_dets, tiny_area)[0],
        )
        for a, b in zip(results_a_jsons, results_b_jsons, strict=True)
    ]
    res = seed_bootstrap(pairs, n_boot, seed, approximation=COCO_APPROXIMATION)
    return _seed_layout("coco", res, results_a_jsons, results_b_jsons)


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    if sign and 0 < abs(x) < 5e-4:
        # Three decimals would print it as +0.000: two significant digits say what it is.
        return f"{x:+.2g}"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _verdict(diff: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """'B better' / 'A better' when the interval clears 0 by more than ``RESOLUTION``; 'not
    resolved' otherwise, with '(< 0.01)' when it excludes 0 by less (rounding, not a result)."""
    low, high = diff.get("low"), diff.get("high")
    if low is None or high is None:
        return "-"
    if is_resolved(low, high):
        return f"{name_b} better" if low > 0 else f"{name_a} better"
    if low > 0 or high < 0:
        return f"not resolved (< {RESOLUTION:g})"
    return "not resolved"


def format_comparison_table(result: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Text table of :func:`compare_wider` / :func:`compare_coco` (or the ``*_seeds``) output.

    One row per metric: both APs, B - A, its interval, p(B <= A) and whether the difference is
    resolved (the interval clears 0 by more than ``RESOLUTION``); a footer states the bootstrap
    settings and what the interval covers (``interval_scope``).
    """
    boot = result["bootstrap"]
    level = int(round(100 * boot.get("level", LEVEL)))
    seeds = "per_metric" in result
    head_a = f"{name_a} %" if not seeds else f"{name_a} % (mean)"
    head_b = f"{name_b} %" if not seeds else f"{name_b} % (mean)"
    interval = f"{level} % interval"
    rows = [
        (
            "metric",
            head_a,
            head_b,
            f"{name_b} - {name_a}",
            interval,
            f"p({name_b}<={name_a})",
            "resolved",
        )
    ]
    for m in result["metrics"]:
        d = result["difference"][m]
        if seeds:
            va, vb = result["per_metric"][m]["mean_a"], result["per_metric"][m]["mean_b"]
        else:
            va, vb = result["a"][m], result["b"][m]
        span = (
            f"[{_fmt(d['low'], True)}, {_fmt(d['high'], True)}]"
            if d.get("low") is not None
            else "-"
        )
        point = _fmt(d["point"], True)
        if seeds:  # the between-seed spread of the per-seed differences beside their mean
            point += f" (sd {_fmt(result['per_metric'][m]['std_diff'])})"
        verdict = _verdict(d, name_a, name_b)
        rows.append((m, _fmt(va), _fmt(vb), point, span, _fmt(d.get("p_not_better")), verdict))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if j in (0, len(r) - 1) else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    if boot["n_boot"] > 0:
        scope = interval_scope(boot["n_images"], boot["n_seeds"] if seeds else 1)
        lines.append(
            f"{name_b} - {name_a} in AP points; {level} % percentile interval ({boot['n_boot']} "
            f"paired resamples, seed {boot['seed']}) {scope}."
        )
        lines.append(
            f"resolved: the interval clears 0 by more than {RESOLUTION:g} AP points (less is "
            "float and file rounding, not a difference)."
        )
    else:
        lines.append(f"{name_b} - {name_a} in AP points; no bootstrap (n_boot = 0).")
    if boot.get("approximation"):
        lines.append(f"approximation: {boot['approximation']}.")
    return "\n".join(lines)


__all__ = [
    "COCO_METRICS",
    "WIDER_METRICS",
    "compare_coco",
    "compare_coco_seeds",
    "compare_wider",
    "compare_wider_seeds",
    "format_comparison_table",
]


def records_to_coco_gt(records: Sequence[Any], num_classes: int) -> tuple[Any, dict[str, int]]:
    """In-memory ground truth (``ImageRecord`` list: xyxy boxes, labels 1..C, ignore -> crowd,
    annotated areas, else w * h: ``object_areas``) as a pycocotools ``COCO``, and image id -> its
    integer COCO id."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for n, r in enumerate(records):
        index[r.image_id] = n
        images.append({"id": n, "width": int(r.width), "height": int(r.height)})
        xywh = xyxy_to_xywh(r.boxes)
        areas = object_areas(xywh, getattr(r, "areas", None))
        for (x0, y0, w, h), lab, ign, area in zip(
            xywh.tolist(), r.labels.tolist(), r.ignore.tolist(), areas.tolist(), strict=True
        ):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": n,
                    "category_id": int(lab),
                    "bbox": [x0, y0, w, h],
                    "area": area,
                    "iscrowd": int(ign),
                }
            )
    cats = [{"id": k} for k in range(1, num_classes + 1)]
    return load_coco_gt({"images": images, "annotations": anns, "categories": cats}), index


def _coco_rows(dets: Mapping[str, Any], index: Mapping[str, int]) -> list[dict[str, Any]]:
    rows = []
    for image_id, d in dets.items():
        if image_id not in index:
            continue
        for xywh, s, lab in zip(
            xyxy_to_xywh(d.boxes).tolist(), np.asarray(d.scores).tolist(),
            np.asarray(d.labels).tolist(), strict=True,
        ):  # fmt: skip
            rows.append(
                {
                    "image_id": index[image_id],
                    "category_id": int(lab),
                    "bbox": xywh,
                    "score": float(s),
                }
            )
    return rows


def compare_detection_sets(
    records: Sequence[Any],
    dets_a: Mapping[str, Any],
    dets_b: Mapping[str, Any],
    num_classes: int,
    wider_gt: WiderGroundTruth | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_dets: int = DEFAULT_MAX_DETS[-1],
) -> dict[str, Any]:
    """B - A with paired image-bootstrap intervals for in-memory detections (``evaluate``).

    Args:
        records: the evaluated images (``ImageRecord``: the COCO ground truth is built from them).
        dets_a, dets_b: image id -> detections with ``boxes`` (D, 4) xyxy, ``scores``, ``labels``.
        wider_gt: the official WIDER FACE ground truth of these images: adds easy / medium / hard.

    Returns:
        ``{"coco": <compare layout>, "wider": <compare layout> or absent}``.
    """
    start = time.perf_counter()
    gt, index = records_to_coco_gt(records, num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = coco_tables(gt, coco_results_to_dt(gt, _coco_rows(dets_a, index)), max_dets)
        tb = coco_tables(gt, coco_results_to_dt(gt, _coco_rows(dets_b, index)), max_dets)
    res = paired_bootstrap(ta, tb, n_boot, seed, approximation=COCO_APPROXIMATION)
    out: dict[str, Any] = {"coco": _layout("coco", res, {"source": "A"}, {"source": "B"}, start)}
    if wider_gt is not None:

        def tree(d: Mapping[str, Any]) -> dict[str, np.ndarray]:
            t = {}
            for i, p in d.items():
                b = xyxy_to_xywh(p.boxes)
                t[i] = np.concatenate([b, np.asarray(p.scores, np.float64)[:, None]], 1)
            return t

        wa, wb = wider_tables(tree(dets_a), wider_gt), wider_tables(tree(dets_b), wider_gt)
        wres = paired_bootstrap(wa, wb, n_boot, seed, approximation=WIDER_APPROXIMATION)
        out["wider"] = _layout("wider_face", wres, {"source": "A"}, {"source": "B"}, start)
    return out
