"""``detector_ap``: COCO box AP of a built-in proposer (``--detector``, default ``yolox_nano``)
on the val2017 person subset's split, through the package and, for YOLOX-nano, an independent
check and the rules behind the gap to the published 25.8.

1. **Package.** ``gan-detect propose --images=TMP detector.arch=DETECTOR`` on a temporary folder
   of links to the split's JPEGs (``--images``/``<file_name>``; nothing is copied), then
   :func:`gan_detect.metrics.coco_map.evaluate_coco_files` against the instances JSON restricted
   to the split, at COCO's 100 detections per image and at the package's 1,000.
2. **Independent check** (``yolox_nano``). A decoder written apart from
   ``gan_detect.detector.yolox_nano`` (``cv2.imread``, its own letterbox, a torch grid decode,
   onnxruntime called directly), the 100 best boxes per image, ``pycocotools`` (through the package's wrapper, backend forced)
   called directly. It must give the package's AP (same rule: every (cell, class) pair >= 0.001,
   per-class NMS 0.45).
3. **The gap to the published 25.8** (``yolox_nano``): the independent decoder under other rules
   (best class per cell, NMS 0.65, score >= 0.01, no per-image cap) on the same images.

One JSON line per row (``row`` names it). Results: ``benchmarks/results/yolox_nano_ap.jsonl``;
reading: ``docs/yolox_nano.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from gan_detect.app.benchmark.common import Recorder

SIZE = 416  # YOLOX-nano's square input
# COCO's 80 category ids in the contiguous order of the network's class outputs.
CATS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
STAT_NAMES = ["AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"]
Candidates = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def split_gt(ann: Path, split_file: Path, split: str, max_images: int | None) -> dict[str, Any]:
    """The instances JSON restricted to the split's images (sorted ids, first ``max_images``)."""
    js = json.loads(ann.read_text())
    ids = sorted(json.loads(split_file.read_text())[split])[: max_images or None]
    keep = set(ids)
    return {
        **js,
        "images": [im for im in js["images"] if im["id"] in keep],
        "annotations": [a for a in js["annotations"] if a["image_id"] in keep],
    }


def package_ap(
    images: Path, gt: dict[str, Any], work: Path, detector: str
) -> tuple[dict[str, Any], float]:
    """AP through ``gan-detect propose`` and ``evaluate_coco_files``; and its seconds."""
    from gan_detect.metrics.coco_map import evaluate_coco_files

    links = work / "images"
    links.mkdir()
    for im in gt["images"]:
        src = images / im["file_name"]
        if not src.is_file():
            raise SystemExit(f"image not found: {src} (give --images with the COCO JPEGs)")
        (links / im["file_name"]).symlink_to(src.resolve())
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gan_detect", "propose", f"--images={links}",
         f"--out={work / 'props'}", f"detector.arch={detector}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    gt_file = work / "gt.json"
    gt_file.write_text(json.dumps(gt))
    res = work / "props" / "proposals.json"
    out = {
        "at_100": evaluate_coco_files(gt_file, res, max_detection_thresholds=(1, 10, 100)),
        "at_1000": evaluate_coco_files(gt_file, res),
        "detections": len(json.loads(res.read_text())),
    }
    return out, seconds


# --- the independent decoder: nothing below uses gan_detect's detector code -------------------


