"""Data: parsers for the official layouts, ROI mining and store, DataModules (one table).

The DataModules (Lightning, torchvision) load on first use (PEP 562): the parsers in
``gan_detect.data.proposals`` / ``records`` / ``wider_face`` stay importable without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan_detect.data.datamodules import (
        CocoDataConfig,
        CocoDataModule,
        RoiDataConfig,
        RoiDataModule,
        WiderFaceDataConfig,
        WiderFaceDataModule,
    )

_FROM_DATAMODULES = (
    "CocoDataConfig",
    "CocoDataModule",
    "RoiDataConfig",
    "RoiDataModule",
    "WiderFaceDataConfig",
    "WiderFaceDataModule",
)


def _datamodules() -> dict[str, type[RoiDataModule]]:
    from gan_detect.data.datamodules import CocoDataModule, WiderFaceDataModule

    return {"wider_face": WiderFaceDataModule, "coco": CocoDataModule}


def get_datamodule_class(name: str) -> type[RoiDataModule]:
    """Look a DataModule up by name; a KeyError lists the valid names."""
    table = _datamodules()
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown datamodule {name!r}; valid: {sorted(table)}") from None


def build_datamodule(cfg: RoiDataConfig, scale: int, seed: int = 0) -> RoiDataModule:
    """``DATAMODULES[cfg.name](cfg, scale, seed)``."""
    return get_datamodule_class(cfg.name)(cfg, scale=scale, seed=seed)


def __getattr__(name: str) -> Any:
    """PEP 562: the DataModule classes and ``DATAMODULES`` import Lightning on first use."""
    if name in _FROM_DATAMODULES:
        return getattr(importlib.import_module("gan_detect.data.datamodules"), name)
    if name == "DATAMODULES":
        return _datamodules()
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
]
