"""Turns raw config containers into a typed, validated :class:`ExperimentConfig`.

The schema for ``variant`` and ``data`` depends on their ``name``: it is built from the variant
and DataModule tables, so unknown keys and wrong types fail here, naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_detect.config.plugins import import_entry_points, import_plugins
from gan_detect.config.schema import (
    EVAL_SPLITS,
    SCORE_FUSIONS,
    DataConfig,
    ExperimentConfig,
    VariantConfig,
)
from gan_detect.config.sections import (
    DATA_CONFIGS,
    GENERATORS,
    VARIANT_CONFIGS,
    DetectorConfig,
    GANVariantConfig,
)
from gan_detect.utils.errors import InputError
from gan_detect.utils.registry import Registry

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "build_schema",
    "to_experiment_config",
    "variant_and_data_configs",
]


class ConfigError(InputError):
    """A config key is unknown, has the wrong type, or a value is invalid."""


def build_schema(variant_name: str, data_name: str) -> DictConfig:
    """Structured schema with the variant's and the DataModule's own config classes."""
    variant, data = variant_and_data_configs(variant_name, data_name)
    return OmegaConf.structured(
        ExperimentConfig(variant=variant(), data=data(), detector=DetectorConfig())
    )


def variant_and_data_configs(
    variant_name: str, data_name: str
) -> tuple[type[VariantConfig], type[DataConfig]]:
    """The Config classes of a variant and a DataModule, from their registries.

    Raises:
        ConfigError: an unknown name (the key, the known names and the closest one).
    """
    return (
        _lookup(VARIANT_CONFIGS, variant_name, "variant.name"),
        _lookup(DATA_CONFIGS, data_name, "data.name"),
    )


def _lookup(table: Registry[type[Any]], name: str, key: str) -> type[Any]:
    """A config class by name; a miss imports the installed packages' plugins once, then fails
    naming the key, the known names and the ``plugins`` key that imports a user's own file."""
    if name not in table:
        import_entry_points()
    if name not in table:
        raise ConfigError(
            f"config key '{key}': {table.unknown_message(name)}; one defined in your own file "
            "registers when the file is imported: name it in plugins=[path/to/file.py]"
        )
    return table[name]


def raw_names(raw_cfg: DictConfig) -> tuple[DictConfig, str | None, str | None]:
    """``(raw, variant.name, data.name)`` after importing the config's ``plugins``; a detector
    config without a variant gets ``tiny_face`` (the schema needs one)."""
    plugins = OmegaConf.select(raw_cfg, "plugins", default=None)
    if plugins is not None:
        if not isinstance(plugins, ListConfig) or not all(isinstance(p, str) for p in plugins):
            raise ConfigError(
                f"config key 'plugins': a list of module names or .py paths, got {plugins!r}"
            )
        import_plugins(list(plugins))
    vname = OmegaConf.select(raw_cfg, "variant.name", default=None)
    if vname is None and OmegaConf.select(raw_cfg, "task", default=None) == "detector":
        vname = "tiny_face"
        raw_cfg = OmegaConf.merge(raw_cfg, {"variant": {"name": vname}})  # type: ignore[assignment]
    dname = OmegaConf.select(raw_cfg, "data.name", default=None)
    return raw_cfg, None if vname is None else str(vname), None if dname is None else str(dname)


