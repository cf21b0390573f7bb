"""Baseline vs GAN re-scoring on full images: official WIDER FACE AP or COCO AP, per size bucket.

The baseline is the proposals' own scores; the GAN is the same proposals re-scored (and, for
SOD-MTGAN, re-localised) by :func:`gan_detect.infer.inference.refine_detections`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert

from gan_detect.data.batch import DetectionBatch
from gan_detect.data.records import Proposals, xyxy_to_xywh
from gan_detect.infer.inference import (
    InferenceOptions,
    discriminate_proposals,
    postprocess_detections,
)
from gan_detect.metrics import (
    SETTINGS,
    CocoMeanAP,
    WiderFaceAP,
    WiderGroundTruth,
    coco_metric_inputs,
    summarize_coco,
)
from gan_detect.utils.console import show_progress
from gan_detect.utils.errors import InputError
from gan_detect.variants import GANVariant

# Images whose proposals are re-scored in one refine_detections_batch call at most (bounds the
# memory of the decoded images waiting for their chunk).
MAX_IMAGES_PER_BATCH = 16


class DetectionEvaluator:
    """Accumulates WIDER FACE AP (kind ``wider``) or COCO AP (kind ``coco``) plus size-bucket AP.

    Size buckets use COCO areas for both kinds (``metrics.coco_eval``: tiny < 16^2, small < 32^2,
    medium < 96^2, large), an object's area being its annotated one when the target carries
    ``area``, else its box's w * h, as ``coco-eval`` does.
    WIDER settings come from the official ``gt_list`` when ``gt`` is given (an image missing from
    it gets the height fallback, flagged ``official = 0``).
    """

    def __init__(self, kind: str, gt: WiderGroundTruth | None = None, coco_max_dets: int = 1000):
        if kind not in ("wider", "coco"):
            raise ValueError(f"kind must be wider|coco, got {kind!r}")
        self.kind = kind
        self.gt_index = {} if gt is None else {i: n for n, i in enumerate(gt.image_ids)}
        self.gt = gt
        self.wider = WiderFaceAP() if kind == "wider" else None
        # extended_summary keeps COCOeval's precision array: the PR curves of the report.
        self.coco = CocoMeanAP(
            max_detection_thresholds=(1, 100, coco_max_dets), extended_summary=True
        )
        self.num_images = 0

    def update(
        self,
        preds: Sequence[dict[str, Tensor]],
        targets: Sequence[dict[str, Tensor]],
        image_ids: Sequence[str],
    ) -> None:
        """Add a batch: ``preds`` boxes/scores/labels, ``targets`` boxes/labels/ignore (xyxy px)."""
        dev = self.coco.device  # metric states live where the module lives (NCCL gathers need it)
        preds = [{k: v.detach().to(dev) for k, v in p.items()} for p in preds]
        targets = [{k: v.detach().to(dev) for k, v in t.items()} for t in targets]
        self.coco.update(*coco_metric_inputs(preds, targets), list(image_ids))
        if self.wider is not None:
            self.wider.update(
                preds,
                [self._wider_target(t, i) for t, i in zip(targets, image_ids, strict=True)],
                list(image_ids),
            )
        self.num_images += len(image_ids)

    def to(self, device: torch.device | str) -> DetectionEvaluator:
        self.coco = self.coco.to(device)
        if self.wider is not None:
            self.wider = self.wider.to(device)
        return self

    def _wider_target(self, t: dict[str, Tensor], image_id: str) -> dict[str, Tensor]:
        n = self.gt_index.get(image_id)
        if self.gt is None or n is None:
            return {"boxes": t["boxes"], "ignore": t["ignore"]}
        dev = t["boxes"].device
        b = box_convert(torch.from_numpy(self.gt.boxes[n]).to(dev), "xywh", "xyxy")  # x2 = x + w
        keep = torch.from_numpy(self.gt.keep[n]).to(dev)
        out = {"boxes": b, "ignore": torch.zeros(len(b), dtype=torch.bool, device=dev)}
        out.update({f"keep_{s}": keep[:, j] for j, s in enumerate(SETTINGS)})
        return out

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.wider is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = self.wider.compute()
            out.update({k: float(v) for k, v in w.items()})
        result = self.coco.compute()
        out.update(summarize_coco(result))
        self.last_coco_precision = result.get("precision")
        return out

    def coco_pr_curve(self) -> dict[str, list[float]]:
        """Class-averaged precision at IoU 0.5 over COCO's 101 recall points (all areas).

        Call after :meth:`compute`; precision is -1 where a class has no ground truth.
        """
        prec = getattr(self, "last_coco_precision", None)
        if prec is None:
            return {}
        p = prec[0, :, :, 0, -1].float()  # IoU 0.5, all recall points, classes, area all, max dets
        valid = (p > -1).float()
        mean = (p.clamp_min(0) * valid).sum(1) / valid.sum(1).clamp_min(1)
        return {"recall": np.linspace(0, 1, p.shape[0]).tolist(), "precision": mean.tolist()}


def proposals_as_detections(props: dict[str, Tensor], top_k: int) -> dict[str, Tensor]:
    """The baseline: a detector's proposals with their own scores (top ``top_k``)."""
    order = torch.argsort(props["scores"], descending=True, stable=True)[:top_k]
    return {k: props[k][order] for k in ("boxes", "scores", "labels")}


