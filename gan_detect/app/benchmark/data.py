"""Data benchmarks (``data``): the on-disk ROI store against mining ROIs from the image files
(build time, ROI pairs/s into a training loop, with and without DataLoader workers), the cost of
deriving LR per item, the inference crop methods, and with ``--feed`` the training step fed by
the store's DataLoader against the same step on a resident batch (GPU utilisation)."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from gan_detect.app.benchmark.common import (
    Recorder,
    build_from_raw,
    device_of,
    median,
    raw_config,
    smooth_rois,
    sync,
    to_device,
)
from gan_detect.app.benchmark.modes import Mode
from gan_detect.app.benchmark.train import TrainMode
from gan_detect.data.batch import RoiBatch
from gan_detect.data.records import ImageRecord


def generated_records(root: Path, n: int, seed: int = 0) -> list[ImageRecord]:
    """``n`` 640x480 JPEGs: smooth noise with 3-15 bright rectangles (8-120 px) as objects."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        low = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(low).resize((640, 480), Image.Resampling.BICUBIC)).copy()
        k = int(rng.integers(3, 16))
        side = np.exp(rng.uniform(np.log(8), np.log(120), k))
        x0, y0 = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
        boxes = np.stack([x0, y0, x0 + side, y0 + side * rng.uniform(0.8, 1.4, k)], 1)
        boxes[:, 3] = np.minimum(boxes[:, 3], 480)
        for b in boxes.astype(int):
            arr[b[1] : b[3], b[0] : b[2]] = rng.integers(150, 255, size=3)
        path = root / f"gen_{i:03d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        recs.append(ImageRecord(f"gen/{i:03d}", str(path), boxes, np.ones(k), np.zeros(k, bool)))
    return recs


def wider_records(wider_train: Path, n: int) -> list[ImageRecord]:
    """The first ``n`` images of the shared WIDER train subset whose files exist."""
    lines = (wider_train / "wider_face_train_bbx_gt.subset.txt").read_text().split("\n")
    recs: list[ImageRecord] = []
    i = 0
    while i < len(lines) and len(recs) < n:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        count = int(lines[i + 1])
        rows = [lines[i + 2 + j].split() for j in range(max(count, 1))]
        i += 2 + max(count, 1)
        path = wider_train / "images" / name
        if count == 0 or not path.exists():
            continue
        t = np.array([[float(v) for v in r[:8]] for r in rows])
        boxes = np.concatenate([t[:, :2], t[:, :2] + t[:, 2:4]], 1)
        recs.append(ImageRecord(name[:-4], str(path), boxes, np.ones(count), t[:, 7] > 0))
    return recs


def loader_rate(ds: Dataset[Any], batch_size: int, workers: int, batches: int) -> dict[str, float]:
    """ROI pairs/s over ``batches`` batches after one warm-up batch (workers started)."""
    dl = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=RoiBatch.collate,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(dl)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(dl)
            b = next(it)
        n += len(b)
    dt = time.perf_counter() - t0
    return {"rois": n, "seconds": round(dt, 3), "rois_per_s": round(n / dt, 1)}


def inference_crops(
    rec: Recorder, recs: list[ImageRecord], source: str, n_boxes: int = 600
) -> None:
    """ms per 600 boxes and mean |diff| from the training path (``make_lr(crop_hr(.))``) for
    each inference crop method, on the first image."""
    from gan_detect.data.full_image import load_image
    from gan_detect.data.roi import clip_boxes, crop_hr, crop_lr_for_inference, make_lr

    img = load_image(recs[0].path)
    h, w = img.shape[-2:]
    g = torch.Generator().manual_seed(0)
    side = torch.exp(torch.empty(n_boxes).uniform_(np.log(6), np.log(200), generator=g))
    ctr = torch.rand(n_boxes, 2, generator=g) * torch.tensor([float(w), float(h)])
    boxes = clip_boxes(torch.cat([ctr - side[:, None] / 2, ctr + side[:, None] / 2], 1), (h, w))
    boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) >= 1).all(1)]
    ref = make_lr(crop_hr(img, boxes, 64, 1.0), 4)
    for method in ("exact", "roi_align_hr", "roi_align"):
        t0 = time.perf_counter()
        lr = crop_lr_for_inference(img, boxes, 16, 1.0, scale=4, method=method)
        dt = time.perf_counter() - t0
        rec.emit(
            {
                "what": "inference_crop",
                "source": source,
                "method": method,
                "boxes": len(boxes),
                "ms_per_600": round(dt / len(boxes) * 600 * 1e3, 1),
                "mean_abs_diff_vs_training_path": round(float((lr - ref).abs().mean()), 5),
            }
        )


def _batches(loader: DataLoader[Any], device: torch.device) -> Iterator[RoiBatch]:
    """The loader's batches on ``device``, epoch after epoch."""
    while True:
        for b in loader:
            yield to_device(b, device)


