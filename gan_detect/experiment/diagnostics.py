"""Diagnostics an experiment file can ask for (``diagnostics:``), each a results entry plus a
markdown section:

* ``auc_by_size``: D's object / background ROC AUC per size bucket on the val proposals' ROIs when
  D sees the real HR crop, G's SR output, (``sr_carn: true``) the pretrained CARN-M's SR output or
  the bicubic up-sampled LR crop, beside the detector's own score on the same ROIs, each with an
  image-bootstrap interval (and a bar plot ``auc.png``);
* ``per_class``: per-class AP of the most frequent classes, the detector vs a row (first seed);
* ``class_accuracy``: D's top-1 class accuracy on the val ground-truth objects per size bucket
  (rows x seeds), beside the detector's class for the same objects and the majority-class line;
* ``refinement_ap75``: AP75 of a row with and without D's box refinement at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gan_detect.experiment.report import cell, compare, fmt_diff
from gan_detect.metrics.resampling import interval_scope

AUC_SOURCES = [
    ("hr", "D on real HR crop"),
    ("sr", "D on G's SR output"),
    ("sr_carn", "D on pretrained CARN-M's SR"),
    ("bicubic", "D on bicubic LR"),
    ("detector", "detector's own score"),
]


@torch.no_grad()
def auc_rows(
    variant: Any,
    val_store: Path,
    val_props: Mapping[str, Any],
    records: Sequence[Any],
    extra_sr: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Per val ROI that is a detector proposal: label, size, image, D's probability on HR / SR /
    bicubic input, and the detector's own score for that box (NaN for ground-truth ROIs).

    ``extra_sr`` maps a source name (e.g. ``"sr_carn"``) to another generator whose SR output the
    same D also scores: the same D on two SR inputs isolates what the SR network contributes.
    """
    from torch.utils.data import DataLoader

    from gan_detect.data.batch import RoiBatch
    from gan_detect.data.roi_store import RoiStoreDataset

    variant = variant.eval()
    ds = RoiStoreDataset(val_store, scale=variant.scale)
    meta_boxes = np.load(val_store / "boxes.npy") if (val_store / "boxes.npy").is_file() else None
    img_index = (
        np.load(val_store / "image_index.npy")
        if (val_store / "image_index.npy").is_file()
        else None
    )
    loader = DataLoader(ds, batch_size=256, collate_fn=RoiBatch.collate)
    extra = {k: g.eval() for k, g in (extra_sr or {}).items()}
    cols: dict[str, list[np.ndarray]] = {"hr": [], "sr": [], "bicubic": [], "label": [], "size": []}
    cols.update({k: [] for k in extra})
    d = variant.discriminator
    for batch in loader:
        bicubic = F.interpolate(
            batch.lr, scale_factor=variant.scale, mode="bicubic", align_corners=False
        ).clamp(-1, 1)
        sr = variant.generator(batch.lr).sr if variant.generator is not None else bicubic
        # Column 0 of the class head is "background" for multi-class D and "object" for the
        # face head: the object probability is 1 - P(background) in the first case.
        cols["hr"].append(_object_prob(d(batch.hr).cls_logits))
        cols["sr"].append(_object_prob(d(sr).cls_logits))
        cols["bicubic"].append(_object_prob(d(bicubic).cls_logits))
        for k, g in extra.items():
            cols[k].append(_object_prob(d(g(batch.lr).sr).cls_logits))
        cols["label"].append((batch.labels > 0).long().numpy())
        cols["size"].append(batch.src_sizes.prod(1).clamp_min(0).sqrt().numpy())
    rows = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(rows["label"])
    det = np.full(n, np.nan)
    image = np.zeros(n, np.int64) if img_index is None else img_index[:n].astype(np.int64)
    if meta_boxes is not None and img_index is not None:
        for i in range(n):
            p = val_props.get(records[int(image[i])].image_id)
            if p is None or len(p.boxes) == 0:
                continue
            same = np.all(np.abs(p.boxes - meta_boxes[i][None, :]) < 1e-3, axis=1)
            if same.any():
                det[i] = float(p.scores[np.argmax(same)])
    rows["detector"] = det
    rows["image"] = image
    return rows


def _object_prob(logits: torch.Tensor) -> np.ndarray:
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0]).numpy()
    return (1.0 - torch.softmax(logits.float(), dim=1)[:, 0]).numpy()


