"""AP against proposals re-scored per image (``budget``): how many ROIs the GAN must re-score
(``evaluate.top_k`` x ``evaluate.rescore_min_score``), on a finished demo (``--demo-dir``: both
stages, AP within a tolerance) or on a trained WIDER run folder (``--run``: hard AP with paired
bootstrap intervals per score fusion)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_detect.app.benchmark.common import Recorder

DEMO_METRICS = {
    "faces": ("ap_easy", "ap_medium", "ap_hard"),
    "objects": ("map", "map_50", "map_small"),
}


class _Cached:
    """A detection dataset with its items decoded once (time the re-scoring, not JPEG reads)."""

    def __init__(self, ds: Any) -> None:
        self.records, self.items = ds.records, [ds[i] for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _demo_stage(
    demo_dir: Path, stage: str, args: argparse.Namespace, rec: Recorder
) -> list[dict[str, Any]]:
    """Evaluate one demo stage under every budget through ``evaluate_baseline_vs_gan`` (the code
    of ``gan-detect evaluate``), timing the whole pass; the first budget is the run's own."""
    import gan_detect.variants  # noqa: F401  (registers the variants' configs)
    from gan_detect.config.load import load_config
    from gan_detect.data import build_datamodule
    from gan_detect.infer.evaluation import evaluate_baseline_vs_gan
    from gan_detect.infer.inference import select_proposals
    from gan_detect.metrics import load_wider_ground_truth
    from gan_detect.train.gan_module import GANDetectionModule

    run = demo_dir / stage
    cfg = load_config([run / "config.yaml"], ["logger.kind=none"])
    module = GANDetectionModule.from_checkpoint(run / "checkpoints" / "last.ckpt")
    variant = module.variant.eval()
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    ds = _Cached(dm.detection_dataset(cfg.evaluate.split))
    kind = "wider" if cfg.data.name == "wider_face" else "coco"
    gt_dir = getattr(cfg.data, "gt_dir", None)
    gt = (
        load_wider_ground_truth(gt_dir).subset({r.image_id for r in ds.records})
        if kind == "wider" and gt_dir
        else None
    )
    base = module.inference_options(cfg.evaluate)
    budgets = [(base.top_k, 0.0)]
    budgets += [(k, t) for k in args.top_k for t in args.thresholds if (k, t) != budgets[0]]
    device = next(variant.parameters()).device
    rows = []
    for top_k, thresh in budgets:
        opts = dataclasses.replace(base, top_k=top_k, rescore_min_score=thresh)
        rois = sum(  # what is re-scored: after the border rule, threshold and top-K
            int(
                select_proposals(it.proposals[0], opts, device, tuple(it.images[0].shape[-2:]))[
                    0
                ].shape[0]
            )  # type: ignore[arg-type]
            for it in ds.items
            if it.proposals is not None
        )
        for _ in range(args.warmup):
            evaluate_baseline_vs_gan(variant, ds, kind, opts, gt=gt, progress=False)
        times: list[float] = []
        metrics: dict[str, Any] = {}
        for _ in range(args.rounds):
            t = time.perf_counter()
            metrics, _, _ = evaluate_baseline_vs_gan(variant, ds, kind, opts, gt=gt, progress=False)
            times.append(time.perf_counter() - t)
        rows.append(
            rec.emit(
                {
                    "stage": stage,
                    "variant": cfg.variant.name,
                    "images": len(ds),
                    "top_k": top_k,
                    "rescore_min_score": thresh,
                    "rois_per_image": round(rois / max(1, len(ds)), 1),
                    "s_per_image": round(min(times) / max(1, len(ds)), 4),
                    "gan": {k: round(metrics["gan"][k], 5) for k in DEMO_METRICS[stage]},
                    "baseline": {k: round(metrics["baseline"][k], 5) for k in DEMO_METRICS[stage]},
                }
            )
        )
    return rows


