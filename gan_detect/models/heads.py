"""Discriminator heads: real/fake, classification and box regression (Bai et al., CVPR 2018;
Zhang et al., ECCV 2018).

The paper replaces VGG19's fc6-fc8 by "two parallel fc layers" but does not say how the conv5
map becomes a vector. Each head here global-average-pools the map, then applies one linear
layer: pooling makes the heads independent of the crop size, and a 4x4x512 flatten would tie
them to 64x64 inputs.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AdversarialHead", "ClassificationHead", "BoxRegressionHead"]


class _PooledLinearHead(nn.Module):
    """Global average pooling + one linear layer; weights ~ N(0, std), bias 0."""

    def __init__(self, in_channels: int, out_features: int, init_std: float) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, out_features)
        nn.init.normal_(self.fc.weight, 0.0, init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, h, w) feature map -> (N, out_features)."""
        return self.fc(self.pool(features).flatten(1))


class AdversarialHead(_PooledLinearHead):
    """fc_GAN: one real-vs-generated logit per RoI; fc init N(0, 0.1) as in section 4.2."""

    def __init__(self, in_channels: int, init_std: float = 0.1) -> None:
        super().__init__(in_channels, 1, init_std)

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> (N,) logits (> 0 means "real HR")."""
        return super().forward(features).squeeze(1)


class ClassificationHead(_PooledLinearHead):
    """fc_clc: K class logits per RoI; fc init N(0, 0.1) as in section 4.2.

    K = 1 is face vs non-face (sigmoid); K = C + 1 is softmax with index 0 = background.
    """

    def __init__(self, in_channels: int, num_logits: int, init_std: float = 0.1) -> None:
        super().__init__(in_channels, num_logits, init_std)

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, K) logits."""
        return super().forward(features)


class BoxRegressionHead(_PooledLinearHead):
    """Fast R-CNN box deltas (dx, dy, dw, dh) per RoI; fc init N(0, 0.001) as Fast R-CNN.

    Class-specific layout (torchvision's convention): (N, 4K) with K = `num_logits` slots
    *including* the background slot 0, so `deltas.view(N, K, 4)[i, label_i]` is the box of the
    RoI's class and labels index it directly (slot 0 is never trained). With
    `class_agnostic=True`, or K = 1 (one foreground class, no background slot), the output is
    one box (N, 4) shared by all classes.
    """

    def __init__(
        self,
        in_channels: int,
        num_logits: int,
        class_agnostic: bool = False,
        init_std: float = 0.001,
    ) -> None:
        if num_logits < 1:
            raise ValueError(f"num_logits must be >= 1, got {num_logits}")
        agnostic = class_agnostic or num_logits == 1
        super().__init__(in_channels, 4 if agnostic else 4 * num_logits, init_std)
        self.class_agnostic = agnostic

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, 4K) class-specific or (N, 4) class-agnostic deltas."""
        return super().forward(features)
