"""Time COCO box evaluation (``evaluate_coco_files``: torchmetrics + the tiny bucket) per backend.

Cases: the cocoapi demo (val2014 first 100 images + its fake results) and coco128 ground truth
against its own boxes jittered by a few pixels with random scores (seeded).

    python benchmarks/coco_eval.py --data ../shared/data [--repeat 3]

Prints one JSON line per (case, backend) with the machine, versions, seconds and the APs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gan_detect.metrics.coco_map import evaluate_coco_files

try:  # the sibling benchmark holds the machine description
    from wider_eval import machine
except ImportError:  # run from another folder
    from benchmarks.wider_eval import machine


def jittered_results(gt_json: Path, out: Path, seed: int = 0, sigma: float = 2.0) -> int:
    """Write every non-crowd GT box, jittered by N(0, sigma) px, with a uniform random score."""
    rng = np.random.default_rng(seed)
    anns = [a for a in json.loads(gt_json.read_text())["annotations"] if not a.get("iscrowd")]
    res = []
    for a in anns:
        x, y, w, h = (np.asarray(a["bbox"], float) + rng.normal(0, sigma, 4)).tolist()
        res.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [x, y, max(w, 1.0), max(h, 1.0)],
                "score": float(rng.uniform()),
            }
        )
    out.write_text(json.dumps(res))
    return len(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the shared data folder")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (best is reported)")
    args = ap.parse_args()
    fake = args.data / "coco" / "cocoapi_val2014_fake100"
    c128 = args.data / "coco" / "coco128_train2017" / "annotations" / "instances_train2017.json"
    with tempfile.TemporaryDirectory() as tmp:
        jit = Path(tmp) / "coco128_jittered.json"
        jittered_results(c128, jit)
        cases = {
            "cocoapi_fake100 (maxDets 1/10/100)": (
                fake / "instances_val2014_100.json",
                fake / "instances_val2014_fakebbox100_results.json",
                [1, 10, 100],
            ),
            "coco128 jittered GT, sigma 2 px (maxDets 1/100/1000)": (c128, jit, [1, 100, 1000]),
        }
        info = machine()
        for case, (gt, res, max_dets) in cases.items():
            for backend in ("pycocotools", "faster_coco_eval"):
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = evaluate_coco_files(gt, res, max_dets, backend=backend)  # type: ignore[arg-type]
                    times.append(time.perf_counter() - t)
                print(
                    json.dumps(
                        {
                            "benchmark": "coco_eval",
                            "case": case,
                            "backend": backend,
                            **info,
                            "seconds": round(min(times), 3),
                            **{k: round(v, 6) for k, v in r.items()},
                        }
                    )
                )


if __name__ == "__main__":
    main()
