"""``gan-detect predict``: boxes for your images (a pipeline file, or the built-in RetinaFace)."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import add_command_parser
from gan_detect.app.predict_formats import parse_formats
from gan_detect.config.sections import BUILTIN_DETECTORS

NAME = "predict"
SUMMARY = "boxes for your images: predict [--ckpt PIPELINE | --gan GAN.ckpt] IMAGES... [--draw]"
DESCRIPTION = """\
Boxes for your images: the detector's proposals re-scored by the GAN of a pipeline file
(OUT/{faces,objects}/pipeline.pt after `gan-detect demo`, or gan_detect.infer.pipeline.export_pipeline);
without --ckpt the built-in pretrained RetinaFace finds faces, or --detector yolox_nano the 80
COCO classes (re-scored by --gan GAN.ckpt when given).

inputs:  image files, folders (searched recursively) or globs.
outputs: OUT/<relative path>.json per image (boxes xyxy in pixels, scores, label names),
         OUT/summary.json (processed and failed images), with --draw OUT/<relative path>_boxes.png;
         --format wider,coco: inputs of wider-eval and coco-eval (paths printed).
         Unreadable, corrupt or oversized images are reported and skipped.
exit:    0 when at least one image was predicted; 1 when a folder or glob held no image, or
         none could be read; 2 when a path does not exist or an option is wrong.
warning: a GAN or pipeline trained on generated data (the demo's) is flagged: on real photos
         its boxes and scores mean little (it can also drop real faces RetinaFace finds)."""


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    ap = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    ap.add_argument("inputs", nargs="+", help="image files, folders or globs")
    model = ap.add_mutually_exclusive_group()  # --gan goes with the built-in detector
    model.add_argument(
        "--ckpt",
        default=None,
        metavar="PIPELINE",
        help="pipeline.pt, or a run folder holding one; omitted: the built-in pretrained "
        "RetinaFace face detector (no training needed)",
    )
    model.add_argument(
        "--gan",
        default=None,
        metavar="GAN.ckpt",
        help="with no --ckpt: a trained GAN checkpoint that re-scores the built-in detector",
    )
    ap.add_argument(
        "--detector",
        default="retinaface",
        choices=BUILTIN_DETECTORS,
        help="with no --ckpt: the built-in detector (default retinaface, faces; yolox_nano or "
        "fastestdet: the 80 COCO classes)",
    )
    ap.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="with --detector yolox_nano|fastestdet: its .onnx file or folder (default: the "
        "shared data's copy)",
    )
    ap.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default predictions/, or predictions_2/, _3/ ... when it holds an "
        "earlier run)",
    )
    ap.add_argument(
        "--draw", action="store_true", help="also write each image with its boxes drawn"
    )
    ap.add_argument(
        "--format",
        type=parse_formats,
        default=("json",),
        metavar="LIST",
        help="comma list of json (one file per image, the default), wider (OUT/wider_txt/ tree "
        "+ OUT/wider_images.txt, for wider-eval), coco (OUT/coco_results.json, for coco-eval)",
    )
    ap.add_argument(
        "--coco-gt",
        default=None,
        metavar="INSTANCES.json",
        help="with --format ...,coco: take image ids (by file_name) and category ids (by class "
        "name) from this COCO instances file; without it file names must be integer ids",
    )
    ap.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda, cuda:1 ...")
    ap.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        metavar="S",
        help="drop boxes scoring less (default 0.3)",
    )
    ap.add_argument(
        "--max-detections",
        type=_at_least_one,
        default=750,
        metavar="N",
        help="per image (default 750)",
    )
    ap.add_argument(
        "--top-k",
        type=_at_least_one,
        default=None,
        metavar="K",
        help="re-score (or, with --no-refine, keep) the detector's best K boxes per image "
        "(default: the pipeline's or GAN run's evaluate.top_k); a line says when boxes were cut",
    )
    ap.add_argument(
        "--batch-size",
        type=_at_least_one,
        default=4,
        metavar="N",
        help="images per forward (default 4)",
    )
    ap.add_argument(
        "--no-refine", action="store_true", help="the detector alone (no GAN re-scoring)"
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier predict run in --out (refused without it)",
    )
    ap.add_argument(
        "--fusion",
        default=None,
        metavar="NAME",
        help="how D's score and the detector's combine: d_only (D alone), geometric_mean, "
        "learned, size_gated (the last two need the run's score_fusion.json; default: the GAN "
        "run's evaluate.score_fusion)",
    )
    return ap


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.predict import run_cli

    return int(run_cli(args))
