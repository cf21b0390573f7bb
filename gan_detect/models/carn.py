"""CARN-M, the mobile Cascading Residual Network (Ahn, Kang, Sohn, ECCV 2018), as a generator.

Written from the paper; the module names follow the tensor names of the authors' released
weights (``sr/carn_m/carn_m.pth``, MIT), so that file loads with ``strict=True`` once the
branches of the other scales are set aside (:func:`load_carn_m_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from gan_detect.models.generator import Generator, GeneratorOutput

__all__ = ["CARNM", "CARN_M_SCALES", "load_carn_m_weights", "split_carn_m_state"]

# Scales the released CARN-M holds a branch for (one model, three up-samplers).
CARN_M_SCALES = (2, 3, 4)
# Mean RGB of DIV2K in [0, 1], the mean-shift constants of the paper's training set (the weights
# file holds them too; these values only matter for an untrained network).
_DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class _MeanShift(nn.Module):
    """A fixed 1x1 conv adding ``sign`` x the DIV2K mean per channel: (N, 3, H, W) -> same."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        bias = self.shifter.bias
        assert bias is not None
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            bias.copy_(sign * torch.tensor(_DIV2K_MEAN))
        # Constant by design (the paper's mean shift), also when G is fine-tuned.
        self.shifter.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.shifter(x)


