"""``gan-detect config show``: the resolved config, and every key with its type and default.

Defaults come from the same structured schema that ``fit`` validates against (the dataclasses of
``config/schema.py`` and the sections in ``config/sections.py``: the variants', the DataModules'
and ``DetectorConfig``), so this listing cannot drift from what a run uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan_detect.config.load import load_raw_config
from gan_detect.config.schema import ExperimentConfig
from gan_detect.config.validate import merge_with_schema, to_experiment_config

# Without files `config show` describes the tiny-face GAN on WIDER FACE; override to see others.
DEFAULT_NAMES = {"variant": {"name": "tiny_face"}, "data": {"name": "wider_face"}}


def resolved(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> DictConfig:
    """Files + overrides merged onto the schema and validated as ``fit`` validates them
    (``evaluate.split=tset`` fails here too); mandatory keys may stay ``???``."""
    raw = OmegaConf.merge(OmegaConf.create(DEFAULT_NAMES), load_raw_config(files, overrides))
    cfg = merge_with_schema(raw)  # type: ignore[arg-type]
    _check_values(cfg)
    return cfg


def _check_values(cfg: DictConfig) -> None:
    """``fit``'s value checks (``to_experiment_config``) on a copy whose unset mandatory keys
    hold a placeholder: ``config show`` answers before ``data.root`` is known, ``fit`` not."""
    probe = cfg.copy()
    for key in OmegaConf.missing_keys(probe):
        OmegaConf.update(probe, key, "<unset>", merge=False)
    to_experiment_config(probe)


def resolved_yaml(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> str:
    """The resolved config as YAML, interpolations (``output_dir``) filled in where possible."""
    cfg = resolved(files, overrides)
    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # an interpolation refers to a missing (???) value: show it unresolved
        return OmegaConf.to_yaml(cfg)


def _schema_object(cfg: DictConfig) -> ExperimentConfig:
    """Default-valued dataclasses of the config's variant, DataModule and detector."""
    from gan_detect.config.sections import DetectorConfig
    from gan_detect.config.validate import variant_and_data_configs

    variant, data = variant_and_data_configs(str(cfg.variant.name), str(cfg.data.name))
    return ExperimentConfig(variant=variant(), data=data(), detector=DetectorConfig())


def iter_keys(obj: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(dotted key, type, default)`` of every leaf field of a dataclass, depth first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_keys(value, key + ".")
        else:
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            yield key, kind, value


def _fmt(v: Any) -> str:
    """A value as it would be written in YAML / on the command line."""
    if dataclasses.is_dataclass(v) or v is None:
        return "null" if v is None else type(v).__name__
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return OmegaConf.to_yaml({"v": v}).strip()[3:].replace("\n", " ")


def format_keys(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> str:
    """One line per key: ``key  type  default  [= value where the files set another]``."""
    cfg = resolved(files, overrides)
    rows = []
    for key, kind, default in iter_keys(_schema_object(cfg)):
        if OmegaConf.is_missing(cfg, key):
            value: Any = "???"
        else:
            value = OmegaConf.select(cfg, key, default=None)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
        d, v = _fmt(default), _fmt(value)
        rows.append((key, kind, d, "" if v == d else f"= {v}"))
    w0 = max(len(r[0]) for r in rows)
    w1 = min(max(len(r[1]) for r in rows), 40)
    head = (
        f"{'key':{w0}s}  {'type':{w1}s}  default  [= value from the files/overrides]\n"
        "(set any of them as key=value after the config files)\n"
    )
    return head + "".join(f"{k:{w0}s}  {t:{w1}s}  {d}  {v}".rstrip() + "\n" for k, t, d, v in rows)
