"""Proposer benchmarks: baseline detector images/s, training and inference (``proposals``), and
proposal recall by object size of the built-in ONNX proposers (FastestDet, YOLOX-nano), native vs
sliced, beside sahi, with COCO AP by size against the first setting (``recall``)."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from gan_detect.app.benchmark.ceiling import (
    best_ceiling,
    ceiling_fields,
    count_flops,
    heaviest_conv,
    machine_ceiling,
)
from gan_detect.app.benchmark.common import Recorder, device_of
from gan_detect.data.full_image import load_image

DETECTOR_SIZES: dict[str, dict[str, Any]] = {
    # What tests and the demo use.
    "small": {"backbone": "test_resnet", "fpn_channels": 64, "image": 128, "batch": 4},
    # The paper-scale trunk at a reduced input (800 px is minutes per step on 2 CPU cores).
    "large": {"backbone": "resnet50", "fpn_channels": 256, "image": 512, "batch": 2},
}


def _batch(n: int, size: int, gen: torch.Generator) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
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


def _detector_speed(
    size_name: str, arch: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Train and inference images/s (plain model and the ``propose`` inference copy), FLOPs per
    image and the fraction of the machine's ceiling the inference copy reaches."""
    from gan_detect.detector.model import build_detector, training_targets
    from gan_detect.detector.propose import detector_inference_copy

    cfg = DETECTOR_SIZES[size_name]
    size, bs = cfg["image"], cfg["batch"]
    model = build_detector(
        arch,  # type: ignore[arg-type]
        cfg["backbone"],
        fpn_channels=cfg["fpn_channels"],
        min_size=size,
        max_size=size,
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, targets = _batch(bs, size, torch.Generator().manual_seed(args.seed))
    images = [im.to(device) for im in images]
    tgts = [{k: v.to(device) for k, v in t.items()} for t in training_targets(targets)]
    fast: list[torch.nn.Module] = []

    def train_step() -> None:
        loss = sum(model(images, tgts).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    def infer_plain() -> None:
        with torch.no_grad():
            model(images)

    def infer_fast() -> None:  # what `propose` runs: BN folded, channels-last on the CPU
        with torch.no_grad():
            fast[0](images)

    model.eval()
    with torch.no_grad():
        heavy = heaviest_conv(infer_plain)
    ceil_args = (cfg["fpn_channels"], size // 8)
    ceil_before = machine_ceiling(*ceil_args, batch=bs, heaviest=heavy, device=device)
    out: dict[str, Any] = {}
    for mode, step in (("train", train_step), ("infer_plain", infer_plain), ("infer", infer_fast)):
        model.train(mode == "train")
        if mode == "infer":
            fast.append(detector_inference_copy(model))
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.rounds):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{mode}_img_per_s"] = round(bs * args.rounds / (time.perf_counter() - start), 3)
    model.eval()
    out["infer_speedup_over_plain"] = round(
        out["infer_img_per_s"] / out["infer_plain_img_per_s"], 2
    )
    flops = count_flops(infer_plain) / bs  # convs and matmuls of one image (no NMS)
    ceil = best_ceiling(
        ceil_before, machine_ceiling(*ceil_args, batch=bs, heaviest=heavy, device=device)
    )
    return {**out, **ceiling_fields(ceil, flops, out["infer_img_per_s"])}


def run_proposals(args: argparse.Namespace, rec: Recorder) -> None:
    """``proposals``: the baseline detector (``--archs``, ``--detector-sizes``) on random images
    with 1-3 boxes of 16-48 px: ``--rounds`` timed batches after ``--warmup``, per mode."""
    device = device_of(args)
    for size_name in args.detector_sizes:
        for arch in args.archs:
            rec.emit(
                {
                    "detector_size": size_name,
                    "arch": arch,
                    **DETECTOR_SIZES[size_name],
                    "iters": args.rounds,
                    "device": device.type,
                    **_detector_speed(size_name, arch, args, device),
                }
            )


# --- proposal recall of FastestDet on COCO val2017 person ---------------------------------------

BUDGETS = (100, 300, 1000)
IOU = 0.5


# (name, low, high) box areas in px^2; "tiny" lies inside "small".
def _buckets() -> tuple[tuple[str, float, float], ...]:
    """The COCO area ranges of ``metrics.coco_eval`` (defined once there), tiny first."""
    from gan_detect.metrics.coco_eval import area_ranges

    rng = {name: (lo, hi) for name, lo, hi in area_ranges()}
    inf = float("inf")
    return (
        ("tiny", 0.0, rng["tiny"][1]),
        ("small", 0.0, rng["small"][1]),
        ("medium", *rng["medium"]),
        ("large", rng["large"][0], inf),
        ("all", 0.0, inf),
    )


BUCKETS: tuple[tuple[str, float, float], ...] = _buckets()
RECALL_SETTINGS = "native,full+352,full+256,full+176,full+128,full+256+176,176"


@dataclass
class GroundTruth:
    """One image's boxes: ``boxes`` (M, 4) xyxy px, ``areas`` (M,), ``cats`` (M,) COCO ids."""

    boxes: Tensor
    areas: Tensor
    cats: Tensor


def load_split(
    images: Path, ann: Path, split_file: Path | None, split: str, max_images: int | None
) -> list[tuple[int, Path, GroundTruth]]:
    """``(image id, path, ground truth)`` for the split's images, sorted by id."""
    js = json.loads(ann.read_text())
    files = {im["id"]: im["file_name"] for im in js["images"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in js["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    ids = sorted(json.loads(split_file.read_text())[split]) if split_file else sorted(files)
    out = []
    for i in ids[:max_images] if max_images else ids:
        anns = by_image.get(i, [])
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        gt = GroundTruth(
            boxes, xywh[:, 2] * xywh[:, 3], torch.tensor([a["category_id"] for a in anns])
        )
        path = images / files[i]
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path} (give --images with the COCO JPEGs)")
        out.append((i, path, gt))
    return out


class RecallCounter:
    """Objects found per (budget, bucket): class-agnostic and class-aware."""

    def __init__(self) -> None:
        self.total = {b[0]: 0 for b in BUCKETS}
        self.found = {k: {b[0]: 0 for b in BUCKETS} for k in BUDGETS}
        self.found_cls = {k: {b[0]: 0 for b in BUCKETS} for k in BUDGETS}

    def add(self, gt: GroundTruth, boxes: Tensor, cats: Tensor) -> None:
        """One image: proposals ``boxes`` (D, 4) sorted by score, their COCO ids ``cats`` (D,)."""
        masks = {name: (gt.areas >= lo) & (gt.areas < hi) for name, lo, hi in BUCKETS}
        for name, m in masks.items():
            self.total[name] += int(m.sum())
        if len(gt.boxes) == 0:
            return
        iou = box_iou(gt.boxes, boxes) if len(boxes) else torch.zeros(len(gt.boxes), 0)
        hit = iou >= IOU
        same = hit & (gt.cats[:, None] == cats[None, :])
        for k in BUDGETS:
            any_k, cls_k = hit[:, :k].any(1), same[:, :k].any(1)
            for name, m in masks.items():
                self.found[k][name] += int((any_k & m).sum())
                self.found_cls[k][name] += int((cls_k & m).sum())

    def table(self, found: dict[int, dict[str, int]]) -> dict[str, dict[str, float]]:
        return {
            str(k): {n: round(found[k][n] / max(self.total[n], 1), 4) for n in self.total}
            for k in BUDGETS
        }


def parse_setting(name: str) -> tuple[tuple[int, ...], bool]:
    """``native`` -> ((), True); ``full+256+176`` -> ((256, 176), True); ``176`` -> ((176,), False).

    A ``:drop`` suffix (the tile setting ``drop_cut``) is read by the caller and ignored here."""
    name = name.removesuffix(":drop")
    if name == "native":
        return (), True
    parts = name.split("+")
    full = parts[0] == "full"
    return tuple(int(p) for p in (parts[1:] if full else parts) if p), full


def _detector_class(name: str) -> Any:
    """The built-in tiled ONNX proposer called ``name`` (``fastestdet`` or ``yolox_nano``)."""
    from gan_detect.detector.fastestdet import FastestDetDetector
    from gan_detect.detector.yolox_nano import YoloxNanoDetector

    classes = {"fastestdet": FastestDetDetector, "yolox_nano": YoloxNanoDetector}
    if name not in classes:
        raise SystemExit(f"--detector {name}: unknown; valid: {', '.join(classes)}")
    return classes[name]


def coco_rows(image_id: int, boxes: Tensor, cats: Tensor, scores: Tensor) -> list[dict]:
    """COCO result dicts (xywh) of the 100 best proposals of one image (boxes (D, 4) xyxy by
    score, COCO ids (D,), scores (D,)): what COCO AP at maxDets 100 reads."""
    rows = []
    for (x1, y1, x2, y2), c, s in zip(
        boxes[:100].tolist(), cats[:100].tolist(), scores[:100].tolist(), strict=True
    ):
        rows.append(
            {"image_id": image_id, "category_id": int(c), "score": float(s),
             "bbox": [x1, y1, x2 - x1, y2 - y1]}
        )  # fmt: skip
    return rows


def _recall_setting(
    name: str,
    data: list[tuple[int, Path, GroundTruth]],
    args: argparse.Namespace,
    detector: str = "fastestdet",
    results: list[dict] | None = None,
) -> dict[str, Any]:
    """One setting's recall row; ``results`` (when given) receives its COCO results (top 100)."""
    from gan_detect.detector.fastestdet import COCO_CATEGORY_IDS

    tiles, full = parse_setting(name)
    drop = name.endswith(":drop")
    det = _detector_class(detector)(
        args.weights,
        score_thresh=0.001,
        detections_per_img=max(BUDGETS),
        num_threads=args.threads,
        tile_sizes=tiles,
        tile_overlap=args.overlap,
        full_image=full,
        drop_cut=drop,
    )
    det.detect(load_image(str(data[0][1])))  # untimed warm-up: onnxruntime's first run is slow
    counter = RecallCounter()
    det_s = load_s = 0.0
    n_props, n_runs = [], []
    for image_id, path, gt in data:
        t0 = time.perf_counter()
        image = load_image(str(path))
        t1 = time.perf_counter()
        out = det.detect(image)
        det_s += time.perf_counter() - t1
        load_s += t1 - t0
        # both proposers label 1..80 in COCO's contiguous order
        cats = torch.tensor(COCO_CATEGORY_IDS)[out["labels"] - 1]
        if results is not None:
            results += coco_rows(image_id, out["boxes"], cats, out["scores"])
        n_props.append(len(out["boxes"]))
        n_runs.append(len(det.tiles(*image.shape[1:])) + int(full or not tiles))
        counter.add(gt, out["boxes"], cats)
    return {
        "detector": detector,
        "setting": name,
        "tile_sizes": list(tiles),
        "tile_overlap": args.overlap if tiles else None,
        "full_image": full or not tiles,
        "drop_cut": drop,
        "images": len(data),
        "objects": counter.total,
        "recall": counter.table(counter.found),
        "recall_cls": counter.table(counter.found_cls),
        "proposals_per_image": round(float(np.mean(n_props)), 1),
        "network_runs_per_image": round(float(np.mean(n_runs)), 1),
        "s_per_image": round(det_s / len(data), 4),
        "jpeg_s_per_image": round(load_s / len(data), 4),
    }


def ap_against(
    ann: Path, data: list[tuple[int, Path, GroundTruth]], first: list[dict], res: list[dict]
) -> dict[str, Any]:
    """COCO AP (by size, maxDets 100) of ``res`` and of ``first`` on these images, with paired
    image-bootstrap intervals of ``res`` - ``first`` (1,000 resamples, seed 0)."""
    from gan_detect.metrics.bootstrap import coco_paired_bootstrap

    js = json.loads(ann.read_text())
    ids = {i for i, _, _ in data}
    gt = {
        **js,
        "images": [im for im in js["images"] if im["id"] in ids],
        "annotations": [a for a in js["annotations"] if a["image_id"] in ids],
    }
    return coco_paired_bootstrap(gt, first, res, n_boot=1000, seed=0, max_dets=100).to_dict()


def _sahi_rows(
    data: list[tuple[int, Path, GroundTruth]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """sahi's own ``get_sliced_prediction`` (a ``DetectionModel`` wrapping the same ONNX
    detector) with NMS (IoU 0.45) and its default GREEDYNMM (IOS 0.5), same images and tiles."""
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

    from gan_detect.detector.fastestdet import COCO_CATEGORY_IDS, FastestDetDetector

    class FastestDetSahi(DetectionModel):  # type: ignore[misc]
        """FastestDet (whole input stretched to 352) as a sahi model; one call per slice."""

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {str(i): str(c) for i, c in enumerate(COCO_CATEGORY_IDS, 1)}

        def perform_inference(self, image: np.ndarray) -> None:
            rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, :3])).permute(2, 0, 1)
            self._original_predictions = self.model.detect(rgb.float().div(255.0))

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list: Any = None, full_shape_list: Any = None
        ) -> None:
            d = self._original_predictions
            # sahi passes either [[x, y]] or a bare [x, y] (its older layout); same for the shape
            if shift_amount_list and not isinstance(shift_amount_list[0], list | tuple):
                shift_amount_list = [shift_amount_list]
            if full_shape_list and not isinstance(full_shape_list[0], list | tuple):
                full_shape_list = [full_shape_list]
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            full = full_shape_list[0] if full_shape_list else None
            keep = d["scores"] >= self.confidence_threshold
            self._object_prediction_list_per_image = [
                [
                    ObjectPrediction(
                        bbox=b,
                        category_id=int(lab),
                        category_name=str(int(lab)),
                        score=float(s),
                        shift_amount=shift,
                        full_shape=full,
                    )
                    for b, s, lab in zip(
                        d["boxes"][keep].tolist(),
                        d["scores"][keep].tolist(),
                        d["labels"][keep].tolist(),
                        strict=True,
                    )
                ]
            ]

    base = FastestDetDetector(args.weights, score_thresh=0.001, num_threads=args.threads)
    base.detect(load_image(str(data[0][1])))  # untimed warm-up
    model = FastestDetSahi(model=base, confidence_threshold=0.001)
    tile, rows = args.sahi_tile, []
    for post, metric, thr in (("NMS", "IOU", 0.45), ("GREEDYNMM", "IOS", 0.5)):
        counter, secs = RecallCounter(), 0.0
        for _, path, gt in data:
            rgb = load_image(str(path)).mul(255).round().byte().permute(1, 2, 0).numpy()
            t0 = time.perf_counter()
            res = get_sliced_prediction(
                rgb,
                model,
                slice_height=tile,
                slice_width=tile,
                overlap_height_ratio=args.overlap,
                overlap_width_ratio=args.overlap,
                perform_standard_pred=True,
                postprocess_type=post,
                postprocess_match_metric=metric,
                postprocess_match_threshold=thr,
                postprocess_class_agnostic=False,
                verbose=0,
                # sahi silently swaps GREEDYNMM for NMS below a 0.5 threshold unless forced
                force_postprocess_type=True,
            )
            secs += time.perf_counter() - t0
            objs = sorted(res.object_prediction_list, key=lambda o: -o.score.value)[: max(BUDGETS)]
            boxes = torch.tensor([o.bbox.to_xyxy() for o in objs], dtype=torch.float32)
            cats = torch.tensor([COCO_CATEGORY_IDS[o.category.id - 1] for o in objs])
            counter.add(gt, boxes.reshape(-1, 4), cats.to(torch.int64))
        rows.append(
            {
                "detector": "fastestdet",
                "setting": f"sahi full+{tile} {post} {metric} {thr}",
                "images": len(data),
                "objects": counter.total,
                "recall": counter.table(counter.found),
                "recall_cls": counter.table(counter.found_cls),
                "s_per_image": round(secs / len(data), 4),
            }
        )
    return rows


def run_recall(args: argparse.Namespace, rec: Recorder) -> None:
    """``recall``: recall at IoU >= 0.5 of the ground truth of ``val2017_person`` split
    ``--split`` with the best 100 / 300 / 1,000 proposals per image of ``--detector``
    (``fastestdet``, the default here, or ``yolox_nano``), by object size, class-agnostic and
    class-aware, per ``--settings`` (``native``, ``full+T``: the whole image plus T-px tiles,
    ``T``: tiles alone; ``:drop`` appended: ``tile_drop_cut``, tile boxes touching an inner tile
    edge left out). ``--ap``: also COCO AP by size (100 per image) of each setting with paired
    intervals against the first. ``--sahi-images N``: sahi's own slicing on the first N images
    beside the built-in merge (FastestDet). Boxes of the JSON are integer-truncated and crowd
    regions not flagged, so the size buckets approximate the official ones."""
    from gan_detect.app.benchmark.evaluation import data_dir

    if args.images is None:
        raise SystemExit("--bench recall needs --images DIR (the val2017 JPEGs by file_name)")
    detector = args.detector or "fastestdet"
    data_root = data_dir(args)
    folder = None if data_root is None else data_root / "coco" / "val2017_person"
    ann = (
        Path(args.ann)
        if args.ann
        else (folder / "instances_val2017_person.json" if folder else None)
    )
    if ann is None or not ann.is_file():
        raise SystemExit(f"instances JSON not found: {ann} (give --ann or --data)")
    split_file = folder / "split.json" if folder and (folder / "split.json").is_file() else None
    data = load_split(Path(args.images), ann, split_file, args.split, args.max_images)
    first: list[dict] | None = None
    for name in [s for s in args.settings.split(",") if s]:
        res: list[dict] | None = [] if args.ap else None
        row = _recall_setting(name, data, args, detector, res)
        if res is not None:
            first = res if first is None else first
            row["ap_vs_first"] = ap_against(ann, data, first, res)
        # per row: the machine is shared and the load changes between settings
        rec.emit({**row, "loadavg_1m_end": round(os.getloadavg()[0], 2)})
    if args.sahi_images:
        sub = data[: args.sahi_images]
        own = _recall_setting(f"full+{args.sahi_tile}", sub, args)
        rec.emit({**own, "setting": own["setting"] + " built-in (sahi subset)"})
        for row in _sahi_rows(sub, args):
            rec.emit(row)
