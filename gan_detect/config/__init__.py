"""Configs: schema dataclasses, validation, YAML + ``key=value`` loading, ``config show``.

Imports no torch, so ``gan-detect --help``, ``config show`` and config errors answer at once.
The presets the CLI and the demo name (``tiny_face_wider``, ``demo``, ...) ship as package data
in ``presets/``.
"""

from __future__ import annotations

from pathlib import Path

from gan_detect.config.schema import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    LoggerConfig,
    OptimConfig,
    TrainerConfig,
    VariantConfig,
)
from gan_detect.config.validate import ConfigError, to_container, to_experiment_config

PRESETS = Path(__file__).resolve().parent / "presets"

__all__ = [
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LoggerConfig",
    "OptimConfig",
    "TrainerConfig",
    "VariantConfig",
    "to_container",
    "to_experiment_config",
]
