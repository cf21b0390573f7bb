"""``gan-detect evaluate``: baseline vs GAN re-scoring with the official protocols."""

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
)

NAME = "evaluate"
SUMMARY = "baseline vs GAN re-scoring: evaluate CONFIG.yaml... ckpt=PATH"
DESCRIPTION = """\
Baseline vs GAN re-scoring on evaluate.split: the detector's own scores against D's re-scored
(and, for SOD-MTGAN, re-localised) proposals, with the official WIDER FACE protocol / COCO AP.

inputs:  the run's config files + ckpt=PATH (a GAN checkpoint; default
         OUTPUT_DIR/checkpoints/last.ckpt when it exists, else the baseline alone).
outputs: OUTPUT_DIR/eval/metrics.json, per-method predictions, PR curves; `gan-detect compare`
         turns run folders into a report."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION, config_epilog())
    add_config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*config_files_and_overrides(args.args))
    from gan_detect.app.evaluate import evaluate

    ckpt = cfg.ckpt
    default = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt is None and default.is_file():
        ckpt = str(default)  # the run's own newest state, as the help says
    if ckpt is None:
        print(
            f"gan-detect evaluate: no ckpt= and no {default}: the baseline alone", file=sys.stderr
        )
    evaluate(cfg, ckpt)
    return 0
