"""Shared pieces of the benchmark scripts: machine description, JSON lines, configs, ROI pairs.

Benchmarks never import from ``tests/``: the ROI generator below is their own (smooth random
blobs, the LR the bicubic antialiased downsample of the HR, as ``gan_detect.data.roi.make_lr``).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gan_detect.data.batch import RoiBatch
from gan_detect.data.roi import make_lr
from gan_detect.utils.device import cpu_model
from gan_detect.variants import get_variant_class


def num_classes_for(variant: str) -> int:
    """A few COCO-like classes (3) when the variant takes them, else face / non-face (1)."""
    return 3 if get_variant_class(variant).accepts_num_classes(3) else 1


# Network sizes. "small": what a 2-core CPU can time in seconds (docs/design.md §5);
# "paper": Table 1 of Bai et al. (64 ch, 8 residual blocks, 256-wide deconvs) + VGG19.
SIZES: dict[str, dict[str, Any]] = {
    "small": {
        "g_channels": 32,
        "g_res_blocks": 4,
        "g_upsample_channels": 64,
        "g_refine_channels": 64,
        "backbone": "resnet18",
    },
    "paper": {
        "g_channels": 64,
        "g_res_blocks": 8,
        "g_upsample_channels": 256,
        "g_refine_channels": 256,
        "backbone": "vgg19",
    },
    # Smoke-test size only (checks a script's code paths in seconds); never reported.
    "tiny": {
        "g_channels": 8,
        "g_res_blocks": 1,
        "g_upsample_channels": 16,
        "g_refine_channels": 16,
        "backbone": "test_resnet",
    },
}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def machine() -> dict[str, Any]:
    """CPU model and cores, GPU name (if CUDA), library versions, torch threads, load average."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "device": gpu or "cpu",
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "lightning": _version("lightning"),
        "timm": _version("timm"),
        "torchmetrics": _version("torchmetrics"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        # The 2-core dev machine is shared: a high load average means noisy absolute numbers.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


_MACHINE: dict[str, Any] | None = None


def emit(record: dict[str, Any], out: TextIO | None = None) -> None:
    """Print ``record`` as one JSON line with the machine description under ``machine``."""
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = machine()
    line = json.dumps({**record, "machine": _MACHINE}, sort_keys=False, default=str)
    print(line, file=out or sys.stdout, flush=True)


def median(xs: list[float]) -> float:
    """Median (the robust summary on a shared, noisy machine)."""
    return float(statistics.median(xs))


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` holds the wall seconds (CUDA synchronised)."""
    out: list[float] = []
    sync()
    t0 = time.perf_counter()
    yield out
    sync()
    out.append(time.perf_counter() - t0)


def sync() -> None:
    """Wait for queued CUDA work so wall clocks measure it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def raw_config(variant: str, size: str, batch_size: int, hr_size: int = 64, **over: Any) -> dict:
    """Raw experiment containers (what ``GANDetectionModule`` takes) for a benchmark run.

    Args:
        variant: a ``VARIANTS`` name.
        size: a ``SIZES`` key; ``over`` entries like ``backbone="resnet50"`` replace its values.
        batch_size: ROIs per step.
        hr_size: HR crop side in px (LR = hr_size / 4).
    """
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; valid: {sorted(SIZES)}")
    net = {**SIZES[size], **{k: v for k, v in over.items() if v is not None}}
    n = num_classes_for(variant)
    return {
        "variant": {"name": variant, "pretrained": False, **net},
        "data": {
            "name": "wider_face" if n == 1 else "coco",
            "root": "unused",
            "num_classes": n,
            "hr_size": hr_size,
            "batch_size": batch_size,
        },
        # Milestones past the run: the learning rate is constant while timing.
        "optim": {"lr_g": 1e-4, "lr_d": 1e-4, "milestones": [1000]},
        "trainer": {"max_epochs": 1, "accelerator": "auto", "devices": 1},
        "logger": {"kind": "none"},
        "output_dir": "unused",
    }


def smooth_rois(n: int, hr_size: int, num_classes: int, seed: int, scale: int = 4) -> RoiBatch:
    """``n`` synthetic ROI pairs: blurred random discs on a flat colour, random labels and targets.

    Returns:
        RoiBatch with lr (n, 3, hr/scale, hr/scale), hr (n, 3, hr, hr) in [-1, 1].
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, hr_size), torch.linspace(0, 1, hr_size), indexing="ij"
    )
    base = torch.rand(n, 3, 1, 1, generator=g) * 1.2 - 0.6
    hr = base.expand(n, 3, hr_size, hr_size).clone()
    for _ in range(3):
        c = torch.rand(n, 3, 1, 1, generator=g)
        disc = (
            (xx - c[:, 0:1]) ** 2 + (yy - c[:, 1:2]) ** 2 < (0.05 + 0.25 * c[:, 2:3]) ** 2
        ).float()
        colour = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
        hr = hr * (1 - disc) + colour * disc
    hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1).clamp(-1, 1)
    labels = torch.randint(0, num_classes + 1, (n,), generator=g)
    box_targets = torch.randn(n, 4, generator=g) * (labels > 0).float()[:, None]
    src_sizes = torch.rand(n, 2, generator=g) * 60 + 4
    return RoiBatch(make_lr(hr, scale), hr, labels, box_targets, src_sizes)


class _Pairs(Dataset[RoiBatch]):
    def __init__(self, b: RoiBatch) -> None:
        self.b = b

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int) -> RoiBatch:
        s = slice(i, i + 1)
        b = self.b
        return RoiBatch(b.lr[s], b.hr[s], b.labels[s], b.box_targets[s], b.src_sizes[s])


def roi_loader(b: RoiBatch, batch_size: int) -> DataLoader:
    """In-memory loader over ``b`` (no workers, no shuffle, full batches only)."""
    return DataLoader(
        _Pairs(b), batch_size=batch_size, shuffle=False, collate_fn=RoiBatch.collate, drop_last=True
    )


def _best_seconds(fn: Any, reps: int) -> float:
    """Fastest of ``reps`` timed calls after one warm-up (the ceiling is the best the machine does)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        with timed() as t:
            fn()
        best = min(best, t[0])
    return best


def count_flops(fn: Any) -> int:
    """FLOPs of one call of ``fn()`` (``torch.utils.flop_counter``: convs, matmuls, their backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def heaviest_conv(fn: Any) -> dict[str, Any] | None:
    """The convolution shape that carries the most FLOPs in one call of ``fn()``.

    Forward hooks on every ``nn.Conv2d`` record (input shape, in/out channels, kernel, stride,
    padding, groups); FLOPs are summed over calls of the same shape (G's nine refinement convs
    count together). Returns a spec for ``machine_ceiling(heaviest=...)``, or None without convs.
    """
    import torch.nn as nn

    totals: dict[tuple, int] = {}

    def hook(mod: nn.Conv2d, inp: tuple, out: torch.Tensor) -> None:
        x = inp[0]
        key = (
            tuple(x.shape),
            mod.in_channels,
            mod.out_channels,
            mod.kernel_size,
            mod.stride,
            mod.padding,
            mod.groups,
        )
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        totals[key] = totals.get(key, 0) + 2 * k * out.numel()

    # A global forward hook sees every Conv2d that fn() runs, whatever modules it closes over.
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: hook(m, i, o) if isinstance(m, nn.Conv2d) else None
    )
    try:
        fn()
    finally:
        handle.remove()
    if not totals:
        return None
    key = max(totals, key=lambda k: totals[k])
    shape, cin, cout, ks, stride, pad, groups = key
    return {
        "input": list(shape),
        "in_channels": cin,
        "out_channels": cout,
        "kernel": list(ks),
        "stride": list(stride),
        "padding": list(pad),
        "groups": groups,
        "share_of_conv_flops": round(totals[key] / sum(totals.values()), 3),
    }


def _conv_gflops(conv: torch.nn.Conv2d, x: torch.Tensor, reps: int) -> dict[str, float]:
    """GFLOP/s of ``conv(x)`` in the contiguous (NCHW) and channels-last (NHWC) formats."""
    flops = count_flops(lambda: conv(x))
    out = {}
    with torch.no_grad():
        out["contiguous"] = flops / _best_seconds(lambda: conv(x), reps) / 1e9
        conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out["channels_last"] = flops / _best_seconds(lambda: conv_cl(x_cl), reps) / 1e9
    return out


def machine_ceiling(
    channels: int,
    spatial: int,
    batch: int = 64,
    matmul_n: int = 2048,
    reps: int = 3,
    heaviest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine's own ceiling in this run, in GFLOP/s, measured next to the benchmark.

    ``matmul_gflops``: an ``matmul_n``-square fp32 matmul. ``conv_gflops``: one 3x3 convolution of
    G's width (``channels`` in and out, ``batch`` x ``spatial`` x ``spatial``, forward, no grad),
    the better of the NCHW and NHWC memory formats (both are reported). ``heaviest_conv_gflops``
    (with ``heaviest``, from :func:`heaviest_conv`): the network's own heaviest convolution
    shape, timed alone the same way: the speed the whole network would reach if every layer
    ran like its main one. A loaded machine shows up here as a low ceiling, so the fractions
    stay comparable across machines and loads.
    """
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(dev)
    x = torch.randn(batch, channels, spatial, spatial, device=dev)
    with torch.no_grad():
        mm_s = _best_seconds(lambda: a @ b, reps)
    lr = _conv_gflops(conv, x, reps)
    out: dict[str, Any] = {
        "matmul_gflops": round(2 * matmul_n**3 / mm_s / 1e9, 1),
        "conv_gflops": round(max(lr.values()), 1),
        "conv_gflops_by_format": {k: round(v, 1) for k, v in lr.items()},
        "conv_shape": [batch, channels, spatial, spatial],
    }
    if heaviest is not None:
        hconv = torch.nn.Conv2d(
            heaviest["in_channels"],
            heaviest["out_channels"],
            tuple(heaviest["kernel"]),
            tuple(heaviest["stride"]),
            tuple(heaviest["padding"]),
            groups=heaviest["groups"],
        ).to(dev)
        hx = torch.randn(*heaviest["input"], device=dev)
        hv = _conv_gflops(hconv, hx, reps)
        out["heaviest_conv_gflops"] = round(max(hv.values()), 1)
        out["heaviest_conv_gflops_by_format"] = {k: round(v, 1) for k, v in hv.items()}
        out["heaviest_conv"] = heaviest
    return out


def best_ceiling(*ceilings: dict[str, Any]) -> dict[str, Any]:
    """Key-wise best of ceilings measured before and after a run (load changes within seconds)."""
    out = dict(ceilings[0])
    for c in ceilings[1:]:
        for k in ("matmul_gflops", "conv_gflops", "heaviest_conv_gflops"):
            if k in out and k in c:
                out[k] = max(out[k], c[k])
        for k in ("conv_gflops_by_format", "heaviest_conv_gflops_by_format"):
            if k in out and k in c:
                out[k] = {f: max(v, c[k].get(f, v)) for f, v in out[k].items()}
    out["measured"] = len(ceilings)
    return out


def ceiling_fields(ceiling: dict[str, Any], flops_per_roi: float, rois_per_s: float) -> dict:
    """Achieved GFLOP/s from FLOPs per ROI x ROIs/s, and its fraction of the measured ceiling."""
    achieved = flops_per_roi * rois_per_s / 1e9
    return {
        "gflop_per_roi": round(flops_per_roi / 1e9, 4),
        "achieved_gflops": round(achieved, 1),
        "ceiling": ceiling,
        "fraction_of_conv_ceiling": round(achieved / ceiling["conv_gflops"], 3),
        "fraction_of_matmul_ceiling": round(achieved / ceiling["matmul_gflops"], 3),
        **(
            {"fraction_of_heaviest_conv": round(achieved / ceiling["heaviest_conv_gflops"], 3)}
            if "heaviest_conv_gflops" in ceiling
            else {}
        ),
    }
