"""``gan-detect export``: a trained run's re-scorer (G + D) as ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "export"
SUMMARY = "the re-scorer as ONNX: export RUN --format onnx [--out DIR] [--opset N]"
DESCRIPTION = """\
A trained run's re-scorer as one ONNX graph: LR crops (N, 3, h, w) in [-1, 1] -> G -> D ->
probs (N, K: p(face), or the (C + 1)-way softmax with 0 = background) and, for SOD-MTGAN,
box_deltas. The network is the BatchNorm-folded inference copy predict runs. After export it is
run with onnxruntime on crops of real photos beside PyTorch; a larger difference than
--tolerance writes nothing.

inputs:  RUN: a run folder (its checkpoints/last.ckpt) or a GAN checkpoint file;
         --images (default: 8 of the shared data's WIDER FACE val photos) for the check.
outputs: DIR/rescorer.onnx and DIR/rescorer.json (input size, scale, context, output names,
         variant, class names, opset, the measured max abs difference); DIR: RUN/export.
exit:    0 written; 1 onnxruntime and PyTorch differ by more than --tolerance (nothing
         written); 2 RUN or an image does not exist, or an option is wrong."""


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    ap = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    # dest run_dir: `run` is the attribute cli.main calls
    ap.add_argument(
        "run_dir", metavar="RUN", help="run folder (checkpoints/last.ckpt) or GAN .ckpt"
    )
    ap.add_argument("--format", default="onnx", choices=["onnx"], help="onnx (the only one)")
    ap.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN/export)")
    ap.add_argument(
        "--opset", type=_positive(int), default=None, metavar="N", help="ONNX opset (default 18)"
    )
    ap.add_argument(
        "--exporter",
        default="dynamo",
        choices=["dynamo", "torchscript"],
        help="torch.onnx path: dynamo (default, needs onnxscript) or torchscript (the older "
        "tracer, faster to export, deprecated by torch)",
    )
    ap.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="PATH",
        help="real images (files, folders, globs; up to 8, spread over them) whose crops "
        "check the export (default: WIDER FACE val photos of $GAN_DETECT_DATA)",
    )
    ap.add_argument(
        "--tolerance",
        type=_positive(float),
        default=None,
        metavar="T",
        help="largest max abs difference accepted (default 1e-3)",
    )
    return ap


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.export import run_cli

    return int(run_cli(args))
