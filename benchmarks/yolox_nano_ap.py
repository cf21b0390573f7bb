"""COCO box AP of the built-in YOLOX-nano proposer on the val2017 person subset's test split,
through the package (``gan-detect propose`` + ``evaluate_coco_files``) and an independent check.

    python benchmarks/yolox_nano_ap.py --images DIR [--split test] [--max-images N] [--out F]

1. **Package.** ``gan-detect propose --images=TMP detector.arch=yolox_nano`` on a temporary folder
   of links to the split's JPEGs (``DIR/<file_name>``; nothing is copied), then
   :func:`gan_detect.metrics.coco_map.evaluate_coco_files` against the instances JSON restricted
   to the split, at COCO's 100 detections per image and at the package's 1,000.
2. **Independent check.** This script's own decoder (``cv2.imread``, its own letterbox, a torch
   grid decode written apart from ``gan_detect.detector.yolox_nano``, onnxruntime called
   directly), the 100 best boxes per image, ``pycocotools`` ``COCOeval`` called directly. It
   must give the package's AP (same rule: every (cell, class) pair >= 0.001, per-class NMS 0.45).
3. **The gap to the published 25.8**: the independent decoder under other rules (best class
   per cell, NMS 0.65, score >= 0.01) on the same images.

Prints JSON lines (one per row, the machine under ``machine``) and writes them to ``--out``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from _common import emit
except ImportError:  # imported as benchmarks.yolox_nano_ap
    from benchmarks._common import emit

from gan_detect.data.paths import shared_data_dir  # noqa: E402
from gan_detect.metrics.coco_map import evaluate_coco_files  # noqa: E402

SIZE = 416
CATS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
STAT_NAMES = ["AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"]


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


def package_ap(images: Path, gt: dict[str, Any], work: Path) -> tuple[dict[str, Any], float]:
    """AP through ``gan-detect propose`` and ``evaluate_coco_files``; and its seconds."""
    links = work / "images"
    links.mkdir()
    for im in gt["images"]:
        (links / im["file_name"]).symlink_to((images / im["file_name"]).resolve())
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gan_detect", "propose", f"--images={links}",
         f"--out={work / 'props'}", "detector.arch=yolox_nano"],
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


# --- the independent decoder: nothing below imports gan_detect -------------------------------


def own_input(path: Path) -> tuple[np.ndarray, float, int, int]:
    """BGR 0-255 (1, 3, 416, 416) letterboxed at the top-left on grey 114, the scale, w, h."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
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


def own_candidates(raw: np.ndarray, scale: float, w: int, h: int, best_only: bool) -> tuple:
    """Boxes xyxy (image px, clipped), scores, class index of one output, score >= 0.001."""
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


def own_results(cands: dict[int, tuple], nms: float, thresh: float, top: int | None) -> list[dict]:
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


def pycocotools_ap(gt: dict[str, Any], rows: list[dict]) -> dict[str, float]:
    """AP, AP50, AP75, AP_S/M/L of ``rows`` by pycocotools' COCOeval (maxDets 1 / 10 / 100)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(rows), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: round(float(v), 4) for k, v in zip(STAT_NAMES, ev.stats[:6], strict=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="JPEGs by COCO file_name")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-images", type=int, default=None, help="first N split ids (a check)")
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    args = ap.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None:
        ap.error("shared data folder not found (give --data or set GAN_DETECT_DATA)")
    folder = data / "coco" / "val2017_person"
    gt = split_gt(
        folder / "instances_val2017_person.json", folder / "split.json", args.split,
        args.max_images,
    )  # fmt: skip
    onnx = data / "coco" / "detectors" / "yolox_nano" / "yolox_nano.onnx"
    rows: list[dict[str, Any]] = []
    base = {"split": args.split, "images": len(gt["images"]),
            "objects": len(gt["annotations"])}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        pkg, seconds = package_ap(args.images, gt, Path(tmp))
    rows.append({**base, "row": "package: gan-detect propose + evaluate_coco_files", **pkg,
                 "propose_seconds_per_image": round(seconds / len(gt["images"]), 4)})  # fmt: skip

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    every: dict[int, tuple] = {}
    best: dict[int, tuple] = {}
    for im in gt["images"]:
        x, scale, w, h = own_input(args.images / im["file_name"])
        raw = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        every[im["id"]] = own_candidates(raw, scale, w, h, best_only=False)
        best[im["id"]] = own_candidates(raw, scale, w, h, best_only=True)
    # (row, candidates, NMS IoU, score threshold, boxes per image before COCOeval's own cap of
    # 100 per image and class)
    variants = [
        ("independent: every (cell, class), NMS 0.45, score >= 0.001, 100 per image", every,
         0.45, 0.001, 100),
        ("every (cell, class), NMS 0.45, no per-image cap", every, 0.45, 0.001, None),
        ("every (cell, class), NMS 0.65, 100 per image", every, 0.65, 0.001, 100),
        ("best class per cell, NMS 0.45, 100 per image", best, 0.45, 0.001, 100),
        ("best class per cell, NMS 0.65, score >= 0.01, no per-image cap", best, 0.65, 0.01,
         None),
    ]  # fmt: skip
    for name, cands, nms, thresh, top in variants:
        res = pycocotools_ap(gt, own_results(cands, nms, thresh, top))
        rows.append({**base, "row": name, "per_image_cap": top, "pycocotools": res})
    for row in rows:
        emit(row)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
