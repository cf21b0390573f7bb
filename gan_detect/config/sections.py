"""Config sections of the pluggable parts: each GAN variant, each DataModule, the detector.

They live here, not next to the code they configure, so that loading and validating a config (and
``gan-detect config show`` / ``--help``) never imports torch. A variant file sets
``Config = <its class here>``; :data:`VARIANT_CONFIGS` and :data:`DATA_CONFIGS` are the registries
the schema is built from, kept in step with the variant and DataModule registries by their
decorators (a test checks that they match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gan_detect.config.schema import DataConfig, VariantConfig
from gan_detect.utils.registry import Registry

# variant.g_step_d_norm values (see GANVariantConfig).
G_STEP_D_NORMS = ("batch", "running")
# detector.arch values that name a built-in pretrained proposer (detector/builtin.py), not a
# trainable detector; here so that the CLI can test for them without importing torch.
BUILTIN_DETECTORS = ("retinaface", "fastestdet", "yolox_nano")
# The built-in COCO proposers: ONNX files given by detector.weights, sliced by tile_sizes.
BUILTIN_COCO_DETECTORS = ("fastestdet", "yolox_nano")
# variant.generator values: the papers' Table 1 network (trained from scratch) or CARN-M
# (Ahn et al., ECCV 2018; the authors' DIV2K weights, models/carn.py).
GENERATORS = ("paper", "carn_m")


@dataclass
class GANVariantConfig(VariantConfig):
    """Options shared by both papers' variants (generator, discriminator, loss weights).

    Defaults follow Bai et al. (CVPR 2018): Table 1 generator, VGG19 discriminator, alpha = 1e-3
    (adversarial) and beta = 1e-2 (classification) in the generator loss, equal weights in the
    discriminator loss (Eq. 9).
    """

    # Which generator: "paper" (Table 1, the g_channels..g_bicubic_skip keys below) or "carn_m"
    # (pretrained CARN-M, 64 channels, fixed size; the Table 1 keys are then unused).
    generator: str = "paper"
    # carn_m: its weights file; null = <shared data>/sr/carn_m/carn_m.pth. Unused with "paper".
    g_weights: str | None = None
    # carn_m: load the weights (false: the CARN-M network from a random init, trained here).
    g_pretrained: bool = True
    # A fixed SR front end: G gets no optimiser, no G step, no G losses; D still trains. Needs a
    # pretrained generator (generator=carn_m, g_pretrained=true); refused otherwise.
    g_frozen: bool = False
    # Generator (Table 1). "x8" is read as 8 residual blocks of 2 convs (SRGAN lineage).
    g_channels: int = 64
    g_res_blocks: int = 8
    g_convs_per_block: int = 2
    g_upsample_channels: int = 256
    g_refine_channels: int = 256
    g_refinement: bool = True
    g_output_activation: str = "tanh"
    # Not in the paper: add bicubic(LR) to the coarse output (residual learning) for short schedules.
    g_bicubic_skip: bool = False
    # Discriminator trunk: any timm model name.
    backbone: str = "vgg19"
    pretrained: bool = False
    pretrained_path: str | None = None
    remove_last_pool: bool = True
    # Generator-loss weights (Eq. 8). pixel_weight scales both MSE terms of Eq. 4.
    pixel_weight: float = 1.0
    adv_weight: float = 1e-3
    cls_weight: float = 1e-2
    # Discriminator-loss weights (Eq. 9: equal).
    d_adv_weight: float = 1.0
    d_cls_weight: float = 1.0
    # Eq. 5 prints log(1 - D(G(x))) (saturating); SRGAN [17] and common practice minimise
    # -log D(G(x)), same fixed point, usable gradients when D wins early. Default: non_saturating.
    adv_form: str = "non_saturating"
    # Pixel loss only on ROIs whose source box side (min of w, h) is at least this many pixels:
    # a tiny object's HR crop is an upsampled blur (docs/design.md, D5). 0 = all ROIs.
    pixel_loss_min_size: float = 0.0
    # Pixel loss on background ROIs too (the paper trains G on faces and non-faces alike).
    pixel_loss_on_background: bool = True
    # How D normalises in the G step (papers silent; matters for BatchNorm trunks, not VGG19).
    # "batch": D in train mode on cat(HR, SR) as in the D step (same real+fake batch statistics),
    # SR half kept, D's running statistics restored afterwards; costs one extra D forward on HR.
    # "running": D in eval mode (running statistics; cheaper, but G then optimises against a
    # normalisation D never trained with). Either way the G step leaves D's buffers untouched.
    g_step_d_norm: str = "batch"


@dataclass
class TinyFaceConfig(GANVariantConfig):
    """Tiny-face GAN: VGG19 discriminator with two parallel heads (real/SR and face/non-face)."""

    name: str = "tiny_face"


@dataclass
class SODMTGANConfig(GANVariantConfig):
    """SOD-MTGAN: D with real/SR, (C+1)-way class and box-regression heads.

    Our choices where the paper is unreadable: ResNet-50 trunk (the papers' detectors are
    ResNet-based); class-specific deltas (Fast R-CNN); the generator's task weights equal the
    tiny-face beta (1e-2) so both papers weigh task terms alike; smooth-L1 box loss.
    """

    name: str = "sod_mtgan"
    backbone: str = "resnet50"
    box_weight: float = 1e-2
    d_box_weight: float = 1.0
    class_agnostic_box: bool = False


@dataclass
class BicubicConfig(GANVariantConfig):
    """The shared options (the ``g_*`` and generator-loss weights are unused: there is no G).

    ``generator``, ``g_weights``, ``g_pretrained`` and ``g_frozen`` are accepted and ignored, so a
    control row stacked on a CARN-M experiment stays the bicubic control.

    With several classes D gets SOD-MTGAN's box head, weighted by ``d_box_weight``.
    """

    name: str = "bicubic"
    d_box_weight: float = 1.0
    class_agnostic_box: bool = False


@dataclass
class RoiDataConfig(DataConfig):
    """Options shared by the WIDER FACE and COCO DataModules (ROI mining: docs/design.md, D5-D6)."""

    train_split: str = "train"
    val_split: str = "val"
    # Override the official annotation paths (e.g. the subset files in shared/data).
    train_annotation_file: str | None = None
    val_annotation_file: str | None = None
    train_image_dir: str | None = None
    val_image_dir: str | None = None
    # Detector output used as proposals (COCO results JSON or a WIDER txt tree). None: ground-truth
    # jitter proposals (an approximation of a detector, see data/roi.py).
    train_proposals: str | None = None
    val_proposals: str | None = None
    top_k: int = 600
    # Images of a split that the proposals file does not list (a COCO results file holds only
    # images with detections): "error" (the default: a partial file is usually a mistake),
    # "jitter" (ground-truth jitter proposals for them, printed with their count) or "none" (no
    # proposals: only their ground-truth ROIs, with include_gt).
    missing_proposals: Literal["error", "jitter", "none"] = "error"
    max_train_images: int | None = None
    max_val_images: int | None = None
    # ROI mining.
    hr_size: int = 64
    context: float = 1.0
    rois_per_image: int = 32
    positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.0
    # A proposal that would be background but whose best overlap is an ignore region (WIDER
    # invalid face, COCO crowd) at IoU >= this is never a negative (label -1): 0.3, the RPN
    # negative threshold (Faster R-CNN), since such a crop shows much of an unlabelled object.
    ignore_neg_iou: float = 0.3
    include_gt: bool = True
    hflip: bool = False
    cache_dir: str = "data_cache"
    # Validation: SR metrics on val ROIs, and/or detection metrics on full val images.
    val_rois: bool = True
    val_detection: bool = False
    # Full-image batch size (detection validation, detector training, proposals).
    val_batch_size: int = 2
    # Share of the train images kept out of GAN training (fixed by a hash of the image id) to fit
    # evaluate.score_fusion=learned / size_gated on proposals D never trained on. 0: none.
    fusion_holdout_fraction: float = 0.0


@dataclass
class WiderFaceDataConfig(RoiDataConfig):
    """WIDER FACE in its official layout (``WIDER_{split}/images``, ``wider_face_split/``)."""

    name: str = "wider_face"
    root: str = "${oc.env:WIDER_ROOT,data/widerface}"
    num_classes: int = 1
    # Restrict to these events (folder names such as "0--Parade"); None = all.
    train_events: list[str] | None = None
    val_events: list[str] | None = None
    # Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat (official AP settings).
    gt_dir: str | None = None


@dataclass
class CocoDataConfig(RoiDataConfig):
    """COCO in its official layout (``annotations/instances_<split>.json``, ``<split>/``)."""

    name: str = "coco"
    root: str = "${oc.env:COCO_ROOT,data/coco}"
    num_classes: int = 80
    train_split: str = "train2017"
    val_split: str = "val2017"


@dataclass
class DetectorConfig:
    """Every setting of the baseline detector, with its default."""

    # Built in, pretrained, not trained (detector/builtin.py): "retinaface" (faces,
    # detector/retinaface.py), "fastestdet" and "yolox_nano" (COCO, detector/fastestdet.py and
    # detector/yolox_nano.py; ONNX files found by `weights`).
    arch: Literal["fcos", "retinanet", "faster_rcnn", "retinaface", "fastestdet", "yolox_nano"] = (
        "fcos"
    )
    backbone: str = "resnet50"  # timm name; "test_resnet" / "resnet18" in tests
    num_classes: int = 1  # C, without background
    pretrained: bool = False  # true in the detector presets, false in tests and the demo
    pretrained_path: str | None = None  # local weights file (offline clusters)
    # arch=fastestdet / yolox_nano: the .onnx file or its folder (licence beside it); null:
    # the shared data's copy (coco/val2017_person/fastestdet/, coco/detectors/yolox_nano/).
    weights: str | None = None
    # arch=fastestdet / yolox_nano: also detect on overlapping square tiles of these sides, px
    # (sliced inference; [] = the whole image only; benchmarks/README.md, `--bench recall`), and
    # their overlap.
    tile_sizes: list[int] = field(default_factory=list)
    tile_overlap: float = 0.2
    # Drop tile boxes touching an inner tile edge (parts of objects a tile cuts; they outscore
    # the whole-image boxes of large objects): yolox_nano's chosen setting with tile_sizes=[256].
    tile_drop_cut: bool = False
    frozen_bn: bool | None = None  # None: frozen iff pretrained weights are loaded
    p2: bool = True  # stride-4 pyramid level (small objects)
    fpn_channels: int = 256
    smallest_size: int = 16  # smallest anchor (FCOS: size unit at the finest level), px
    # Shorter side after resizing; several values = multi-scale training (eval uses the last).
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    score_thresh: float = 0.02  # WIDER FACE convention: low threshold, NMS 0.4, up to 750 boxes
    nms_thresh: float = 0.4
    detections_per_img: int = 750
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01  # SGD at batch 16 (FCOS / RetinaNet 1x); scale linearly with batch size
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500  # linear warm-up, in optimiser steps (batches)
    milestones: list[int] = field(default_factory=lambda: [8, 11])  # epochs (1x = 12 epochs)
    gamma: float = 0.1
    eval_metric: Literal["wider", "coco"] = "wider"
    recall_iou: float = 0.5  # val/recall_50: objects found by any detection at this IoU
    recall_min_size: float = 16.0  # ... counting objects with sqrt(w * h) >= this, px


# name -> config class; the same keys as ``variants.VARIANTS`` and ``data.DATAMODULES``. The
# built-ins are listed here so that validating a config needs no torch; a variant or DataModule
# defined anywhere else adds its Config when it registers (``@register_variant`` /
# ``@register_datamodule``).
VARIANT_CONFIGS: Registry[type[GANVariantConfig]] = Registry("variant")
for _cfg in (TinyFaceConfig, SODMTGANConfig, BicubicConfig):
    VARIANT_CONFIGS[_cfg.name] = _cfg

DATA_CONFIGS: Registry[type[RoiDataConfig]] = Registry("datamodule")
for _dcfg in (WiderFaceDataConfig, CocoDataConfig):
    DATA_CONFIGS[_dcfg.name] = _dcfg
