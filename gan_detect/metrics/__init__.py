"""Detection metrics: the official WIDER FACE protocol and COCO AP with a tiny-object bucket."""

from gan_detect.metrics.coco_map import COCO_KEYS, CocoMeanAP, evaluate_coco_files, summarize_coco
from gan_detect.metrics.wider_face_ap import (
    WiderFaceAP,
    voc_ap,
    wider_face_ap,
    wider_face_pr_curves,
)
from gan_detect.metrics.wider_gt import (
    SETTINGS,
    WiderGroundTruth,
    fallback_ground_truth,
    load_wider_ground_truth,
)

__all__ = [
    "COCO_KEYS",
    "SETTINGS",
    "CocoMeanAP",
    "WiderFaceAP",
    "WiderGroundTruth",
    "evaluate_coco_files",
    "fallback_ground_truth",
    "load_wider_ground_truth",
    "summarize_coco",
    "voc_ap",
    "wider_face_ap",
    "wider_face_pr_curves",
]
