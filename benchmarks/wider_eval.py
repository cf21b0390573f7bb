"""Time the vectorised WIDER FACE evaluation against a plain per-image Python loop.

The loop below is a REFERENCE written for this benchmark only: the same official protocol
(sort per image, global min-max normalisation, +1 IoU, per-prediction max-IoU matching,
1000 thresholds, VOC AP) spelled out prediction by prediction and threshold by threshold, as
the MATLAB tool and its Python ports do. It must give the same AP; the script checks that.

    python benchmarks/wider_eval.py --pred PRED_DIR --gt GT_DIR [--repeat 3]

Also times the whole ``gan-detect wider-eval`` command in a fresh subprocess (interpreter start,
imports, reading the .mat and txt files, the three APs): what a user waits for. The headline
``command_speedup`` is reference loop seconds / command seconds (target >= 20x).

Prints one JSON line: machine, versions, seconds for each implementation, the ratios, the APs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gan_detect.data.proposals import read_wider_tree_arrays
from gan_detect.metrics.wider_face_ap import THRESHOLDS, voc_ap, wider_face_ap
from gan_detect.metrics.wider_gt import SETTINGS, WiderGroundTruth, load_wider_ground_truth

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from _common import machine
except ImportError:  # pragma: no cover
    from benchmarks._common import machine


def reference_loop_ap(preds: dict[str, np.ndarray], gt: WiderGroundTruth) -> dict[str, float]:
    """Slow reference: per image, per prediction, per threshold (see the module docstring)."""
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
                    + ((p[h, 2] - p[h, 0] + 1) * (p[h, 3] - p[h, 1] + 1))
                    - inter
                )
                iou = np.where((iw > 0) & (ih > 0), inter / union, 0.0)
                j = int(iou.argmax())
                if iou[j] >= 0.5:
                    if not keep[j, k]:
                        recall[j] = -1
                        proposal[h] = -1
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


def time_command(pred: Path, gt: Path, repeat: int) -> tuple[float, dict[str, float]]:
    """Best wall seconds of ``python -m gan_detect wider-eval`` in a fresh process, and its APs."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "gan_detect", "wider-eval", str(pred), "--gt", str(gt)]
        cmd += ["--json", str(out)]
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
            times.append(time.perf_counter() - t)
        r = json.loads(out.read_text())
    return min(times), {f"ap_{s}": float(r[f"ap_{s}"]) for s in SETTINGS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pred", type=Path, required=True)
    ap.add_argument("--gt", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3, help="vectorised runs (best is reported)")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    gt = load_wider_ground_truth(args.gt)
    preds = read_wider_tree_arrays(args.pred)
    load_s = time.perf_counter() - t
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        fast = wider_face_ap(preds, gt)
        times.append(time.perf_counter() - t)
    result: dict[str, object] = {
        "benchmark": "wider_eval",
        **machine(),
        "images": len(gt),
        "boxes": int(sum(len(p) for p in preds.values())),
        "load_s": round(load_s, 3),
        "vectorised_s": round(min(times), 3),
        "ap_vectorised": fast,
    }
    cmd_s, cmd_ap = time_command(args.pred, args.gt, args.repeat)
    result["command_s"] = round(cmd_s, 3)
    result["ap_command"] = cmd_ap
    if not args.skip_reference:
        t = time.perf_counter()
        slow = reference_loop_ap(preds, gt)
        result["reference_loop_s"] = round(time.perf_counter() - t, 3)
        result["speedup"] = round(result["reference_loop_s"] / min(times), 1)  # type: ignore[operator]
        result["ap_reference"] = slow
        result["max_abs_diff"] = max(abs(slow[k] - fast[k]) for k in slow)
        result["command_speedup"] = round(result["reference_loop_s"] / cmd_s, 1)  # type: ignore[operator]
        result["command_max_abs_diff"] = max(abs(slow[k] - cmd_ap[k]) for k in slow)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
