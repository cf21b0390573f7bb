"""Data: parsers for the official layouts, ROI mining and store, DataModules (one registry).

The DataModules (Lightning, torchvision) load on first use (PEP 562): the parsers in
``gan_detect.data.proposals`` / ``records`` / ``wider_face`` stay importable without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan_detect.data.datamodules import (
        DATAMODULES,
        CocoDataConfig,
        CocoDataModule,
        RoiDataConfig,
        RoiDataModule,
        WiderFaceDataConfig,
        WiderFaceDataModule,
        register_datamodule,
    )

_FROM_DATAMODULES = (
    "DATAMODULES",
    "CocoDataConfig",
    "CocoDataModule",
    "RoiDataConfig",
    "RoiDataModule",
    "WiderFaceDataConfig",
    "WiderFaceDataModule",
    "register_datamodule",
)


def get_datamodule_class(name: str) -> type[RoiDataModule]:
    """Look a DataModule up by name in ``DATAMODULES``.

    Raises:
        UnknownNameError: a ``KeyError`` and ``InputError`` listing the valid names.
    """
    from gan_detect.data.datamodules import DATAMODULES

    return DATAMODULES.lookup(name)


def build_datamodule(cfg: RoiDataConfig, scale: int, seed: int = 0) -> RoiDataModule:
    """``DATAMODULES[cfg.name](cfg, scale, seed)``."""
    return get_datamodule_class(cfg.name)(cfg, scale=scale, seed=seed)


def __getattr__(name: str) -> Any:
    """PEP 562: the DataModule classes and ``DATAMODULES`` import Lightning on first use."""
    if name in _FROM_DATAMODULES:
        return getattr(importlib.import_module("gan_detect.data.datamodules"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATAMODULES",
    "CocoDataConfig",
    "CocoDataModule",
    "RoiDataConfig",
    "RoiDataModule",
    "WiderFaceDataConfig",
    "WiderFaceDataModule",
    "build_datamodule",
    "get_datamodule_class",
    "register_datamodule",
]