def auc_sources(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The :data:`AUC_SOURCES` a row dict (from :func:`auc_rows`) or a bucket of
    :func:`auc_table` holds, in table order."""
    return [(src, label) for src, label in AUC_SOURCES if src in table]


def auc_table(
    rows: Mapping[str, np.ndarray],
    buckets: Sequence[tuple[str, float, float]],
    n_boot: int,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """ROC AUC per size bucket of each score source, with a 95 % image-bootstrap interval."""
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(rows["detector"])
    r = {k: v[keep] for k, v in rows.items()}
    images = np.unique(r["image"])
    rng = np.random.default_rng(seed)
    draws = [rng.choice(images, size=len(images), replace=True) for _ in range(n_boot)]
    counts = [np.bincount(d, minlength=int(r["image"].max(initial=0)) + 1) for d in draws]
    out: dict[str, dict[str, Any]] = {}
    for name, lo, hi in [*buckets, ("all", 0.0, 1e5)]:
        m = (r["size"] >= lo) & (r["size"] < hi)
        y = r["label"][m]
        row: dict[str, Any] = {"positives": int(y.sum()), "negatives": int((1 - y).sum())}
        ok = row["positives"] > 0 and row["negatives"] > 0
        for src, _ in auc_sources(rows):
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


def plot_auc(auc: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Bars of the AUC table per size bucket (with their intervals) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in auc if n != "all"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sources = auc_sources(auc["all"])
    width = 0.8 / len(sources)
    for k, (src, label) in enumerate(sources):
        vals = [auc[n][src]["auc"] for n in names]
        err = [
            [v - (auc[n][src]["low"] or v) for n, v in zip(names, vals, strict=True)],
            [(auc[n][src]["high"] or v) - v for n, v in zip(names, vals, strict=True)],
        ]
        ax.bar(
            x + (k - (len(sources) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=label
        )
    ax.set_xticks(x, [f"{n} px\n({auc[n]['positives']}+/{auc[n]['negatives']}-)" for n in names])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("object / background ROC AUC")
    ax.set_title("val proposals' ROIs by object size (sqrt wh), 95 % image bootstrap")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def auc_markdown(res: Mapping[str, Any]) -> list[str]:
    auc = res.get("auc")
    if not auc:
        return []
    lines = [
        "",
        f"ROC AUC of object / background on the val proposals' ROIs (row {res['auc_row']!r}, "
        f"seed {res['auc_seed']}; 95 % image bootstrap):",
        "",
        "| score | " + " | ".join(f"{n} px" for n in auc) + " |",
        "|---" * (len(auc) + 1) + "|",
    ]
    for src, label in auc_sources(auc["all"]):
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
    return lines


def per_class(
    scorer: Any,
    dets: Mapping[str, Mapping[str, Any]],
    detector: str,
    method: str,
    records: Sequence[Any],
    class_names: Sequence[str],
    n_classes: int,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Per-class AP of the ``n_classes`` most frequent classes: the detector vs ``method``."""
    labels = np.concatenate([r.labels[~r.ignore] for r in records] or [np.zeros(0, np.int64)])
    counts = np.bincount(labels, minlength=len(class_names) + 1)
    frequent = [int(c) + 1 for c in np.argsort(-counts[1:], kind="stable")[:n_classes]]
    classes = []
    for c in frequent:
        if counts[c] == 0:
            continue
        t = {
            seed: {
                detector: scorer.tables(dets[detector], c),
                method: scorer.tables(dets[method], c),
            }
        }
        classes.append(
            {
                "label": c,
                "name": class_names[c - 1],
                "boxes": int(counts[c]),
                "comparison": compare(t, detector, method, n_boot, {}),
            }
        )
    return {"method": method, "seed": seed, "classes": classes}


def per_class_markdown(res: Mapping[str, Any], label_of: Callable[[str], str]) -> list[str]:
    pc = res.get("per_class")
    if not pc:
        return []
    det = res["detector"]
    lines = [
        "",
        f"**Per-class AP** of the most frequent test classes: {det} vs {label_of(pc['method'])} "
        f"(seed {pc['seed']}; B − A with its 95 % interval {interval_scope()}; * = resolved)",
        "",
        f"| class | test boxes | {det} AP | {label_of(pc['method'])} AP | B − A |",
        "|---|---|---|---|---|",
    ]
    for c in pc["classes"]:
        d = c["comparison"]["map"]
        lines.append(
            f"| {c['name']} | {c['boxes']} | {d['mean_a']:.2f} | {d['mean_b']:.2f} | "
            f"{fmt_diff(d['difference'])} |"
        )
    return lines


def refinement_markdown(res: Mapping[str, Any]) -> list[str]:
    """AP75 with and without D's boxes, and what ``evaluate.refine_boxes=auto`` decided."""
    ref = res.get("refinement_ap75")
    lines: list[str] = []
    if ref:
        lines += [
            "",
            "**AP75 before vs after D's box refinement** (same trained model):",
            "",
            "| fusion | AP75 without refinement | AP75 with refinement |",
            "|---|---|---|",
            *[
                f"| {f} | {cell(v['ap75_without'])} | {cell(v['ap75_with'])} |"
                for f, v in ref.items()
            ],  # fmt: skip
        ]
    decided = {k: f["refine_boxes"] for k, f in (res.get("fusion") or {}).items()
               if isinstance(f, dict) and "refine_boxes" in f}  # fmt: skip
    if decided:
        lines += [
            "",
            "**D's boxes, decided on the held-out train images** (`evaluate.refine_boxes=auto`: "
            "applied when they raise the mean IoU of matched proposals with their objects):",
            "",
            "| seed / row | matched proposals | mean IoU, D's boxes | mean IoU, detector's | "
            "applied |",
            "|---|---|---|---|---|",
        ]
        for k, d in decided.items():
            mr, md = d.get("mean_iou_refined"), d.get("mean_iou_detector")
            lines.append(
                f"| {k} | {d['matched']} | {'n/a' if mr is None else f'{mr:.3f}'} | "
                f"{'n/a' if md is None else f'{md:.3f}'} | {'yes' if d['use'] else 'no'} |"
            )
    return lines


# --- class_accuracy: has D learned its classes? -------------------------------------------------


def gt_roi_set(
    dataset: Any, hr_size: int, context: float, scale: int, iou: float = 0.5
) -> dict[str, Any]:
    """The ground-truth objects of a full-image dataset as D's input, with the detector's class.

    Each non-ignored ground-truth box is cropped as ROI mining crops it (HR ``hr_size`` px with
    ``context``, antialiased bicubic down-sampling by ``scale``). The detector's class for a box
    is the label of its highest-scoring proposal with IoU >= ``iou`` (-1: no such proposal), so
    it is the class the detector would report for that object.

    Returns:
        ``lr`` (N, 3, hr/scale, hr/scale) in [-1, 1]; numpy ``label`` (N,), ``det_label`` (N,),
        ``size`` (N,) sqrt(w h) px and ``image`` (N,) index into the dataset.
    """
    from torchvision.ops import box_iou

    from gan_detect.data.roi import crop_hr, make_lr

    lrs, labels, det, sizes, images = [], [], [], [], []
    for idx in range(len(dataset)):
        item = dataset[idx]
        t = item.targets[0]
        keep = ~t["ignore"]
        boxes, lab = t["boxes"][keep].float(), t["labels"][keep]
        if len(boxes) == 0:
            continue
        lrs.append(make_lr(crop_hr(item.images[0], boxes, hr_size, context), scale))
        labels.append(lab.numpy())
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0)
        sizes.append(wh.prod(1).sqrt().numpy())
        images.append(np.full(len(boxes), idx, np.int64))
        d = np.full(len(boxes), -1, np.int64)
        props = item.proposals[0] if item.proposals else None
        if props is not None and len(props["boxes"]):
            ov = box_iou(boxes, props["boxes"].float())  # (G, P)
            score = torch.where(ov >= iou, props["scores"].float()[None, :], -1.0)
            best, arg = score.max(1)
            d = np.where(best.numpy() >= 0, props["labels"][arg].numpy(), -1)
        det.append(d)
    if not lrs:
        raise ValueError("class_accuracy: the dataset has no ground-truth object")
    return {
        "lr": torch.cat(lrs),
        "label": np.concatenate(labels).astype(np.int64),
        "det_label": np.concatenate(det).astype(np.int64),
        "size": np.concatenate(sizes),
        "image": np.concatenate(images),
    }


