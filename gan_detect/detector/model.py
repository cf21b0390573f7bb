"""The baseline proposal detector: a torchvision FCOS / RetinaNet / Faster R-CNN on a timm FPN.

Both papers re-score a baseline detector's proposals (MB-FCN on ResNet-50 for WIDER FACE, Bai et
al. CVPR 2018; Faster R-CNN / FPN for COCO, Zhang et al. ECCV 2018). This file builds a comparable
detector from maintained parts, with the small-object recipe of docs/design.md §4: a stride-4 (P2)
pyramid level, anchors (or FCOS size ranges) that start at ``smallest_size`` pixels, a low score
threshold and a large per-image detection budget.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

Arch = Literal["fcos", "retinanet", "faster_rcnn"]
ARCHS: tuple[str, ...] = ("fcos", "retinanet", "faster_rcnn")


class TimmFPN(nn.Module):
    """A timm ``features_only`` trunk followed by torchvision's ``FeaturePyramidNetwork``.

    Returns an ordered dict of (B, ``out_channels``, H/s, W/s) maps, finest first: keys
    ``"0".."3"`` for P2..P5 (``"0".."2"`` for P3..P5 without P2), then ``"p6"``, ``"p7"``
    (FCOS / RetinaNet) or ``"pool"`` (Faster R-CNN).

    Args:
        backbone: timm model name (any model with ``features_only`` support).
        strides: input reductions to take from the trunk, e.g. (4, 8, 16, 32).
        out_channels: FPN width.
        extra: ``"p6p7"`` (two stride-2 convs on P5) or ``"pool"`` (max-pool of the last level).
        pretrained: load ImageNet weights through timm (download, or ``pretrained_path``).
        pretrained_path: local weights file for offline clusters; implies ``pretrained``.
        frozen_bn: replace the trunk's BatchNorm by frozen statistics (right for pretrained
            weights and detection's small batches; wrong from scratch, where it removes
            normalisation altogether). ``None``: frozen iff weights are loaded.
    """

    def __init__(
        self,
        backbone: str,
        strides: tuple[int, ...],
        out_channels: int,
        extra: Literal["p6p7", "pool"],
        pretrained: bool = False,
        pretrained_path: str | None = None,
        frozen_bn: bool | None = None,
    ) -> None:
        super().__init__()
        kwargs: dict[str, Any] = {}
        if pretrained_path is not None:
            from gan_detect.utils.checkpoints import read_checkpoint

            # The package's safe load first (as models/backbone.py does): a crafted or broken
            # file fails with its name; timm's loader then filters the classifier as usual.
            read_checkpoint(pretrained_path)
            pretrained = True
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained_path}
        # All default stages are built once; the stride-2 output is a free by-product (no layer
        # follows the stride-32 stage, so nothing is left without a gradient under DDP).
        body: Any = timm.create_model(backbone, features_only=True, pretrained=pretrained, **kwargs)
        reductions = list(body.feature_info.reduction())
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ValueError(
                f"backbone {backbone!r} has feature strides {reductions}; strides {missing} "
                f"needed by the detector are missing"
            )
        self.indices = [reductions.index(s) for s in strides]
        channels = [body.feature_info.channels()[i] for i in self.indices]
        if frozen_bn if frozen_bn is not None else pretrained:
            body = timm.layers.freeze_batch_norm_2d(body)
        self.body: nn.Module = body
        extra_block = (
            LastLevelP6P7(out_channels, out_channels) if extra == "p6p7" else LastLevelMaxPool()
        )
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra_block)
        self.out_channels = out_channels
        extra_strides = (2, 4) if extra == "p6p7" else (2,)
        self.strides = tuple(strides) + tuple(strides[-1] * k for k in extra_strides)
        cfg = getattr(body, "pretrained_cfg", {}) or {}
        # The normalisation the trunk was trained with; torchvision's transform applies it.
        self.image_mean = list(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.image_std = list(cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """(B, 3, H, W) normalised images -> ordered FPN maps (see the class docstring)."""
        feats = self.body(x)
        picked = OrderedDict((str(k), feats[i]) for k, i in enumerate(self.indices))
        return self.fpn(picked)


def level_sizes(smallest_size: float, num_levels: int) -> list[float]:
    """Per-level base size in px: ``smallest_size`` at the finest level, doubling per level."""
    return [float(smallest_size) * 2**i for i in range(num_levels)]


def build_detector(
    arch: Arch,
    backbone: str = "resnet50",
    num_classes: int = 1,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    p2: bool = True,
    fpn_channels: int = 256,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    smallest_size: int = 16,
    score_thresh: float = 0.02,
    nms_thresh: float = 0.4,
    detections_per_img: int = 750,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    frozen_bn: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a torchvision detection model on a timm backbone with an FPN.

    Labels: the model is built with ``C + 1`` classes and predicts label values ``1..C``, the
    project's convention (0 = background), for all three architectures. Faster R-CNN needs the
    background class; FCOS and RetinaNet use one sigmoid per class, so their class-0 output is
    only ever a negative and their predictions keep the dataset's label values. (Checked in
    ``tests/detector/test_detector.py``.)

    Ignore regions: torchvision detectors have no ignore support, so callers drop ignored boxes
    (WIDER "invalid" faces, COCO crowds) from training targets (:func:`training_targets`); anchors
    on them then count as background.

    Small objects: ``p2`` adds the stride-4 level. RetinaNet anchors are ``smallest_size * 2**i``
    at level i (3 octave scales each, as in its paper); Faster R-CNN's are the same sizes with one
    scale. For FCOS, whose anchor size sets the regression unit, the level's size range (the
    maximum point-to-side distance in ``(4 a, 8 a)``) and the centre-sampling radius (``1.5 a``),
    the finest level gets ``a = smallest_size * stride / 16`` (= 4 at P2 for 16 px), doubling
    per level; the finest level takes every object up to ``8 a`` px half-size.

    Args:
        arch: ``"fcos"``, ``"retinanet"`` or ``"faster_rcnn"``.
        backbone: timm model name; ``"test_resnet"`` / ``"resnet18"`` for tests.
        num_classes: C, object classes without background (1 for faces, 80 for COCO).
        pretrained, pretrained_path: ImageNet weights for the trunk (see :class:`TimmFPN`).
        p2: include the stride-4 level.
        fpn_channels: FPN and head width.
        min_size: shorter image side after resizing; a tuple draws one per training image
            (multi-scale training), evaluation uses the last.
        max_size: cap on the longer side after resizing.
        smallest_size: smallest anchor size in px (FCOS: see above).
        score_thresh, nms_thresh, detections_per_img: post-processing (WIDER convention:
            0.02, 0.4, 750); class-wise NMS.
        aspect_ratios: anchor height/width ratios (RetinaNet, Faster R-CNN).
        frozen_bn: see :class:`TimmFPN`.
        **kwargs: passed to the torchvision constructor (e.g. ``rpn_post_nms_top_n_test``,
            ``topk_candidates``, ``center_sampling_radius``).

    Returns:
        The torchvision model: ``model(images, targets)`` returns a loss dict in train mode,
        ``model(images)`` a list of ``{"boxes", "scores", "labels"}`` in eval mode. Images are
        (3, H, W) floats in [0, 1]; boxes are xyxy pixels of the input image.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; expected one of {ARCHS}")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}; expected >= 1 (background not counted)")
    if smallest_size <= 0:
        raise ValueError(f"smallest_size={smallest_size}; expected > 0")
    if arch == "fcos" and fpn_channels % 32:
        raise ValueError(
            f"fpn_channels={fpn_channels}; FCOS's GroupNorm(32) needs a multiple of 32"
        )
    strides = (4, 8, 16, 32) if p2 else (8, 16, 32)
    body = TimmFPN(
        backbone,
        strides,
        fpn_channels,
        extra="pool" if arch == "faster_rcnn" else "p6p7",
        pretrained=pretrained,
        pretrained_path=pretrained_path,
        frozen_bn=frozen_bn,
    )
    num_levels = len(body.strides)
    sizes = tuple(min_size) if isinstance(min_size, (list, tuple)) else (int(min_size),)
    common: dict[str, Any] = {
        "num_classes": num_classes + 1,
        "min_size": sizes,
        "max_size": max_size,
        "image_mean": body.image_mean,
        "image_std": body.image_std,
    }
    ratios = tuple(float(r) for r in aspect_ratios)
    if arch == "fcos":
        base = level_sizes(smallest_size * strides[0] / 16, num_levels)
        anchors = AnchorGenerator(tuple((s,) for s in base), ((1.0,),) * num_levels)
        fcos = FCOS(
            body,
            anchor_generator=anchors,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            **common,
            **kwargs,
        )
        _silence_background(fcos.head.classification_head.cls_logits, num_classes + 1)
        return fcos
    base = level_sizes(smallest_size, num_levels)
    if arch == "retinanet":
        octaves = tuple(tuple(s * 2 ** (k / 3) for k in range(3)) for s in base)
        retina = RetinaNet(
            body,
            anchor_generator=AnchorGenerator(octaves, (ratios,) * num_levels),
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            **common,
            **kwargs,
        )
        _silence_background(retina.head.classification_head.cls_logits, num_classes + 1)
        return retina
    # Faster R-CNN pools RoIs from the strided levels only (not "pool"), as torchvision's FPN does.
    names = [str(k) for k in range(len(strides))]
    kwargs.setdefault("rpn_pre_nms_top_n_test", max(1000, detections_per_img))
    kwargs.setdefault("rpn_post_nms_top_n_test", max(1000, detections_per_img))
    return FasterRCNN(
        body,
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in base), (ratios,) * num_levels),
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        box_score_thresh=score_thresh,
        box_nms_thresh=nms_thresh,
        box_detections_per_img=detections_per_img,
        **common,
        **kwargs,
    )


def _silence_background(cls_logits: nn.Conv2d, num_outputs: int) -> None:
    """Start the unused class-0 sigmoid of FCOS / RetinaNet at p ~ 5e-5.

    Its focal loss only ever sees negatives; from the usual prior (0.01) it would otherwise emit
    label-0 boxes above a 0.02 score threshold until it has learned to stay silent.
    """
    assert cls_logits.bias is not None
    with torch.no_grad():
        cls_logits.bias.view(-1, num_outputs)[:, 0] = -10.0


def set_postprocess(
    model: nn.Module,
    score_thresh: float | None = None,
    nms_thresh: float | None = None,
    detections_per_img: int | None = None,
) -> None:
    """Change a built detector's post-processing in place (``None`` keeps the current value)."""
    # Faster R-CNN keeps these on its RoI heads; FCOS and RetinaNet on the model itself.
    target = getattr(model, "roi_heads", model)
    for name, value in (
        ("score_thresh", score_thresh),
        ("nms_thresh", nms_thresh),
        ("detections_per_img", detections_per_img),
    ):
        if value is not None:
            if not hasattr(target, name):
                raise TypeError(f"{type(model).__name__} has no post-processing field {name!r}")
            setattr(target, name, value)


