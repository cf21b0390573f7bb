"""Full-image inference: proposals -> LR crops -> G -> D -> re-scored (and refined) detections.

The paper feeds 600 ROIs per image to the GAN (Bai et al., CVPR 2018, section 4.2); boxes are
re-scored and (for SOD-MTGAN) moved by the variant's :meth:`~GANVariant.candidates`, which owns
what D's heads mean; score fusion and class-wise NMS follow here, the same for every variant.
The LR crops of several images go through G and D together in chunks of ``chunk_size`` (the
convolutions stay large when few proposals per image survive); the crops of one call are built in
full first, so memory grows with images x ``top_k`` x the LR crop size (small: 3 x 16 x 16 floats
per ROI at the default sizes).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from gan_detect.config import EvalConfig, ExperimentConfig
from gan_detect.config.schema import SCORE_FUSIONS
from gan_detect.data.roi import clip_proposals, crop_lr_for_inference
from gan_detect.infer.score_fusion import (
    FITTED_FUSIONS,
    check_fusion_params,
    fuse_scores,
    proposal_sizes,
)
from gan_detect.models.discriminator import DiscriminatorOutput
from gan_detect.models.fusion import checked_inference_copy, is_compiled
from gan_detect.utils.errors import InputError
from gan_detect.variants import GANVariant


@dataclass
class InferenceOptions:
    """How proposals become detections (all primitives, shared by evaluate and predict)."""

    top_k: int = 600
    lr_size: int = 16  # LR crop side; hr_size / scale of the training ROIs
    context: float = 1.0  # must match the ROI mining context
    chunk_size: int = 256  # ROIs per G+D forward
    # d_only | geometric_mean | learned | size_gated (infer/score_fusion.py); the fitted ones
    # read ``fusion_params`` (a run's score_fusion.json).
    score_fusion: str = "d_only"
    fusion_params: dict[str, Any] | None = None
    nms_iou: float = 0.4  # class-wise NMS after re-scoring (RetinaFace's WIDER setting)
    min_score: float = 0.001
    max_detections: int = 750
    refine_boxes: bool = True  # apply D's box deltas when the variant has a box head
    # Multi-class variants: each proposal keeps the detector's class and is scored by D's
    # probability of that class (with D's background probability and whether D's top class
    # agrees as extra inputs of the learned fusion). False: the papers' rule, D's own classes
    # (one candidate per class). No effect for one class (faces).
    class_aware: bool = True
    # Proposals scoring below this skip G + D (dropped); 0 re-scores every one of the top_k.
    rescore_min_score: float = 0.0
    # Speed options of the G + D forward, applied to an inference copy of G and D (the model
    # passed in is never changed; benchmark.py's infer and image kinds measure them):
    # fold_bn folds eval BatchNorm into the convolutions; channels_last stores weights and
    # activations NHWC (None: on the CPU, where it pays, not on CUDA, unmeasured); both move
    # scores by ~1e-6. bf16 autocasts (scores move ~1e-4; off by default). Their speed-ups are
    # in benchmarks/README.md.
    fold_bn: bool = True
    channels_last: bool | None = None
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(
                f"score_fusion must be one of {', '.join(SCORE_FUSIONS)}, got {self.score_fusion!r}"
            )
        if self.score_fusion in FITTED_FUSIONS and self.fusion_params is None:
            raise InputError(
                f"score_fusion={self.score_fusion} needs a fitted combiner: the run's "
                "score_fusion.json, written when the GAN is trained with "
                "data.fusion_holdout_fraction > 0"
            )
        if self.score_fusion in FITTED_FUSIONS:
            check_fusion_params(self.fusion_params, self.score_fusion, "fusion_params")


@torch.no_grad()
def refine_detections(
    variant: GANVariant,
    image: Tensor,
    proposals: dict[str, Tensor],
    opts: InferenceOptions,
) -> dict[str, Tensor]:
    """Re-score one image's proposals with the GAN (``refine_detections_batch`` of one image).

    Args:
        variant: a trained variant (eval mode is set here).
        image: (3, H, W) float in [0, 1].
        proposals: ``boxes`` (K, 4) xyxy px, ``scores`` (K,), ``labels`` (K,); boxes are
            clipped to the image and those under 1 px a side dropped, as in ROI mining.

    Returns:
        ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) int64 1..C, sorted by score.
    """
    return refine_detections_batch(variant, [image], [proposals], opts)[0]


def select_proposals(
    proposals: dict[str, Tensor],
    opts: InferenceOptions,
    device: torch.device,
    image_size: tuple[int, int] | None = None,
    with_labels: bool = False,
) -> tuple[Tensor, ...]:
    """The proposals worth a G+D forward: clipped to the (H, W) ``image_size`` by the training
    border rule (when given), then the ``top_k`` best scoring at least ``rescore_min_score``.

    Returns:
        boxes (K', 4) and detector scores (K',) on ``device``; with ``with_labels`` also the
        detector's labels (K',) (1 where the proposals carry none).
    """
    boxes = proposals["boxes"].float().to(device)
    det_scores = proposals["scores"].float().to(device)
    labels = proposals.get("labels")
    det_labels = (
        torch.ones(len(det_scores), dtype=torch.int64, device=device)
        if labels is None
        else labels.long().to(device)
    )
    # The training border rule (clip to the image, drop boxes under 1 px a side), so a proposal
    # crossing the edge gives the crop (and box-delta reference) it would give in ROI mining.
    if image_size is not None:
        boxes, kept = clip_proposals(boxes, image_size)
        det_scores, det_labels = det_scores[kept], det_labels[kept]
    if opts.rescore_min_score > 0:
        keep = det_scores >= opts.rescore_min_score
        boxes, det_scores, det_labels = boxes[keep], det_scores[keep], det_labels[keep]
    if boxes.shape[0] > opts.top_k:
        order = torch.argsort(det_scores, descending=True, stable=True)[: opts.top_k]
        boxes, det_scores, det_labels = boxes[order], det_scores[order], det_labels[order]
    return (boxes, det_scores, det_labels) if with_labels else (boxes, det_scores)


@torch.no_grad()
def refine_detections_batch(
    variant: GANVariant,
    images: list[Tensor],
    proposals: list[dict[str, Tensor]],
    opts: InferenceOptions,
) -> list[dict[str, Tensor]]:
    """Re-score several images' proposals: their LR crops go through G + D together.

    Filling every ``chunk_size`` forward across image boundaries keeps the convolutions large
    when few proposals per image survive ``top_k`` / ``rescore_min_score``; the variant's
    ``candidates`` (what the heads mean), score fusion and NMS stay per image.

    Args:
        images: I tensors (3, H_i, W_i) float in [0, 1].
        proposals: I dicts as in ``refine_detections``.

    Returns:
        I dicts ``boxes`` (D_i, 4), ``scores`` (D_i,), ``labels`` (D_i,), sorted by score.
    """
    raw = discriminate_proposals(variant, images, proposals, opts, with_labels=True)
    return [
        postprocess_detections(variant, boxes, det_scores, d_img, hw, opts, det_labels=labels)
        for hw, boxes, det_scores, d_img, labels in raw
    ]


@torch.no_grad()
def discriminate_proposals(
    variant: GANVariant,
    images: list[Tensor],
    proposals: list[dict[str, Tensor]],
    opts: InferenceOptions,
    with_labels: bool = False,
) -> list[tuple[Any, ...]]:
    """D's outputs on each image's selected proposals (before the variant's candidates, fusion
    and NMS): per image ``((H, W), boxes (K, 4), detector scores (K,), D output or None)``, and
    with ``with_labels`` the detector's labels (K,) last."""
    if len(images) != len(proposals):
        raise ValueError(f"got {len(images)} images but {len(proposals)} proposal sets")
    variant.eval()
    device = next(variant.parameters()).device
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    selected = [
        select_proposals(p, opts, device, hw, with_labels=True)
        for p, hw in zip(proposals, sizes, strict=True)
    ]
    crops = [
        crop_lr_for_inference(
            image.to(device), boxes, opts.lr_size, opts.context, scale=variant.scale
        )
        for image, (boxes, _, _) in zip(images, selected, strict=True)
        if boxes.shape[0] > 0
    ]
    outs: list[DiscriminatorOutput] = []
    if crops:
        lr_all = torch.cat(crops)
        fast = inference_variant(variant, opts, probe=lr_all[:4])
        for start in range(0, lr_all.shape[0], opts.chunk_size):
            with torch.autocast(device.type, torch.bfloat16, enabled=opts.bf16):
                outs.append(fast.discriminate_sr(lr_all[start : start + opts.chunk_size]))
    d_all = _cat_outputs(outs)
    results: list[tuple[Any, ...]] = []
    start = 0
    for hw, (boxes, det_scores, det_labels) in zip(sizes, selected, strict=True):
        k = int(boxes.shape[0])
        d_img = None if d_all is None or k == 0 else _slice_output(d_all, start, start + k)
        start += k
        out = (hw, boxes, det_scores, d_img)
        results.append((*out, det_labels) if with_labels else out)
    return results


