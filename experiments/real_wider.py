"""The real-data experiment in one command: RetinaFace proposals re-scored by the tiny-face GAN.

    python experiments/real_wider.py [--quick] [--out runs/real_wider] [--data ../shared/data]

1. Proposals of the built-in RetinaFace-MobileNet0.25 (score >= 0.02, original scale) on the
   shared WIDER FACE **train** images (1,067) and **val** images (276), cached under
   ``OUT/proposals/{train,val}`` (reruns skip them).
2. ROIs mined from the train proposals only; one tiny-face GAN per row below, D = torchvision
   MobileNetV2 with its ImageNet weights (``variant.backbone=tv_mobilenet_v2``), each cached
   under ``OUT/runs/<row>`` (a finished row is not retrained).
3. Evaluation on all val images with the official protocol (``gt_list`` of the eval-tools
   ``.mat`` files restricted to the images present), plus AP@0.5 per face-size bucket
   (sqrt(w h) of the ground truth: < 10, 10-16, 16-32, > 32 px).
4. The diagnostic: D's face / non-face ROC AUC on the val ROIs per size bucket when D sees
   (a) the real HR crop, (b) G's SR output, (c) the bicubic up-sampled LR crop.

Writes ``OUT/results.json``, ``OUT/report.md`` (both tables) and ``OUT/auc.png``.
``--quick``: a few images and tiny sizes (under a minute; the test suite runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms

BUCKETS: list[tuple[str, float, float]] = [
    ("<10", 0.0, 10.0),
    ("10-16", 10.0, 16.0),
    ("16-32", 16.0, 32.0),
    (">32", 32.0, 1e5),
]
FUSIONS = ("d_only", "geometric_mean")


@dataclass
class Row:
    """One trained GAN of the table (its two score fusions are evaluated from the same run)."""

    key: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)


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
    top_k: int  # proposals per image fed to the GAN (the paper: 600)


# Full run: about 8.5k train ROIs per epoch (1,067 images x 8), HR 32 px / LR 8 px, G 16 channels
# with 2 residual blocks (32-channel up-sampling and refinement), D = ImageNet MobileNetV2, 2 epochs
# without MSE warm-up (G starts as bicubic through its skip), batch 32.
FULL = Budget(None, None, 32, 8, 32, 2, 0, 16, 2, 32, "tv_mobilenet_v2", 10, 600)
QUICK = Budget(6, 4, 32, 8, 16, 1, 0, 8, 1, 16, "tv_mobilenet_v2", 2, 40)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def experiment_config(wf: Path, out: Path, b: Budget, row: Row, seed: int = 0) -> dict[str, Any]:
    """The raw config of one row (validated by gan_detect's schema on use)."""
    props = out / "proposals"
    base: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(out / "runs" / row.key),
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
            "cache_dir": str(out / "data_cache"),
            "val_detection": False,
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
            "limit_val_batches": b.limit_val_batches,
            "enable_progress_bar": False,
            "log_every_n_steps": 10,
        },
        "logger": {"kind": "csv"},
        "evaluate": {"device": "cpu"},
    }
    raw = _merge(base, row.overrides)
    from gan_detect.variants import get_variant_class

    # A variant without a generator (the bicubic control) may not know the g_* keys.
    fields = {f.name for f in dataclasses.fields(get_variant_class(raw["variant"]["name"]).Config)}
    raw["variant"] = {k: v for k, v in raw["variant"].items() if k in fields}
    return raw


# ---- 1. proposals ------------------------------------------------------------------------------


def cached_proposals(records: list[Any], out: Path, progress: bool) -> Path:
    """RetinaFace proposals of these images, written once (a rerun with the same count skips)."""
    from gan_detect.detector.propose import run_proposals, write_proposals
    from gan_detect.detector.retinaface import RetinaFaceDetector

    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("num_images") == len(records):
        return out / "proposals_wider"
    start = time.perf_counter()
    dets = run_proposals(RetinaFaceDetector(), records, batch_size=1, progress=progress)
    write_proposals(dets, out, formats=["wider"])
    n = sum(len(d) for d in dets.values())
    secs = time.perf_counter() - start
    done.write_text(json.dumps({"num_images": len(records), "num_boxes": n, "seconds": secs}))
    print(f"proposals: {len(records)} images, {n} boxes, {secs:.0f} s -> {out}")
    return out / "proposals_wider"