class _SmiSampler(AbstractContextManager["_SmiSampler"]):
    """Mean GPU utilisation (%) from ``nvidia-smi`` every 100 ms; None without the tool."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.mean = enabled, None
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> _SmiSampler:
        if self.enabled:
            try:
                self.proc = subprocess.Popen(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-lms",
                        "100",
                        "-i",
                        "0",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate(timeout=10)
            vals = [float(x) for x in out.split() if x.replace(".", "", 1).isdigit()]
            self.mean = round(float(np.mean(vals)), 1) if vals else None  # type: ignore[assignment]


def _feed(args: argparse.Namespace, ds: Dataset[Any], rec: Recorder, source: str) -> None:
    """The first variant's training step (first ``--precision``, channels-last if asked) on a
    resident batch, then fed by the store's DataLoader per ``--workers``; utilisation estimate =
    resident step time / fed step time (1.0: the loader never stalls the device)."""
    device = device_of(args)
    name, size = args.variants[0], args.sizes[0]
    raw = raw_config(name, size, args.batch, args.hr, backbone=args.backbone)
    mode = Mode(args.precision[0], args.channels_last == "on")
    m = TrainMode(mode, build_from_raw(raw, args.seed), device)
    resident = to_device(
        smooth_rois(args.batch, raw["data"]["hr_size"], raw["data"]["num_classes"], args.seed),
        device,
    )
    for r in range(args.warmup + args.rounds):
        m.step(resident, r >= args.warmup)
    t_res = median(m.times)
    for workers in args.workers:
        if rec.out_of_time():
            rec.emit({"what": "feed", "workers": workers, "skipped": True})
            continue
        loader = DataLoader(
            ds,
            batch_size=args.batch,
            shuffle=True,
            num_workers=workers,
            collate_fn=RoiBatch.collate,
            drop_last=True,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )

        it = _batches(loader, device)
        lt = []
        for r in range(2 + args.rounds * 2):  # the loader alone
            sync()
            t0 = time.perf_counter()
            next(it)
            if r >= 2:
                lt.append(time.perf_counter() - t0)
        m.times = []
        with _SmiSampler(device.type == "cuda") as smi:
            for r in range(2 + args.rounds * 2):
                m.step(next(it), r >= 2)
        t_fed = median(m.times)
        rec.emit(
            {
                "what": "feed",
                "source": source,
                "variant": name,
                "size": size,
                "mode": mode.name,
                "workers": workers,
                "batch": args.batch,
                "loader_rois_per_s": round(args.batch / median(lt), 1),
                "resident_step_s": round(t_res, 4),
                "fed_step_s": round(t_fed, 4),
                "fed_rois_per_s": round(args.batch / t_fed, 1),
                "util_est": round(min(1.0, t_res / t_fed), 3),
                "nvidia_smi_util_pct": smi.mean,
                "device": device.type,
            }
        )
        del it, loader


def run_data(args: argparse.Namespace, rec: Recorder) -> None:
    """``data``: per ``--source`` (generated JPEGs, the shared WIDER train subset, or both)."""
    from gan_detect.app.benchmark.evaluation import data_dir
    from gan_detect.data.roi import MiningParams, make_lr
    from gan_detect.data.roi_store import OnTheFlyRoiDataset, RoiStoreDataset, build_roi_store

    sources = ["generated", "wider"] if args.source == "both" else [args.source]
    root_data = data_dir(args) if "wider" in sources else None
    wider_train = None if root_data is None else root_data / "widerface" / "WIDER_train"
    if "wider" in sources and (wider_train is None or not wider_train.is_dir()):
        sources.remove("wider")
        rec.emit({"source": "wider", "skipped": True, "reason": "no shared WIDER train subset"})
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            root = Path(tmp) / src
            root.mkdir()
            recs = (
                generated_records(root, args.store_images)
                if src == "generated"
                else wider_records(wider_train, args.store_images)  # type: ignore[arg-type]
            )
            mining = MiningParams(hr_size=args.hr or 64, rois_per_image=args.rois_per_image)
            # The store's own messages go to stderr: stdout holds only JSON lines.
            with contextlib.redirect_stdout(sys.stderr):
                t0 = time.perf_counter()
                store = build_roi_store(recs, None, root / "store", mining, progress=False)
                build = time.perf_counter() - t0
                t0 = time.perf_counter()
                build_roi_store(recs, None, root / "store", mining, progress=False)
                reuse = time.perf_counter() - t0
            ds = RoiStoreDataset(store, scale=4, hflip=True)
            rec.emit(
                {
                    "what": "store_build",
                    "source": src,
                    "images": len(recs),
                    "rois": len(ds),
                    "build_s": round(build, 2),
                    "images_per_s": round(len(recs) / build, 2),
                    "reuse_s": round(reuse, 3),
                    "hr": mining.hr_size,
                }
            )
            hr = torch.rand(1, 3, mining.hr_size, mining.hr_size) * 2 - 1
            t0 = time.perf_counter()
            for _ in range(500):  # the cost of deriving LR per item (the alternative: storing it)
                make_lr(hr, 4)
            rec.emit(
                {
                    "what": "make_lr_per_item",
                    "source": src,
                    "us": round((time.perf_counter() - t0) / 500 * 1e6, 1),
                }
            )
            if args.feed:
                _feed(args, ds, rec, src)
                continue
            otf = OnTheFlyRoiDataset(recs, None, mining, seed=0)
            per_img = max(1, args.batch // args.rois_per_image)
            for workers in args.workers:
                for name, d, bs in (("store", ds, args.batch), ("on_the_fly", otf, per_img)):
                    r = loader_rate(d, bs, workers, args.rounds)
                    rec.emit(
                        {
                            "what": "loader",
                            "source": src,
                            "dataset": name,
                            "workers": workers,
                            "batch": bs if name == "store" else f"{bs} images",
                            **r,
                        }
                    )
            inference_crops(rec, recs, src)