# variant -> (fingerprint of its weights and the options, the inference copy built for them).
_INFERENCE_COPIES: weakref.WeakKeyDictionary[GANVariant, tuple[tuple, GANVariant]] = (
    weakref.WeakKeyDictionary()
)


def _wants_channels_last(opts: InferenceOptions, device: torch.device) -> bool:
    return device.type == "cpu" if opts.channels_last is None else bool(opts.channels_last)


def _fingerprint(variant: GANVariant) -> tuple:
    """Changes whenever a weight or buffer is replaced or updated in place (optimiser steps and
    ``load_state_dict`` bump the tensors' version counters)."""
    return tuple((t.data_ptr(), t._version) for t in (*variant.parameters(), *variant.buffers()))


def inference_variant(
    variant: GANVariant, opts: InferenceOptions, probe: Tensor | None = None
) -> GANVariant:
    """The variant to run G + D with: ``variant`` itself, or a cached eval-mode copy with
    BatchNorm folded (``opts.fold_bn``) and channels-last weights (``opts.channels_last``).

    The copy is rebuilt when the weights change (a validation after more training). It is
    checked once against ``variant`` on ``probe`` (a few LR crops (N, 3, h, w)); a copy whose
    logits differ by more than 0.1 % of their scale is discarded with a warning, as is a model
    that cannot be copied, and ``variant`` runs unchanged; a model compiled in place
    (``trainer.compile``) runs as it is, silently.
    """
    device = next(variant.parameters()).device
    channels_last = _wants_channels_last(opts, device)
    if not (opts.fold_bn or channels_last) or is_compiled(variant):
        return variant  # nothing asked, or compiled in place (trainer.compile): run as it is
    key = (opts.fold_bn, channels_last, device, _fingerprint(variant))
    cached = _INFERENCE_COPIES.get(variant)
    if cached is not None and cached[0] == key:
        return cached[1]
    fast = _build_inference_copy(variant, opts.fold_bn, channels_last, probe)
    _INFERENCE_COPIES[variant] = (key, fast)
    return fast


