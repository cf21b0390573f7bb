"""YAML files + ``key=value`` overrides -> a validated :class:`ExperimentConfig`.

Its own module so that the CLI and the demo (which the CLI runs) both import it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_detect.schema import ConfigError, ExperimentConfig, to_experiment_config

__all__ = ["load_config"]


def load_config(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Merge YAML files (left to right) and ``key=value`` overrides; validate against the schema.

    Raises:
        ConfigError: unknown key, wrong type or bad value (the key is named, valid keys listed).
        FileNotFoundError: a config file does not exist.
    """
    parts: list[DictConfig] = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = OmegaConf.load(p)
        except Exception as err:
            raise ConfigError(f"{p}: cannot parse YAML: {err}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{p}: top level must be a mapping")
        parts.append(loaded)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    # Sweep agents may pass --key=value; accept the hyphens as a convenience.
    clean = [o[2:] if o.startswith("--") else o for o in overrides]
    try:
        parts.append(OmegaConf.from_dotlist(clean))
        raw = OmegaConf.merge(*parts) if parts else OmegaConf.create()
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {err}") from None
    return to_experiment_config(raw)  # type: ignore[arg-type]
