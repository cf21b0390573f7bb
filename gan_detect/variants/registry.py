"""The variant registry: ``@register_variant("name")`` on the class, as timm's ``register_model``.

Registering a variant also registers its Config in the torch-free config layer
(``config.sections.VARIANT_CONFIGS``), so ``variant.name=<it>`` validates wherever the class is
defined: a built-in in this package, or a user's own file named in the config's ``plugins``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gan_detect.config.schema import VariantConfig
from gan_detect.config.sections import VARIANT_CONFIGS, GANVariantConfig
from gan_detect.utils.registry import Registry

if TYPE_CHECKING:  # base.py looks variants up here (from_state): no import back at run time
    from gan_detect.variants.base import GANVariant

__all__ = ["VARIANTS", "build_variant", "get_variant_class", "register_variant"]

V = TypeVar("V", bound=type["GANVariant"])


class _VariantRegistry(Registry[type["GANVariant"]]):
    """Variant classes by name, with their Configs kept in step in ``VARIANT_CONFIGS``."""

    def _check_add(self, name: str, cls: type[GANVariant]) -> None:
        config = getattr(cls, "Config", None)
        if getattr(cls, "name", None) != name or not isinstance(config, type):
            raise ValueError(
                f"variant {name!r}: the class needs name = {name!r} and a Config class, got "
                f"name={getattr(cls, 'name', None)!r}, Config={config!r}"
            )
        if not issubclass(config, GANVariantConfig) or config().name != name:
            raise ValueError(f"variant {name!r}: its Config must be a GANVariantConfig with "
                             f"name: str = {name!r}")  # fmt: skip
        VARIANT_CONFIGS[name] = config  # refused if another Config holds the name

    def _on_remove(self, name: str, cls: type[GANVariant]) -> None:
        if VARIANT_CONFIGS.get(name) is cls.Config:
            del VARIANT_CONFIGS[name]


VARIANTS: Registry[type[GANVariant]] = _VariantRegistry("variant")


def register_variant(name: str) -> Callable[[V], V]:
    """Class decorator: add a :class:`GANVariant` (and its Config) under ``name``."""
    return VARIANTS.register(name)


def get_variant_class(name: str) -> type[GANVariant]:
    """Look a variant up by name.

    Raises:
        UnknownNameError: a ``KeyError`` and ``InputError`` listing the valid names.
    """
    return VARIANTS.lookup(name)


def build_variant(cfg: VariantConfig, num_classes: int) -> GANVariant:
    """``VARIANTS[cfg.name].build(cfg, num_classes)``; ``cfg`` must be that variant's Config."""
    cls = get_variant_class(cfg.name)
    if not isinstance(cfg, cls.Config):
        raise TypeError(
            f"variant {cfg.name!r} needs a {cls.Config.__name__}, got {type(cfg).__name__}"
        )
    return cls.build(cfg, num_classes)