def _recommend(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The cheapest budget whose GAN AP is within ``tolerance`` points of the full budget's."""
    full = rows[0]
    ok = [
        r
        for r in rows
        if all(100 * (full["gan"][k] - r["gan"][k]) <= tolerance for k in full["gan"])
    ]
    best = min(ok, key=lambda r: r["s_per_image"])
    return {
        "stage": full["stage"],
        "recommendation": True,
        "top_k": best["top_k"],
        "rescore_min_score": best["rescore_min_score"],
        "full_top_k": full["top_k"],
        "speedup": round(full["s_per_image"] / best["s_per_image"], 2),
        # None when the cheapest budget re-scores nothing (a ratio would be infinite)
        "roi_ratio": round(full["rois_per_image"] / best["rois_per_image"], 2)
        if best["rois_per_image"]
        else None,
        "ap_drop_points": {
            k: round(100 * (full["gan"][k] - best["gan"][k]), 3) for k in full["gan"]
        },
        "tolerance_points": tolerance,
    }


def _ensure_demo(demo_dir: Path, quick: bool) -> None:
    """Run ``gan-detect demo`` into ``demo_dir`` unless both stages' checkpoints are there."""
    if all((demo_dir / s / "checkpoints" / "last.ckpt").is_file() for s in DEMO_METRICS):
        return
    cmd = [sys.executable, "-m", "gan_detect", "demo", "--out", str(demo_dir)]
    cmd += ["--quick"] if quick else []
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


@torch.no_grad()
def _run_folder_pass(
    variant: Any, ds: Any, opts: Any, fusions: list[str], fitted: dict[str, Any]
) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """Detections per fusion (image id -> (K, 5) xywh + score) and the seconds of the pass, on
    the fast path (``discriminate_proposals``: BN-folded copy, ROIs batched across images, one
    G + D pass shared by the fusions)."""
    from gan_detect.data.records import xyxy_to_xywh
    from gan_detect.infer.inference import discriminate_proposals, postprocess_detections

    out: dict[str, dict[str, np.ndarray]] = {f: {} for f in fusions}
    start = time.perf_counter()
    for s in range(0, len(ds), 8):
        items = [ds[i] for i in range(s, min(s + 8, len(ds)))]
        raw = discriminate_proposals(
            variant,
            [it.images[0] for it in items],
            [it.proposals[0] for it in items],
            opts,
            with_labels=True,
        )
        for it, (hw, boxes, det, d_img, labels) in zip(items, raw, strict=True):
            for f in fusions:
                o = dataclasses.replace(opts, score_fusion=f, fusion_params=fitted.get(f))
                d = postprocess_detections(variant, boxes, det, d_img, hw, o, det_labels=labels)
                b = xyxy_to_xywh(d["boxes"].numpy().astype(np.float64))
                out[f][it.image_ids[0]] = np.concatenate([b, d["scores"].numpy()[:, None]], 1)
    return out, time.perf_counter() - start


def _run_folder(run: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """Each budget re-scores the run's val proposals; the official protocol scores each fusion
    and a paired image bootstrap compares it with the full budget (the largest ``--top-k``, no
    threshold). Then per fusion the cheapest budget not resolved as lower (interval of budget -
    full holds 0 or lies above) and at most ``--tolerance`` points lower at the point estimate."""
    from gan_detect.config.validate import to_container, to_experiment_config
    from gan_detect.data import build_datamodule
    from gan_detect.infer.fusion_fit import load_fusion
    from gan_detect.infer.inference import inference_options
    from gan_detect.metrics import load_wider_ground_truth
    from gan_detect.metrics.bootstrap import paired_bootstrap, wider_tables
    from gan_detect.variants import GANVariant

    variant = GANVariant.from_checkpoint(run / "checkpoints" / "last.ckpt")
    cfg = variant.run_config
    if cfg is None:
        raise SystemExit(f"{run}: the checkpoint holds no run config")
    fitted = load_fusion(run) or {}
    fusions = [f for f in args.fusions if f not in ("learned", "size_gated") or f in fitted]
    plain = to_container(cfg)
    full_cfg = to_experiment_config({**plain, "data": {**plain["data"], "top_k": max(args.top_k)}})
    dm = build_datamodule(full_cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    ds = dm.detection_dataset("val")
    gt = load_wider_ground_truth(cfg.data.gt_dir).subset({r.image_id for r in ds.records})  # type: ignore[attr-defined]
    base = inference_options(cfg, fusion=fitted)
    results: dict[tuple[int, float], dict[str, Any]] = {}
    for _ in range(args.warmup):  # untimed: the first pass pays for allocation and caches
        _run_folder_pass(variant, ds, base, fusions[:1], fitted)
    for k in sorted(args.top_k, reverse=True):
        for t in args.thresholds:
            opts = dataclasses.replace(base, top_k=k, rescore_min_score=t)
            dets, secs = _run_folder_pass(variant, ds, opts, fusions, fitted)
            results[(k, t)] = {"dets": dets, "s_per_image": secs / len(ds)}
    full = (max(args.top_k), 0.0)
    for f in fusions:
        tf = wider_tables(results[full]["dets"][f], gt)
        best = None
        for (k, t), r in sorted(results.items(), key=lambda kv: kv[1]["s_per_image"]):
            cmp = paired_bootstrap(tf, wider_tables(r["dets"][f], gt), args.n_boot, 0).to_dict()
            hard = cmp["difference"]["hard"]
            row = rec.emit(
                {
                    "run": str(run),
                    "fusion": f,
                    "top_k": k,
                    "rescore_min_score": t,
                    "s_per_image": round(r["s_per_image"], 4),
                    "speedup": round(results[full]["s_per_image"] / r["s_per_image"], 2),
                    "ap_hard": cmp["b"]["hard"],
                    "ap_hard_full": cmp["a"]["hard"],
                    "hard_minus_full": hard["point"],
                    "low": hard["low"],
                    "high": hard["high"],
                }
            )
            not_lower = (hard["high"] is None or hard["high"] >= 0) and hard[
                "point"
            ] >= -args.tolerance
            if not_lower and (best is None or r["s_per_image"] < best["s_per_image"]):
                best = row
        keep = ("fusion", "top_k", "rescore_min_score", "s_per_image", "speedup", "hard_minus_full")
        rec.emit({"recommendation": True, **{k: (best or {}).get(k) for k in keep}, "fusion": f})


def run_budget(args: argparse.Namespace, rec: Recorder) -> None:
    """``budget``: ``--run DIR`` (a trained WIDER run folder) or ``--demo-dir DIR`` (a finished
    ``gan-detect demo``; with ``--quick-demo`` one is trained there first when absent)."""
    if args.run:  # defaults of the real-data question: the paper's 600 proposals downwards
        args.top_k = args.top_k or [600, 300, 150, 75]
        args.thresholds = args.thresholds or [0.0, 0.05, 0.2]
        args.tolerance = 0.5 if args.tolerance is None else args.tolerance
        _run_folder(Path(args.run), args, rec)
        return
    args.top_k = args.top_k or [100, 50, 25]
    args.thresholds = args.thresholds or [0.0, 0.01, 0.05, 0.1, 0.2]
    args.tolerance = 0.2 if args.tolerance is None else args.tolerance
    if not args.demo_dir:
        raise SystemExit("--bench budget needs --run DIR or --demo-dir DIR")
    demo_dir = Path(args.demo_dir)
    _ensure_demo(demo_dir, args.quick_demo)
    for stage in args.stages:
        rows = _demo_stage(demo_dir, stage, args, rec)
        rec.emit(_recommend(rows, args.tolerance))
