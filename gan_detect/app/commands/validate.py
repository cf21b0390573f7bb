"""``gan-detect validate``: the validation loop of a trained checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import (
    add_command_parser,
    add_config_args,
    config_epilog,
    config_files_and_overrides,
    load_config,
)
from gan_detect.config.validate import ConfigError

NAME = "validate"
SUMMARY = "validate a checkpoint: validate CONFIG.yaml... ckpt=PATH"
DESCRIPTION = """\
Run the validation loop of a trained checkpoint and print its metrics (AP, D accuracy, losses).

inputs:  the run's config files + ckpt=PATH (a checkpoint written by fit).
outputs: printed metric table (nothing written)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION, config_epilog())
    add_config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*config_files_and_overrides(args.args))
    if cfg.ckpt is None:
        raise ConfigError("validate needs ckpt=PATH (a checkpoint written by fit)")
    from gan_detect.train.fit import validate

    metrics = validate(cfg, cfg.ckpt)
    for k, v in sorted(metrics.items()):
        print(f"{k:28s} {v:.4f}")
    return 0
