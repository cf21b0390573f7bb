"""``gan-detect coco-eval``: COCO AP (with AP_tiny) of a results JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gan_detect.app.commands._common import add_command_parser
from gan_detect.app.commands.wider_eval import add_compare_args

NAME = "coco-eval"
SUMMARY = "COCO AP of a results JSON: coco-eval RESULTS.json --gt INSTANCES.json [--compare B.json]"
DESCRIPTION = """\
COCO AP (AP, AP50, AP75, AP_S/M/L and AP_tiny, area < 16 px squared) of a COCO results JSON
against an instances JSON (pycocotools). An object's area is its annotation's "area" (else the
box's w * h), as COCO and `gan-detect evaluate` bucket it. With --compare RESULTS_B.json: both
methods, B - A and its 95 % paired-bootstrap interval over images (--bootstrap resamples, fixed
seed); it covers the choice of images, not the training noise of the models behind the files."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    p.add_argument(
        "results", type=Path, help="COCO results JSON: [{image_id, category_id, bbox, score}]"
    )
    p.add_argument("--gt", type=Path, required=True, help="COCO instances JSON (the ground truth)")
    add_compare_args(p, "RESULTS_B", "a second results JSON: B - A with its interval")
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.wider_eval import run_coco_cli

    return int(run_coco_cli(args))
