"""The variant table: one entry per paper. Adding a variant = one file + one line here."""

from __future__ import annotations

from gan_detect.config import VariantConfig
from gan_detect.config.sections import GANVariantConfig, SODMTGANConfig, TinyFaceConfig
from gan_detect.variants.base import GANVariant
from gan_detect.variants.bicubic import BicubicControl
from gan_detect.variants.sod_mtgan import SODMTGAN
from gan_detect.variants.tiny_face import TinyFaceGAN

VARIANTS: dict[str, type[GANVariant]] = {
    "tiny_face": TinyFaceGAN,
    "sod_mtgan": SODMTGAN,
    "bicubic": BicubicControl,  # the "no GAN" control: bicubic SR, D only
}


def get_variant_class(name: str) -> type[GANVariant]:
    """Look a variant up by name; a KeyError lists the valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; valid: {sorted(VARIANTS)}") from None


def build_variant(cfg: VariantConfig, num_classes: int) -> GANVariant:
    """``VARIANTS[cfg.name].build(cfg, num_classes)``; ``cfg`` must be that variant's Config."""
    cls = get_variant_class(cfg.name)
    if not isinstance(cfg, cls.Config):
        raise TypeError(
            f"variant {cfg.name!r} needs a {cls.Config.__name__}, got {type(cfg).__name__}"
        )
    return cls.build(cfg, num_classes)


__all__ = [
    "VARIANTS",
    "GANVariant",
    "GANVariantConfig",
    "SODMTGAN",
    "SODMTGANConfig",
    "TinyFaceConfig",
    "TinyFaceGAN",
    "build_variant",
    "get_variant_class",
]