# ---- 2. training -------------------------------------------------------------------------------


def train_row(raw: dict[str, Any]) -> Any:
    """Fit one row (or load its finished checkpoint); returns the GANDetectionModule."""
    from gan_detect.config.validate import to_experiment_config
    from gan_detect.train.fit import fit
    from gan_detect.train.gan_module import GANDetectionModule

    cfg = to_experiment_config(raw)
    run = Path(cfg.output_dir)
    done, ckpt = run / "done.json", run / "checkpoints" / "last.ckpt"
    if done.is_file() and ckpt.is_file():
        return GANDetectionModule.from_checkpoint(ckpt)
    start = time.perf_counter()
    module, _ = fit(cfg)
    done.write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return module.eval()


# ---- 3. evaluation -----------------------------------------------------------------------------


def fused_detections(
    boxes: Tensor, det_scores: Tensor, face_probs: Tensor, fusion: str, nms_iou: float = 0.4
) -> dict[str, np.ndarray]:
    """Re-scored boxes after NMS, as ``gan_detect.infer.inference.refine_detections`` does for faces."""
    if fusion == "d_only":
        scores = face_probs
    else:
        scores = torch.sqrt(face_probs.clamp_min(0) * det_scores.clamp(0, 1))
    keep = nms(boxes, scores, nms_iou)[:750]
    return {"boxes": boxes[keep].numpy(), "scores": scores[keep].numpy()}