@dataclass(frozen=True)
class Method:
    """One way of turning an image's proposals into detections, for :func:`detect_methods`.

    ``model`` is a key of the models mapping (G + D re-scoring) or ``None`` for the detector's
    own proposals (the baseline: its best ``opts.top_k`` boxes, or ``baseline_top_k``). Methods of
    one model share its G + D forward: they may differ only in how the outputs are
    post-processed (fusion and its parameters, NMS, box refinement, top detections).
    """

    name: str
    model: str | None
    opts: InferenceOptions
    baseline_top_k: int | None = None


# Fields of InferenceOptions that only post-process D's outputs (the rest select and crop the
# proposals, or run G + D, and must agree between the methods of one model).
_POSTPROCESS_FIELDS = (
    "score_fusion",
    "fusion_params",
    "nms_iou",
    "min_score",
    "max_detections",
    "refine_boxes",
    "class_aware",
)


def _forward_key(opts: InferenceOptions) -> dict[str, Any]:
    return {k: v for k, v in vars(opts).items() if k not in _POSTPROCESS_FIELDS}


@torch.no_grad()
def detect_methods(
    models: Mapping[str, GANVariant],
    methods: Sequence[Method],
    dataset: Any,
    progress: bool = True,
    on_image: Callable[[str, dict[str, Tensor], dict[str, dict[str, Tensor]]], None] | None = None,
) -> dict[str, dict[str, Proposals]]:
    """The evaluation loop: every method's detections on every image of a full-image dataset.

    Images are queued until their proposals fill one G + D chunk (ROIs batched across images,
    through the probe-checked BatchNorm-folded inference copy); each model runs G + D once per
    chunk and every method of that model only re-scores its outputs.

    Args:
        models: model key -> trained variant (eval mode is set here).
        methods: what to compute; names must be unique.
        dataset: items are one-image :class:`DetectionBatch` es with proposals
            (:class:`~gan_detect.data.full_image.FullImageDataset`).
        on_image: called per image with ``(image_id, target, {method: detections})``, e.g. to
            update metric states without keeping the targets.

    Returns:
        method name -> image id -> :class:`Proposals` (boxes (D, 4) xyxy, scores, labels).
    """
    from tqdm.auto import tqdm

    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    by_model: dict[str, list[Method]] = {}
    for m in methods:
        if m.model is not None:
            if m.model not in models:
                raise ValueError(f"method {m.name!r} names an unknown model {m.model!r}")
            by_model.setdefault(m.model, []).append(m)
    for key, ms in by_model.items():
        if any(_forward_key(m.opts) != _forward_key(ms[0].opts) for m in ms):
            raise ValueError(
                f"the methods of model {key!r} must share their proposal selection and G + D "
                f"options (they differ only in {', '.join(_POSTPROCESS_FIELDS)})"
            )
    chunk = min((m.opts.chunk_size for m in methods), default=256)
    dets: dict[str, dict[str, Proposals]] = {m.name: {} for m in methods}
    # Images wait here until their proposals fill one G + D chunk.
    pending: list[tuple[Tensor, dict[str, Tensor], dict[str, Tensor], str]] = []

    def flush() -> None:
        if not pending:
            return
        images, props = [p[0] for p in pending], [p[2] for p in pending]
        per_model = {
            key: discriminate_proposals(models[key], images, props, ms[0].opts, with_labels=True)
            for key, ms in by_model.items()
        }
        for n, (_, target, props_n, image_id) in enumerate(pending):
            outs: dict[str, dict[str, Tensor]] = {}
            for m in methods:
                if m.model is None:
                    top_k = m.opts.top_k if m.baseline_top_k is None else m.baseline_top_k
                    outs[m.name] = proposals_as_detections(props_n, top_k)
                    continue
                hw, boxes, det_scores, d_img, labels = per_model[m.model][n]
                d = postprocess_detections(
                    models[m.model], boxes, det_scores, d_img, hw, m.opts, det_labels=labels
                )
                outs[m.name] = {k: v.cpu() for k, v in d.items()}
            for name, d in outs.items():
                dets[name][image_id] = Proposals(
                    d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy()
                )
            if on_image is not None:
                on_image(image_id, target, outs)
        pending.clear()

    for v in models.values():
        v.eval()
    top_k = max((m.opts.top_k for m in methods if m.model is not None), default=0)
    queued_rois = 0
    for idx in tqdm(range(len(dataset)), desc="evaluate", disable=not show_progress(progress)):
        item: DetectionBatch = dataset[idx]
        if item.proposals is None:
            raise InputError(
                "evaluation needs proposals: set data.val_proposals to a detector's output"
            )
        props = item.proposals[0]
        pending.append((item.images[0], item.targets[0], props, item.image_ids[0]))
        queued_rois += min(int(props["boxes"].shape[0]), top_k)
        if queued_rois >= chunk or len(pending) >= MAX_IMAGES_PER_BATCH:
            flush()
            queued_rois = 0
    flush()
    return dets


