"""COCO box AP of the built-in FastestDet proposer on the val2017 person subset's test split.

    python experiments/fastestdet_ap.py --images DIR [--split test] [--weights PATH] [--out F]
        [--tile-sizes 256]     # sliced inference: whole image + 256-px tiles, merged by NMS

``DIR`` holds the JPEGs by COCO ``file_name``: the 2,620 images that
``experiments/fetch_coco_val2017_person.py`` extracts, or the official ``val2017/`` folder (the
JSON names only its images; the rest are not read). Ground truth is
``<data>/coco/val2017_person/instances_val2017_person.json`` restricted to the ids of
``split.json[split]`` (``<data>``: ``$GAN_DETECT_DATA`` or ``../shared/data``).

Protocol: :class:`~gan_detect.detector.fastestdet.FastestDetDetector` as the proposer runs it
(stretch to 352, BGR, /255; score >= 0.001; per-class NMS 0.45), the 100 best boxes per image,
then one bbox ``COCOeval`` run of ``gan_detect.metrics.coco_eval`` (faster_coco_eval, else
pycocotools) on the split's image ids. Two
variants are printed as well: no per-image cap (upstream's own evaluation: threshold 0.001,
every box after NMS) and person alone. AP_tiny is AP over objects of area < 16^2 px.

Caveats, printed with the numbers: the JSON's boxes are integer-truncated (edges up to 2 px
inside the official box), crowd regions are not flagged (COCOeval counts them as objects) and
``area`` is the box area, not the mask area; so AP_S / AP_M / AP_L / AP_tiny approximate the
official ones. Upstream's AP_S/M/L are on boxes resized to 352x352 and are not comparable.

Prints one JSON object (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_detect.data.full_image import load_image  # noqa: E402
from gan_detect.data.paths import shared_data_dir  # noqa: E402
from gan_detect.detector.fastestdet import (  # noqa: E402
    COCO_CATEGORY_IDS,
    FastestDetDetector,
)
from gan_detect.metrics.coco_eval import (  # noqa: E402
    coco_results_to_dt,
    evaluate_coco,
    load_coco_gt,
    resolve_backend,
)

PERSON = 1
# dog-qiuqiu/FastestDet README (COCO val2017 at 352x352); AP_S/M/L there use 352-px boxes.
UPSTREAM = {"AP": 0.130, "AP50": 0.253, "AP75": 0.119, "AP_S": 0.021, "AP_M": 0.129,
            "AP_L": 0.237, "AR100": 0.214}  # fmt: skip
CAVEAT = (
    "boxes integer-truncated, crowd not flagged, area = box area: AP_S/M/L and AP_tiny "
    "approximate the official ones; upstream AP_S/M/L use 352-px boxes (not comparable)"
)


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (the machine's name when lscpu is absent)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.strip().startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def coco_ap(
    gt_json: Path, dets: list[dict[str, Any]], img_ids: list[int], cat_ids: list[int] | None = None
) -> dict[str, float]:
    """AP, AP50, AP75, AP_S/M/L, AR@1/10/100 and AP_tiny of ``dets`` on ``img_ids``.

    One run of the package's COCO evaluation (COCO's maxDets 1/10/100, the tiny range included).

    Args:
        gt_json: COCO instances JSON.
        dets: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        img_ids: images evaluated (others' ground truth and detections are ignored).
        cat_ids: categories evaluated; ``None``: all.
    """
    gt = load_coco_gt(gt_json)
    dt = coco_results_to_dt(gt, dets)
    stats = evaluate_coco(gt, dt, (1, 10, 100), img_ids=img_ids, cat_ids=cat_ids)
    names = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "AP_S": "map_small",
             "AP_M": "map_medium", "AP_L": "map_large", "AR1": "mar_1", "AR10": "mar_10",
             "AR100": "mar_100"}  # fmt: skip
    out = {k: round(stats[v], 4) for k, v in names.items()}
    out["AP_tiny"] = round(stats["map_tiny"], 4) if stats["map_tiny"] > -1 else -1.0
    return out


def to_results(
    image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> list[dict[str, Any]]:
    """COCO result dicts from xyxy boxes (D, 4), scores (D,), contiguous labels 0..79 (D,)."""
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    return [
        {"image_id": image_id, "category_id": COCO_CATEGORY_IDS[int(lab)],
         "bbox": [round(v, 2) for v in b], "score": round(float(s), 5)}
        for b, s, lab in zip(xywh, scores.tolist(), labels.tolist(), strict=True)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="JPEGs by COCO file_name")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder")
    ap.add_argument("--ann", type=Path, default=None, help="instances JSON")
    ap.add_argument("--split-file", type=Path, default=None, help="split.json (null: all images)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--weights", type=Path, default=None, help="FastestDet.onnx or its folder")
    ap.add_argument("--score-thresh", type=float, default=0.001)
    ap.add_argument("--max-dets", type=int, default=100, help="boxes per image (main row)")
    ap.add_argument("--max-images", type=int, default=None, help="first N split ids (a check)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tile-sizes", default="", help="e.g. 256 or 256,176: sliced inference")
    ap.add_argument("--tile-overlap", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    data = args.data or shared_data_dir()
    folder = None if data is None else data / "coco" / "val2017_person"
    ann = args.ann or (folder / "instances_val2017_person.json" if folder else None)
    if ann is None or not ann.is_file():
        ap.error(f"instances JSON not found: {ann} (give --ann or --data / GAN_DETECT_DATA)")
    gt = json.loads(ann.read_text())
    file_of = {im["id"]: im["file_name"] for im in gt["images"]}
    split_file = args.split_file or (folder / "split.json" if folder else None)
    if split_file is not None and split_file.is_file():
        ids = sorted(json.loads(split_file.read_text())[args.split])
    else:
        ids = sorted(file_of)
    ids = ids[: args.max_images] if args.max_images else ids
    missing = [file_of[i] for i in ids if not (args.images / file_of[i]).is_file()]
    if missing:
        ap.error(f"{len(missing)} images missing under {args.images}, e.g. {missing[0]}")

    tiles = tuple(int(t) for t in args.tile_sizes.split(",") if t)
    det = FastestDetDetector(args.weights, score_thresh=args.score_thresh,
                             num_threads=args.threads, tile_sizes=tiles,
                             tile_overlap=args.tile_overlap)  # fmt: skip
    capped: list[dict[str, Any]] = []
    uncapped: list[dict[str, Any]] = []
    n_capped: list[int] = []
    n_uncapped: list[int] = []
    t0 = time.perf_counter()
    for image_id in ids:
        image = load_image(str(args.images / file_of[image_id]))
        boxes, scores, labels = det.candidates(image)  # whole image (+ tiles), before NMS
        keep = batched_nms(boxes, scores, labels, det.nms_thresh)  # sorted by score
        uncapped += to_results(image_id, boxes[keep], scores[keep], labels[keep])
        top = keep[: args.max_dets]
        capped += to_results(image_id, boxes[top], scores[top], labels[top])
        n_uncapped.append(len(keep))
        n_capped.append(len(top))
    seconds = time.perf_counter() - t0

    result = {
        "model": str(det.weights),
        "images": len(ids),
        "split": args.split if split_file is not None and split_file.is_file() else "all",
        "tile_sizes": list(tiles),
        "tile_overlap": args.tile_overlap if tiles else None,
        "protocol": f"score>={args.score_thresh}, per-class NMS {det.nms_thresh}, "
        f"top {args.max_dets}/image, COCOeval bbox ({resolve_backend()})",
        "all_classes": coco_ap(ann, capped, ids),
        "all_classes_no_cap": coco_ap(ann, uncapped, ids),
        "person": coco_ap(ann, [d for d in capped if d["category_id"] == PERSON], ids, [PERSON]),
        "dets_per_image": {
            "capped_mean": round(float(np.mean(n_capped)), 1),
            "no_cap_mean": round(float(np.mean(n_uncapped)), 1),
            "no_cap_max": int(np.max(n_uncapped)),
        },  # fmt: skip
        "upstream_readme_val2017": UPSTREAM,
        "caveat": CAVEAT,
        "seconds_per_image": round(seconds / len(ids), 4),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