@torch.no_grad()
def d_class_predictions(variant: Any, lr: torch.Tensor, batch: int = 512) -> np.ndarray:
    """D's top-1 object class (1..K, background excluded) for each LR crop (N, 3, l, l), seen
    through the row's generator (G's SR output, or bicubic for the control)."""
    was = variant.training
    variant.eval()
    out = []
    for i in range(0, len(lr), batch):
        x = lr[i : i + batch]
        sr = variant.generator(x).sr if variant.generator is not None else _bicubic(x, variant)
        logits = variant.discriminator(sr).cls_logits
        out.append((logits[:, 1:].argmax(1) + 1).numpy())
    variant.train(was)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _bicubic(lr: torch.Tensor, variant: Any) -> torch.Tensor:
    up = F.interpolate(lr, scale_factor=variant.scale, mode="bicubic", align_corners=False)
    return up.clamp(-1, 1)


def class_accuracy_table(
    gt: Mapping[str, Any],
    d_pred: np.ndarray,
    buckets: Sequence[tuple[str, float, float]],
    majority: int | None = None,
) -> dict[str, dict[str, float]]:
    """Top-1 class accuracy (%) per size bucket: D's (``d``), the detector's (``detector``: a
    missed object counts as wrong; ``detector_found``: share with a proposal at IoU 0.5) and the
    chance line ``majority`` (always answering the most frequent class: ``majority`` or the most
    frequent label of ``gt``). ``objects``: how many ground-truth boxes the bucket holds."""
    label, det, size = gt["label"], gt["det_label"], gt["size"]
    if majority is None:
        majority = int(np.bincount(label).argmax())
    out: dict[str, dict[str, float]] = {}
    for name, lo, hi in [*buckets, ("all", 0.0, 1e9)]:
        m = (size >= lo) & (size < hi)
        n = int(m.sum())
        if n == 0:
            continue
        out[name] = {
            "objects": n,
            "d": 100.0 * float((d_pred[m] == label[m]).mean()),
            "detector": 100.0 * float((det[m] == label[m]).mean()),
            "detector_found": 100.0 * float((det[m] >= 0).mean()),
            "majority": 100.0 * float((label[m] == majority).mean()),
        }
    return out


