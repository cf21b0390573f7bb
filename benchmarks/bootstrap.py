"""Time the paired image bootstrap (``gan_detect.metrics.bootstrap``) beside one plain AP pass.

    python benchmarks/bootstrap.py [--data ../shared/data] [--n-boot 1000] [--coco-split test]

WIDER FACE: methods A and B are built from the published RetinaFace MobileNet-0.25 predictions
in shared data (A as published; B the same boxes with scores squared, which re-orders nothing
inside an image but changes the global threshold cut). Times, in the same process and run:
one plain ``wider_face_ap`` pass (three settings, one method, files already read), the one-off
per-image tables of both methods, and ``n_boot`` paired resamples of both methods.

COCO: the val2017 person-image split of shared data (the ``test`` split: 655 images, 6,366
boxes) with two GENERATED results files (no detector output is stored there): each ground-truth
box is found with some probability, its box jittered and scored higher when found well, plus
background boxes with low scores, up to 100 detections per image; B finds boxes a little more
often. Times one plain ``evaluate_coco_files`` pass, the per-image matching (pycocotools
``evaluate()``) of both methods, and ``n_boot`` paired resamples.

Prints one JSON line per protocol (machine, thread count, seconds, the APs and the differences).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.data.proposals import read_wider_tree_arrays
from gan_detect.metrics.bootstrap import (
    coco_results_to_dt,
    coco_tables,
    load_coco_gt,
    paired_bootstrap,
    wider_tables,
)
from gan_detect.metrics.wider_face_ap import wider_face_ap
from gan_detect.metrics.wider_gt import load_wider_ground_truth

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from _common import emit
except ImportError:  # pragma: no cover
    from benchmarks._common import emit


def _threads() -> dict[str, Any]:
    """BLAS / OpenMP thread settings that decide the matmul speed (numpy's own pool)."""
    info: dict[str, Any] = {
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas_pools"] = [
            {"api": p.get("internal_api"), "threads": p.get("num_threads")}
            for p in threadpool_info()
        ]
    except ImportError:  # pragma: no cover
        info["blas_pools"] = None
    try:  # lscpu's "Model name" (the CPU named beside every table, issue 24)
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info["lscpu_model_name"] = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
            None,
        )
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        info["lscpu_model_name"] = None
    info["affinity_cpus"] = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    )
    return info


def _summary(res: Any) -> dict[str, Any]:
    return {
        m: {
            "a": round(c.a, 4),
            "b": round(c.b, 4),
            "diff": round(c.difference.point, 4),
            "low": round(c.difference.low, 4),
            "high": round(c.difference.high, 4),
        }
        for m, c in res.metrics.items()
    }


