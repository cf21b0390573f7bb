"""Shared pieces of the benchmark tool: the JSONL recorder, network sizes, synthetic ROI pairs,
the engine's training step as a plain loop, and the precision / memory-format / compile modes.

The ROI generator is the tool's own (smooth random discs; LR is ``make_lr`` of the HR, as in
training), so benchmarks never import from ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.data.roi import make_lr
from gan_detect.utils.device import cpu_model
from gan_detect.variants import GANVariant, build_variant, get_variant_class

# Network sizes. "small": what a 2-core CPU times in seconds (docs/design.md §5); "paper": Table 1
# of Bai et al. (64 ch, 8 residual blocks, 256-wide deconvs) + VGG19; "tiny": the test-suite size
# (checks code paths in seconds, never reported); "experiment": the real WIDER experiment's GAN
# (HR 32 px, G 16 ch / 2 blocks with a bicubic skip, D = MobileNetV2).
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
    "tiny": {
        "g_channels": 8,
        "g_res_blocks": 1,
        "g_upsample_channels": 16,
        "g_refine_channels": 16,
        "backbone": "test_resnet",
    },
    "experiment": {
        "g_channels": 16,
        "g_res_blocks": 2,
        "g_upsample_channels": 32,
        "g_refine_channels": 32,
        "g_bicubic_skip": True,
        "backbone": "tv_mobilenet_v2",
    },
}
# HR side each size trains at (LR = HR / 4) unless --hr is given.
SIZE_HR = {"small": 64, "paper": 64, "tiny": 64, "experiment": 32}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def cpu_flags() -> list[str]:
    """The vector / bf16 CPU flags that decide which modes pay (bf16 needs avx512_bf16 or AMX)."""
    try:
        have = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)


def bf16_units() -> bool:
    """Whether the CPU has native bf16 instructions (else autocast emulates them)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def machine() -> dict[str, Any]:
    """CPU model and cores, GPU name, library versions, torch threads, load average."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "lightning": _version("lightning"),
        "timm": _version("timm"),
        "torchmetrics": _version("torchmetrics"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        # The development machine is shared: a high load means noisy absolute numbers.
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "omp": {
            k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
        },
    }


class Recorder:
    """Writes one JSON object per measurement to stdout and, with ``out``, appends it there.

    Every line carries ``bench`` (the kind), ``machine`` (:func:`machine`, re-read per line: the
    load changes), the tool's shared options and the UTC time, then the measurement's fields.
    """

    def __init__(
        self,
        bench: str,
        options: dict[str, Any],
        out: Path | None = None,
        budget_s: float | None = None,
    ) -> None:
        self.bench, self.options, self.out = bench, options, out
        self.deadline = None if budget_s is None else time.perf_counter() + budget_s
        self.records: list[dict[str, Any]] = []
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)

    def out_of_time(self) -> bool:
        """Whether ``--budget-s`` is spent (what is left is then reported as skipped)."""
        return self.deadline is not None and time.perf_counter() > self.deadline

    def emit(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Record one measurement; returns the full line."""
        rec = {
            "bench": self.bench,
            **fields,
            "machine": machine(),
            "options": self.options,
            "time_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        line = json.dumps(rec, default=str)
        print(line, flush=True)
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(line + "\n")
        self.records.append(rec)
        return rec


def median(xs: list[float]) -> float:
    """Median: the robust summary on a shared, noisy machine."""
    return float(statistics.median(xs))


def quartiles(xs: list[float]) -> list[float] | None:
    """Lower quartile, median, upper quartile (None for fewer than two values)."""
    return [round(q, 4) for q in statistics.quantiles(xs, n=4)] if len(xs) >= 2 else None


def sync() -> None:
    """Wait for queued CUDA work so wall clocks measure it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` holds the wall seconds (CUDA synchronised)."""
    out: list[float] = []
    sync()
    t0 = time.perf_counter()
    yield out
    sync()
    out.append(time.perf_counter() - t0)


def device_of(args: argparse.Namespace) -> torch.device:
    """``--device``, else CUDA when present, else the CPU."""
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def num_classes_for(variant: str) -> int:
    """A few COCO-like classes (3) when the variant takes them, else face / non-face (1)."""
    return 3 if get_variant_class(variant).accepts_num_classes(3) else 1


def raw_config(
    variant: str, size: str, batch_size: int, hr_size: int | None = None, **over: Any
) -> dict[str, Any]:
    """Raw experiment containers (what ``GANDetectionModule`` takes) for a benchmark run.

    Args:
        variant: a ``VARIANTS`` name.
        size: a ``SIZES`` key; ``over`` entries like ``backbone="resnet50"`` replace its values.
        batch_size: ROIs per step.
        hr_size: HR crop side in px (LR = hr_size / 4); None: the size's own.
    """
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; valid: {sorted(SIZES)}")
    if over.get("backbone") == "variant":  # the variant's own default trunk
        over["backbone"] = get_variant_class(variant).Config().backbone
    net = {**SIZES[size], **{k: v for k, v in over.items() if v is not None}}
    n = num_classes_for(variant)
    return {
        "variant": {"name": variant, "pretrained": False, **net},
        "data": {
            "name": "wider_face" if n == 1 else "coco",
            "root": "unused",
            "num_classes": n,
            "hr_size": hr_size or SIZE_HR[size],
            "batch_size": batch_size,
        },
        # Milestones past the run: the learning rate is constant while timing.
        "optim": {"lr_g": 1e-4, "lr_d": 1e-4, "milestones": [1000]},
        "trainer": {"max_epochs": 1, "accelerator": "auto", "devices": 1},
        "logger": {"kind": "none"},
        "output_dir": "unused",
    }


def build_from_raw(raw: dict[str, Any], seed: int) -> GANVariant:
    """The variant of ``raw`` with seeded weights (the same networks for every mode)."""
    cfg = to_experiment_config(raw)
    torch.manual_seed(seed)
    return build_variant(cfg.variant, cfg.data.num_classes)


def smooth_rois(n: int, hr_size: int, num_classes: int, seed: int, scale: int = 4) -> RoiBatch:
    """``n`` synthetic ROI pairs: blurred random discs on a flat colour, random labels, targets.

    Returns:
        RoiBatch with lr (n, 3, hr/scale, hr/scale), hr (n, 3, hr, hr) in [-1, 1].
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, hr_size), torch.linspace(0, 1, hr_size), indexing="ij"
    )
    hr = (torch.rand(n, 3, 1, 1, generator=g) * 1.2 - 0.6).expand(n, 3, hr_size, hr_size).clone()
    for _ in range(3):
        c = torch.rand(n, 3, 1, 1, generator=g)
        r2 = (0.05 + 0.25 * c[:, 2:3]) ** 2
        disc = ((xx - c[:, 0:1]) ** 2 + (yy - c[:, 1:2]) ** 2 < r2).float()
        colour = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
        hr = hr * (1 - disc) + colour * disc
    hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1).clamp(-1, 1)
    labels = torch.randint(0, num_classes + 1, (n,), generator=g)
    box_targets = torch.randn(n, 4, generator=g) * (labels > 0).float()[:, None]
    src_sizes = torch.rand(n, 2, generator=g) * 60 + 4
    return RoiBatch(make_lr(hr, scale), hr, labels, box_targets, src_sizes)


def split_batches(b: RoiBatch, size: int) -> list[RoiBatch]:
    """``b`` cut into full batches of ``size`` ROIs."""
    fields = (b.lr, b.hr, b.labels, b.box_targets, b.src_sizes)
    return [RoiBatch(*(t[i : i + size] for t in fields)) for i in range(0, len(b) - size + 1, size)]


def to_device(b: RoiBatch, device: torch.device) -> RoiBatch:
    """``b`` with every tensor on ``device``."""
    return RoiBatch(*(t.to(device, non_blocking=True) for t in vars(b).values()))


class _Pairs(Dataset[RoiBatch]):
    def __init__(self, b: RoiBatch) -> None:
        self.b = b

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int) -> RoiBatch:
        return RoiBatch(*(t[i : i + 1] for t in vars(self.b).values()))


def roi_loader(b: RoiBatch, batch_size: int) -> DataLoader[RoiBatch]:
    """In-memory loader over ``b`` (no workers, no shuffle, full batches only)."""
    return DataLoader(
        _Pairs(b), batch_size=batch_size, shuffle=False, collate_fn=RoiBatch.collate, drop_last=True
    )


def _requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def plain_step(
    variant: GANVariant,
    opt_g: torch.optim.Optimizer | None,
    opt_d: torch.optim.Optimizer,
    b: RoiBatch,
) -> None:
    """The engine's training step without Lightning: D step on detached SR, then G step (none
    when ``opt_g`` is None: a variant without a trainable generator). G is frozen in the D step
    and D in the G step, as Lightning's ``toggled_optimizer`` does, so the gradients match."""
    g, d = variant.generator, variant.discriminator
    fake = g(b.lr)
    _requires_grad(g, False)
    d_terms = variant.discriminator_losses(b, fake.detach())
    loss_d = torch.stack([v for k, v in d_terms.items() if k.startswith("loss_")]).sum()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    _requires_grad(g, True)
    if opt_g is None:
        return
    _requires_grad(d, False)
    g_terms = variant.generator_losses(b, fake)
    loss_g = torch.stack([v for k, v in g_terms.items() if k.startswith("loss_")]).sum()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    _requires_grad(d, True)


def adam_pair(
    variant: GANVariant, lr_g: float = 1e-4, lr_d: float = 1e-4
) -> tuple[torch.optim.Optimizer | None, torch.optim.Optimizer]:
    """Adam for G (None without a trainable generator) and for D."""
    opt_g = (
        torch.optim.Adam(variant.generator.parameters(), lr=lr_g)
        if variant.has_trainable_generator
        else None
    )
    return opt_g, torch.optim.Adam(variant.discriminator.parameters(), lr=lr_d)


def best_of(fn: Callable[[], Any], reps: int) -> float:
    """Fastest of ``reps`` timed calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(reps):
        with timed() as t:
            fn()
        best = min(best, t[0])
    return best


def warn(msg: str) -> None:
    """One line on stderr (stdout holds only JSON lines)."""
    print(msg, file=sys.stderr, flush=True)
