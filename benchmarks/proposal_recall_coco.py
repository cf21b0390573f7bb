"""Proposal recall of a built-in COCO proposer (FastestDet, YOLOX-nano) by object size, at its
native input and with sliced inference.

    python benchmarks/proposal_recall_coco.py --images DIR [--max-images N] [--settings a,b]
        [--sahi-images 40] [--detector yolox_nano --ap]

A re-scorer (SOD-MTGAN's D) only re-scores the boxes it is given, so the proposer's recall bounds
what it can reach. For each setting this prints one JSON line: recall at IoU >= 0.5 of the
ground-truth boxes of ``split.json[--split]`` (default ``test``, 655 images) in
``<data>/coco/val2017_person/instances_val2017_person.json``, with the best 100 / 300 / 1,000
proposals per image, by object size (box area: ``tiny`` < 16^2 (inside ``small``), ``small`` <
32^2, ``medium`` < 96^2, ``large``, and ``all``), class-agnostic (``recall``: any proposal; D has
its own classifier) and class-aware (``recall_cls``: a proposal of the same class), plus seconds
per image (detection alone; JPEG decoding apart) and the CPU model as ``lscpu`` reports it.

Settings (``--settings``, comma-separated names):

* ``native``: the whole image at the detector's input (FastestDet: stretched to 352x352;
  YOLOX-nano: letterboxed to 416x416);
* ``full+T`` (e.g. ``full+256``, ``full+256+176``): the whole image plus overlapping square
  tiles of side T px (overlap 0.2), each brought to the input size like a whole image; grid from
  ``sahi.slicing``; all boxes merged by one per-class NMS at IoU 0.45 (``tile_sizes=...``);
* ``T`` without ``full+`` (e.g. ``176``): the tiles alone;
* a ``:drop`` suffix (e.g. ``full+416:drop``): tile boxes touching an inner tile edge are
  dropped before the merge (``drop_cut=True``: parts of objects the tile cuts).

``--detector`` (``fastestdet``, the default, or ``yolox_nano``) picks the proposer. ``--ap`` also
gives each setting's COCO AP (100 best boxes per image, ``coco_paired_bootstrap``) and its
difference to the first setting with a 95 % paired image-bootstrap interval (1,000 resamples,
seed 0), by object size: the check that tiles gain on small objects without costing large ones.

``--sahi-images N`` (default 40; 0 skips it) also runs sahi's own ``get_sliced_prediction`` (a
``DetectionModel`` wrapping the ONNX detector; its object-level postprocess) for ``--sahi-tile``
on the first N images, with NMS (IoU 0.45, per class) and with sahi's default GREEDYNMM (IOS
0.5), next to the built-in merge on the same images: recall and seconds per image. Boxes of the
JSON are integer-truncated and crowd regions are not flagged (SOURCES.md §8), so the size buckets
approximate the official ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from _common import emit
except ImportError:  # imported as benchmarks.proposal_recall_coco
    from benchmarks._common import emit

from gan_detect.data.full_image import load_image  # noqa: E402
from gan_detect.data.paths import shared_data_dir  # noqa: E402
from gan_detect.detector.fastestdet import COCO_CATEGORY_IDS, FastestDetDetector  # noqa: E402
from gan_detect.detector.onnx_common import TiledOnnxDetector  # noqa: E402
from gan_detect.detector.yolox_nano import YoloxNanoDetector  # noqa: E402

DETECTORS: dict[str, type[TiledOnnxDetector]] = {
    "fastestdet": FastestDetDetector,
    "yolox_nano": YoloxNanoDetector,
}

BUDGETS = (100, 300, 1000)
IOU = 0.5
# (name, low, high) of sqrt-free box areas, px^2; "tiny" lies inside "small".
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("tiny", 0.0, 16.0**2),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, float("inf")),
    ("all", 0.0, float("inf")),
)
DEFAULT_SETTINGS = "native,full+352,full+256,full+176,full+128,full+256+176,176"


def lscpu_model() -> str:
    """``Model name`` from ``lscpu`` ("unknown" without it)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next(
        (
            ln.split(":", 1)[1].strip()
            for ln in text.splitlines()
            if ln.strip().startswith("Model name:")
        ),
        "unknown",
    )


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
    ids = ids[:max_images] if max_images else ids
    out = []
    for i in ids:
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
        hit = iou >= IOU  # (M, D)
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
    """``"native"`` -> ((), True); ``"full+256+176"`` -> ((256, 176), True); ``"176"`` -> ((176,), False).

    A ``:drop`` suffix (``drop_cut``) is read by the caller and ignored here."""
    name = name.removesuffix(":drop")
    if name == "native":
        return (), True
    parts = name.split("+")
    full = parts[0] == "full"
    return tuple(int(p) for p in parts[1:] if p) if full else tuple(int(p) for p in parts), full


