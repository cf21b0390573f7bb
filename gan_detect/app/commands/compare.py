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
outputs: OUT/report.md and its figures; the metric table and verdicts also on stdout."""


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
    from gan_detect.app.report import load_run, metric_table, verdict, write_report

    report = write_report(args.runs, args.out)
    # The report's metric table and verdicts on stdout too: the numbers without opening a file.
    runs = [load_run(d) for d in args.runs]
    print(metric_table(runs).rstrip())
    for r in runs:
        e = r["eval"]
        print(f"{r['name']}: {verdict(e['metrics'], r.get('comparison'), e.get('num_images'))}")
    print(f"report: {report}")
    return 0
