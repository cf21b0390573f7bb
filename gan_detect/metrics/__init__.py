"""Detection metrics: the official WIDER FACE protocol and COCO AP with a tiny-object bucket.

The WIDER FACE protocol functions are pure numpy and imported eagerly; the other names
(``WiderFaceAP``, ``CocoMeanAP``, the COCO wrapper, the bootstrap) load on first use (PEP 562), so
that ``gan-detect wider-eval`` and ``from gan_detect.metrics import wider_face_ap`` never import
torch. Every COCO AP goes through ``coco_eval.coco_evaluator`` (one COCOeval run, tiny included).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gan_detect.metrics.wider_face_ap import voc_ap, wider_face_ap, wider_face_pr_curves
from gan_detect.metrics.wider_gt import (
    SETTINGS,
    WiderGroundTruth,
    fallback_ground_truth,
    load_wider_ground_truth,
)

if TYPE_CHECKING:
    from gan_detect.metrics.coco_bootstrap import (
        COCO_APPROXIMATION,
        CocoTables,
        coco_paired_bootstrap,
        coco_tables,
    )
    from gan_detect.metrics.coco_eval import (
        BACKEND_ENV,
        COCO_AREAS,
        COCO_METRICS,
        DEFAULT_MAX_DETS,
        IOU_THRESHOLDS,
        REC_THRESHOLDS,
        TINY_AREA,
        area_ranges,
        coco_evaluator,
        coco_results_to_dt,
        coco_stats,
        evaluate_coco,
        load_coco_gt,
        resolve_backend,
    )
    from gan_detect.metrics.coco_map import (
        COCO_KEYS,
        CocoMeanAP,
        coco_files_to_inputs,
        coco_metric_inputs,
        evaluate_coco_files,
        summarize_coco,
    )
    from gan_detect.metrics.resampling import (
        LEVEL,
        Difference,
        ImageTables,
        MetricComparison,
        PairedBootstrap,
        SeedBootstrap,
        SeedMetric,
        bootstrap_weights,
        nested_seed_bootstrap,
        paired_bootstrap,
        seed_bootstrap,
    )
    from gan_detect.metrics.wider_bootstrap import (
        WIDER_APPROXIMATION,
        WIDER_METRICS,
        WiderTables,
        wider_paired_bootstrap,
        wider_tables,
    )
    from gan_detect.metrics.wider_face_metric import (
        WiderFaceAP,
    )

# name -> module that defines it (torch, torchmetrics, the COCO API, scipy load there).
_LAZY = {
    "COCO_KEYS": "gan_detect.metrics.coco_map",
    "CocoMeanAP": "gan_detect.metrics.coco_map",
    "coco_files_to_inputs": "gan_detect.metrics.coco_map",
    "coco_metric_inputs": "gan_detect.metrics.coco_map",
    "evaluate_coco_files": "gan_detect.metrics.coco_map",
    "summarize_coco": "gan_detect.metrics.coco_map",
    "WiderFaceAP": "gan_detect.metrics.wider_face_metric",
    "BACKEND_ENV": "gan_detect.metrics.coco_eval",
    "COCO_AREAS": "gan_detect.metrics.coco_eval",
    "COCO_METRICS": "gan_detect.metrics.coco_eval",
    "DEFAULT_MAX_DETS": "gan_detect.metrics.coco_eval",
    "IOU_THRESHOLDS": "gan_detect.metrics.coco_eval",
    "REC_THRESHOLDS": "gan_detect.metrics.coco_eval",
    "TINY_AREA": "gan_detect.metrics.coco_eval",
    "area_ranges": "gan_detect.metrics.coco_eval",
    "coco_evaluator": "gan_detect.metrics.coco_eval",
    "coco_results_to_dt": "gan_detect.metrics.coco_eval",
    "coco_stats": "gan_detect.metrics.coco_eval",
    "evaluate_coco": "gan_detect.metrics.coco_eval",
    "load_coco_gt": "gan_detect.metrics.coco_eval",
    "resolve_backend": "gan_detect.metrics.coco_eval",
    "LEVEL": "gan_detect.metrics.resampling",
    "Difference": "gan_detect.metrics.resampling",
    "ImageTables": "gan_detect.metrics.resampling",
    "MetricComparison": "gan_detect.metrics.resampling",
    "PairedBootstrap": "gan_detect.metrics.resampling",
    "SeedBootstrap": "gan_detect.metrics.resampling",
    "SeedMetric": "gan_detect.metrics.resampling",
    "bootstrap_weights": "gan_detect.metrics.resampling",
    "nested_seed_bootstrap": "gan_detect.metrics.resampling",
    "paired_bootstrap": "gan_detect.metrics.resampling",
    "seed_bootstrap": "gan_detect.metrics.resampling",
    "WIDER_APPROXIMATION": "gan_detect.metrics.wider_bootstrap",
    "WIDER_METRICS": "gan_detect.metrics.wider_bootstrap",
    "WiderTables": "gan_detect.metrics.wider_bootstrap",
    "wider_paired_bootstrap": "gan_detect.metrics.wider_bootstrap",
    "wider_tables": "gan_detect.metrics.wider_bootstrap",
    "COCO_APPROXIMATION": "gan_detect.metrics.coco_bootstrap",
    "CocoTables": "gan_detect.metrics.coco_bootstrap",
    "coco_paired_bootstrap": "gan_detect.metrics.coco_bootstrap",
    "coco_tables": "gan_detect.metrics.coco_bootstrap",
}


def __getattr__(name: str) -> Any:
    """PEP 562 lazy import of the torch-based names listed in ``_LAZY``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKEND_ENV",
    "COCO_APPROXIMATION",
    "COCO_AREAS",
    "COCO_KEYS",
    "COCO_METRICS",
    "DEFAULT_MAX_DETS",
    "IOU_THRESHOLDS",
    "LEVEL",
    "REC_THRESHOLDS",
    "SETTINGS",
    "TINY_AREA",
    "WIDER_APPROXIMATION",
    "WIDER_METRICS",
    "CocoMeanAP",
    "CocoTables",
    "Difference",
    "ImageTables",
    "MetricComparison",
    "PairedBootstrap",
    "SeedBootstrap",
    "SeedMetric",
    "WiderFaceAP",
    "WiderGroundTruth",
    "WiderTables",
    "area_ranges",
    "bootstrap_weights",
    "coco_evaluator",
    "coco_files_to_inputs",
    "coco_metric_inputs",
    "coco_paired_bootstrap",
    "coco_results_to_dt",
    "coco_stats",
    "coco_tables",
    "evaluate_coco",
    "evaluate_coco_files",
    "fallback_ground_truth",
    "load_coco_gt",
    "load_wider_ground_truth",
    "nested_seed_bootstrap",
    "paired_bootstrap",
    "resolve_backend",
    "seed_bootstrap",
    "summarize_coco",
    "voc_ap",
    "wider_face_ap",
    "wider_face_pr_curves",
    "wider_paired_bootstrap",
    "wider_tables",
]