def class_accuracy_markdown(res: Mapping[str, Any]) -> list[str]:
    ca = res.get("class_accuracy")
    if not ca:
        return []
    bands = list(next(iter(ca["rows"].values()))["mean"])
    lines = [
        "",
        "**Has D learned its classes?** Top-1 class accuracy (%) on the test images' ground-truth "
        "objects by size (sqrt wh, px), D's 80-way head on the row's SR crop (background "
        f"excluded; mean over seeds {ca['seeds']}, range in brackets) beside {res['detector']}'s "
        "class for the same object (its best proposal at IoU 0.5; a miss counts as wrong) and "
        "the chance line of always answering the most frequent class:",
        "",
        "| classifier | " + " | ".join(f"{b} px" for b in bands) + " |",
        "|---" * (len(bands) + 1) + "|",
    ]
    for key, r in ca["rows"].items():
        cells = []
        for b in bands:
            v = r["per_seed"]
            vals = [s[b]["d"] for s in v.values() if b in s]
            rng = f" [{min(vals):.1f}, {max(vals):.1f}]" if len(vals) > 1 else ""
            cells.append(f"{r['mean'][b]['d']:.1f}{rng}")
        label = res.get("labels", {}).get(key, key)
        if len(r["per_seed"]) < len(ca["seeds"]):  # a first-seed row (ablations, CARN-M)
            label += f" (seed {', '.join(map(str, r['per_seed']))})"
        lines.append(f"| D of {label} | " + " | ".join(cells) + " |")
    first = next(iter(ca["rows"].values()))["mean"]
    lines.append(
        f"| {res['detector']} | " + " | ".join(f"{first[b]['detector']:.1f}" for b in bands) + " |"
    )
    lines.append(
        "| always the most frequent class | "
        + " | ".join(f"{first[b]['majority']:.1f}" for b in bands)
        + " |"
    )
    lines.append("| objects | " + " | ".join(str(first[b]["objects"]) for b in bands) + " |")
    return lines
