"""``gan-detect compare``: a side-by-side report of evaluated run folders."""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "compare"
SUMMARY = "side-by-side report: compare RUN_DIR... [--out DIR]"
DESCRIPTION = """\
Side-by-side report of finished runs (each evaluated with `gan-detect evaluate`): metric table,
AP by object size, PR curves, SR samples and training curves.

inputs:  run folders holding eval/metrics.json.
outputs: OUT/report.md and its figures."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run folders")
    p.add_argument(
        "--out",
        default="reports/compare",
        metavar="DIR",
        help="report folder (default reports/compare)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.app.report import write_report

    print(f"report: {write_report(args.runs, args.out)}")
    return 0
