"""Feature trunks for the discriminators (VGG19 in Bai et al., CVPR 2018).

`build_backbone` wraps `timm.create_model(..., features_only=True)` so that the trunk returns
its last feature map as one tensor and carries its width and input statistics. Names starting
with ``tv_`` (``tv_mobilenet_v2``) are torchvision models with torchvision's own ImageNet weights,
which load offline from a package (see `gan_detect.models.pretrained`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from gan_detect.utils.errors import InputError

__all__ = ["FeatureTrunk", "TORCHVISION_PREFIX", "build_backbone"]

TORCHVISION_PREFIX = "tv_"


class FeatureTrunk(nn.Module):
    """A timm feature extractor reduced to its last feature map.

    Attributes:
        out_channels: width C of the output map.
        reduction: input-to-output stride as built (32 for VGG/ResNet, 16 for VGG without
            its last pool).
        mean, std: per-channel input statistics (RGB, [0, 1] scale) the weights were trained on,
            from the model's timm `pretrained_cfg` (ImageNet for most models).
    """

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        reduction: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        features_only: bool,
    ) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.reduction = reduction
        self.mean = mean
        self.std = std
        self._features_only = features_only

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised image -> (N, C, H / reduction, W / reduction) features."""
        if self._features_only:
            return self.body(x)[-1]
        features: Tensor = self.body.forward_features(x)  # type: ignore[operator]
        return features


def _drop_trailing_pool(body: nn.Module) -> bool:
    """Replace the last child of a timm FeatureListNet by Identity if it is a max-pool.

    timm's VGG feature extractor ends at `features.<last>`, the max-pool after conv5 (its
    reported reduction is 32), so that pool is the final module run. Returns whether one was
    removed.
    """
    children = list(body.named_children())
    if not children:
        return False
    name, last = children[-1]
    if isinstance(last, (nn.MaxPool2d, nn.AvgPool2d)):
        setattr(body, name, nn.Identity())
        return True
    return False


class _SequentialTrunk(FeatureTrunk):
    """A torchvision ``features`` stack: its output is the last feature map."""

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised image -> (N, C, H / reduction, W / reduction) features."""
        out: Tensor = self.body(x)
        return out


def _drop_last_stride(body: nn.Module) -> bool:
    """Make the last stride-2 convolution stride 1 (same weights): 2x the output resolution.

    The torchvision analogue of removing VGG19's conv5 pool: MobileNetV2 has no pool to drop, its
    last down-sampling is a strided depthwise conv.
    """
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    if not convs:
        return False
    convs[-1].stride = (1, 1)
    return True


def _torchvision_trunk(
    name: str, pretrained: bool, pretrained_path: str | None, remove_last_pool: bool
) -> tuple[FeatureTrunk, int]:
    from gan_detect.models.pretrained import load_imagenet_model
    from gan_detect.utils.checkpoints import building_from, read_checkpoint

    model = load_imagenet_model(name, pretrained=pretrained and pretrained_path is None)
    if pretrained_path is not None:
        if not Path(pretrained_path).is_file():
            raise FileNotFoundError(f"pretrained_path {pretrained_path!r} does not exist")
        with building_from(pretrained_path):
            model.load_state_dict(read_checkpoint(pretrained_path))
    body: nn.Module = model.features  # type: ignore[assignment]
    out_channels = int(
        next(m for m in reversed(list(body.modules())) if isinstance(m, nn.Conv2d)).out_channels
    )
    reduction = 32
    if remove_last_pool and _drop_last_stride(body):
        reduction //= 2
    # The ImageNet statistics torchvision's classification weights were trained with (their
    # weights' transforms() hold the same; read from there only when weights are available).
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    trunk = _SequentialTrunk(
        body,
        out_channels=out_channels,
        reduction=reduction,
        mean=mean,
        std=std,
        features_only=False,
    )
    return trunk, out_channels


def build_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    remove_last_pool: bool = True,
) -> tuple[FeatureTrunk, int]:
    """Create a timm trunk that returns its last feature map.

    Args:
        name: any timm model name ("vgg19", "vgg11", "resnet18", "test_resnet", ...), or
            ``tv_<torchvision model>`` ("tv_mobilenet_v2").
        pretrained: load the released weights (timm: internet or a warm HF cache;
            torchvision: its download, or offline from the package that ships the file).
        pretrained_path: a local checkpoint of the full timm model (state dict, or a dict with
            "state_dict"/"model"), for offline clusters. When set, the weights come from this
            file whatever `pretrained` says.
        remove_last_pool: drop a max-pool that ends the trunk, as the paper does with VGG19's
            conv5 pool so small objects keep 2x the resolution (64x64 input -> 4x4, not 2x2).
            Trunks whose last down-sampling is a strided conv (ResNet) have no such pool and
            are left unchanged.

    Returns:
        `(trunk, out_channels)`; `trunk(x)` maps (N, 3, H, W) to (N, out_channels, h, w).

    Raises:
        ValueError: `name` is not a timm model (nor a known torchvision one).
        RuntimeError: torchvision weights asked for but not found (names the package).
        FileNotFoundError: `pretrained_path` does not exist.
    """
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_trunk(
            name[len(TORCHVISION_PREFIX) :], pretrained, pretrained_path, remove_last_pool
        )
    if not timm.is_model(name):
        raise InputError(f"backbone {name!r} is not a timm model name (see timm.list_models())")
    kwargs: dict[str, Any] = {"pretrained": pretrained}
    if pretrained_path is not None:
        if not Path(pretrained_path).is_file():
            raise FileNotFoundError(f"pretrained_path {pretrained_path!r} does not exist")
        from gan_detect.utils.checkpoints import read_checkpoint

        # A safe load first: timm's own would end a crafted file in "retry with
        # weights_only=False" without naming it; this names the file (and runs nothing).
        read_checkpoint(pretrained_path)
        # timm's own loader then filters the classifier and adapts the weights as usual.
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_path)}}

    features_only = True
    body: Any  # timm models expose feature_info / forward_features dynamically
    try:
        body = timm.create_model(name, features_only=True, out_indices=(-1,), **kwargs)
        out_channels = int(body.feature_info.channels()[-1])
        reduction = int(body.feature_info.reduction()[-1])
    except RuntimeError:
        # A few timm families lack feature extraction; their forward_features is the trunk.
        features_only = False
        body = timm.create_model(name, num_classes=0, global_pool="", **kwargs)
        out_channels = int(body.num_features)
        info = getattr(body, "feature_info", None)
        reduction = int(info[-1]["reduction"]) if info else 32

    if remove_last_pool and features_only and _drop_trailing_pool(body):
        reduction //= 2
    cfg = getattr(body, "pretrained_cfg", None) or {}
    trunk = FeatureTrunk(
        body,
        out_channels=out_channels,
        reduction=reduction,
        mean=tuple(cfg.get("mean", IMAGENET_DEFAULT_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_DEFAULT_STD)),
        features_only=features_only,
    )
    return trunk, out_channels