class _ConvReLU(nn.Module):
    """``body`` = 1x1 conv (fusion of a cascade's concatenated features) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class EfficientResidualBlock(nn.Module):
    """The efficient residual unit (paper Fig. 3c): group conv 3x3, ReLU, group conv 3x3, ReLU,
    pointwise 1x1, identity add, ReLU. (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        # Not inplace: x is also the concatenation input of the cascade.
        return torch.relu(self.body(x) + x)


def _cascade(x: Tensor, units: list[nn.Module], fusions: list[nn.Module]) -> Tensor:
    """The cascading connection (paper Fig. 2): the input and every unit's output are
    concatenated and fused by a 1x1 conv before the next unit. (N, C, H, W) -> (N, C, H, W)."""
    concat, out = x, x
    for unit, fuse in zip(units, fusions, strict=True):
        concat = torch.cat([concat, unit(out)], dim=1)
        out = fuse(concat)
    return out


class CascadingBlock(nn.Module):
    """One local cascading block of CARN-M: a single efficient residual unit ``b1`` applied three
    times with shared weights (the paper's recursive sharing), fused by ``c1``-``c3``."""

    def __init__(self, channels: int, groups: int, depth: int = 3) -> None:
        super().__init__()
        self.b1 = EfficientResidualBlock(channels, groups)
        for i in range(1, depth + 1):
            self.add_module(f"c{i}", _ConvReLU(channels * (i + 1), channels))
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        fusions = [getattr(self, f"c{i}") for i in range(1, self.depth + 1)]
        return _cascade(x, [self.b1] * self.depth, fusions)


class _Upsampler(nn.Module):
    """Sub-pixel up-sampling: log2(scale) stages (x3: one stage) of group conv 3x3 to
    ``r^2 C`` channels, ReLU, PixelShuffle(r). (N, C, h, w) -> (N, C, s*h, s*w)."""

    def __init__(self, channels: int, scale: int, groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        stages = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        for r in stages:
            layers += [
                nn.Conv2d(channels, r * r * channels, 3, padding=1, groups=groups),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(r),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class CARNM(Generator):
    """CARN-M with one up-sampling branch (``scale`` 2, 3 or 4), behind the papers' interface.

    Inputs and outputs are in [-1, 1] like every generator of this package; the network itself
    works on RGB in [0, 1] (as it was trained on DIV2K), so ``forward`` maps in and out. The
    output is clamped to [-1, 1] (the range of the HR targets and of D's inputs; SR networks
    clip their output the same way before it is shown or scored; a clamped pixel passes no
    gradient in fine-tuning). ``coarse`` is None.

    Layout (paper section 3.3, CARN-M): mean shift, 3x3 entry conv 3 -> C, three cascading
    blocks cascaded again at the top level with 1x1 fusions ``c1``-``c3``, sub-pixel
    up-sampling, 3x3 exit conv C -> 3, mean added back. 64 channels and groups of 4 (the released
    weights); 294k parameters for the x4 network (415k with all three branches).
    """

    def __init__(self, scale: int = 4, channels: int = 64, groups: int = 4) -> None:
        """Build a randomly initialised CARN-M (load weights with :func:`load_carn_m_weights`).

        Raises:
            ValueError: ``scale`` not in (2, 3, 4), or ``channels`` not divisible by ``groups``.
        """
        super().__init__()
        if scale not in CARN_M_SCALES:
            raise ValueError(f"CARN-M has x2, x3 and x4 branches; scale {scale} is not one")
        if channels < 1 or groups < 1 or channels % groups:
            raise ValueError(
                f"channels ({channels}) must be a positive multiple of groups ({groups})"
            )
        self.scale = scale
        self.sub_mean = _MeanShift(-1.0)
        self.add_mean = _MeanShift(1.0)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        # The top-level cascade: three blocks, fused on the concatenation of 2, 3, 4 C channels.
        self.b1 = CascadingBlock(channels, groups)
        self.b2 = CascadingBlock(channels, groups)
        self.b3 = CascadingBlock(channels, groups)
        self.c1 = _ConvReLU(2 * channels, channels)
        self.c2 = _ConvReLU(3 * channels, channels)
        self.c3 = _ConvReLU(4 * channels, channels)
        # A ModuleDict keyed up<scale>, as the released file names its branches.
        self.upsample = nn.ModuleDict({f"up{scale}": _Upsampler(channels, scale, groups)})
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, lr: Tensor) -> GeneratorOutput:
        """Super-resolve ``lr`` (N, 3, h, w) in [-1, 1] to ``sr`` (N, 3, s*h, s*w) in [-1, 1]."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must have shape (N, 3, h, w), got {tuple(lr.shape)}")
        x = self.entry(self.sub_mean((lr + 1.0) * 0.5))
        x = _cascade(x, [self.b1, self.b2, self.b3], [self.c1, self.c2, self.c3])
        x = self.exit(self.upsample[f"up{self.scale}"](x))
        sr01 = self.add_mean(x)
        return GeneratorOutput(sr=(sr01 * 2.0 - 1.0).clamp(-1.0, 1.0))


def split_carn_m_state(
    state: Mapping[str, Tensor], scale: int
) -> tuple[dict[str, Tensor], list[str]]:
    """The entries of a released CARN-M state dict that a ``scale`` network uses, and the names
    set aside: exactly those of the other scales' up-samplers (``upsample.up<k>.*``, k != scale).
    Every other key, expected or not, stays in the first dict, so ``strict=True`` judges it."""
    other = tuple(f"upsample.up{k}." for k in CARN_M_SCALES if k != scale)
    kept = {k: v for k, v in state.items() if not k.startswith(other)}
    return kept, sorted(k for k in state if k.startswith(other))


def load_carn_m_weights(model: CARNM, path: str | Path) -> list[str]:
    """Load the released weights into ``model`` with ``strict=True`` (``weights_only``: the file
    cannot run code).

    Returns:
        the keys set aside (the other scales' up-samplers).

    Raises:
        FileNotFoundError: ``path`` does not exist (named).
        RuntimeError: the file is not a CARN-M state dict for this layout (missing, unexpected or
            mis-shaped keys, as torch lists them), prefixed with the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CARN-M weights not found: {path}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # pickle and zip errors have no common base class
        raise RuntimeError(f"{path}: not a readable state dict ({err})") from None
    if not isinstance(state, Mapping):
        raise RuntimeError(f"{path}: holds a {type(state).__name__}, not a CARN-M state dict")
    kept, ignored = split_carn_m_state(state, model.scale)
    try:
        model.load_state_dict(kept, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{path}: not CARN-M weights: {' '.join(str(err).split())}") from None
    return ignored
