"""The variants, one file per paper, each registered by ``@register_variant`` next to its class.

Importing this package imports the built-ins, so the registry is complete without scans; a
variant in a user's own file registers when that file is imported (``plugins`` in the config).
"""

from __future__ import annotations

from gan_detect.config.sections import GANVariantConfig, SODMTGANConfig, TinyFaceConfig
from gan_detect.variants.base import GANVariant
from gan_detect.variants.bicubic import BicubicControl
from gan_detect.variants.registry import (
    VARIANTS,
    build_variant,
    get_variant_class,
    register_variant,
)
from gan_detect.variants.sod_mtgan import SODMTGAN
from gan_detect.variants.tiny_face import TinyFaceGAN

__all__ = [
    "VARIANTS",
    "BicubicControl",
    "GANVariant",
    "GANVariantConfig",
    "SODMTGAN",
    "SODMTGANConfig",
    "TinyFaceConfig",
    "TinyFaceGAN",
    "build_variant",
    "get_variant_class",
    "register_variant",
]