def bench_wider(data: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Plain AP vs tables + bootstrap on the full WIDER val set (3,226 images)."""
    gt = load_wider_ground_truth(data / "widerface" / "ground_truth")
    preds_a = read_wider_tree_arrays(
        data / "widerface" / "predictions" / "retinaface_mobilenet0.25_biubug6"
    )
    preds_b = {k: np.column_stack([v[:, :4], v[:, 4] ** 2]) for k, v in preds_a.items()}
    t0 = time.perf_counter()
    plain = wider_face_ap(preds_a, gt)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    ta, tb = wider_tables(preds_a, gt), wider_tables(preds_b, gt)
    t_tables = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = paired_bootstrap(ta, tb, n_boot, seed)
    t_boot = time.perf_counter() - t0
    return {
        "bench": "bootstrap_wider",
        "n_images": len(gt),
        "n_predictions": int(sum(len(v) for v in preds_a.values())),
        "n_boot": n_boot,
        "plain_ap_s": round(t_plain, 3),
        "tables_both_methods_s": round(t_tables, 3),
        "bootstrap_s": round(t_boot, 3),
        "bootstrap_over_plain": round(t_boot / t_plain, 2),
        "plain_ap": {k: v for k, v in plain.items() if k != "official"},
        "unit_weight_max_abs_diff_points": float(
            max(abs(res.metrics[s].a - 100 * plain[f"ap_{s}"]) for s in ("easy", "medium", "hard"))
        ),
        "comparison": _summary(res),
    }


def generate_results(gt: dict[str, Any], seed: int, p_find: float) -> list[dict[str, Any]]:
    """A plausible detector's COCO results on ``gt`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    by_img: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        by_img[a["image_id"]].append(a)
    size = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    out: list[dict[str, Any]] = []
    for img, anns in by_img.items():
        dets: list[dict[str, Any]] = []
        for a in anns:
            x, y, w, h = a["bbox"]
            # Small boxes are found less often (the regime the project cares about).
            p = p_find * (0.5 if w * h < 32**2 else 1.0)
            if rng.random() > p:
                continue
            jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            q = float(np.exp(-np.abs(jit).sum() / max(w + h, 1.0) * 4))  # well placed: high score
            dets.append(
                {
                    "image_id": img,
                    "category_id": cat,
                    "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1.0), max(h + jit[3], 1.0)],
                    "score": float(np.clip(0.3 + 0.6 * q + rng.normal(0, 0.1), 0.01, 1.0)),
                }
            )
        width, height = size[img]
        for _ in range(max(0, 100 - len(dets))):
            w, h = rng.uniform(4, width / 2), rng.uniform(4, height / 2)
            dets.append(
                {
                    "image_id": img,
                    "category_id": int(rng.choice(cats)),
                    "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                    "score": float(rng.uniform(0.01, 0.5)),
                }
            )
        out.extend(dets[:100])
    return out


def bench_coco(data: Path, split: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Plain COCO AP vs matching + bootstrap on the generated results (see the docstring)."""
    from gan_detect.metrics.coco_map import evaluate_coco_files

    folder = data / "coco" / "val2017_person"
    full = json.loads((folder / "instances_val2017_person.json").read_text())
    ids = set(json.loads((folder / "split.json").read_text())[split])
    gt = {
        **full,
        "images": [im for im in full["images"] if im["id"] in ids],
        "annotations": [a for a in full["annotations"] if a["image_id"] in ids],
    }
    res_a = generate_results(gt, 1, 0.6)
    res_b = generate_results(gt, 2, 0.65)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, a_path = Path(tmp) / "gt.json", Path(tmp) / "a.json"
        gt_path.write_text(json.dumps(gt))
        a_path.write_text(json.dumps(res_a))
        t0 = time.perf_counter()
        plain = evaluate_coco_files(gt_path, a_path)
        t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    coco_gt = load_coco_gt(gt)
    ta = coco_tables(coco_gt, coco_results_to_dt(coco_gt, res_a))
    tb = coco_tables(coco_gt, coco_results_to_dt(coco_gt, res_b))
    t_tables = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = paired_bootstrap(ta, tb, n_boot, seed)
    t_boot = time.perf_counter() - t0
    return {
        "bench": "bootstrap_coco",
        "split": f"val2017_person/{split}",
        "n_images": len(gt["images"]),
        "n_gt": len(gt["annotations"]),
        "n_detections": [len(res_a), len(res_b)],
        "n_boot": n_boot,
        "plain_ap_s": round(t_plain, 3),
        "matching_both_methods_s": round(t_tables, 3),
        "bootstrap_s": round(t_boot, 3),
        "plain_ap": plain,
        "unit_weight_max_abs_diff_points": float(
            max(abs(res.metrics[k].a - 100 * plain[k]) for k in plain)
        ),
        "comparison": _summary(res),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the WIDER and COCO measurements, print one JSON line each."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = Path(
        os.environ.get(
            "GAN_DETECT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    )
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coco-split", default="test", choices=["test", "train"])
    ap.add_argument("--skip", nargs="*", default=[], choices=["wider", "coco"])
    args = ap.parse_args(argv)
    if not (args.data / "widerface").is_dir():
        print(json.dumps({"bench": "bootstrap", "skipped": f"no shared data at {args.data}"}))
        return 0
    warnings.simplefilter("ignore")
    threads = _threads()
    if "wider" not in args.skip:
        emit({**bench_wider(args.data, args.n_boot, args.seed), "threads": threads})
    if "coco" not in args.skip:
        emit({**bench_coco(args.data, args.coco_split, args.n_boot, args.seed), "threads": threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
