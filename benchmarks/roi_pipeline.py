"""ROI pairs per second into a training loop: the on-disk ROI store vs mining from image files.

Also times the store build, LR-on-the-fly cost (why LR is not stored) and the inference crop
methods (600 boxes per image). Prints JSON lines; ``--write`` saves benchmarks/RESULTS_roi.md.

    python benchmarks/roi_pipeline.py --images 40 --batches 20 --write
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gan_detect.data.batch import RoiBatch
from gan_detect.data.full_image import load_image
from gan_detect.data.records import ImageRecord
from gan_detect.data.roi import MiningParams, clip_boxes, crop_hr, crop_lr_for_inference, make_lr
from gan_detect.data.roi_store import OnTheFlyRoiDataset, RoiStoreDataset, build_roi_store

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from _common import machine
except ImportError:  # pragma: no cover
    from benchmarks._common import machine

WIDER = Path(os.environ.get("GAN_DETECT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
WIDER_TRAIN = WIDER / "widerface/WIDER_train"


def generated_records(root: Path, n: int, seed: int = 0) -> list[ImageRecord]:
    """n 640x480 JPEGs: textured noise with 3-15 bright-ish rectangles (8-120 px) as objects."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        low = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize((640, 480), Image.BICUBIC)
        arr = np.asarray(im).copy()
        k = int(rng.integers(3, 16))
        side = np.exp(rng.uniform(np.log(8), np.log(120), k))
        x0 = rng.uniform(0, 640 - side)
        y0 = rng.uniform(0, 480 - side)
        boxes = np.stack([x0, y0, x0 + side, y0 + side * rng.uniform(0.8, 1.4, k)], 1)
        boxes[:, 3] = np.minimum(boxes[:, 3], 480)
        for b in boxes.astype(int):
            arr[b[1] : b[3], b[0] : b[2]] = rng.integers(150, 255, size=3)
        path = root / f"gen_{i:03d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        recs.append(ImageRecord(f"gen/{i:03d}", str(path), boxes, np.ones(k), np.zeros(k, bool)))
    return recs


def wider_records(n: int) -> list[ImageRecord]:
    """First n images of the shared WIDER train subset whose files exist (invalid -> ignore)."""
    lines = (WIDER_TRAIN / "wider_face_train_bbx_gt.subset.txt").read_text().split("\n")
    recs, i = [], 0
    while i < len(lines) and len(recs) < n:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        count = int(lines[i + 1])
        rows = [lines[i + 2 + j].split() for j in range(max(count, 1))]
        i += 2 + max(count, 1)
        path = WIDER_TRAIN / "images" / name
        if count == 0 or not path.exists():
            continue
        t = np.array([[float(v) for v in r[:8]] for r in rows])
        boxes = np.concatenate([t[:, :2], t[:, :2] + t[:, 2:4]], 1)
        recs.append(ImageRecord(name[:-4], str(path), boxes, np.ones(count), t[:, 7] > 0))
    return recs


def loader_rate(ds: Any, batch_size: int, workers: int, batches: int) -> dict[str, float]:
    """ROI pairs/s over ``batches`` batches after one warm-up batch (workers started)."""
    dl = DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers,
        collate_fn=RoiBatch.collate, persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
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


