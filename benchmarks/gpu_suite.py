"""The GPU checks as one prepared script (< 8 minutes on an H100), made of the benchmark tool's
kinds: training and inference ROIs/s at paper size in fp32 and bf16, the ROI store's DataLoader
feeding the bf16 step (4 and 8 workers: GPU utilisation), then bf16 + torch.compile last (the
slow part, so a spent time budget loses least).

    python benchmarks/gpu_suite.py                                  # on a CUDA machine
    python benchmarks/gpu_suite.py --device cpu --size tiny --rounds 1 --images 4 --workers 0
                                                                    # smoke test of its code

Paper size: Table 1's generator (64 ch, 8 blocks, 256 wide) with each variant's own trunk
(tiny_face vgg19, SOD-MTGAN resnet50). Without CUDA (and no ``--device cpu``) it prints one JSON
line saying it was skipped. JSON lines go to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gan_detect.app.benchmark import main as bench


def suite(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) | cpu (smoke)")
    p.add_argument("--size", default="paper")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=120, help="generated images in the ROI store")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    p.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_suite.jsonl"))
    a = p.parse_args(argv)
    import torch

    if a.device is None and not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu_suite", "skipped": True, "reason": "no CUDA device"}))
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + a.budget_s
    common = ["--sizes", a.size, "--rounds", str(a.rounds), "--warmup", str(a.warmup),
              "--batch", str(a.batch), "--out", str(a.out)]  # fmt: skip
    common += ["--device", a.device] if a.device else []
    # Paper size: each variant's own trunk (tiny_face vgg19, SOD-MTGAN resnet50); else the size's.
    common += ["--backbone", "variant"] if a.size == "paper" else []
    steps = [
        ["--bench", "train", "--precision", "fp32", "bf16"],
        ["--bench", "infer", "--precision", "fp32", "bf16", "--rois", str(a.batch)],
        ["--bench", "data", "--source", "generated", "--feed", "--precision", "bf16",
         "--store-images", str(a.images), "--workers", *map(str, a.workers),
         "--variants", "tiny_face"],
    ]  # fmt: skip
    if not a.no_compile:
        steps += [
            ["--bench", "train", "--precision", "bf16", "--compile"],
            ["--bench", "infer", "--precision", "bf16", "--compile", "--rois", str(a.batch)],
        ]
    for step in steps:
        left = deadline - time.perf_counter()
        if left <= 0:
            line = json.dumps({"bench": step[1], "skipped": True, "reason": "time budget spent"})
            print(line)
            with a.out.open("a") as f:
                f.write(line + "\n")
            continue
        bench([*step, *common, "--budget-s", f"{left:.0f}"])
    return 0


if __name__ == "__main__":
    sys.exit(suite())
