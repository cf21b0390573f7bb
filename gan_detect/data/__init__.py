"""Data: parsers for the official layouts, ROI mining and store, DataModules (one table)."""

from __future__ import annotations

from gan_detect.data.datamodules import (
    CocoDataConfig,
    CocoDataModule,
    RoiDataConfig,
    RoiDataModule,
    WiderFaceDataConfig,
    WiderFaceDataModule,
)

DATAMODULES: dict[str, type[RoiDataModule]] = {
    "wider_face": WiderFaceDataModule,
    "coco": CocoDataModule,
}


def get_datamodule_class(name: str) -> type[RoiDataModule]:
    """Look a DataModule up by name; a KeyError lists the valid names."""
    try:
        return DATAMODULES[name]
    except KeyError:
        raise KeyError(f"unknown datamodule {name!r}; valid: {sorted(DATAMODULES)}") from None


def build_datamodule(cfg: RoiDataConfig, scale: int, seed: int = 0) -> RoiDataModule:
    """``DATAMODULES[cfg.name](cfg, scale, seed)``."""
    return get_datamodule_class(cfg.name)(cfg, scale=scale, seed=seed)


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