def evaluate_baseline_vs_gan(
    variant: GANVariant | None,
    dataset: Any,
    kind: str,
    opts: InferenceOptions,
    gt: WiderGroundTruth | None = None,
    progress: bool = True,
    coco_max_dets: int = 1000,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Proposals]], dict[str, Any]]:
    """Run baseline and (when ``variant`` is given) GAN re-scoring over a full-image dataset.

    Returns:
        metrics per method (``baseline``, ``gan``), detections per method and image id, and PR
        curves per method (``coco_iou50``; for WIDER also ``wider_easy|medium|hard``).
    """
    methods = [Method("baseline", None, opts)]
    models: dict[str, GANVariant] = {}
    if variant is not None:
        methods.append(Method("gan", "gan", opts))
        models["gan"] = variant
    evals = {m.name: DetectionEvaluator(kind, gt, coco_max_dets) for m in methods}

    def update(
        image_id: str, target: dict[str, Tensor], outs: dict[str, dict[str, Tensor]]
    ) -> None:
        for name, d in outs.items():
            evals[name].update([d], [target], [image_id])

    dets = detect_methods(models, methods, dataset, progress=progress, on_image=update)
    metrics = {m: e.compute() for m, e in evals.items()}
    curves: dict[str, dict[str, Any]] = {
        m: {"coco_iou50": e.coco_pr_curve()} for m, e in evals.items()
    }
    if kind == "wider":
        from gan_detect.metrics import wider_face_pr_curves
        from gan_detect.metrics.wider_gt import fallback_ground_truth

        if gt is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                boxes = {r.image_id: r.boxes for r in dataset.records}
                gt_curves = fallback_ground_truth(
                    boxes, {r.image_id: r.ignore for r in dataset.records}
                )
        else:
            gt_curves = gt
        for m in evals:
            pr = wider_face_pr_curves(as_numpy_tree(dets[m]), gt_curves)
            curves[m].update(
                {
                    f"wider_{s}": {"precision": c[:, 0].tolist(), "recall": c[:, 1].tolist()}
                    for s, c in pr.items()
                }
            )
    return metrics, dets, curves


def format_comparison(metrics: dict[str, dict[str, float]], fusion: str | None = None) -> str:
    """A plain-text table: one row per metric, one column per method, plus the GAN - baseline
    delta; AP in percent and ``n/a`` for -1 (no objects of that size), as ``compare`` prints."""

    def pct(v: float) -> str:
        return f"{'n/a':>12s}" if v < 0 else f"{100 * v:12.2f}"

    methods = list(metrics)
    keys = [k for k in metrics[methods[0]] if k != "official"]
    head = f"{'AP (%)':12s}" + "".join(f"{m:>12s}" for m in methods)
    if len(methods) == 2:
        head += f"{'delta':>12s}"
    lines = [head]
    for k in keys:
        vals = [metrics[m][k] for m in methods]
        row = f"{k:12s}" + "".join(pct(v) for v in vals)
        if len(vals) == 2:
            delta = 100 * (vals[1] - vals[0])
            row += f"{'n/a':>12s}" if min(vals) < 0 else f"{delta:+12.2f}"
        lines.append(row)
    if fusion is not None and "gan" in metrics:
        lines.append(f"gan: the proposals re-scored with score fusion {fusion}")
    if "official" in metrics[methods[0]] and not metrics[methods[0]]["official"]:
        lines.append(
            "NOTE: WIDER settings by face height (no gt_list .mat): NOT the official protocol"
        )
    return "\n".join(lines)


def save_metrics(
    metrics: dict[str, dict[str, float]], path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"metrics": metrics}
    if extra:
        payload.update(extra)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def as_numpy_tree(dets: dict[str, Proposals]) -> dict[str, np.ndarray]:
    """image id -> (K, 5) xywh + score, the official prediction layout."""
    out = {}
    for i, p in dets.items():
        b = xyxy_to_xywh(p.boxes)
        out[i] = np.concatenate([b, p.scores[:, None].astype(np.float64)], 1)
    return out
