"""``gan-detect experiment``: run an experiment file (rows x seeds x fusions x budget) or list
the ones found.

    gan-detect experiment run experiments/real_wider.yaml --seeds 0 1 2
    gan-detect experiment run real_coco --quick --out runs/rc_quick
    gan-detect experiment list
    gan-detect experiment face-vs-general --wider runs/real_wider/results.json --coco ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def experiment_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gan-detect experiment",
        description="Run an experiment file: proposals, rows trained per seed, evaluation under "
        "every fusion, tables with intervals, diagnostics and the report (each stage cached and "
        "resumable: rerun the same command after a crash).",
    )
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run an experiment file (or a name from `list`)")
    run.add_argument("file", help="experiment YAML (e.g. experiments/real_wider.yaml) or its name")
    run.add_argument("--out", default=None, help="output folder (default runs/<name>[_quick])")
    run.add_argument("--quick", action="store_true", help="the file's quick section: a check")
    run.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the seeds")
    run.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    run.add_argument("--bootstrap", type=int, default=None, help="resamples per interval")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the file, e.g. --set budget.epochs=3 (repeatable)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("list", help="the experiment files found (experiments/*.yaml)")
    fvg = sub.add_parser(
        "face-vs-general",
        help="the two real-data experiments' gains over their detectors, side by side by size",
    )
    fvg.add_argument("--wider", default="runs/real_wider/results.json")
    fvg.add_argument("--coco", default="runs/real_coco/results.json")
    fvg.add_argument(
        "--fusions", nargs="+", default=["d_only", "geometric_mean", "learned", "size_gated"]
    )
    fvg.add_argument("--out", default="runs/face_vs_general.md")
    return p


def cmd_experiment(args: Sequence[str]) -> int:
    ns = experiment_parser().parse_args(list(args))
    from gan_detect.experiment import builtin_experiments

    if ns.action == "list":
        for name, path in builtin_experiments().items():
            print(f"{name:20s} {path}")
        return 0
    if ns.action == "face-vs-general":
        from gan_detect.experiment.face_vs_general import face_vs_general

        print(face_vs_general(ns.wider, ns.coco, ns.fusions, ns.out))
        print(f"report: {ns.out}")
        return 0
    from pathlib import Path

    from gan_detect.experiment.runner import run_experiment
    from gan_detect.experiment.spec import load_experiment

    spec = load_experiment(
        ns.file,
        quick=ns.quick,
        overrides=ns.overrides,
        seeds=ns.seeds,
        rows=ns.rows.split(",") if ns.rows else None,
        bootstrap=ns.bootstrap,
    )
    out = Path(ns.out or f"runs/{spec.name}{'_quick' if ns.quick else ''}")
    run_experiment(spec, out, progress=not (ns.quick or ns.no_progress))
    return 0
