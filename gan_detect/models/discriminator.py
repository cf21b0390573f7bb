"""Multi-task discriminators: a timm trunk with real/fake, class and box heads
(Bai et al., CVPR 2018: VGG19 + two parallel fc; Zhang et al., ECCV 2018: + box regression).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gan_detect.models.backbone import build_backbone
from gan_detect.models.heads import AdversarialHead, BoxRegressionHead, ClassificationHead

__all__ = ["DiscriminatorOutput", "Discriminator", "MultiTaskDiscriminator"]


@dataclass
class DiscriminatorOutput:
    """Per-RoI logits and box deltas. N = number of RoIs, K = number of class logits.

    Not frozen: Lightning's `apply_to_collection` rebuilds dataclasses field by field.
    """

    adv_logits: Tensor  # (N,) real HR (> 0) vs generated SR
    cls_logits: Tensor  # (N, K) K = 1: face vs non-face (sigmoid); K = C+1: softmax, 0 = background
    box_deltas: Tensor | None = None  # (N, 4K) class-specific, (N, 4) class-agnostic, or None

    def detach(self) -> DiscriminatorOutput:
        """A copy whose tensors are cut from the autograd graph (for logging)."""
        return DiscriminatorOutput(
            adv_logits=self.adv_logits.detach(),
            cls_logits=self.cls_logits.detach(),
            box_deltas=None if self.box_deltas is None else self.box_deltas.detach(),
        )


class Discriminator(nn.Module, ABC):
    """Maps images (N, 3, H, W) in [-1, 1] (HR crops or SR outputs) to `DiscriminatorOutput`."""

    num_cls_logits: int

    @abstractmethod
    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Score `x` (N, 3, H, W) in [-1, 1]."""


class MultiTaskDiscriminator(Discriminator):
    """A timm trunk followed by parallel adversarial, classification and optional box heads.

    The input in [-1, 1] is mapped to [0, 1] and then, with `imagenet_norm`, normalised by the
    trunk's training statistics (its timm `pretrained_cfg` mean/std: ImageNet for VGG and
    ResNet), so pretrained weights see the input distribution they were trained on.

    Args:
        backbone: timm model name; "vgg19" is the paper's.
        num_cls_logits: K; 1 for face vs non-face, C + 1 (background first) for C classes.
        box_head: add a box-regression head (SOD-MTGAN).
        class_agnostic_box: one (N, 4) box for all classes instead of (N, 4K).
        pretrained, pretrained_path, remove_last_pool: see `build_backbone`.
        imagenet_norm: normalise by the trunk's mean/std after mapping to [0, 1].
    """

    mean: Tensor  # (1, 3, 1, 1) buffer
    std: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        backbone: str = "vgg19",
        num_cls_logits: int = 1,
        box_head: bool = False,
        class_agnostic_box: bool = False,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        remove_last_pool: bool = True,
        imagenet_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_cls_logits < 1:
            raise ValueError(f"num_cls_logits must be >= 1, got {num_cls_logits}")
        self.num_cls_logits = num_cls_logits
        self.imagenet_norm = imagenet_norm
        self.trunk, channels = build_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_path=pretrained_path,
            remove_last_pool=remove_last_pool,
        )
        # Non-persistent: derived from the backbone name, so checkpoints need not carry them.
        mean = torch.tensor(self.trunk.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.trunk.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.adv_head = AdversarialHead(channels)
        self.cls_head = ClassificationHead(channels, num_cls_logits)
        self.box_head = (
            BoxRegressionHead(channels, num_cls_logits, class_agnostic=class_agnostic_box)
            if box_head
            else None
        )

    def normalize(self, x: Tensor) -> Tensor:
        """[-1, 1] image -> the trunk's input space: [0, 1], then (x - mean) / std."""
        x = (x + 1.0) * 0.5
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Score `x` (N, 3, H, W) in [-1, 1]; returns logits, never probabilities."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        features = self.trunk(self.normalize(x))
        return DiscriminatorOutput(
            adv_logits=self.adv_head(features),
            cls_logits=self.cls_head(features),
            box_deltas=None if self.box_head is None else self.box_head(features),
        )
