"""Images per second of the baseline detector: training steps and inference.

One JSON line per (config, arch) with the machine, library versions and settings. Random images
with 1-3 random boxes each; CPU by default. Inference also reports its FLOPs per image
(``FlopCounterMode``) and the fraction of the machine's ceiling measured in the same run (a 2048
matmul, one 3x3 conv of the FPN's width at stride 8, and the detector's own heaviest conv shape).
Inference is timed as ``propose`` runs it (an inference copy: BatchNorm folded, channels-last on
the CPU) and as the plain model (``infer_plain_img_per_s``). Example:

    python benchmarks/detector_speed.py --configs small large --archs fcos retinanet faster_rcnn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import timm
import torch
import torchvision

from gan_detect.detector.model import build_detector, training_targets
from gan_detect.detector.propose import detector_inference_copy

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from _common import best_ceiling, ceiling_fields, count_flops, heaviest_conv, machine_ceiling
except ImportError:  # pragma: no cover
    from benchmarks._common import (
        best_ceiling,
        ceiling_fields,
        count_flops,
        heaviest_conv,
        machine_ceiling,
    )

CONFIGS: dict[str, dict[str, Any]] = {
    # What tests and the demo use.
    "small": {"backbone": "test_resnet", "fpn_channels": 64, "image": 128, "batch": 4},
    # The paper-scale trunk at a reduced input size (800 px is minutes per step on 2 CPU cores).
    "large": {"backbone": "resnet50", "fpn_channels": 256, "image": 512, "batch": 2},
}


def _batch(n: int, size: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.rand(3, size, size, generator=gen) for _ in range(n)]
    targets = []
    for _ in range(n):
        k = int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * (size - 48)
        wh = 16 + torch.rand(k, 2, generator=gen) * 32
        targets.append(
            {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.ones(k, dtype=torch.long)}
        )
    return images, targets


def bench(name: str, arch: str, iters: int, warmup: int, device: str) -> dict[str, Any]:
    """Time ``iters`` training steps and ``iters`` inference batches after ``warmup`` of each."""
    cfg = CONFIGS[name]
    size, bs = cfg["image"], cfg["batch"]
    model = build_detector(
        arch,  # type: ignore[arg-type]
        cfg["backbone"],
        fpn_channels=cfg["fpn_channels"],
        min_size=size,
        max_size=size,
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    images, targets = _batch(bs, size, gen)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in training_targets(targets)]

    def train_step() -> None:
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    def infer_step() -> None:
        with torch.no_grad():
            model(images)

    fast_model: torch.nn.Module | None = None

    def infer_fast_step() -> None:  # what `propose` runs: BN folded, channels-last on the CPU
        with torch.no_grad():
            fast_model(images)  # type: ignore[misc]

    # The machine's ceiling next to the run: one 3x3 conv of the FPN's width at stride 8, and
    # the detector's own heaviest conv shape (both in the better memory format).
    model.eval()
    with torch.no_grad():
        heavy = heaviest_conv(infer_step)
    ceil_args = (cfg["fpn_channels"], size // 8)
    ceil_before = machine_ceiling(*ceil_args, batch=bs, heaviest=heavy)
    out: dict[str, Any] = {}
    for mode, step in (
        ("train", train_step),
        ("infer_plain", infer_step),
        ("infer", infer_fast_step),
    ):
        model.train(mode == "train")
        if mode == "infer":
            fast_model = detector_inference_copy(model)
        for _ in range(warmup):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[f"{mode}_img_per_s"] = round(bs * iters / (time.perf_counter() - start), 3)
    model.eval()
    out["infer_speedup_over_plain"] = round(
        out["infer_img_per_s"] / out["infer_plain_img_per_s"], 2
    )
    infer_flops = count_flops(infer_step) / bs  # convs and matmuls of one image (no NMS)
    ceil = best_ceiling(ceil_before, machine_ceiling(*ceil_args, batch=bs, heaviest=heavy))
    infer = ceiling_fields(ceil, infer_flops, out["infer_img_per_s"])
    out["infer_gflop_per_image"] = infer.pop("gflop_per_roi")
    out.update({f"infer_{k}" if k != "ceiling" else k: v for k, v in infer.items()})
    return {
        "config": name,
        "arch": arch,
        **cfg,
        "iters": iters,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        **out,
    }


def main() -> None:
    """Parse arguments and print one JSON line per run."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", nargs="+", default=["small", "large"], choices=sorted(CONFIGS))
    p.add_argument("--archs", nargs="+", default=["fcos", "retinanet", "faster_rcnn"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.configs:
        for arch in args.archs:
            print(json.dumps(bench(name, arch, args.iters, args.warmup, args.device)), flush=True)


if __name__ == "__main__":
    main()
