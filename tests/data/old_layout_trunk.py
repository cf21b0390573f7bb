"""The discriminator trunk of ``old_layout_gan.ckpt``: test_resnet's design at a few channels.

timm's own ``test_resnet`` weighs 1.5 MB, which would make the committed checkpoint ten times
larger than it needs to be. This registers ``old_layout_tiny_resnet`` with timm; both the writer
(``write_old_layout_gan.py``) and ``tests/test_old_checkpoints.py`` import it before building
the GAN, so the checkpoint's ``variant.backbone`` names a model timm can build.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, ResNet

NAME = "old_layout_tiny_resnet"


def old_layout_tiny_resnet(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """test_resnet's layout (deep stem, one block a stage, avg-down) at 8-16 channels."""
    args: dict[str, Any] = dict(
        block=BasicBlock, layers=(1, 1, 1, 1), stem_width=8, stem_type="deep", avg_down=True,
        channels=(8, 8, 16, 16),
    )  # fmt: skip
    kw = {**args, **kwargs}
    # An explicit (default) pretrained config: there are no weights, and timm warns without one.
    if kw.get("pretrained_cfg") is None:
        kw["pretrained_cfg"] = {"num_classes": 1000}
    return build_model_with_cfg(ResNet, NAME, pretrained, **kw)  # type: ignore[no-any-return]


if NAME not in timm.list_models(NAME):  # importing twice must not register twice
    register_model(old_layout_tiny_resnet)
