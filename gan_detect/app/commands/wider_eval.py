"""``gan-detect wider-eval``: official WIDER FACE AP of a prediction tree."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "wider-eval"
SUMMARY = "official WIDER FACE AP of a prediction tree: wider-eval PRED --gt GT [--compare PRED_B]"
DESCRIPTION = """\
Official WIDER FACE easy / medium / hard AP (the eval_tools protocol) of a prediction txt tree
<event>/<name>.txt against the ground-truth .mat files. With --compare PRED_B: both methods, B - A
and its 95 % paired-bootstrap interval over images (--bootstrap resamples, fixed seed). The
interval covers the choice of evaluation images for these two prediction sets, not the training
noise of the models that made them; "B better" needs it to clear 0 by more than 0.01 AP points."""


def add_compare_args(p: argparse.ArgumentParser, metavar: str, what: str) -> None:
    """``--compare``, ``--bootstrap``, ``--seed``, ``--json`` of the two evaluation commands."""
    p.add_argument("--compare", type=Path, default=None, metavar=metavar, help=what)
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="paired bootstrap resamples of the images for the interval (0: none; default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the result dict here")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    p.add_argument("pred_dir", type=Path, help="prediction tree: <event>/<name>.txt")
    p.add_argument(
        "--gt",
        type=Path,
        required=True,
        help="folder with the wider_*_val.mat files (the official protocol), or your own "
        "annotation .txt in the official format (settings by face height, not official)",
    )
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="optional text file, one 'event/name' per line: evaluate only these",
    )
    add_compare_args(p, "PRED_B", "a second prediction tree: B - A with its interval")
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.wider_eval import run_cli

    return int(run_cli(args))
