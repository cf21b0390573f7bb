"""The GPU checks in one short script (< 8 minutes on an H100): precision modes and the data feed.

1. Per variant at paper size (Table 1 generator 64 ch / 8 blocks / 256 wide; the variant's own
   discriminator trunk: vgg19 for tiny_face, resnet50 for SOD-MTGAN, unless ``--backbone``):
   training ROIs/s (D step + G step, the engine's step as a plain loop, batch resident on the
   GPU) and inference ROIs/s (G+D) in fp32, bf16 autocast, and bf16 autocast + torch.compile.
2. The ROI data pipeline: an on-disk ROI store (``build_roi_store`` on generated JPEGs) read by
   ``RoiStoreDataset`` + DataLoader with workers, alone and feeding the bf16 training step. GPU
   utilisation = resident-batch step time / fed step time (1.0 = the loader never stalls the
   GPU), plus ``nvidia-smi`` utilisation samples when the tool exists.

    python benchmarks/gpu_suite.py                 # on a CUDA machine
    python benchmarks/gpu_suite.py --device cpu --size tiny --steps 2   # smoke test of the code

Without CUDA (and no ``--device cpu``) it prints one JSON line saying it was skipped. A time
budget (``--budget-s``) skips what is left (reported as skipped) instead of overrunning.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

try:
    from _common import emit, median, raw_config, smooth_rois, sync
    from step_time import plain_step
except ImportError:  # imported as benchmarks.gpu_suite
    from benchmarks._common import emit, median, raw_config, smooth_rois, sync
    from benchmarks.step_time import plain_step

from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.data.records import ImageRecord
from gan_detect.data.roi import MiningParams
from gan_detect.data.roi_store import RoiStoreDataset, build_roi_store
from gan_detect.variants import VARIANTS, GANVariant, build_variant

MODES = ("fp32", "bf16", "bf16_compile")


def _autocast(device: torch.device, mode: str) -> AbstractContextManager[Any]:
    if mode == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _to(b: RoiBatch, device: torch.device) -> RoiBatch:
    return RoiBatch(*(t.to(device, non_blocking=True) for t in vars(b).values()))


class Bench:
    """One variant's networks and optimisers on the device, in one precision mode."""

    def __init__(self, raw: dict, device: torch.device, mode: str, seed: int) -> None:
        cfg = to_experiment_config(raw)
        torch.manual_seed(seed)
        self.variant: GANVariant = build_variant(cfg.variant, cfg.data.num_classes).to(device)
        self.opt_g = (
            torch.optim.Adam(self.variant.generator.parameters(), lr=1e-4)
            if self.variant.has_trainable_generator
            else None
        )
        self.opt_d = torch.optim.Adam(self.variant.discriminator.parameters(), lr=1e-4)
        if mode.endswith("compile"):
            # Compiled modules share the parameters; the variant's loss code calls them as before.
            self.variant.generator = torch.compile(self.variant.generator)  # type: ignore[assignment]
            self.variant.discriminator = torch.compile(self.variant.discriminator)  # type: ignore[assignment]
        self.device, self.mode = device, mode

    def train_step(self, b: RoiBatch) -> None:
        self.variant.train()
        with _autocast(self.device, self.mode):
            plain_step(self.variant, self.opt_g, self.opt_d, b)

    def infer(self, lr: torch.Tensor) -> None:
        self.variant.eval()
        with _autocast(self.device, self.mode), torch.no_grad():
            self.variant.discriminator(self.variant.generator(lr).sr)


def _time_steps(fn: Any, batches: Any, warmup: int, steps: int) -> tuple[list[float], float]:
    """Per-step seconds after ``warmup`` calls of ``fn(next(batches))``; and warm-up seconds."""
    sync()
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn(next(batches))
    sync()
    t_warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn(next(batches))
        sync()
        times.append(time.perf_counter() - t)
    return times, t_warm