def bucket_ap(
    records: list[Any], dets: dict[str, dict[str, np.ndarray]], iou: float = 0.5
) -> dict[str, float]:
    """COCO-style AP at IoU ``iou`` per face-size bucket (sqrt of GT area); invalid faces ignored."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for n, r in enumerate(records):
        images.append({"id": n, "width": 1, "height": 1})
        for (x0, y0, x1, y1), ign in zip(r.boxes.tolist(), r.ignore.tolist(), strict=True):
            w, h = x1 - x0, y1 - y0
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
        d = dets.get(r.image_id)
        if d is None:
            continue
        for (x0, y0, x1, y1), s in zip(d["boxes"].tolist(), d["scores"].tolist(), strict=True):
            results.append(
                {"image_id": n, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
            )
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}]}
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([iou])
        ev.params.maxDets = [750]
        ev.params.areaRng = [[lo * lo, hi * hi] for _, lo, hi in BUCKETS]
        ev.params.areaRngLbl = [name for name, _, _ in BUCKETS]
        ev.evaluate()
        ev.accumulate()
    prec = np.asarray(ev.eval["precision"])[0, :, 0, :, 0]  # (recall points, bucket)
    for j, (name, _, _) in enumerate(BUCKETS):
        p = prec[:, j]
        out[f"ap50_{name}"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return out


def evaluate_rows(
    modules: dict[str, Any], dataset: Any, gt: Any, progress: bool
) -> dict[str, dict[str, float]]:
    """Baseline + every module under both fusions, on every val image (G + D run once per ROI)."""
    from tqdm.auto import tqdm

    from gan_detect.data.roi import crop_lr_for_inference
    from gan_detect.infer.evaluation import as_numpy_tree
    from gan_detect.metrics import wider_face_ap

    dets: dict[str, dict[str, dict[str, np.ndarray]]] = {"RetinaFace alone": {}}
    opts = {k: m.inference_options() for k, m in modules.items()}
    for idx in tqdm(range(len(dataset)), desc="evaluate", disable=not progress):
        item = dataset[idx]
        image, props, image_id = item.images[0], item.proposals[0], item.image_ids[0]
        boxes, scores = props["boxes"].float(), props["scores"].float()
        hw = (int(image.shape[-2]), int(image.shape[-1]))
        dets["RetinaFace alone"][image_id] = {"boxes": boxes.numpy(), "scores": scores.numpy()}
        for key, module in modules.items():
            o = opts[key]
            probs = torch.zeros(0)
            if len(boxes):
                with torch.no_grad():
                    chunks = []
                    for s in range(0, len(boxes), o.chunk_size):
                        lr = crop_lr_for_inference(
                            image,
                            boxes[s : s + o.chunk_size],
                            o.lr_size,
                            o.context,
                            scale=module.variant.scale,
                        )
                        # The variant's own head semantics (face score of each proposal).
                        _, face_p, _ = module.variant.detect(
                            lr, boxes[s : s + o.chunk_size], hw, False, o.context
                        )
                        chunks.append(face_p[:, 0].float())
                    probs = torch.cat(chunks)
            for fusion in FUSIONS:
                name = f"{key} / {fusion}"
                dets.setdefault(name, {})[image_id] = fused_detections(boxes, scores, probs, fusion)
    table: dict[str, dict[str, float]] = {}
    for name, per_image in dets.items():
        tree = {i: _as_props(d) for i, d in per_image.items()}
        official = wider_face_ap(as_numpy_tree(tree), gt)
        table[name] = {k: float(official[f"ap_{k}"]) for k in ("easy", "medium", "hard")}
        table[name].update(bucket_ap(dataset.records, per_image))
    return table


def _as_props(d: dict[str, np.ndarray]) -> Any:
    from gan_detect.data.records import Proposals

    return Proposals(d["boxes"], d["scores"], np.ones(len(d["scores"]), np.int64))


# ---- 4. the AUC diagnostic ---------------------------------------------------------------------


def auc_diagnostic(
    module: Any, val_store: Path, batch_size: int = 128
) -> dict[str, dict[str, Any]]:
    """D's face/non-face ROC AUC per size bucket on the val ROIs: HR, SR, bicubic input.

    A ROI's size is sqrt(w h) of its matched ground-truth face (positives) or of the proposal
    itself (negatives), in source-image pixels; LR crops are the HR crops down-sampled x4.
    """
    from torch.utils.data import DataLoader
    from torchmetrics.classification import BinaryAUROC

    from gan_detect.data.batch import RoiBatch
    from gan_detect.data.roi_store import RoiStoreDataset

    variant = module.variant.eval()
    ds = RoiStoreDataset(val_store, scale=variant.scale)
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=RoiBatch.collate)
    probs: dict[str, list[Tensor]] = {"hr": [], "sr": [], "bicubic": []}
    labels, sizes = [], []
    with torch.no_grad():
        for batch in loader:
            d = variant.discriminator
            bicubic = F.interpolate(
                batch.lr, scale_factor=variant.scale, mode="bicubic", align_corners=False
            ).clamp(-1, 1)
            probs["hr"].append(torch.sigmoid(d(batch.hr).cls_logits[:, 0]))
            probs["sr"].append(torch.sigmoid(d(variant.generator(batch.lr).sr).cls_logits[:, 0]))
            probs["bicubic"].append(torch.sigmoid(d(bicubic).cls_logits[:, 0]))
            labels.append((batch.labels > 0).long())
            sizes.append(batch.src_sizes.prod(1).clamp_min(0).sqrt())
    y, size = torch.cat(labels), torch.cat(sizes)
    out: dict[str, dict[str, Any]] = {}
    for name, lo, hi in [*BUCKETS, ("all", 0.0, 1e5)]:
        m = (size >= lo) & (size < hi)
        row: dict[str, Any] = {"positives": int(y[m].sum()), "negatives": int((1 - y[m]).sum())}
        for src, p in probs.items():
            ok = row["positives"] > 0 and row["negatives"] > 0
            row[src] = float(BinaryAUROC()(torch.cat(p)[m], y[m])) if ok else float("nan")
        out[name] = row
    return out


def plot_auc(auc: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b for b, _, _ in BUCKETS]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, (src, label) in enumerate(
        [("hr", "real HR crop"), ("sr", "G's SR output"), ("bicubic", "bicubic LR")]
    ):
        ax.bar(x + (k - 1) * 0.27, [auc[n][src] for n in names], 0.27, label=label)
    ax.set_xticks(x, [f"{n} px\n({auc[n]['positives']}+/{auc[n]['negatives']}-)" for n in names])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("D face/non-face ROC AUC")
    ax.set_title("val ROIs by face size (sqrt wh)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- report ------------------------------------------------------------------------------------


def markdown(
    table: dict[str, dict[str, float]], auc: dict[str, dict[str, Any]], labels: dict[str, str]
) -> str:
    cols = ["easy", "medium", "hard"] + [f"ap50_{b}" for b, _, _ in BUCKETS]
    head = "| method | easy | medium | hard | " + " | ".join(f"AP50 {b} px" for b, _, _ in BUCKETS)
    lines = [head + " |", "|---" * (len(cols) + 1) + "|"]
    for name, vals in table.items():
        key, _, fusion = name.partition(" / ")
        label = f"{labels.get(key, key)}, {fusion}" if fusion else name
        lines.append(f"| {label} | " + " | ".join(f"{100 * vals[c]:.2f}" for c in cols) + " |")
    lines += [
        "",
        "| D sees | " + " | ".join(f"{n} px" for n in auc) + " |",
        "|---" * (len(auc) + 1) + "|",
    ]
    for src, label in [("hr", "real HR crop"), ("sr", "G's SR output"), ("bicubic", "bicubic LR")]:
        lines.append(f"| {label} | " + " | ".join(f"{auc[n][src]:.3f}" for n in auc) + " |")
    lines.append(
        "| ROIs (+/-) | "
        + " | ".join(f"{auc[n]['positives']}/{auc[n]['negatives']}" for n in auc)
        + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("GAN_DETECT_DATA", "../shared/data"))
    ap.add_argument("--out", default=None, help="default runs/real_wider (runs/real_wider_quick)")
    ap.add_argument("--quick", action="store_true", help="a few images, tiny sizes (< 60 s)")
    ap.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    ns = ap.parse_args(argv)
    start = time.perf_counter()
    wf = Path(ns.data) / "widerface"
    if not (wf / "WIDER_train" / "images").is_dir():
        print(
            f"error: no WIDER FACE images under {wf} (--data or GAN_DETECT_DATA)", file=sys.stderr
        )
        return 2
    out = Path(ns.out or ("runs/real_wider_quick" if ns.quick else "runs/real_wider"))
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
    from gan_detect.metrics import load_wider_ground_truth

    # The DataModule's own records (annotation order, max_*_images), so proposals cover them.
    cfg = to_experiment_config(experiment_config(wf, out, b, ROWS[0]))
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for split in ("train", "val"):
        cached_proposals(dm.records(split), out / "proposals" / split, progress)
    t_props = time.perf_counter() - t0

    from gan_detect.variants import VARIANTS

    rows = [r for r in ROWS if ns.rows is None or r.key in ns.rows.split(",")]
    modules: dict[str, Any] = {}
    t0 = time.perf_counter()
    for row in rows:
        name = row.overrides.get("variant", {}).get("name", "tiny_face")
        if name not in VARIANTS:
            print(f"skipping row {row.key!r}: variant {name!r} is not in this gan_detect")
            continue
        print(f"training row {row.key} ...", flush=True)
        raw = experiment_config(wf, out, b, row)
        modules[row.key] = train_row(raw)
    t_train = time.perf_counter() - t0

    ds = dm.detection_dataset("val")
    gt = load_wider_ground_truth(wf / "ground_truth").subset({r.image_id for r in ds.records})
    t0 = time.perf_counter()
    table = evaluate_rows(modules, ds, gt, progress)
    t_eval = time.perf_counter() - t0
    auc: dict[str, dict[str, Any]] = {}
    main_key = "gan" if "gan" in modules else next(iter(modules), None)
    if main_key is not None:
        dm.setup("validate")
        assert dm.val_store is not None
        auc = auc_diagnostic(modules[main_key], dm.val_store)
        plot_auc(auc, out / "auc.png")
    seconds = time.perf_counter() - start
    budget = {**vars(b), "threads": torch.get_num_threads()}
    timing = {"proposals_s": t_props, "train_s": t_train, "eval_s": t_eval, "total_s": seconds}
    (out / "results.json").write_text(
        json.dumps(
            {"table": table, "auc": auc, "auc_row": main_key, "budget": budget, "timing": timing},
            indent=2,
        )
    )
    labels = {r.key: r.label for r in ROWS}
    report = markdown(table, auc, labels) if auc else ""
    (out / "report.md").write_text(
        f"# Real WIDER FACE: RetinaFace proposals re-scored by the tiny-face GAN\n\n"
        f"{len(ds)} val images, official protocol (gt_list restricted to them). "
        f"AUC table: the D of row {main_key!r}.\n\n{report}\n"
        f"![AUC](auc.png)\n\nBudget: {json.dumps(budget)}\n\nTiming: {json.dumps(timing)}\n"
    )
    print(report)
    print(f"report: {out / 'report.md'}  ({seconds:.0f} s: {json.dumps(timing)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
