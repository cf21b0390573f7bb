"""``gan-detect fit``: train a GAN variant, or the baseline detector (``task=detector``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gan_detect.app.commands._common import (
    add_command_parser,
    add_config_args,
    config_epilog,
    config_files_and_overrides,
    load_config,
    resolve_resume,
)
from gan_detect.config.validate import ConfigError

NAME = "fit"
SUMMARY = "train a GAN variant or the detector: fit CONFIG.yaml... [key=value ...]"
DESCRIPTION = """\
Train a GAN variant on ROIs mined from proposals (task=gan, the default), or the baseline
proposal detector (task=detector: the detector_wider / detector_coco presets).

inputs:  config files + key=value overrides; the dataset under data.root; proposal files.
outputs: OUTPUT_DIR/config.yaml (the resolved config), checkpoints/last.ckpt (+ best),
         logs/ (CSV or W&B), val_images/ (LR | bicubic | SR | HR grids).
example: gan-detect fit tiny_face_wider data.root=/data/widerface"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION, config_epilog())
    add_config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*config_files_and_overrides(args.args))
    from gan_detect.app.preflight import check_before_fit

    if cfg.task == "detector":
        from gan_detect.detector.builtin import BUILTIN_ARCHS

        if cfg.detector.arch in BUILTIN_ARCHS:
            raise ConfigError(
                f"config key 'detector.arch': {cfg.detector.arch} is a built-in pretrained "
                f"detector; it is not trained (use it directly: gan-detect propose ... "
                f"detector.arch={cfg.detector.arch})"
            )
    check_before_fit(cfg)  # before the training stack loads: data folder, pretrained weights
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from gan_detect.train.fit import FitInterrupted

    try:
        if cfg.task == "detector":
            from gan_detect.train.detector import fit_detector

            print(f"detector checkpoint: {fit_detector(cfg, ckpt_path=resolve_resume(cfg))}")
            return 0
        from gan_detect.train.fit import fit

        fit(cfg, ckpt_path=resolve_resume(cfg))
    except SIGTERMException as err:
        # train.fit re-raises it with code 143 (Lightning's own is exit 0); last.ckpt is saved.
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        print(
            f"gan-detect fit: stopped by SIGTERM before the end of training; {last} holds the "
            "state to continue from with resume=auto",
            file=sys.stderr,
        )
        return int(err.code or 143)
    except FitInterrupted as err:
        kept = (
            f"{err.saved} holds the state to continue from with resume=auto"
            if err.saved
            else "no checkpoint was saved at the interrupt (resume=auto takes the newest one)"
        )
        print(f"gan-detect fit: interrupted (Ctrl-C); {kept}", file=sys.stderr)
        return int(err.code or 130)
    return 0