def _build_inference_copy(
    variant: GANVariant, fold_bn: bool, channels_last: bool, probe: Tensor | None
) -> GANVariant:
    def outputs_of(net: nn.Module) -> list[Tensor]:
        out: DiscriminatorOutput = net.discriminate_sr(probe)  # type: ignore[operator]
        box = [] if out.box_deltas is None else [out.box_deltas]
        return [out.adv_logits, out.cls_logits, *box]

    checked = probe is not None and probe.shape[0] > 0
    fast = checked_inference_copy(
        variant, outputs_of if checked else None, "inference", fold_bn, channels_last
    )
    return cast(GANVariant, fast)


def _cat_outputs(outs: list[DiscriminatorOutput]) -> DiscriminatorOutput | None:
    """Concatenate chunked D outputs along the ROI axis (float32: bf16 autocast is undone)."""
    if not outs:
        return None
    boxes = [o.box_deltas for o in outs]
    return DiscriminatorOutput(
        torch.cat([o.adv_logits.float() for o in outs]),
        torch.cat([o.cls_logits.float() for o in outs]),
        None if boxes[0] is None else torch.cat([b.float() for b in boxes if b is not None]),
    )


def _slice_output(out: DiscriminatorOutput, a: int, b: int) -> DiscriminatorOutput:
    """ROIs a..b of a D output."""
    box = None if out.box_deltas is None else out.box_deltas[a:b]
    return DiscriminatorOutput(out.adv_logits[a:b], out.cls_logits[a:b], box)


