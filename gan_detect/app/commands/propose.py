"""``gan-detect propose``: a detector's proposals for one split, or for any folder of images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gan_detect.app.commands._common import (
    add_command_parser,
    add_config_args,
    config_epilog,
    config_files_and_overrides,
    load_config,
)
from gan_detect.config.validate import ConfigError

NAME = "propose"
SUMMARY = (
    "write a detector's proposals: propose CONFIG.yaml... ckpt=DET.ckpt "
    "| detector.arch=retinaface|fastestdet|yolox_nano; or propose --images=DIR [--out=DIR] "
    "[ckpt=DET.ckpt | detector.arch=fastestdet|yolox_nano detector.weights=PATH]"
)
DESCRIPTION = """\
Write a detector's proposals for one split, in the official layouts (WIDER txt tree, COCO results
JSON): the input of the GAN stage (data.train_proposals / data.val_proposals). The detector is a
trained one (ckpt=DET.ckpt), the built-in pretrained RetinaFace (detector.arch=retinaface) or
a pretrained COCO one: detector.arch=yolox_nano (YOLOX-nano, the stronger) or fastestdet, with
detector.weights=PATH (the .onnx file or its folder, licence beside it; omitted: the shared
data's copy).

inputs:  a detector config (detector_wider / detector_coco) + ckpt=DET.ckpt [+ evaluate.split=train]
         or detector.arch=retinaface|fastestdet|yolox_nano; or, with no config, --images=DIR (any
         folder of images: a WIDER tree, or flat) [--out=DIR] [ckpt=DET.ckpt |
         detector.arch=fastestdet|yolox_nano [detector.weights=PATH] [detector.tile_sizes=[N]]
         [detector.tile_drop_cut=true] (sliced inference)].
outputs: OUTPUT_DIR/proposals/SPLIT/ (or --out=DIR; paths printed)."""

# The keys ``propose --images=DIR`` takes (no config file: the detector is all there is to set).
_FOLDER_KEYS = (
    "ckpt",
    "detector.arch",
    "detector.weights",
    "detector.tile_sizes",
    "detector.tile_drop_cut",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION, config_epilog())
    add_config_args(p)
    p.add_argument(
        "--images",
        metavar="DIR",
        help="any folder of images (a WIDER tree, or flat): no config needed; the built-in "
        "RetinaFace, or ckpt=DET.ckpt",
    )
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default: proposals/ with --images, else "
        "OUTPUT_DIR/proposals/SPLIT/)"
    )  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.detector.propose import ProposalsInterrupted

    try:
        return _propose_folder(args) if args.images is not None else _propose_split(args)
    except ProposalsInterrupted as stop:  # Ctrl-C: the finished images' proposals are written
        where = ", ".join(str(p) for p in stop.written.values()) or "nothing written"
        print(
            f"gan-detect propose: interrupted (Ctrl-C) after {len(stop.proposals)} of "
            f"{stop.total} images; their proposals are kept ({where}); a partial file is "
            "refused by fit unless data.missing_proposals=jitter|none",
            file=sys.stderr,
        )
        return 130


def _propose_split(args: argparse.Namespace) -> int:
    from gan_detect.app.propose import propose

    cfg = load_config(*config_files_and_overrides(args.args))
    from gan_detect.detector.builtin import BUILTIN_ARCHS

    if cfg.ckpt is None and cfg.detector.arch not in BUILTIN_ARCHS:
        raise ConfigError(
            "propose needs ckpt=PATH (a detector checkpoint), detector.arch=retinaface "
            "(the built-in pretrained face detector) or detector.arch=fastestdet|yolox_nano "
            "detector.weights=PATH (the pretrained COCO one)"
        )
    for fmt, path in propose(cfg, cfg.ckpt, cfg.evaluate.split, out_dir=args.out).items():
        print(f"{fmt}: {path}")
    return 0


def _propose_folder(args: argparse.Namespace) -> int:
    """Any folder of images, no config: the built-in RetinaFace (or ckpt=DET.ckpt, or
    detector.arch=fastestdet detector.weights=PATH [detector.tile_sizes=[176]])."""
    from torch import nn

    from gan_detect.detector.builtin import builtin_detector
    from gan_detect.detector.module import DetectorModule
    from gan_detect.detector.propose import propose_folder

    words: list[str] = args.args
    bad = [a for a in words if "=" not in a or a.split("=", 1)[0] not in _FOLDER_KEYS]
    if bad:
        raise ConfigError(
            "propose --images=DIR takes only --out=DIR, ckpt=PATH, detector.arch=NAME, "
            "detector.weights=PATH, detector.tile_sizes=[N,...] and "
            f"detector.tile_drop_cut=true|false, got {bad}"
        )
    kv = dict(a.split("=", 1) for a in words)
    ckpt = kv.get("ckpt")
    if ckpt is not None and len(kv) > 1:
        raise ConfigError("propose --images=DIR: give ckpt=PATH or detector.arch=..., not both")
    arch = kv.get("detector.arch", "retinaface")
    model: nn.Module | None = DetectorModule.from_checkpoint(ckpt) if ckpt is not None else None
    tiles_text = kv.get("detector.tile_sizes", "").strip("[] ")
    try:
        tiles = [int(t) for t in tiles_text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(
            f"detector.tile_sizes: expected a list of integers like [176], got {tiles_text!r}"
        ) from None
    drop_text = kv.get("detector.tile_drop_cut", "false").lower()
    if drop_text not in ("true", "false"):
        raise ConfigError(f"detector.tile_drop_cut: expected true or false, got {drop_text!r}")
    if ckpt is None and (arch != "retinaface" or len(kv) > 1):
        model = builtin_detector(
            arch, kv.get("detector.weights"), tile_sizes=tiles, tile_drop_cut=drop_text == "true"
        )
    written = propose_folder(args.images, args.out or "proposals", model)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0