def proposals(det: TiledOnnxDetector, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The best ``max(BUDGETS)`` proposals: boxes (D, 4) by score, COCO category ids (D,),
    scores (D,)."""
    out = det.detect(image)
    cats = torch.tensor(COCO_CATEGORY_IDS)[out["labels"] - 1]
    return out["boxes"], cats, out["scores"]


def coco_rows(image_id: int, boxes: Tensor, cats: Tensor, scores: Tensor) -> list[dict]:
    """COCO result dicts (xywh) of the 100 best proposals of one image."""
    b = boxes[:100].tolist()
    return [
        {"image_id": image_id, "category_id": int(c), "score": float(s),
         "bbox": [x1, y1, x2 - x1, y2 - y1]}
        for (x1, y1, x2, y2), c, s in zip(b, cats[:100].tolist(), scores[:100].tolist(),
                                          strict=True)
    ]  # fmt: skip


def run_setting(
    name: str, data: list[tuple[int, Path, GroundTruth]], weights: Path | None,
    threads: int | None, overlap: float, detector: str = "fastestdet",
    results: list[dict] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One setting's recall row; ``results`` (when given) receives its COCO results (top 100)."""
    tiles, full = parse_setting(name)
    det = DETECTORS[detector](weights, score_thresh=0.001, detections_per_img=max(BUDGETS),
                              num_threads=threads, tile_sizes=tiles, tile_overlap=overlap,
                              full_image=full,
                              drop_cut=name.endswith(":drop"))  # fmt: skip
    det.detect(load_image(str(data[0][1])))  # untimed warm-up: onnxruntime's first run is slow
    counter = RecallCounter()
    det_s = load_s = 0.0
    n_props: list[int] = []
    n_runs: list[int] = []
    for image_id, path, gt in data:
        t0 = time.perf_counter()
        image = load_image(str(path))
        t1 = time.perf_counter()
        boxes, cats, scores = proposals(det, image)
        det_s += time.perf_counter() - t1
        if results is not None:
            results += coco_rows(image_id, boxes, cats, scores)
        load_s += t1 - t0
        n_props.append(len(boxes))
        n_runs.append(len(det.tiles(*image.shape[1:])) + int(full or not tiles))
        counter.add(gt, boxes, cats)
    return {
        "detector": detector,
        "setting": name,
        "tile_sizes": list(tiles),
        "tile_overlap": overlap if tiles else None,
        "full_image": full or not tiles,
        "drop_cut": name.endswith(":drop"),
        "images": len(data),
        "objects": counter.total,
        "recall": counter.table(counter.found),
        "recall_cls": counter.table(counter.found_cls),
        "proposals_per_image": round(float(np.mean(n_props)), 1),
        "network_runs_per_image": round(float(np.mean(n_runs)), 1),
        "seconds_per_image": round(det_s / len(data), 4),
        "jpeg_seconds_per_image": round(load_s / len(data), 4),
        "cpu_lscpu": lscpu_model(),
        # Per row: the machine is shared, and the load changes between settings.
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }


def sahi_comparison(
    data: list[tuple[int, Path, GroundTruth]], weights: Path | None, threads: int | None,
    tile: int, overlap: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """sahi's own ``get_sliced_prediction`` vs the built-in merge, same images and tiles."""
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

    class FastestDetSahi(DetectionModel):
        """FastestDet (whole input stretched to 352) as a sahi model; one call per slice."""

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {str(i): str(c) for i, c in enumerate(COCO_CATEGORY_IDS, 1)}

        def perform_inference(self, image: np.ndarray) -> None:
            rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, :3])).permute(2, 0, 1)
            self._original_predictions = self.model.detect(rgb.float().div(255.0))

        def _create_object_prediction_list_from_original_predictions(
            self,
            shift_amount_list: Any = None,
            full_shape_list: Any = None,
        ) -> None:
            d = self._original_predictions
            # sahi passes either [[x, y]] or a bare [x, y] (its older layout); same for the shape.
            if shift_amount_list and not isinstance(shift_amount_list[0], list | tuple):
                shift_amount_list = [shift_amount_list]
            if full_shape_list and not isinstance(full_shape_list[0], list | tuple):
                full_shape_list = [full_shape_list]
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            full = full_shape_list[0] if full_shape_list else None
            keep = d["scores"] >= self.confidence_threshold
            preds = [
                ObjectPrediction(bbox=b, category_id=int(lab), category_name=str(int(lab)),
                                 score=float(s), shift_amount=shift, full_shape=full)
                for b, s, lab in zip(d["boxes"][keep].tolist(), d["scores"][keep].tolist(),
                                     d["labels"][keep].tolist(), strict=True)
            ]  # fmt: skip
            self._object_prediction_list_per_image = [preds]

    base = FastestDetDetector(weights, score_thresh=0.001, num_threads=threads)
    base.detect(load_image(str(data[0][1])))  # untimed warm-up
    model = FastestDetSahi(model=base, confidence_threshold=0.001)
    rows = []
    for post, metric, thr in (("NMS", "IOU", 0.45), ("GREEDYNMM", "IOS", 0.5)):
        counter = RecallCounter()
        secs = 0.0
        for _, path, gt in data:
            image = load_image(str(path))
            rgb = image.mul(255).round().byte().permute(1, 2, 0).numpy()
            t0 = time.perf_counter()
            res = get_sliced_prediction(
                rgb, model, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap,
                overlap_width_ratio=overlap, perform_standard_pred=True, postprocess_type=post,
                postprocess_match_metric=metric, postprocess_match_threshold=thr,
                postprocess_class_agnostic=False, verbose=0,
                # sahi silently swaps GREEDYNMM for NMS below a 0.5 threshold unless forced.
                force_postprocess_type=True,
            )  # fmt: skip
            secs += time.perf_counter() - t0
            objs = sorted(res.object_prediction_list, key=lambda o: -o.score.value)
            objs = objs[: max(BUDGETS)]
            boxes = torch.tensor([o.bbox.to_xyxy() for o in objs], dtype=torch.float32).reshape(
                -1, 4
            )
            cats = torch.tensor(
                [COCO_CATEGORY_IDS[o.category.id - 1] for o in objs], dtype=torch.int64
            )
            counter.add(gt, boxes, cats)
        rows.append({
            "setting": f"sahi_get_sliced_prediction full+{tile} ({post} {metric} {thr})",
            "images": len(data),
            "objects": counter.total,
            "recall": counter.table(counter.found),
            "recall_cls": counter.table(counter.found_cls),
            "seconds_per_image": round(secs / len(data), 4),
            "cpu_lscpu": lscpu_model(),
        })  # fmt: skip
    return rows


