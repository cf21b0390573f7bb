"""Checks ``fit`` runs before it imports torch: what would otherwise fail late, fails first.

The order is the order a user fixes things in: the data folder, then the pretrained weights.
Without these, a missing folder is reported only after the networks are built, and a pretrained
trunk on a machine without internet spends most of a minute in the model hub's retries.
"""

from __future__ import annotations

import os
from pathlib import Path

from gan_detect.config import ExperimentConfig
from gan_detect.config.sections import GANVariantConfig
from gan_detect.config.validate import ConfigError
from gan_detect.data.paths import carn_m_weights_path
from gan_detect.utils.weights import (
    HF_HOST,
    TORCHVISION_PREFIX,
    cached_locally,
    pretrained_problem,
    reachable,
)


def check_data_root(cfg: ExperimentConfig) -> None:
    """Raise ``FileNotFoundError`` naming ``data.root`` when that folder does not exist."""
    root = getattr(cfg.data, "root", None)
    if root and not Path(str(root)).is_dir():
        raise FileNotFoundError(
            f"data.root={root}: no such folder (set data.root=PATH to the dataset's folder)"
        )


def check_pretrained(cfg: ExperimentConfig, probe_timeout: float = 1.5) -> None:
    """Raise ``ConfigError`` with the ways out when pretrained weights cannot be had here.

    Cached timm weights with the hub unreachable: ``HF_HUB_OFFLINE=1`` is set, so the hub
    client reads the cache at once instead of retrying the network first.
    """
    section = "detector" if cfg.task == "detector" else "variant"
    sec = getattr(cfg, section, None)
    if (
        sec is None
        or not getattr(sec, "pretrained", False)
        or getattr(sec, "pretrained_path", None)
    ):
        return
    backbone = str(sec.backbone)
    if cached_locally(backbone):
        if not backbone.startswith(TORCHVISION_PREFIX) and not reachable(HF_HOST, probe_timeout):
            os.environ["HF_HUB_OFFLINE"] = "1"
        return
    problem = pretrained_problem(section, backbone, probe_timeout)
    if problem is not None:
        raise ConfigError(problem)


def check_before_fit(cfg: ExperimentConfig) -> None:
    """The data folder, then the pretrained weights (see the module docstring)."""
    if cfg.task == "detector" and cfg.detector is not None and cfg.detector.arch == "retinaface":
        return  # refused by fit_detector with its own message
    check_data_root(cfg)
    check_pretrained(cfg)
    check_generator_weights(cfg)


def check_generator_weights(cfg: ExperimentConfig) -> None:
    """Raise ``InputError`` naming ``variant.g_weights`` when CARN-M's weights file is missing
    (the bicubic control has no generator: nothing to check)."""
    v = cfg.variant
    if (
        cfg.task == "gan"
        and isinstance(v, GANVariantConfig)
        and v.name != "bicubic"
        and v.generator == "carn_m"
        and v.g_pretrained
    ):
        carn_m_weights_path(v.g_weights)