def own_input(path: Path) -> tuple[np.ndarray, float, int, int]:
    """BGR 0-255 (1, 3, 416, 416) letterboxed at the top-left on grey 114, the scale, w, h."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: not a readable image")
    h, w = bgr.shape[:2]
    scale = min(SIZE / h, SIZE / w)
    small = cv2.resize(bgr, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), scale, w, h


def own_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """(3549, 2) cell offsets (x, y) and (3549, 1) strides, strides 8/16/32, x fastest."""
    offs, strides = [], []
    for s in (8, 16, 32):
        n = SIZE // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        offs.append(torch.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(torch.full((n * n, 1), s))
    return torch.cat(offs).float(), torch.cat(strides).float()


def own_candidates(raw: np.ndarray, scale: float, w: int, h: int, best_only: bool) -> Candidates:
    """Boxes (N, 4) xyxy (image px, clipped), scores (N,), class indices (N,) of one output
    (1, 3549, 85), score >= 0.001; ``best_only``: one class per cell."""
    offs, strides = own_grid()
    p = torch.from_numpy(raw[0])
    centre = (p[:, :2] + offs) * strides
    size = p[:, 2:4].exp() * strides
    xyxy = torch.cat([centre - size / 2, centre + size / 2], 1) / scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    cls = p[:, 4:5] * p[:, 5:]
    if best_only:
        score, label = cls.max(1)
        cell = torch.nonzero(score >= 0.001).squeeze(1)
        return xyxy[cell], score[cell], label[cell]
    cell, label = torch.nonzero(cls >= 0.001, as_tuple=True)
    return xyxy[cell], cls[cell, label], label


def own_results(
    cands: dict[int, Candidates], nms: float, thresh: float, top: int | None
) -> list[dict[str, Any]]:
    """COCO results: per image score >= ``thresh``, per-class NMS at ``nms``, ``top`` best."""
    rows = []
    for image_id, (boxes, scores, labels) in cands.items():
        m = scores >= thresh
        boxes, scores, labels = boxes[m], scores[m], labels[m]
        keep = batched_nms(boxes, scores, labels, nms)[:top]
        for b, s, lab in zip(
            boxes[keep].tolist(), scores[keep].tolist(), labels[keep].tolist(), strict=True
        ):
            rows.append({"image_id": image_id, "category_id": CATS[lab],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})  # fmt: skip
    return rows


def pycocotools_ap(gt: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float]:
    """AP, AP50, AP75, AP_S/M/L of ``rows`` by pycocotools (the package's one COCOeval wrapper
    with the reference backend forced, maxDets 1 / 10 / 100): independent of the package's
    decoder, not of COCO's own evaluation."""
    from gan_detect.metrics.coco_eval import (
        coco_evaluator,
        coco_results_to_dt,
        coco_stats,
        quiet_coco,
    )

    coco = quiet_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = coco_evaluator(
            coco, coco_results_to_dt(coco, rows), max_dets=(1, 10, 100), backend="pycocotools"
        )
    st = coco_stats(ev)
    keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    return {k: round(float(st[m]), 4) for k, m in zip(STAT_NAMES, keys, strict=True)}


# (row, candidates: every (cell, class) or best class per cell, NMS IoU, score threshold, boxes
# per image before COCOeval's own cap of 100 per image and class)
RULES: list[tuple[str, bool, float, float, int | None]] = [
    ("independent: every (cell, class), NMS 0.45, score >= 0.001, 100 per image", False, 0.45,
     0.001, 100),
    ("every (cell, class), NMS 0.45, no per-image cap", False, 0.45, 0.001, None),
    ("every (cell, class), NMS 0.65, 100 per image", False, 0.65, 0.001, 100),
    ("best class per cell, NMS 0.45, 100 per image", True, 0.45, 0.001, 100),
    ("best class per cell, NMS 0.65, score >= 0.01, no per-image cap", True, 0.65, 0.01, None),
]  # fmt: skip


def run_detector_ap(args: argparse.Namespace, rec: Recorder) -> None:
    """``detector_ap``: the package row, then (YOLOX-nano) the independent decoder under each of
    ``RULES``, on split ``--split`` (first ``--max-images``) of ``coco/val2017_person``."""
    from gan_detect.app.benchmark.evaluation import data_dir

    detector = args.detector or "yolox_nano"
    if args.images is None:
        raise SystemExit("--bench detector_ap needs --images DIR (the val2017 JPEGs by file_name)")
    data = data_dir(args)
    if data is None:
        raise SystemExit("--bench detector_ap: shared data folder not found (--data)")
    folder = data / "coco" / "val2017_person"
    ann = Path(args.ann) if args.ann else folder / "instances_val2017_person.json"
    for f in (ann, folder / "split.json"):
        if not f.is_file():
            raise SystemExit(f"--bench detector_ap: {f} not found")
    gt = split_gt(ann, folder / "split.json", args.split, args.max_images)
    images = Path(args.images)
    base = {"detector": detector, "split": args.split, "images": len(gt["images"]),
            "objects": len(gt["annotations"])}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pkg, seconds = package_ap(images, gt, Path(tmp), detector)
    rec.emit({**base, "row": "package: gan-detect propose + evaluate_coco_files", **pkg,
              "propose_s_per_image": round(seconds / len(gt["images"]), 4)})  # fmt: skip
    if detector != "yolox_nano":
        return  # the independent decoder below is YOLOX's
    onnx = (
        Path(args.weights) if args.weights else data / "coco/detectors/yolox_nano/yolox_nano.onnx"
    )
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads or 1
    sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    cands: dict[bool, dict[int, Candidates]] = {False: {}, True: {}}
    for im in gt["images"]:
        x, scale, w, h = own_input(images / im["file_name"])
        raw = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        for best_only in (False, True):
            cands[best_only][im["id"]] = own_candidates(raw, scale, w, h, best_only)
    for name, best_only, nms, thresh, top in RULES:
        res = pycocotools_ap(gt, own_results(cands[best_only], nms, thresh, top))
        rec.emit({**base, "row": name, "per_image_cap": top, "pycocotools": res})