def class_aware_candidates(
    cand_boxes: Tensor, cand_scores: Tensor, det_labels: Tensor
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """One candidate per proposal, of the detector's class.

    Args:
        cand_boxes: (K, C, 4) per-class boxes; cand_scores: (K, C) D's class probabilities
            (softmax over C + 1 with background dropped); det_labels: (K,) classes 1..C.

    Returns:
        boxes (K, 1, 4), D's probability of the detector's class (K, 1), labels (K, 1), and the
        learned fusion's extra inputs ``bg`` (K,) D's background probability and ``agree`` (K,)
        1.0 where D's top class is the detector's.
    """
    k, c = cand_scores.shape
    det_labels = det_labels.long().to(cand_scores.device)
    if k and (int(det_labels.min()) < 1 or int(det_labels.max()) > c):
        raise ValueError(
            f"class-aware re-scoring: the detector's labels span {int(det_labels.min())}.."
            f"{int(det_labels.max())} but D scores classes 1..{c} (a detector trained on other "
            "classes? evaluate.class_aware=false uses D's own classes)"
        )
    idx = det_labels - 1
    rows = torch.arange(k, device=cand_scores.device)
    p = cand_scores[rows, idx]
    bg = (1.0 - cand_scores.float().sum(1)).clamp(0.0, 1.0)
    agree = (cand_scores.argmax(1) == idx).float()
    return (
        cand_boxes[rows, idx][:, None, :],
        p[:, None],
        det_labels[:, None],
        {"bg": bg, "agree": agree},
    )


def postprocess_detections(
    variant: GANVariant,
    boxes: Tensor,
    det_scores: Tensor,
    d_out: DiscriminatorOutput | None,
    image_size: tuple[int, int],
    opts: InferenceOptions,
    det_labels: Tensor | None = None,
) -> dict[str, Tensor]:
    """One image: D's outputs on its K ROIs -> the variant's candidates -> fusion -> NMS.

    ``det_labels`` (K,): the detector's classes; with ``opts.class_aware`` and a multi-class D,
    each proposal keeps its class (:func:`class_aware_candidates`)."""
    device = boxes.device
    empty = {
        "boxes": boxes.new_zeros((0, 4)),
        "scores": boxes.new_zeros((0,)),
        "labels": torch.zeros(0, dtype=torch.int64, device=device),
    }
    if boxes.shape[0] == 0 or d_out is None:
        return empty
    # The variant decides what its heads mean: (K, K', 4) boxes, (K, K') scores and labels.
    cand_boxes, cand_scores, labels = variant.candidates(
        d_out, boxes, image_size, opts.refine_boxes, opts.context
    )
    extra = None
    if opts.class_aware and det_labels is not None and cand_scores.shape[1] > 1:
        cand_boxes, cand_scores, labels, extra = class_aware_candidates(
            cand_boxes, cand_scores, det_labels
        )
    cls_boxes, labels = cand_boxes.float(), labels.long()
    cls_scores = fuse_scores(
        opts.score_fusion,
        det_scores,
        cand_scores.float(),
        proposal_sizes(boxes),
        opts.fusion_params,
        extra=extra,
    )
    flat_scores, flat_boxes, flat_labels = (
        cls_scores.reshape(-1),
        cls_boxes.reshape(-1, 4),
        labels.reshape(-1),
    )
    keep = flat_scores >= opts.min_score
    flat_scores, flat_boxes, flat_labels = flat_scores[keep], flat_boxes[keep], flat_labels[keep]
    if flat_scores.numel() == 0:
        return empty
    keep = batched_nms(flat_boxes, flat_scores, flat_labels, opts.nms_iou)[: opts.max_detections]
    return {"boxes": flat_boxes[keep], "scores": flat_scores[keep], "labels": flat_labels[keep]}


def resolve_refine(setting: bool | str, fusion: dict[str, Any] | None) -> bool:
    """``evaluate.refine_boxes`` as a bool: ``auto`` reads the decision the fusion fit wrote
    (``score_fusion.json``'s ``refine_boxes.use``, :func:`~gan_detect.infer.fusion_fit.
    decide_refinement`); without one (no held-out images, or a file from before the option)
    the papers' default, refine."""
    if setting == "auto":
        decision = (fusion or {}).get("refine_boxes")
        return bool(decision.get("use", True)) if isinstance(decision, dict) else True
    return bool(setting)


def inference_options(
    cfg: ExperimentConfig,
    eval_cfg: EvalConfig | None = None,
    fusion: dict[str, Any] | None = None,
) -> InferenceOptions:
    """The one source of inference settings (validation, ``evaluate``, exported pipelines).

    LR size and context come from ``cfg``'s ROI mining (what G was trained on); top-K, fusion,
    NMS and box refinement from ``eval_cfg`` (default: ``cfg.evaluate``); ``fusion``: the run's
    fitted combiners (``score_fusion.json``: ``{"learned": {...}, "size_gated": {...}}``).
    """
    e, d = eval_cfg or cfg.evaluate, cfg.data
    return InferenceOptions(
        top_k=e.top_k,
        lr_size=int(getattr(d, "hr_size", 64)) // int(cfg.variant.scale),
        context=float(getattr(d, "context", 1.0)),
        chunk_size=e.chunk_size,
        score_fusion=e.score_fusion,
        fusion_params=(fusion or {}).get(e.score_fusion),
        nms_iou=e.nms_iou,
        max_detections=e.max_detections,
        refine_boxes=resolve_refine(e.refine_boxes, fusion),
        class_aware=bool(getattr(e, "class_aware", True)),
        rescore_min_score=e.rescore_min_score,
        fold_bn=e.fold_bn,
        channels_last=e.channels_last,
        bf16=e.bf16,
    )