def _valid_keys(schema: DictConfig, dotted: str) -> list[str]:
    node: Any = schema
    parts = [p for p in dotted.split(".")[:-1] if p]
    for p in parts:
        node = node[p]
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def merge_with_schema(raw: DictConfig | dict[str, Any]) -> DictConfig:
    """Validate raw containers against the schema; errors name the key and list valid ones."""
    raw_cfg = raw if isinstance(raw, DictConfig) else OmegaConf.create(raw)
    raw_cfg, vname, dname = raw_names(raw_cfg)
    if vname is None:
        raise ConfigError("config key 'variant.name' is missing (one of the variant table names)")
    if dname is None:
        raise ConfigError("config key 'data.name' is missing (one of the DataModule table names)")
    schema = build_schema(str(vname), str(dname))
    try:
        return OmegaConf.merge(schema, raw_cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        valid = _valid_keys(schema, key) if key != "?" else []
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        msg = str(err).splitlines()[0]
        raise ConfigError(f"config key '{key}': {msg}{hint}") from None


def to_experiment_config(raw: DictConfig | dict[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """Raw containers (YAML merge, checkpoint hparams) -> typed, validated config."""
    if isinstance(raw, ExperimentConfig):
        return raw
    merged = merge_with_schema(raw)
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {str(err).splitlines()[0]}") from None
    assert isinstance(obj, ExperimentConfig)
    _check(obj)
    return obj


def check_checkpoint_fits(path: object, trained: ExperimentConfig, cfg: ExperimentConfig) -> None:
    """A checkpoint's variant and class count must be the config's it is evaluated with.

    Raises:
        ConfigError: naming the file, what it holds and what the config asks for (a 5-class
            objects checkpoint scored on faces data would otherwise write metrics, exit 0).
    """
    have = (trained.variant.name, trained.data.num_classes)
    want = (cfg.variant.name, cfg.data.num_classes)
    if have != want:
        raise ConfigError(
            f"{path}: a {have[0]} checkpoint with data.num_classes={have[1]}, but the config "
            f"has variant.name={want[0]} data.num_classes={want[1]}: evaluate it with its own "
            "run's config.yaml"
        )


def to_container(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain, resolved containers (for checkpoints, W&B and config.yaml)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def _check(cfg: ExperimentConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    if not isinstance(cfg.variant, VariantConfig) or not isinstance(cfg.data, DataConfig):
        raise ConfigError("config sections 'variant' and 'data' must be mappings")
    scale = cfg.variant.scale
    if cfg.task not in ("gan", "detector"):
        raise ConfigError(f"config key 'task': must be gan or detector, got {cfg.task!r}")
    if scale not in (2, 4, 8):
        raise ConfigError(f"config key 'variant.scale': must be 2, 4 or 8, got {scale}")
    for f in dataclasses.fields(cfg.optim):
        v = getattr(cfg.optim, f.name)
        if isinstance(v, float) and v < 0:
            raise ConfigError(f"config key 'optim.{f.name}': must be >= 0, got {v}")
    for key, low in _MIN_INTS.items():
        section, leaf = key.split(".")
        v = getattr(getattr(cfg, section), leaf, None)
        if isinstance(v, int) and not isinstance(v, bool) and v < low:
            hint = _MIN_HINTS.get(key, "")
            raise ConfigError(f"config key '{key}': must be >= {low}, got {v}{hint}")
    _check_choices(cfg)
    if isinstance(cfg.variant, GANVariantConfig):
        _check_generator(cfg.variant)


def _check_generator(v: GANVariantConfig) -> None:
    """The generator keys agree with each other. Whether ``g_weights`` exists is checked when the
    weights are read (fit's preflight, the build), not here: a checkpoint of a CARN-M run holds
    G's weights and loads on machines without the file."""
    if v.generator not in GENERATORS:
        raise ConfigError(
            f"config key 'variant.generator': must be one of {', '.join(GENERATORS)}, "
            f"got {v.generator!r}"
        )
    if v.generator == "carn_m" and v.scale not in (2, 4):
        raise ConfigError(
            f"config key 'variant.scale': variant.generator=carn_m takes scale 2 or 4, got {v.scale}"
        )
    if v.g_weights is not None and (v.generator != "carn_m" or not v.g_pretrained):
        raise ConfigError(
            "config key 'variant.g_weights': weights are read only with variant.generator=carn_m "
            f"and variant.g_pretrained=true (here generator={v.generator}, "
            f"g_pretrained={v.g_pretrained}); set it to null"
        )
    if v.g_frozen and (v.generator != "carn_m" or not v.g_pretrained):
        raise ConfigError(
            "config key 'variant.g_frozen': a frozen generator must be pretrained "
            "(variant.generator=carn_m, variant.g_pretrained=true); a frozen random G would feed "
            "D noise"
        )


REFINE_CHOICES = (True, False, "auto")


def _check_choices(cfg: ExperimentConfig) -> None:
    """Enumerated string values (those not typed as a Literal), so a typo fails at load, not
    after a silent fallback (``evaluate.split=test`` evaluated val and said "test")."""
    e = cfg.evaluate
    if e.split not in EVAL_SPLITS:
        splits = ", ".join(f"{s} (data.{s}_split={getattr(cfg.data, f'{s}_split', s)})"
                           for s in EVAL_SPLITS)  # fmt: skip
        raise ConfigError(f"config key 'evaluate.split': must be one of {splits}, got {e.split!r}")
    if e.score_fusion not in SCORE_FUSIONS:
        raise ConfigError(
            f"config key 'evaluate.score_fusion': must be one of {', '.join(SCORE_FUSIONS)}, "
            f"got {e.score_fusion!r}"
        )
    if e.refine_boxes not in REFINE_CHOICES or not isinstance(e.refine_boxes, (bool, str)):
        raise ConfigError(
            "config key 'evaluate.refine_boxes': must be true, false or auto (decided on the "
            f"held-out train images when the score fusion is fit), got {e.refine_boxes!r}"
        )
    _check_ranges(cfg)
    if not str(cfg.output_dir).strip():
        raise ConfigError(
            "config key 'output_dir': empty (it would be the current folder); name a run folder"
        )
    if cfg.resume is not None and not str(cfg.resume).strip():
        raise ConfigError("config key 'resume': empty; use auto, a checkpoint path or null")


# FastestDet's input is 352 px: a tile under 16 px has nothing left to detect on.
MIN_TILE = 16


def _check_ranges(cfg: ExperimentConfig) -> None:
    """Float fractions and lists whose bad values would otherwise fail late (after training)
    or be silently taken as another value (a negative holdout as none)."""
    frac = getattr(cfg.data, "fusion_holdout_fraction", None)
    if frac is not None and not 0.0 <= float(frac) < 1.0:
        raise ConfigError(
            f"config key 'data.fusion_holdout_fraction': must be in [0, 1) (the share of train "
            f"images kept out of GAN training for fitting score fusion), got {frac}"
        )
    det = cfg.detector
    tiles = list(getattr(det, "tile_sizes", None) or [])
    bad = [t for t in tiles if isinstance(t, bool) or not isinstance(t, int) or t < MIN_TILE]
    if bad:
        raise ConfigError(
            f"config key 'detector.tile_sizes': tile sides are px >= {MIN_TILE}, got {tiles}"
        )
    if len(set(tiles)) != len(tiles):
        raise ConfigError(f"config key 'detector.tile_sizes': {tiles} repeats a size")
    overlap = getattr(det, "tile_overlap", None)
    if overlap is not None and not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"config key 'detector.tile_overlap': must be in [0, 1), got {overlap}")
    if tiles and getattr(det, "arch", "fastestdet") != "fastestdet":
        raise ConfigError(
            f"config key 'detector.tile_sizes': tiles are for detector.arch=fastestdet, not "
            f"{det.arch}"
        )


# Integer keys with a lower bound (checked here, so a bad value is one line, not a traceback).
_MIN_INTS: dict[str, int] = {
    "data.batch_size": 1,
    "data.val_batch_size": 1,
    "data.num_workers": 0,
    "data.rois_per_image": 1,
    "data.hr_size": 4,
    "data.num_classes": 1,
    "trainer.max_epochs": 1,
    "data.top_k": 1,
    "trainer.num_nodes": 1,
    "trainer.check_val_every_n_epoch": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.checkpoint_every_n_batches": 0,
    "evaluate.top_k": 1,
    "evaluate.bootstrap": 0,
    "evaluate.max_detections": 1,
    "evaluate.chunk_size": 1,
    "evaluate.coco_max_dets": 1,
    "optim.warmup_epochs": 0,
}
# Why a bound exists, where the bare number would puzzle.
_MIN_HINTS: dict[str, str] = {
    "trainer.max_epochs": " (0 trains nothing; -1, Lightning's 'no limit', would run and keep a "
    "checkpoint per epoch until the disk is full)",
    "data.top_k": " (0 would drop every proposal and train on ground-truth jitter instead)",
}
