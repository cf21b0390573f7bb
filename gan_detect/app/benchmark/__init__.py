"""The benchmark tool, after timm's ``benchmark.py``: one entry, ``--bench KIND``, the shared
options (sizes, precision, memory format, compile, rounds, device), one JSON line per
measurement (machine, versions, options, numbers) on stdout and appended to ``--out``, and
``--table`` to render markdown tables from JSONL files.

    python benchmarks/benchmark.py --bench train --sizes small --precision fp32 bf16 \\
        --channels-last both --out benchmarks/results/train.jsonl
    python benchmarks/benchmark.py --table benchmarks/results/train.jsonl

Kinds: see ``KINDS`` (``--help`` lists them). The kinds' code lives in this package's modules
and imports torch only after the thread defaults are applied (``configure_threads``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# kind -> (module, function, one line); modules are imported after the thread defaults apply.
KINDS: dict[str, tuple[str, str, str]] = {
    "train": (
        "train",
        "run_train",
        "one GAN step (D then G) per precision x memory format x compile",
    ),
    "engine": (
        "train",
        "run_engine",
        "Lightning engine vs the same step as a plain loop (+ ceiling)",
    ),
    "ddp": ("ddp", "run_ddp", "GAN training ROI pairs/s with 1 vs 2 CPU processes (gloo)"),
    "infer": (
        "infer",
        "run_infer",
        "G + D on a chunk of LR crops per precision x format x fold x compile",
    ),
    "image": (
        "infer",
        "run_image",
        "full-image inference: proposals -> crops -> G + D -> NMS, peak memory",
    ),
    "eval": (
        "evaluation",
        "run_eval",
        "WIDER FACE AP (vectorised / command / loop), COCO AP backends",
    ),
    "bootstrap": ("evaluation", "run_bootstrap", "paired image bootstrap beside one plain AP pass"),
    "proposals": (
        "detector",
        "run_proposals",
        "baseline detector images/s, training and inference",
    ),
    "recall": (
        "detector",
        "run_recall",
        "proposal recall by object size (FastestDet, YOLOX-nano), tiled, sahi, AP by size",
    ),
    "detector_ap": (
        "detector_ap",
        "run_detector_ap",
        "AP of a built-in proposer via `propose`: COCO (+ direct, independent check), WIDER val",
    ),
    "d_classes": (
        "d_classes",
        "run_d_classes",
        "D's top-1 class accuracy on test objects by size against training steps",
    ),
    "sr": ("sr", "run_sr", "x4 PSNR of CARN-M vs bicubic on real crops; ms per ROI of G, CARN-M"),
    "export": ("export", "run_export", "ms per ROI of the re-scorer: PyTorch vs onnxruntime, CPU"),
    "budget": (
        "budget",
        "run_budget",
        "AP against proposals re-scored per image (demo or run folder)",
    ),
    "data": ("data", "run_data", "ROI store vs mining from JPEGs, LR cost, crop methods, fed step"),
    "under_load": (
        "load",
        "run_under_load",
        "CPU time idle vs next to busy loops per OpenMP wait policy",
    ),
    "old_vs_new": (
        "load",
        "run_old_vs_new",
        "one experiment command of two trees: seconds per stage",
    ),
}

# Per-kind defaults of the shared counts (None on the command line: take these).
DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"rounds": 12, "warmup": 3, "batch": 16},
    "engine": {"rounds": 5, "warmup": 1, "batch": 16},
    "ddp": {"rounds": 10, "warmup": 2, "batch": 32},
    "infer": {"rounds": 5, "warmup": 1, "batch": 1},
    "image": {"rounds": 3, "warmup": 1, "batch": 1},
    "eval": {"rounds": 3, "warmup": 0, "batch": 1},
    "bootstrap": {"rounds": 1, "warmup": 0, "batch": 1},
    "proposals": {"rounds": 3, "warmup": 1, "batch": 1},
    "recall": {"rounds": 1, "warmup": 0, "batch": 1},
    "detector_ap": {"rounds": 1, "warmup": 0, "batch": 1},
    "sr": {"rounds": 10, "warmup": 1, "batch": 64},
    "export": {"rounds": 20, "warmup": 2, "batch": 1},
    "d_classes": {"rounds": 1, "warmup": 0, "batch": 1},
    "budget": {"rounds": 1, "warmup": 1, "batch": 1},
    "data": {"rounds": 20, "warmup": 2, "batch": 64},
    "under_load": {"rounds": 150, "warmup": 0, "batch": 1},
    "old_vs_new": {"rounds": 1, "warmup": 0, "batch": 1},
}
_INTERNAL = {"ddp_devices", "ddp_worker_out", "table", "out"}


def _switch(p: argparse.ArgumentParser | Any, flag: str, help_: str) -> None:
    p.add_argument(
        flag,
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help=f"{help_}: off (default), on (the flag alone) or both (compare)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The tool's options: shared ones first, then one group per kind."""
    kinds = "\n".join(f"  {k:<11} {v[2]}" for k, v in KINDS.items())
    p = argparse.ArgumentParser(
        prog="benchmark",
        description=__doc__.split("\n\n")[0] + "\n\nkinds:\n" + kinds,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bench", choices=sorted(KINDS), help="what to measure")
    p.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="JSONL",
        help="print markdown tables made from these JSONL files, then exit",
    )
    p.add_argument("--out", type=Path, help="append each JSON line to this file too")
    s = p.add_argument_group("shared")
    s.add_argument(
        "--sizes",
        nargs="+",
        default=["small"],
        help="network sizes: small | paper | tiny | experiment",
    )
    s.add_argument("--variants", nargs="+", default=None, help="GAN variants (default: all)")
    s.add_argument(
        "--backbone", help="discriminator trunk instead of the size's ('variant': each its own)"
    )
    s.add_argument("--batch", type=int, help="ROIs per step (per rank for ddp)")
    s.add_argument("--hr", type=int, help="HR crop side in px (LR = HR / 4); default per size")
    s.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    _switch(s, "--channels-last", "channels-last memory format")
    _switch(s, "--compile", "torch.compile G and D")
    _switch(s, "--fold-bn", "BatchNorm folded into the convs (infer)")
    s.add_argument("--rounds", type=int, help="timed repeats (steps, batches, passes)")
    s.add_argument("--warmup", type=int, help="untimed repeats first (compile happens here)")
    s.add_argument("--device", help="cpu | cuda (default: cuda when present)")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--budget-s", type=float, help="skip what is left after this many seconds")
    s.add_argument("--data", help="shared data folder (default: GAN_DETECT_DATA, ../shared/data)")
    g = p.add_argument_group("infer / image")
    g.add_argument("--rois", type=int, default=256, help="LR crops per G + D call (infer)")
    g.add_argument("--proposals", type=int, default=600, help="proposals per image (image)")
    g = p.add_argument_group("eval / bootstrap")
    g.add_argument("--eval", nargs="+", default=["wider", "coco"], choices=["wider", "coco"])
    g.add_argument(
        "--reference-loop",
        action="store_true",
        help="also the per-image WIDER loop (minutes): the speed-up",
    )
    g.add_argument("--n-boot", type=int, default=1000)
    g.add_argument("--coco-split", default="test", choices=["test", "train"])
    g = p.add_argument_group("proposals / recall / detector_ap")
    g.add_argument("--archs", nargs="+", default=["fcos", "retinanet", "faster_rcnn"])
    g.add_argument("--detector-sizes", nargs="+", default=["small"], choices=["small", "large"])
    g.add_argument(
        "--detector",
        choices=["fastestdet", "yolox_nano", "retinaface"],
        help="built-in proposer (recall: fastestdet, detector_ap: yolox_nano by default; "
        "retinaface: detector_ap on WIDER val)",
    )
    g.add_argument(
        "--ap",
        action="store_true",
        help="recall: also COCO AP by size per setting, paired intervals against the first",
    )
    g.add_argument(
        "--images", help="COCO val2017 JPEGs by file_name (recall, detector_ap; sr: COCO crops)"
    )
    g.add_argument("--ann", help="instances JSON (default: the shared val2017_person one)")
    g.add_argument("--split", default="test")
    g.add_argument("--max-images", type=int, help="first N images of the split (sr: per source)")
    g.add_argument(
        "--settings",
        default="native,full+352,full+256,full+176,full+128,full+256+176,176",
        help="recall: native | full+T[+T2] | T, a ':drop' suffix: tile_drop_cut",
    )
    g.add_argument("--overlap", type=float, default=0.2, help="tile overlap (recall, detector_ap)")
    g.add_argument(
        "--tile-sizes",
        nargs="*",
        type=int,
        default=[],
        help="detector_ap (COCO): the whole image plus tiles of these sides, px (sliced inference)",
    )
    g.add_argument(
        "--weights", type=Path, help="detector ONNX / CARN-M weights (default: the shared ones)"
    )
    g.add_argument("--sahi-images", type=int, default=40, help="0: skip sahi's own slicing")
    g.add_argument("--sahi-tile", type=int, default=256)
    g = p.add_argument_group("d_classes (also --run-dir: the experiment's output folder)")
    g.add_argument("--experiment", default="experiments/real_coco.yaml", help="experiment file")
    g.add_argument("--row", default="sod", help="row key of the experiment file")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--steps", nargs="+", type=int, default=[0, 100, 200, 400, 800, 1600, 2400])
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="experiment file override")
    g.add_argument("--quick", action="store_true", help="the experiment file's quick section")
    g = p.add_argument_group("sr (also --images, --max-images, --weights, --batch, --rounds)")
    g.add_argument("--sr-parts", nargs="+", default=["psnr", "cost"], choices=["psnr", "cost"])
    g.add_argument("--crops", type=int, default=240, help="HR crops per source and size")
    g.add_argument("--hr-sizes", nargs="+", type=int, default=[32, 64, 128], help="PSNR, px")
    g.add_argument(
        "--lr-sizes", nargs="+", type=int, default=[8, 16, 32], help="cost (sr, export), px"
    )
    g = p.add_argument_group("export (also --sizes, --variants, --lr-sizes, --rois, --rounds)")
    g.add_argument("--exporters", nargs="+", default=["dynamo"], choices=["dynamo", "torchscript"])
    g.add_argument("--opset", type=int, default=18, help="ONNX opset (export)")
    g = p.add_argument_group("budget")
    g.add_argument("--run", help="a trained WIDER run folder (checkpoints/last.ckpt)")
    g.add_argument("--demo-dir", help="a finished `gan-detect demo` folder")
    g.add_argument("--quick-demo", action="store_true", help="train `demo --quick` if absent")
    g.add_argument("--stages", nargs="+", default=["faces", "objects"])
    g.add_argument("--top-k", nargs="+", type=int)
    g.add_argument("--thresholds", nargs="+", type=float)
    g.add_argument("--fusions", nargs="+", default=["learned", "geometric_mean"])
    g.add_argument("--tolerance", type=float, help="AP points (demo 0.2, run folder 0.5)")
    g = p.add_argument_group("data")
    g.add_argument("--source", default="both", choices=["generated", "wider", "both"])
    g.add_argument("--store-images", type=int, default=40, help="images mined into the store")
    g.add_argument("--rois-per-image", type=int, default=32)
    g.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    g.add_argument("--feed", action="store_true", help="time the training step fed by the store")
    g = p.add_argument_group("ddp / under_load / old_vs_new")
    g.add_argument("--ddp-processes", nargs="+", type=int, default=[1, 2])
    g.add_argument("--ddp-devices", type=int, default=0, help=argparse.SUPPRESS)
    g.add_argument("--ddp-worker-out", help=argparse.SUPPRESS)
    g.add_argument("--workload", default="demo", choices=["demo", "conv", "train"])
    g.add_argument("--competitors", type=int, default=1)
    g.add_argument(
        "--wait-policies",
        nargs="+",
        default=["default"],
        help="default | an OMP_WAIT_POLICY value | spin=N (GOMP_SPINCOUNT)",
    )
    g.add_argument("--old", help="work tree of the old commit")
    g.add_argument("--new", default=".", help="work tree of the new commit")
    g.add_argument("--command", default=None, help="per tree: {tree} {out} {data} filled in")
    g.add_argument(
        "--run-dir",
        help="output folder of old_vs_new (default runs/old_vs_new); d_classes: the "
        "experiment's (default runs/<name>); detector_ap --detector retinaface: proposals kept "
        "and reused (default: a temporary folder)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, apply the thread defaults, run one kind (or render ``--table``)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.table:
        from gan_detect.app.benchmark.table import render

        print(render(args.table))
        return 0
    if not args.bench:
        p.error("give --bench KIND or --table JSONL...")
    from gan_detect.utils.threads import configure_threads

    configure_threads(args.threads)  # bounded OpenMP spinning before torch loads, as the CLI
    for k, v in DEFAULTS[args.bench].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.variants is None:
        from gan_detect.variants import VARIANTS

        args.variants = sorted(VARIANTS)
    if args.command is None:
        from gan_detect.app.benchmark.load import DEFAULT_COMMAND

        args.command = DEFAULT_COMMAND
    from gan_detect.app.benchmark.common import SIZES, Recorder

    bad = [s for s in args.sizes if s not in SIZES]
    if bad:
        p.error(f"--sizes {' '.join(bad)}: unknown; valid: {', '.join(SIZES)}")
    options = {
        k: v for k, v in sorted(vars(args).items()) if k not in _INTERNAL and v not in (None, False)
    }
    options = json.loads(json.dumps(options, default=str))
    if args.device != "cpu":
        import torch

        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    rec = Recorder(args.bench, options, args.out, args.budget_s)
    module, func, _ = KINDS[args.bench]
    run = getattr(importlib.import_module(f"gan_detect.app.benchmark.{module}"), func)
    run(args, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
