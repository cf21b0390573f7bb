"""``gan-detect experiment``: run an experiment file (rows x seeds x fusions x budget), list the
ones found, or put the two real-data experiments' gains side by side.

    gan-detect experiment run experiments/real_wider.yaml --seeds 0 1 2
    gan-detect experiment run real_coco --quick --out runs/rc_quick
    gan-detect experiment list
    gan-detect experiment face-vs-general --wider runs/real_wider/results.json --coco ...
"""

from __future__ import annotations

import argparse
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "experiment"
SUMMARY = "run an experiment file: experiment run experiments/real_wider.yaml [--quick]"
DESCRIPTION = """\
Experiments as configs. `run FILE` runs an experiment file (experiments/*.yaml, or its name):
proposals, rows trained per seed, evaluation under every fusion, tables with intervals,
diagnostics and the report, each stage cached under --out and keyed by what it depends on (rerun
the same command after a crash: it continues). `list`: the experiment files found.
`face-vs-general`: the face and the general variant's gains over their own detectors by size.

outputs: OUT/results.json, OUT/report.md (run); --out FILE (face-vs-general)."""
ACTIONS = ("run", "list", "face-vs-general")
FUSIONS = ["d_only", "geometric_mean", "learned", "size_gated"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    p.add_argument("action", choices=ACTIONS, help="run | list | face-vs-general")
    p.add_argument("file", nargs="?", help="run: the experiment YAML or its name")
    p.add_argument(
        "--out",
        default=None,
        help="run: folder (default runs/<name>[_quick]); face-vs-general: file",
    )
    p.add_argument("--quick", action="store_true", help="run: the file's quick section (a check)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run: replace the seeds")
    p.add_argument("--rows", default=None, help="run: comma-separated row keys (default: all)")
    p.add_argument("--bootstrap", type=int, default=None, help="run: resamples per interval")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run: override a key of the file, e.g. --set budget.epochs=3 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="run: no progress bars")
    p.add_argument("--wider", default="runs/real_wider/results.json", help="face-vs-general")
    p.add_argument("--coco", default="runs/real_coco/results.json", help="face-vs-general")
    p.add_argument("--fusions", nargs="+", default=FUSIONS, help="face-vs-general")
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.experiment import builtin_experiments
    from gan_detect.utils.errors import InputError

    if args.action == "list":
        for name, path in builtin_experiments().items():
            print(f"{name:24s} {path}")
        return 0
    if args.action == "face-vs-general":
        from gan_detect.experiment.face_vs_general import face_vs_general

        out = args.out or "runs/face_vs_general.md"
        print(face_vs_general(args.wider, args.coco, args.fusions, out))
        print(f"report: {out}")
        return 0
    if not args.file:
        raise InputError("experiment run needs a FILE (e.g. experiments/real_wider.yaml)")
    from pathlib import Path

    from gan_detect.experiment.runner import run_experiment
    from gan_detect.experiment.spec import load_experiment

    spec = load_experiment(
        args.file,
        quick=args.quick,
        overrides=args.overrides,
        seeds=args.seeds,
        rows=args.rows.split(",") if args.rows else None,
        bootstrap=args.bootstrap,
    )
    out = Path(args.out or f"runs/{spec.name}{'_quick' if args.quick else ''}")
    run_experiment(spec, out, progress=not (args.quick or args.no_progress))
    return 0
