"""Super-resolution generator of the tiny-face GAN (Bai et al., CVPR 2018, Table 1).

Holds the `GeneratorOutput` dataclass, the `Generator` interface and `SRGenerator`
(an up-sampling sub-network followed by an optional refinement sub-network).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GeneratorOutput", "Generator", "SRGenerator", "ResidualBlock"]

_OUTPUT_ACTIVATIONS = ("tanh", "none")
# The skip in pre-tanh space must not hit atanh(+-1) = +-inf.
_ATANH_CLAMP = 1.0 - 1e-3


@dataclass
class GeneratorOutput:
    """Super-resolved RoIs. N = number of RoIs, s = scale factor.

    Not frozen: Lightning's `apply_to_collection` rebuilds dataclasses field by field.
    """

    sr: Tensor  # (N, 3, s*h, s*w) final output, range [-1, 1] with tanh output activation
    coarse: Tensor | None = None  # (N, 3, s*h, s*w) up-sampling sub-network output, or None

    def detach(self) -> GeneratorOutput:
        """A copy whose tensors are cut from the autograd graph (for the D step)."""
        return GeneratorOutput(
            sr=self.sr.detach(), coarse=None if self.coarse is None else self.coarse.detach()
        )


class Generator(nn.Module, ABC):
    """Maps low-resolution RoIs (N, 3, h, w) in [-1, 1] to `GeneratorOutput` at `scale` x size."""

    scale: int

    @abstractmethod
    def forward(self, lr: Tensor) -> GeneratorOutput:
        """Super-resolve `lr` (N, 3, h, w) to (N, 3, scale*h, scale*w)."""


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    # No conv bias: the BatchNorm right after it has its own shift, a bias would be redundant.
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """`num_convs` 3x3 conv-BN(-ReLU) layers with an identity skip, as in SRGAN.

    The last conv has BN but no ReLU before the addition (and none after it), so the block
    can represent the identity; every other conv is conv-BN-ReLU. Shape-preserving:
    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, num_convs: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(_conv_bn_relu(channels, channels, relu=i < num_convs - 1) for i in range(num_convs))
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRGenerator(Generator):
    """Two-stage SR generator of Table 1: up-sampling sub-network, then refinement sub-network.

    Up-sampling (G1): conv 3->C, `num_res_blocks` residual blocks, conv C->C,
    log2(scale) de-convs (k3, s2) -> `upsample_channels`, 1x1 conv -> 3 = `coarse`.
    Refinement (G2): conv 3->C, residual blocks, conv C->C, two convs -> `refine_channels`,
    3x3 conv -> 3 = `sr`. BatchNorm + ReLU follow every conv except each sub-network's last
    (DCGAN habit the paper cites). Table 1 prints stride 3 for the second de-conv; with two
    de-convs making 4x that must be a typo for 2, so every de-conv here is stride 2.

    Residual blocks: Table 1 writes "conv x8" and its caption calls it "a residual block which
    has 8 convolutional layers", while Fig. 2 draws 6 blocks. "x8" is conventional notation for
    "repeated 8 times", and the paper says G follows SRGAN, whose blocks are two convs with an
    identity skip; so the default is 8 blocks of 2 convs (16 convs per sub-network). The other
    readings are one argument away: `num_res_blocks=6` (Fig. 2) or `num_res_blocks=1,
    convs_per_block=8` (caption taken literally).

    Output activation: the paper does not say. `"tanh"` (default) keeps both outputs in
    [-1, 1], the range of the inputs and HR targets; `"none"` leaves them linear. It is applied
    to the outputs of both sub-networks, since both are images supervised against HR.

    `bicubic_skip=True` (NOT in the paper) adds the bicubic up-sampling of `lr` to the coarse
    output, and the coarse image to the refined one (both in pre-activation space), so both
    sub-networks learn residuals: a quick-start option for short CPU schedules. With tanh
    the skip is added before the activation as atanh(bicubic), so a zero residual reproduces the
    bicubic image exactly while the output stays in (-1, 1).

    Weights ~ N(0, 0.02), biases 0 (paper section 4.2); convs followed by BN have no bias.
    """

    def __init__(
        self,
        scale: int = 4,
        channels: int = 64,
        num_res_blocks: int = 8,
        convs_per_block: int = 2,
        upsample_channels: int = 256,
        refine_channels: int = 256,
        refinement: bool = True,
        output_activation: str = "tanh",
        bicubic_skip: bool = False,
    ) -> None:
        """Build the generator; every size argument is a channel or layer count.

        Raises:
            ValueError: `scale` not a power of 2 >= 2, a non-positive width, a negative block
                count, or an unknown `output_activation`.
        """
        super().__init__()
        if scale < 2 or scale & (scale - 1) != 0:
            raise ValueError(f"scale must be a power of 2 >= 2, got {scale}")
        for arg, value in (
            ("channels", channels),
            ("convs_per_block", convs_per_block),
            ("upsample_channels", upsample_channels),
            ("refine_channels", refine_channels),
        ):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        if num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {num_res_blocks}")
        if output_activation not in _OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {_OUTPUT_ACTIVATIONS}, got {output_activation!r}"
            )
        self.scale = scale
        self.refinement = refinement
        self.output_activation = output_activation
        self.bicubic_skip = bicubic_skip

        upsample: list[nn.Module] = [_conv_bn_relu(3, channels)]
        upsample += [ResidualBlock(channels, convs_per_block) for _ in range(num_res_blocks)]
        upsample.append(_conv_bn_relu(channels, channels))
        in_ch = channels
        for _ in range(int(math.log2(scale))):
            # k3 s2 p1 with output_padding 1 doubles H and W exactly.
            upsample += [
                nn.ConvTranspose2d(in_ch, upsample_channels, 3, 2, 1, output_padding=1, bias=False),
                nn.BatchNorm2d(upsample_channels),
                nn.ReLU(inplace=True),
            ]
            in_ch = upsample_channels
        upsample.append(nn.Conv2d(in_ch, 3, 1))
        self.upsample = nn.Sequential(*upsample)

        self.refine: nn.Sequential | None = None
        if refinement:
            refine: list[nn.Module] = [_conv_bn_relu(3, channels)]
            refine += [ResidualBlock(channels, convs_per_block) for _ in range(num_res_blocks)]
            refine += [
                _conv_bn_relu(channels, channels),
                _conv_bn_relu(channels, refine_channels),
                _conv_bn_relu(refine_channels, refine_channels),
                nn.Conv2d(refine_channels, 3, 3, padding=1),
            ]
            self.refine = nn.Sequential(*refine)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv and de-conv weights ~ N(0, 0.02), biases 0; BatchNorm keeps (1, 0)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _activate(self, x: Tensor) -> Tensor:
        return torch.tanh(x) if self.output_activation == "tanh" else x

    def forward(self, lr: Tensor) -> GeneratorOutput:
        """Super-resolve `lr` (N, 3, h, w) in [-1, 1] to (N, 3, s*h, s*w).

        Returns:
            `GeneratorOutput(sr, coarse)`; `coarse` is None when `refinement=False`, and `sr`
            is then the up-sampling output.
        """
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must have shape (N, 3, h, w), got {tuple(lr.shape)}")
        pre = self.upsample(lr)
        if self.bicubic_skip:
            bicubic = F.interpolate(
                lr, scale_factor=self.scale, mode="bicubic", align_corners=False
            )
            if self.output_activation == "tanh":
                # Bicubic overshoots [-1, 1] at edges; clamp keeps atanh finite.
                bicubic = torch.atanh(bicubic.clamp(-_ATANH_CLAMP, _ATANH_CLAMP))
            pre = pre + bicubic
        coarse = self._activate(pre)
        if self.refine is None:
            return GeneratorOutput(sr=coarse, coarse=None)
        refined = self.refine(coarse)
        if self.bicubic_skip:
            # Residual refinement as well: a zero refinement output passes the coarse image on.
            refined = refined + pre
        return GeneratorOutput(sr=self._activate(refined), coarse=coarse)