def inference_crops(recs: list[ImageRecord], n_boxes: int = 600) -> list[dict[str, Any]]:
    """ms per image and mean |diff| vs make_lr(crop_hr(.)) for each inference crop method."""
    img = load_image(recs[0].path)
    h, w = img.shape[-2:]
    g = torch.Generator().manual_seed(0)
    side = torch.exp(torch.empty(n_boxes).uniform_(np.log(6), np.log(200), generator=g))
    ctr = torch.rand(n_boxes, 2, generator=g) * torch.tensor([float(w), float(h)])
    boxes = clip_boxes(torch.cat([ctr - side[:, None] / 2, ctr + side[:, None] / 2], 1), (h, w))
    boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) >= 1).all(1)]
    ref = make_lr(crop_hr(img, boxes, 64, 1.0), 4)
    out = []
    for method in ("exact", "roi_align_hr", "roi_align"):
        t0 = time.perf_counter()
        lr = crop_lr_for_inference(img, boxes, 16, 1.0, scale=4, method=method)
        dt = time.perf_counter() - t0
        out.append({
            "bench": "inference_crop", "method": method, "boxes": len(boxes),
            "ms_per_600": round(dt / len(boxes) * 600 * 1e3, 1),
            "mean_abs_diff_vs_training_path": round(float((lr - ref).abs().mean()), 5),
            "image": recs[0].image_id,
        })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rois-per-image", type=int, default=32)
    ap.add_argument("--hr-size", type=int, default=64)
    ap.add_argument("--source", choices=["generated", "wider", "both"], default="both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    ap.add_argument("--write", action="store_true", help="write benchmarks/RESULTS_roi.md")
    args = ap.parse_args()
    # One thread by default: on a shared 2-core machine intra-op threads oversubscribe and small
    # ops slow down 10x or more; DataLoader workers use one thread each anyway.
    torch.set_num_threads(args.threads)
    env = machine()
    lines: list[dict[str, Any]] = [{"bench": "machine", **env}]
    print(json.dumps(lines[0]), flush=True)
    sources = ["generated", "wider"] if args.source == "both" else [args.source]
    if "wider" in sources and not WIDER_TRAIN.exists():
        sources.remove("wider")
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            root = Path(tmp) / src
            root.mkdir()
            recs = (
                generated_records(root, args.images)
                if src == "generated"
                else wider_records(args.images)
            )
            mining = MiningParams(hr_size=args.hr_size, rois_per_image=args.rois_per_image)
            t0 = time.perf_counter()
            store = build_roi_store(recs, None, root / "store", mining, progress=False)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            build_roi_store(recs, None, root / "store", mining, progress=False)
            reuse = time.perf_counter() - t0
            ds = RoiStoreDataset(store, scale=4, hflip=True)
            res = {"bench": "store_build", "source": src, "images": len(recs), "rois": len(ds),
                   "build_s": round(build, 2), "images_per_s": round(len(recs) / build, 2),
                   "reuse_s": round(reuse, 3), "hr_size": args.hr_size}  # fmt: skip
            lines.append(res)
            print(json.dumps(res), flush=True)
            # Cost of deriving LR per item (the alternative is storing it).
            hr = torch.rand(1, 3, args.hr_size, args.hr_size) * 2 - 1
            t0 = time.perf_counter()
            for _ in range(500):
                make_lr(hr, 4)
            res = {
                "bench": "make_lr_per_item",
                "us": round((time.perf_counter() - t0) / 500 * 1e6, 1),
            }
            lines.append(res)
            print(json.dumps(res), flush=True)
            otf = OnTheFlyRoiDataset(recs, None, mining, seed=0)
            per_img = max(1, args.batch_size // args.rois_per_image)
            for workers in (0, 2):
                for name, d, bs in (("store", ds, args.batch_size), ("on_the_fly", otf, per_img)):
                    r = loader_rate(d, bs, workers, args.batches)
                    res = {"bench": "loader", "source": src, "dataset": name, "num_workers": workers,
                           "batch": bs if name == "store" else f"{bs} images", **r}  # fmt: skip
                    lines.append(res)
                    print(json.dumps(res), flush=True)
            for res in inference_crops(recs):
                res["source"] = src
                lines.append(res)
                print(json.dumps(res), flush=True)
    if args.write:
        write_results(lines, args)


def write_results(lines: list[dict[str, Any]], args: argparse.Namespace) -> None:
    env = lines[0]
    out = [
        "# ROI pipeline benchmark",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores (1-min load average at start "
        f"{env['loadavg_1m']:.1f}: other jobs shared the CPU); torch {env['torch']}, "
        f"torchvision {env['torchvision']}, numpy {env['numpy']}, Python {env['python']}.",
        f"Command: `python benchmarks/roi_pipeline.py --images {args.images} --batches "
        f"{args.batches} --write`; HR {args.hr_size} px, LR {args.hr_size // 4} px, "
        f"{args.rois_per_image} ROIs per image, DataLoader batch {args.batch_size} ROIs "
        "(on-the-fly: batch of images giving the same ROI count).",
        "",
        "| bench | source | settings | result |",
        "| --- | --- | --- | --- |",
    ]
    for r in lines[1:]:
        r = dict(r)
        bench, src = r.pop("bench"), r.pop("source", "")
        if bench == "loader":
            setting = f"{r['dataset']}, workers={r['num_workers']}, batch {r['batch']}"
            result = f"**{r['rois_per_s']} ROI pairs/s** ({r['rois']} in {r['seconds']} s)"
        elif bench == "inference_crop":
            setting = f"{r['method']}, {r['boxes']} boxes 6-200 px"
            result = (f"{r['ms_per_600']} ms per 600 boxes, mean abs diff vs training path "
                      f"{r['mean_abs_diff_vs_training_path']}")  # fmt: skip
        else:
            setting, result = "", ", ".join(f"{k}={v}" for k, v in r.items())
        out.append(f"| {bench} | {src} | {setting} | {result} |")
    path = Path(__file__).with_name("RESULTS_roi.md")
    path.write_text("\n".join(out) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
