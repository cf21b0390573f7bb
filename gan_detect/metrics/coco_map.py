"""COCO box AP (Lin et al., ECCV 2014) as a torchmetrics metric, plus a "tiny" bucket.

SOD-MTGAN (Zhang et al., ECCV 2018) reports AP_S; we add AP_tiny (area < 16^2 px), which
torchmetrics cannot express, as a fifth area range of the one COCOeval run of
:func:`~gan_detect.metrics.coco_eval.coco_evaluator`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from gan_detect.metrics.coco_eval import (
    COCO_METRICS,
    DEFAULT_MAX_DETS,
    IOU_THRESHOLDS,
    REC_THRESHOLDS,
    TINY_AREA,
    Backend,
    area_ranges,
    coco_evaluator,
    coco_stats,
    resolve_backend,
)
from gan_detect.metrics.validate_results import check_coco_gt, check_coco_results, read_json
from gan_detect.metrics.wider_face_metric import image_key
from gan_detect.utils.errors import InputError

# The metric names, defined once in the torch-free ``coco_eval`` module.
COCO_KEYS: tuple[str, ...] = COCO_METRICS


class CocoMeanAP(MeanAveragePrecision):
    """torchmetrics ``MeanAveragePrecision`` (bbox) whose ``compute()`` also returns ``map_tiny``.

    One COCOeval run per ``compute()`` (:func:`~gan_detect.metrics.coco_eval.coco_evaluator`,
    the four COCO area ranges plus tiny), on the COCO objects the parent builds.
    ``map_tiny`` is AP@[.5:.95] over objects with area < ``tiny_area`` (COCO ``area`` when the
    target gives one, else box w*h), at the largest max-detection threshold, with the same class
    averaging as ``map``; -1 when no ground truth is tiny. Inputs as for the parent class
    (default ``box_format="xyxy"`` absolute pixels), plus optional ``image_ids``: under DDP,
    ``DistributedSampler`` pads the last shard with repeated images, so ``compute()`` keeps one
    occurrence per image id (as :class:`~gan_detect.metrics.WiderFaceAP` does).

    Args:
        max_detection_thresholds: three ints; the last one is used for every AP.
        tiny_area: upper area bound of the tiny bucket, px^2.
        backend: ``"faster_coco_eval"`` (C++, same numbers) or ``"pycocotools"`` (the reference);
            None: :func:`~gan_detect.metrics.coco_eval.resolve_backend` (faster when importable,
            ``$GAN_DETECT_COCO_BACKEND`` overrides).

    Unlike the parent, whose pycocotools path reads ``map`` at 100 detections per image
    (``COCOeval.summarize``), every AP here is read at the last threshold, for both backends.
    """

    def __init__(
        self,
        max_detection_thresholds: Sequence[int] = DEFAULT_MAX_DETS,
        tiny_area: float = TINY_AREA,
        backend: Backend | None = None,
        **kwargs: Any,
    ) -> None:
        area_ranges(tiny_area)  # raises on a non-positive area
        chosen = resolve_backend(backend)
        super().__init__(
            iou_type="bbox",
            max_detection_thresholds=list(max_detection_thresholds),
            backend=chosen,
            **{"iou_thresholds": IOU_THRESHOLDS, "rec_thresholds": REC_THRESHOLDS, **kwargs},
        )
        self.tiny_area = float(tiny_area)
        self.coco_backend: Backend = chosen
        # One (1,) int64 key per image, gathered like the per-image parent states.
        self.add_state("image_keys", default=[], dist_reduce_fx=None)
        self._rng = random.Random()  # nonces only; never touches the global RNGs

    def update(  # type: ignore[override]
        self,
        preds: list[dict[str, Tensor]],
        target: list[dict[str, Tensor]],
        image_ids: Sequence[str] | None = None,
    ) -> None:
        """The parent's update; ``image_ids`` (one per target) enable de-duplication."""
        if image_ids is not None and len(image_ids) != len(target):
            raise ValueError(f"got {len(image_ids)} image_ids for {len(target)} targets")
        super().update(preds, target)
        # Without ids every occurrence is unique (a random 63-bit nonce): nothing is dropped.
        keys = (
            [self._rng.getrandbits(63) for _ in target]
            if image_ids is None
            else [image_key(i) for i in image_ids]
        )
        states: list[Tensor] = self.image_keys  # type: ignore[assignment]
        states.extend(torch.tensor([k], dtype=torch.int64, device=self.device) for k in keys)

    def compute(self) -> dict[str, Tensor]:
        """The parent's result dict plus ``map_tiny`` (float32 scalar tensor), over one
        occurrence of each image id (after the DDP gather)."""
        per_image = [
            "detection_box", "detection_mask", "detection_scores", "detection_labels",
            "groundtruth_box", "groundtruth_mask", "groundtruth_labels", "groundtruth_crowds",
            "groundtruth_area",
        ]  # fmt: skip
        image_keys: list[Tensor] = self.image_keys  # type: ignore[assignment]
        keys = [int(k.reshape(-1)[0]) for k in image_keys]
        first_of: dict[int, int] = {}
        for i, k in enumerate(keys):
            first_of.setdefault(k, i)
        first = sorted(first_of.values())
        saved = {n: getattr(self, n) for n in per_image}
        if len(first) < len(keys):
            for n, v in saved.items():
                if len(v) == len(keys):  # masks stay empty for bbox
                    setattr(self, n, [v[i] for i in first])
        try:
            out = self._evaluate()
        finally:
            for n, v in saved.items():
                setattr(self, n, v)
        return out

    def _coco_datasets(self, average: Literal["macro", "micro"]) -> tuple[Any, Any]:
        # The parent's own helper, so crowd, area and micro-average handling match it.
        preds, target = self._coco_backend._get_coco_datasets(
            self.groundtruth_labels,
            self.groundtruth_box,
            self.groundtruth_mask,
            self.groundtruth_crowds,
            self.groundtruth_area,
            self.detection_labels,
            self.detection_box,
            self.detection_mask,
            self.detection_scores,
            iou_type=("bbox",),
            average=average,
        )
        return preds, target

    def _run(self, preds: Any, target: Any) -> Any:
        return coco_evaluator(
            target,
            preds,
            self.max_detection_thresholds,
            area_ranges(self.tiny_area),
            self.iou_thresholds,
            self.rec_thresholds,
            backend=self.coco_backend,
        )

    def _evaluate(self) -> dict[str, Tensor]:
        """The parent's result keys (float32), ``map_tiny`` included, from one COCOeval run."""
        mdt = list(self.max_detection_thresholds)
        keys = [
            "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
            *(f"mar_{d}" for d in mdt), "mar_small", "mar_medium", "mar_large",
        ]  # fmt: skip
        preds, target = self._coco_datasets(self.average)
        labels: list[Tensor] = [*self.detection_labels, *self.groundtruth_labels]  # type: ignore[misc]
        classes = torch.cat(labels).unique().cpu().tolist() if labels else []
        if len(preds.imgs) == 0 or len(target.imgs) == 0:
            out = {k: torch.tensor([-1.0]) for k in keys}
            out["map_tiny"] = torch.tensor(-1.0)
            out["classes"] = torch.tensor(classes, dtype=torch.int32)
            return out
        ev = self._run(preds, target)
        stats = coco_stats(ev)
        out = {k: torch.tensor([stats[k]], dtype=torch.float32) for k in keys}
        out["map_tiny"] = torch.tensor(stats["map_tiny"], dtype=torch.float32)
        if self.extended_summary:
            # Tiny is the last area range: the arrays keep the parent's 4-area layout.
            out["ious"] = apply_to_collection(
                ev.ious, np.ndarray, lambda x: torch.tensor(x, dtype=torch.float32)
            )
            out["precision"] = torch.tensor(np.asarray(ev.eval["precision"])[:, :, :, :4])
            out["recall"] = torch.tensor(np.asarray(ev.eval["recall"])[:, :, :4])
            out["scores"] = torch.tensor(np.asarray(ev.eval["scores"])[:, :, :, :4])
        if self.class_metrics:
            # Per class from the same run's arrays (a macro run; micro pools the classes).
            macro = ev if self.average == "macro" else self._run(*self._coco_datasets("macro"))
            cats = list(macro.params.catIds)
            prec = np.asarray(macro.eval["precision"])[:, :, :, 0, -1]  # (T, R, K)
            rec = np.asarray(macro.eval["recall"])[:, :, 0, -1]  # (T, K)

            def mean_valid(x: np.ndarray) -> float:
                v = x[x > -1]
                return float(v.mean()) if v.size else -1.0

            per_ap = [mean_valid(prec[:, :, cats.index(c)]) if c in cats else -1.0 for c in classes]
            per_ar = [mean_valid(rec[:, cats.index(c)]) if c in cats else -1.0 for c in classes]
            out["map_per_class"] = torch.tensor(per_ap, dtype=torch.float32)
            out[f"mar_{mdt[-1]}_per_class"] = torch.tensor(per_ar, dtype=torch.float32)
        else:
            out["map_per_class"] = torch.tensor([-1], dtype=torch.float32)
            out[f"mar_{mdt[-1]}_per_class"] = torch.tensor([-1], dtype=torch.float32)
        out["classes"] = torch.tensor(classes, dtype=torch.int32)
        return out