def _measure_mode(
    a: argparse.Namespace, raw: dict, b: RoiBatch, device: torch.device, mode: str
) -> dict[str, Any]:
    """Training and inference ROIs/s of one variant in one precision mode."""
    bench = Bench(raw, device, mode, a.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Compilation happens in the warm-up (train graphs, then the no_grad graphs).
    warm = a.warmup + (2 if mode.endswith("compile") else 0)
    tt, warm_train = _time_steps(bench.train_step, itertools.repeat(b), warm, a.steps)
    ti, warm_inf = _time_steps(bench.infer, itertools.repeat(b.lr), warm, a.steps)
    out: dict[str, Any] = {
        "train_step_ms": round(1000 * median(tt), 2),
        "train_rois_per_s": round(a.batch / median(tt), 1),
        "infer_rois_per_s": round(a.batch / median(ti), 1),
        "warmup_s": round(warm_train + warm_inf, 1),
        "steps": a.steps,
    }
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        del bench
        torch.cuda.empty_cache()
    return out


def precision_modes(
    a: argparse.Namespace, modes: list[str], device: torch.device, deadline: float
) -> dict[str, float]:
    """Part 1 for ``modes``; returns {variant: resident bf16 step seconds} for part 2."""
    resident: dict[str, float] = {}
    for name in a.variants:
        raw = raw_config(name, a.size, a.batch, a.hr, backbone=_backbone(a, name))
        b = _to(smooth_rois(a.batch, a.hr, raw["data"]["num_classes"], a.seed), device)
        for mode in modes:
            rec: dict[str, Any] = {
                "bench": "gpu_precision",
                "variant": name,
                "mode": mode,
                "size": a.size,
                "backbone": raw["variant"]["backbone"],
                "batch": a.batch,
                "hr": a.hr,
            }
            if time.perf_counter() > deadline:
                emit({**rec, "skipped": True, "reason": "time budget spent"})
                continue
            try:
                rec.update(_measure_mode(a, raw, b, device, mode))
            except (
                Exception
            ) as err:  # one failing mode (e.g. a compile error) must not end the suite
                emit({**rec, "error": f"{type(err).__name__}: {err}"[:500]})
                continue
            emit(rec)
            if mode == "bf16":
                resident[name] = rec["train_step_ms"] / 1000
    return resident


def _backbone(a: argparse.Namespace, name: str) -> str | None:
    """``--backbone``, else the variant's own trunk at paper size, else the size's."""
    if a.backbone:
        return str(a.backbone)
    return str(VARIANTS[name].Config().backbone) if a.size == "paper" else None


def generated_records(root: Path, n: int, seed: int) -> list[ImageRecord]:
    """``n`` 640x480 JPEGs of smooth noise with 8-24 bright rectangles (8-160 px) as objects."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        small = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(small).resize((640, 480), Image.BILINEAR)).copy()
        k = int(rng.integers(8, 25))
        side = np.exp(rng.uniform(np.log(8), np.log(160), k))
        x0, y0 = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
        boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)
        for bx in boxes.astype(int):
            arr[bx[1] : bx[3], bx[0] : bx[2]] = rng.integers(150, 255, size=3)
        path = root / f"img_{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        recs.append(ImageRecord(f"gen/{i:04d}", str(path), boxes, np.ones(k), np.zeros(k, bool)))
    return recs


def _cycle(loader: DataLoader, device: torch.device) -> Any:
    while True:
        for b in loader:
            yield _to(b, device)


class SmiSampler(AbstractContextManager["SmiSampler"]):
    """Mean GPU utilisation (%) from ``nvidia-smi`` sampled every 100 ms; None without the tool."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.proc, self.mean = enabled, None, None

    def __enter__(self) -> SmiSampler:
        if self.enabled:
            try:
                self.proc = subprocess.Popen(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                     "-lms", "100", "-i", "0"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
            except OSError:
                self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=10)
            vals = [float(x) for x in out.split() if x.replace(".", "", 1).isdigit()]
            self.mean = round(float(np.mean(vals)), 1) if vals else None


def data_pipeline(
    a: argparse.Namespace, device: torch.device, resident: dict[str, float], deadline: float
) -> None:
    """Part 2: ROI store loader alone and feeding the bf16 training step of the first variant."""
    name = a.variants[0]
    raw = raw_config(name, a.size, a.batch, a.hr, backbone=_backbone(a, name))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        recs = generated_records(Path(tmp), a.images, a.seed)
        store = build_roi_store(
            recs,
            None,
            Path(tmp) / "store",
            MiningParams(hr_size=a.hr, rois_per_image=32),
            progress=False,
        )
        ds = RoiStoreDataset(store, scale=4, hflip=True)
        emit({"bench": "gpu_data_store", "images": a.images, "rois": len(ds),
              "build_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        bench = Bench(raw, device, "bf16", a.seed) if name in resident else None
        for workers in a.workers:
            rec: dict[str, Any] = {"bench": "gpu_data_feed", "variant": name, "workers": workers,
                                   "batch": a.batch, "hr": a.hr, "mode": "bf16"}  # fmt: skip
            if time.perf_counter() > deadline:
                emit({**rec, "skipped": True, "reason": "time budget spent"})
                continue
            loader = DataLoader(
                ds, batch_size=a.batch, shuffle=True, num_workers=workers,
                collate_fn=RoiBatch.collate, drop_last=True, pin_memory=device.type == "cuda",
                persistent_workers=workers > 0,
            )  # fmt: skip
            it = _cycle(loader, device)
            lt, _ = _time_steps(lambda b: None, it, 2, a.steps * 2)
            rec["loader_rois_per_s"] = round(a.batch / median(lt), 1)
            if bench is not None:
                with SmiSampler(device.type == "cuda") as smi:
                    ft, _ = _time_steps(bench.train_step, it, 2, a.steps * 2)
                rec.update(
                    fed_step_ms=round(1000 * median(ft), 2),
                    resident_step_ms=round(1000 * resident[name], 2),
                    fed_rois_per_s=round(a.batch / median(ft), 1),
                    gpu_util_est=round(min(1.0, resident[name] / median(ft)), 3),
                    nvidia_smi_util_pct=smi.mean,
                )
            emit(rec)
            del it, loader


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--size", default="paper", help="paper | small | tiny")
    p.add_argument("--backbone", default=None, help="one trunk for all (default: the variant's)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hr", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=120, help="generated images in the ROI store")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    p.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this")
    p.add_argument("--device", default=None, help="cuda (default when available) | cpu (smoke)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.device is None and not torch.cuda.is_available():
        emit({"bench": "gpu_suite", "skipped": True, "reason": "no CUDA device"})
        return
    device = torch.device(a.device or "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    deadline = time.perf_counter() + a.budget_s
    # Cheap measurements first; compilation (the slow part) last, so a spent budget loses least.
    resident = precision_modes(a, [m for m in a.modes if m != "bf16_compile"], device, deadline)
    if a.workers:
        data_pipeline(a, device, resident, deadline)
    precision_modes(a, [m for m in a.modes if m == "bf16_compile"], device, deadline)


if __name__ == "__main__":
    main()