def get_postprocess(model: nn.Module) -> tuple[float, float, int]:
    """(score_thresh, nms_thresh, detections_per_img) of a built detector."""
    target: Any = getattr(model, "roi_heads", model)
    return float(target.score_thresh), float(target.nms_thresh), int(target.detections_per_img)


def training_targets(
    targets: list[dict[str, Tensor]], min_box_size: float = 1.0
) -> list[dict[str, Tensor]]:
    """Targets as torchvision expects them: ignored and degenerate boxes dropped.

    Args:
        targets: dicts with ``boxes`` (M, 4) xyxy px, ``labels`` (M,) int64 1..C and optionally
            ``ignore`` (M,) bool.
        min_box_size: boxes narrower or shorter than this (px) are dropped; torchvision raises on
            zero-size boxes, which WIDER FACE contains.

    Returns:
        dicts with ``boxes`` (M', 4) float32 and ``labels`` (M',) int64.
    """
    out = []
    for t in targets:
        boxes = t["boxes"].float().reshape(-1, 4)
        keep = ((boxes[:, 2:] - boxes[:, :2]) >= min_box_size).all(dim=1)
        if "ignore" in t:
            keep &= ~t["ignore"].bool()
        out.append({"boxes": boxes[keep], "labels": t["labels"].long()[keep]})
    return out


def feature_strides(model: nn.Module, image_size: int = 256) -> list[int]:
    """Measured input/output stride of each pyramid level, finest first (a model sanity check)."""
    body: nn.Module = model.backbone  # type: ignore[assignment]
    with torch.no_grad():
        feats = body(torch.zeros(1, 3, image_size, image_size, device=_device(model)))
    return [image_size // f.shape[-1] for f in feats.values()]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
