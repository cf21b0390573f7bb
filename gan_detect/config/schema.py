"""Structured-config schema (OmegaConf): the dataclasses hold every default.

Variant and dataset configs subclass :class:`VariantConfig` / :class:`DataConfig`; they live in
``config/sections.py`` with the detector's section, not beside the code they configure, so that
loading and validating a config never imports torch. :class:`ExperimentConfig` holds one run's
sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gan_detect.utils.registry import Registry

# Score fusions of the re-scoring step, name -> what it does (gan_detect/infer/score_fusion.py
# implements each with @register_fusion, which adds a plugin's fusion here too). The built-ins
# are listed here, not there, so that the config is checked against them without torch.
SCORE_FUSIONS: Registry[str] = Registry("score fusion")
SCORE_FUSIONS["d_only"] = "D's probability replaces the detector's score (the papers)"
SCORE_FUSIONS["geometric_mean"] = "sqrt(D's probability x the detector's score)"
SCORE_FUSIONS["learned"] = "logistic regression per size band, fitted on held-out proposals"
SCORE_FUSIONS["size_gated"] = "D's probability below a fitted size, the detector's above"
# What evaluate.split (and propose's split) may name: the data's train or val split.
EVAL_SPLITS: tuple[str, ...] = ("train", "val")


@dataclass
class VariantConfig:
    """Fields shared by every GAN variant; subclasses add their own and set ``name``."""

    name: str = "???"
    # Super-resolution factor of G; the DataModules make LR = HR / scale (the paper: 4).
    scale: int = 4


@dataclass
class DataConfig:
    """Fields shared by every DataModule; subclasses add their own and set ``name``."""

    name: str = "???"
    root: str = "???"
    num_classes: int = 1
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class OptimConfig:
    """Adam for G and D, stepped per batch; learning-rate schedule stepped per epoch.

    The paper (Bai et al., CVPR 2018, section 4.2) trains 3 epochs at 1e-4, then 3 at 1e-5, Adam
    beta1 = 0.9; beta2 is unstated, 0.999 (Adam's default) is used.
    """

    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    # MultiStep schedule in GAN epochs (counted after ``warmup_epochs``; the schedulers do not
    # step during warm-up): lr *= gamma at each milestone (paper: x0.1 after 3 GAN epochs).
    milestones: list[int] = field(default_factory=lambda: [3])
    gamma: float = 0.1
    # Epochs of pixel-loss-only generator training before the GAN phase (the paper pre-trains G
    # with MSE; its length is not given).
    warmup_epochs: int = 0
    # Gradient clipping through LightningModule.clip_gradients; 0 disables.
    grad_clip_norm: float = 0.0


@dataclass
class TrainerConfig:
    """Arguments forwarded to ``lightning.Trainer`` (a documented subset)."""

    max_epochs: int = 6
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    val_check_interval: Any = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    deterministic: bool = False
    # Per-submodule DDP escape hatch (docs/design.md, D3).
    find_unused_parameters: bool = False
    # DDP re-broadcasts rank 0's BatchNorm buffers before each synchronised forward.
    broadcast_buffers: bool = True
    # BatchNorm statistics over all ranks' samples (Lightning converts BN to SyncBatchNorm).
    sync_batchnorm: bool = False
    # Speed: channels-last weights and torch.compile (in place) for G and D.
    channels_last: bool = False
    compile: bool = False
    # Also write last.ckpt every n training batches (0: epoch ends and SIGTERM only).
    checkpoint_every_n_batches: int = 0


@dataclass
class LoggerConfig:
    """Where metrics go. W&B runs offline unless ``mode=online``; ``$WANDB_MODE``, when set, wins
    (``disabled`` writes nothing)."""

    kind: Literal["wandb", "csv", "tensorboard", "none"] = "csv"
    project: str = "gan-detect"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    tags: list[str] = field(default_factory=list)
    # Image grid LR | bicubic | SR | HR logged at each validation (rows).
    num_val_images: int = 8


@dataclass
class EvalConfig:
    """Options of ``gan-detect evaluate`` and of detection metrics during validation."""

    split: str = "val"
    top_k: int = 600
    # d_only | geometric_mean | learned | size_gated (SCORE_FUSIONS above).
    score_fusion: str = "d_only"
    # Paired image-bootstrap resamples for the interval of every baseline-vs-GAN difference
    # (gan_detect/metrics/bootstrap.py); 0 turns the intervals off.
    bootstrap: int = 1000
    nms_iou: float = 0.4
    max_detections: int = 750
    chunk_size: int = 256
    # Apply D's box-regression deltas (variants with a box head): true (the papers), false, or
    # auto: decided when the score fusion is fit, on the held-out train images, by whether the
    # refined boxes overlap their ground truth better than the detector's own boxes (mean IoU of
    # the proposals at IoU >= 0.5); a run without held-out images refines. Why: on real COCO a
    # box head trained ~780 steps moved YOLOX-nano's boxes away from the objects (AP75 19.8 ->
    # 7.7, docs/results.md), and the held-out images can tell before the test set does.
    refine_boxes: bool | str = "auto"
    # Multi-class variants: keep each proposal's detector class and score it by D's probability
    # of that class (the learned fusion also sees D's background probability and whether D's top
    # class agrees); false: the papers' rule, D's own top classes. No effect for faces.
    class_aware: bool = True
    # Proposals scoring below this are dropped before G + D (0: re-score all top_k); see
    # benchmarks/README.md (`--bench budget`) for AP against proposals kept.
    rescore_min_score: float = 0.0
    # G + D forward at inference, on a copy of G and D (the trained model is never changed):
    # BatchNorm folded into the convolutions; channels-last weights (null: on the CPU only,
    # where it pays; CUDA is unmeasured); bf16 autocast. Scores move ~1e-6 with the first two,
    # ~1e-4 with bf16. Speed of each: benchmarks/README.md (`--bench infer`, `--bench image`).
    fold_bn: bool = True
    channels_last: bool | None = None
    bf16: bool = False
    device: str = "auto"
    # Detection max per image for COCO AP (>= 1000 for dense scenes; WIDER has 709 faces in one).
    coco_max_dets: int = 1000
    # `propose`: keep detector boxes scoring at least this (0.02 = the WIDER FACE convention;
    # lower gives the GAN more candidates from a weak detector).
    proposal_score_thresh: float = 0.02


@dataclass
class ExperimentConfig:
    """One experiment: variant + data + optimiser + trainer + logger."""

    variant: VariantConfig = field(default_factory=VariantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    # "gan": train a GAN variant on ROIs; "detector": train the baseline proposal detector.
    task: str = "gan"
    # Modules (dotted names or .py paths) imported before validation: a variant, DataModule,
    # detector or score fusion the user registers in a file of their own (config/plugins.py).
    plugins: list[str] = field(default_factory=list)
    # DetectorConfig (gan_detect/detector/module.py); typed by the schema builder, which avoids
    # an import cycle here.
    detector: Any = None
    seed: int = 0
    # Run directory: checkpoints, config.yaml, logs, metrics.
    output_dir: str = "runs/${variant.name}_${data.name}"
    # Checkpoint to resume from: a path, "auto" (latest in output_dir/checkpoints) or null.
    resume: str | None = None
    # A fresh (non-resume) fit refuses an output_dir holding an old run; true deletes that run's
    # checkpoints and logs first.
    overwrite: bool = False
    # Checkpoint used by validate / evaluate.
    ckpt: str | None = None
