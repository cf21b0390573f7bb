"""``gan-detect demo``: the whole chain on generated data."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "demo"
SUMMARY = "the whole chain on generated data: demo [--out DIR] [--quick] [--seed N | --seeds N...]"
DESCRIPTION = """\
The whole chain on generated data, with the same code and configs as a real run: generated faces
(WIDER layout) and shapes (COCO layout) -> baseline detector -> proposals -> ROI stores ->
tiny-face GAN and SOD-MTGAN -> baseline vs GAN re-scoring -> report.

outputs: OUT/report/report.md, OUT/{faces,objects}/ (runs with pipeline.pt for predict),
         OUT/data/ (the generated datasets), OUT/timings.json."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    p.add_argument(
        "--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (about a minute; for tests): the APs are near 0 at this size",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the generated data and of every training run (default 0); another seed "
        "gives other images and another initialisation, the same seed the same images",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run the demo once per seed (into OUT/seed<N>) and print the seed-averaged "
        "GAN - baseline with its interval over seeds and images",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.demo import run_demo, run_demo_seeds

    if args.seeds:
        run_demo_seeds(args.out, args.seeds, quick=args.quick)
    else:
        run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