def coco_metric_inputs(
    preds: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Detections and targets (xyxy px) -> the ``(preds, target)`` lists ``CocoMeanAP`` takes.

    Ignored objects (``ignore`` in a target) become COCO crowd regions, so a detection on one is
    neither a true nor a false positive. An ``area`` in a target (annotated areas, 0 where none)
    is passed on: the metric buckets by it where positive, else by the box's w * h, COCO's rule
    (``coco_eval.object_areas``). Boxes and scores are float32, labels int64.
    """
    coco_p = [
        {
            "boxes": p["boxes"].float(),
            "scores": p["scores"].float(),
            "labels": p["labels"].long(),
        }
        for p in preds
    ]
    coco_t = [
        {
            "boxes": t["boxes"].float(),
            "labels": t["labels"].long(),
            "iscrowd": t["ignore"].long()
            if "ignore" in t
            else torch.zeros_like(t["labels"], dtype=torch.int64),
            **({"area": t["area"].float()} if "area" in t else {}),
        }
        for t in targets
    ]
    return coco_p, coco_t


def summarize_coco(result: dict[str, Tensor]) -> dict[str, float]:
    """The ``COCO_KEYS`` of a ``CocoMeanAP.compute()`` result as plain floats."""
    return {k: float(result[k]) for k in COCO_KEYS}


def coco_files_to_inputs(
    gt_json: str | Path, results_json: str | Path
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """A COCO annotation file and a results file -> (preds, targets) in xywh for the metric.

    Every image of the annotation file becomes one entry (also those without annotations, whose
    detections are false positives, as in COCOeval). Labels are COCO category ids; targets carry
    ``iscrowd`` and ``area``. Detections on images absent from the annotation file are dropped.
    """
    gt = read_json(gt_json, "COCO file")
    res = read_json(results_json, "COCO file")
    check_coco_gt(gt, gt_json)
    ids = sorted(int(im["id"]) for im in gt["images"])
    tgt: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    det: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for n, a in enumerate(gt["annotations"]):
        if a.get("image_id") not in tgt or len(a.get("bbox", ())) != 4:
            raise InputError(f"{gt_json}: annotation {n} has an unknown image_id or a bad bbox")
        tgt[a["image_id"]].append(a)
    cats = [c["id"] for c in gt.get("categories", []) if isinstance(c, dict) and "id" in c]
    check_coco_results(res, results_json, category_ids=cats or None)
    for r in res:
        if r.get("image_id") in det:
            det[r["image_id"]].append(r)

    def boxes(rows: list[dict[str, Any]]) -> Tensor:
        return torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4)

    preds = [
        {
            "boxes": boxes(det[i]),
            "scores": torch.tensor([r["score"] for r in det[i]]),
            "labels": torch.tensor([r["category_id"] for r in det[i]], dtype=torch.int64),
        }
        for i in ids
    ]
    targets = [
        {
            "boxes": boxes(tgt[i]),
            "labels": torch.tensor([a["category_id"] for a in tgt[i]], dtype=torch.int64),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in tgt[i]], dtype=torch.int64),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in tgt[i]], dtype=torch.float64),
        }
        for i in ids
    ]
    return preds, targets


def evaluate_coco_files(
    gt_json: str | Path,
    results_json: str | Path,
    max_detection_thresholds: Sequence[int] = DEFAULT_MAX_DETS,
    backend: Backend | None = None,
    tiny_area: float = TINY_AREA,
) -> dict[str, float]:
    """AP, AP50, AP75, AP_S/M/L and AP_tiny of a COCO results file (keys ``COCO_KEYS``)."""
    preds, targets = coco_files_to_inputs(gt_json, results_json)
    metric = CocoMeanAP(max_detection_thresholds, tiny_area, backend, box_format="xywh")
    metric.warn_on_many_detections = False
    metric.update(preds, targets)
    return summarize_coco(metric.compute())