def ap_against(
    ann: Path, data: list[tuple[int, Path, GroundTruth]], first: list[dict], res: list[dict]
) -> dict[str, Any]:
    """COCO AP of ``res`` and of ``first`` on these images (100 per image), B - A intervals."""
    from gan_detect.metrics.bootstrap import coco_paired_bootstrap

    js = json.loads(ann.read_text())
    ids = {i for i, _, _ in data}
    gt = {**js, "images": [im for im in js["images"] if im["id"] in ids],
          "annotations": [a for a in js["annotations"] if a["image_id"] in ids]}  # fmt: skip
    return coco_paired_bootstrap(gt, first, res, n_boot=1000, seed=0, max_dets=100).to_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="JPEGs by COCO file_name")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder")
    ap.add_argument("--ann", type=Path, default=None)
    ap.add_argument("--split-file", type=Path, default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-images", type=int, default=None, help="first N ids of the split")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sahi-images", type=int, default=40)
    ap.add_argument("--sahi-tile", type=int, default=256)
    ap.add_argument("--detector", choices=sorted(DETECTORS), default="fastestdet")
    ap.add_argument("--ap", action="store_true", help="also AP by size vs the first setting")
    args = ap.parse_args(argv)

    data_dir = args.data or shared_data_dir()
    folder = None if data_dir is None else data_dir / "coco" / "val2017_person"
    ann = args.ann or (folder / "instances_val2017_person.json" if folder else None)
    if ann is None or not ann.is_file():
        ap.error(f"instances JSON not found: {ann} (give --ann or --data / GAN_DETECT_DATA)")
    split_file = args.split_file or (folder / "split.json" if folder else None)
    split_file = split_file if split_file is not None and split_file.is_file() else None
    data = load_split(args.images, ann, split_file, args.split, args.max_images)
    first: list[dict] | None = None
    for name in [s for s in args.settings.split(",") if s]:
        res: list[dict] | None = [] if args.ap else None
        row = run_setting(name, data, args.weights, args.threads, args.overlap, args.detector, res)
        if res is not None:
            first = res if first is None else first
            row["ap_vs_first"] = ap_against(ann, data, first, res)
        emit(row)
    if args.sahi_images:
        sub = data[: args.sahi_images]
        own = run_setting(f"full+{args.sahi_tile}", sub, args.weights, args.threads, args.overlap)
        emit({**own, "setting": own["setting"] + " (built-in merge, sahi subset)"})
        for row in sahi_comparison(sub, args.weights, args.threads, args.sahi_tile, args.overlap):
            emit(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
