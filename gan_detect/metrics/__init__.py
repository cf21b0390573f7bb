"""Detection metrics: the official WIDER FACE protocol and COCO AP with a tiny-object bucket.

The WIDER FACE protocol functions are pure numpy and imported eagerly; the torch-based names
(``WiderFaceAP``, ``CocoMeanAP``, the COCO helpers) load on first use (PEP 562), so that
``gan-detect wider-eval`` and ``from gan_detect.metrics import wider_face_ap`` never import torch.
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
    from gan_detect.metrics.coco_map import (
        COCO_KEYS,
        CocoMeanAP,
        coco_metric_inputs,
        evaluate_coco_files,
        summarize_coco,
    )
    from gan_detect.metrics.wider_face_metric import WiderFaceAP

# name -> module that defines it (imports torch / torchmetrics / pycocotools).
_LAZY = {
    "COCO_KEYS": "gan_detect.metrics.coco_map",
    "CocoMeanAP": "gan_detect.metrics.coco_map",
    "coco_metric_inputs": "gan_detect.metrics.coco_map",
    "evaluate_coco_files": "gan_detect.metrics.coco_map",
    "summarize_coco": "gan_detect.metrics.coco_map",
    "WiderFaceAP": "gan_detect.metrics.wider_face_metric",
}


def __getattr__(name: str) -> Any:
    """PEP 562 lazy import of the torch-based names listed in ``_LAZY``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COCO_KEYS",
    "SETTINGS",
    "CocoMeanAP",
    "WiderFaceAP",
    "WiderGroundTruth",
    "coco_metric_inputs",
    "evaluate_coco_files",
    "fallback_ground_truth",
    "load_wider_ground_truth",
    "summarize_coco",
    "voc_ap",
    "wider_face_ap",
    "wider_face_pr_curves",
]
