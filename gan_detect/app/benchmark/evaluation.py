"""Evaluation benchmarks: WIDER FACE AP (vectorised, the ``wider-eval`` command, a per-image
reference loop) and COCO AP per backend (``eval``); the paired image bootstrap beside one plain
AP pass (``bootstrap``). All need the shared data folder (``--data`` or ``GAN_DETECT_DATA``)."""

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

from gan_detect.app.benchmark.common import Recorder, warn
from gan_detect.data.paths import shared_data_dir
from gan_detect.data.proposals import read_wider_tree_arrays
from gan_detect.metrics.wider_face_ap import THRESHOLDS, voc_ap, wider_face_ap
from gan_detect.metrics.wider_gt import SETTINGS, WiderGroundTruth, load_wider_ground_truth

WIDER_PRED = "widerface/predictions/retinaface_mobilenet0.25_biubug6"


def data_dir(args: argparse.Namespace) -> Path | None:
    """``--data``, else the shared data folder; None (with a note on stderr) when absent."""
    d = Path(args.data) if args.data else shared_data_dir()
    if d is None or not d.is_dir():
        warn(f"--bench {args.bench}: no shared data folder (give --data or GAN_DETECT_DATA)")
        return None
    return d


def reference_loop_ap(preds: dict[str, np.ndarray], gt: WiderGroundTruth) -> dict[str, float]:
    """Slow reference, written for this benchmark only: the official protocol (sort per image,
    global min-max normalisation, +1 IoU, per-prediction max-IoU matching, 1000 thresholds, VOC
    AP) spelled out prediction by prediction and threshold by threshold, as the MATLAB tool
    does. It must give the same AP as ``wider_face_ap``."""
    scores = np.concatenate([p[:, 4] for p in preds.values() if len(p)])
    lo, hi = scores.min(), scores.max()
    sorted_preds = {}
    for image_id, p in preds.items():
        p = p[np.argsort(-p[:, 4], kind="stable")].copy()
        p[:, 4] = (p[:, 4] - lo) / (hi - lo)
        p[:, 2:4] += p[:, 0:2]
        sorted_preds[image_id] = p
    out = {}
    for k, setting in enumerate(SETTINGS):
        pr = np.zeros((len(THRESHOLDS), 2))
        count_face = 0
        for image_id, boxes, keep in zip(gt.image_ids, gt.boxes, gt.keep, strict=True):
            count_face += int(keep[:, k].sum())
            p = sorted_preds.get(image_id, np.zeros((0, 5)))
            if len(boxes) == 0 or len(p) == 0:
                continue
            g = boxes.copy()
            g[:, 2:4] += g[:, 0:2]
            recall = np.zeros(len(g))
            proposal = np.ones(len(p))
            pred_recall = np.zeros(len(p))
            for h in range(len(p)):
                iw = np.minimum(g[:, 2], p[h, 2]) - np.maximum(g[:, 0], p[h, 0]) + 1
                ih = np.minimum(g[:, 3], p[h, 3]) - np.maximum(g[:, 1], p[h, 1]) + 1
                inter = iw * ih
                union = (
                    (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
                    + (p[h, 2] - p[h, 0] + 1) * (p[h, 3] - p[h, 1] + 1)
                    - inter
                )
                iou = np.where((iw > 0) & (ih > 0), inter / union, 0.0)
                j = int(iou.argmax())
                if iou[j] >= 0.5:
                    if not keep[j, k]:
                        recall[j], proposal[h] = -1, -1
                    elif recall[j] == 0:
                        recall[j] = 1
                pred_recall[h] = (recall == 1).sum()
            for t, thresh in enumerate(THRESHOLDS):
                above = np.where(p[:, 4] >= thresh)[0]
                if len(above):
                    r = above[-1]
                    pr[t, 0] += (proposal[: r + 1] == 1).sum()
                    pr[t, 1] += pred_recall[r]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, rec = pr[:, 1] / pr[:, 0], pr[:, 1] / count_face
        out[f"ap_{setting}"] = voc_ap(rec, precision)
    return out


def _time_command(pred: Path, gt: Path, repeat: int) -> tuple[float, dict[str, float]]:
    """Best wall seconds of ``python -m gan_detect wider-eval`` in a fresh process, its APs."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [
            sys.executable,
            "-m",
            "gan_detect",
            "wider-eval",
            str(pred),
            "--gt",
            str(gt),
            "--json",
            str(out),
        ]
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
            times.append(time.perf_counter() - t)
        r = json.loads(out.read_text())
    return min(times), {f"ap_{s}": float(r[f"ap_{s}"]) for s in SETTINGS}


def _wider(data: Path, args: argparse.Namespace, rec: Recorder) -> None:
    pred, gt_dir = data / WIDER_PRED, data / "widerface" / "ground_truth"
    t = time.perf_counter()
    gt = load_wider_ground_truth(gt_dir)
    preds = read_wider_tree_arrays(pred)
    load_s = time.perf_counter() - t
    times = []
    fast: dict[str, Any] = {}
    for _ in range(args.rounds):
        t = time.perf_counter()
        fast = wider_face_ap(preds, gt)
        times.append(time.perf_counter() - t)
    cmd_s, cmd_ap = _time_command(pred, gt_dir, args.rounds)
    out: dict[str, Any] = {
        "what": "wider",
        "images": len(gt),
        "boxes": int(sum(len(p) for p in preds.values())),
        "load_s": round(load_s, 3),
        "vectorised_s": round(min(times), 3),
        "command_s": round(cmd_s, 3),
        **{k: round(float(v), 6) for k, v in fast.items() if k.startswith("ap_")},
        "command_max_abs_diff": max(abs(cmd_ap[k] - float(fast[k])) for k in cmd_ap),
    }
    if args.reference_loop:
        t = time.perf_counter()
        slow = reference_loop_ap(preds, gt)
        loop_s = time.perf_counter() - t
        out.update(
            reference_loop_s=round(loop_s, 3),
            speedup=round(loop_s / min(times), 1),
            command_speedup=round(loop_s / cmd_s, 1),
            max_abs_diff=max(abs(slow[k] - float(fast[k])) for k in slow),
        )
    rec.emit(out)


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


def _coco(data: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """COCO box AP per backend: the cocoapi demo (100 val2014 images, its fake results) and
    coco128 ground truth against its own boxes jittered by 2 px with random scores."""
    from gan_detect.metrics.coco_map import evaluate_coco_files

    fake = data / "coco" / "cocoapi_val2014_fake100"
    c128 = data / "coco" / "coco128_train2017" / "annotations" / "instances_train2017.json"
    with tempfile.TemporaryDirectory() as tmp:
        jit = Path(tmp) / "coco128_jittered.json"
        jittered_results(c128, jit)
        cases = {
            "cocoapi_fake100": (
                fake / "instances_val2014_100.json",
                fake / "instances_val2014_fakebbox100_results.json",
                [1, 10, 100],
            ),
            "coco128_jitter2px": (c128, jit, [1, 100, 1000]),
        }
        for case, (gt, res, max_dets) in cases.items():
            for backend in ("pycocotools", "faster_coco_eval"):
                times = []
                r: dict[str, float] = {}
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    r = evaluate_coco_files(gt, res, max_dets, backend=backend)  # type: ignore[arg-type]
                    times.append(time.perf_counter() - t)
                rec.emit(
                    {
                        "what": "coco",
                        "case": case,
                        "backend": backend,
                        "seconds": round(min(times), 3),
                        **{k: round(v, 6) for k, v in r.items()},
                    }
                )


def run_eval(args: argparse.Namespace, rec: Recorder) -> None:
    """``eval``: ``--eval wider`` (vectorised AP, the fresh-process command, and with
    ``--reference-loop`` the per-image loop: the speed-up and identical APs) and ``coco``."""
    data = data_dir(args)
    if data is None:
        rec.emit({"skipped": True, "reason": "no shared data"})
        return
    if "wider" in args.eval:
        _wider(data, args, rec)
    if "coco" in args.eval:
        _coco(data, args, rec)


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


def _bootstrap_wider(data: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """A: the published RetinaFace MobileNet-0.25 predictions; B: the same boxes with squared
    scores (same order inside an image, a different global threshold cut)."""
    from gan_detect.metrics.bootstrap import paired_bootstrap, wider_tables

    gt = load_wider_ground_truth(data / "widerface" / "ground_truth")
    preds_a = read_wider_tree_arrays(data / WIDER_PRED)
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
        "protocol": "wider",
        "images": len(gt),
        "predictions": int(sum(len(v) for v in preds_a.values())),
        "n_boot": n_boot,
        "plain_ap_s": round(t_plain, 3),
        "tables_s": round(t_tables, 3),
        "bootstrap_s": round(t_boot, 3),
        "bootstrap_over_plain": round(t_boot / t_plain, 2),
        "unit_weight_max_abs_diff_points": float(
            max(abs(res.metrics[s].a - 100 * plain[f"ap_{s}"]) for s in ("easy", "medium", "hard"))
        ),
        "comparison": _summary(res),
    }


def generate_results(gt: dict[str, Any], seed: int, p_find: float) -> list[dict[str, Any]]:
    """A plausible detector's COCO results on ``gt``: each box found with probability
    ``p_find`` (half that under 32^2 px), jittered and scored higher when well placed, plus
    low-scored background boxes, 100 detections per image."""
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
            if rng.random() > p_find * (
                0.5 if w * h < 1024.0 else 1.0
            ):  # small: under 32 px a side
                continue
            jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            q = float(np.exp(-np.abs(jit).sum() / max(w + h, 1.0) * 4))
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


def _bootstrap_coco(data: Path, split: str, n_boot: int, seed: int) -> dict[str, Any]:
    """The val2017 person split with two generated results files (no detector output is stored
    in shared data); B finds boxes a little more often."""
    from gan_detect.metrics.bootstrap import (
        coco_results_to_dt,
        coco_tables,
        load_coco_gt,
        paired_bootstrap,
    )
    from gan_detect.metrics.coco_map import evaluate_coco_files

    folder = data / "coco" / "val2017_person"
    full = json.loads((folder / "instances_val2017_person.json").read_text())
    ids = set(json.loads((folder / "split.json").read_text())[split])
    gt = {
        **full,
        "images": [im for im in full["images"] if im["id"] in ids],
        "annotations": [a for a in full["annotations"] if a["image_id"] in ids],
    }
    res_a, res_b = generate_results(gt, 1, 0.6), generate_results(gt, 2, 0.65)
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
        "protocol": "coco",
        "split": f"val2017_person/{split}",
        "images": len(gt["images"]),
        "gt_boxes": len(gt["annotations"]),
        "n_boot": n_boot,
        "plain_ap_s": round(t_plain, 3),
        "tables_s": round(t_tables, 3),
        "bootstrap_s": round(t_boot, 3),
        "bootstrap_over_plain": round(t_boot / t_plain, 2),
        "unit_weight_max_abs_diff_points": float(
            max(abs(res.metrics[k].a - 100 * plain[k]) for k in plain)
        ),
        "comparison": _summary(res),
    }


def _threads() -> dict[str, Any]:
    """The BLAS thread pools that decide numpy's matmul speed."""
    try:
        from threadpoolctl import threadpool_info

        return {
            "blas_pools": [
                {"api": p.get("internal_api"), "threads": p.get("num_threads")}
                for p in threadpool_info()
            ]
        }
    except ImportError:
        return {"blas_pools": None}


def run_bootstrap(args: argparse.Namespace, rec: Recorder) -> None:
    """``bootstrap``: one plain AP pass, the one-off per-image tables (matching) of methods A and
    B, and ``--n-boot`` paired resamples, one after the other in one process (WIDER full val;
    COCO val2017 person ``--coco-split``)."""
    data = data_dir(args)
    if data is None:
        rec.emit({"skipped": True, "reason": "no shared data"})
        return
    warnings.simplefilter("ignore")
    if "wider" in args.eval:
        rec.emit({**_bootstrap_wider(data, args.n_boot, args.seed), **_threads()})
    if "coco" in args.eval:
        rec.emit({**_bootstrap_coco(data, args.coco_split, args.n_boot, args.seed), **_threads()})
