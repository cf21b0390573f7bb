"""AP against proposals kept: how many ROIs per image the GAN must re-score (``top_k`` and
``evaluate.rescore_min_score``), on the demo's faces and objects.

    python benchmarks/proposal_budget.py --demo-dir runs/demo          # a finished `gan-detect demo`
    python benchmarks/proposal_budget.py --demo-dir /tmp/d --quick     # trains `demo --quick` first

For each stage (``faces``: tiny-face GAN, official-layout WIDER AP; ``objects``: SOD-MTGAN, COCO AP)
the trained checkpoint re-scores the val proposals with every budget of the grid through
``evaluate_baseline_vs_gan`` (the code of ``gan-detect evaluate``), timing the whole pass. One JSON
line per (stage, budget): GAN AP, baseline AP, seconds per image, ROIs re-scored per image; then
one ``recommendation`` line per stage: the cheapest budget whose GAN AP on every reported metric is
within ``--tolerance`` AP points (default 0.2) of the full budget's, and its speed-up. The full
budget is the run's own ``evaluate.top_k`` with no score threshold. Untimed warm-up: ``--warmup``
passes (default 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    from _common import emit
except ImportError:  # imported as benchmarks.proposal_budget
    from benchmarks._common import emit

from gan_detect.app.cli import load_config
from gan_detect.data import build_datamodule
from gan_detect.infer.evaluation import evaluate_baseline_vs_gan
from gan_detect.infer.inference import select_proposals
from gan_detect.metrics import load_wider_ground_truth
from gan_detect.train.gan_module import GANDetectionModule

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"faces": ("ap_easy", "ap_medium", "ap_hard"), "objects": ("map", "map_50", "map_small")}


def ensure_demo(demo_dir: Path, quick: bool) -> None:
    """Run ``gan-detect demo`` into ``demo_dir`` unless both stages' checkpoints are there."""
    if all((demo_dir / s / "checkpoints" / "last.ckpt").is_file() for s in METRICS):
        return
    cmd = [sys.executable, "-m", "gan_detect", "demo", "--out", str(demo_dir)]
    cmd += ["--quick"] if quick else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def stage_budgets(
    demo_dir: Path,
    stage: str,
    top_ks: list[int],
    thresholds: list[float],
    repeat: int,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Evaluate one demo stage under every (top_k, threshold) budget; JSON records."""
    run = demo_dir / stage
    cfg = load_config([run / "config.yaml"], ["logger.kind=none"])
    module = GANDetectionModule.from_checkpoint(run / "checkpoints" / "last.ckpt")
    variant = module.variant.eval()
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    ds = dm.detection_dataset(cfg.evaluate.split)
    kind = "wider" if cfg.data.name == "wider_face" else "coco"
    gt = None
    gt_dir = getattr(cfg.data, "gt_dir", None)
    if kind == "wider" and gt_dir:
        gt = load_wider_ground_truth(gt_dir).subset({r.image_id for r in ds.records})
    base = module.inference_options(cfg.evaluate)
    budgets = [(base.top_k, 0.0)]
    budgets += [(k, t) for k in top_ks for t in thresholds if (k, t) != (base.top_k, 0.0)]
    items = [ds[i] for i in range(len(ds))]  # decode once: time the re-scoring, not JPEG reads
    cached = _Cached(ds, items)

    def hw(it: Any) -> tuple[int, int]:
        return (int(it.images[0].shape[-2]), int(it.images[0].shape[-1]))

    out = []
    for top_k, thresh in budgets:
        opts = dataclasses.replace(base, top_k=top_k, rescore_min_score=thresh)
        device = next(variant.parameters()).device
        rois = sum(  # what is really re-scored: after the border rule, threshold and top-K
            int(select_proposals(it.proposals[0], opts, device, hw(it))[0].shape[0])
            for it in items
            if it.proposals is not None
        )
        for _ in range(warmup):
            evaluate_baseline_vs_gan(variant, cached, kind, opts, gt=gt, progress=False)
        times, metrics = [], {}
        for _ in range(repeat):
            t = time.perf_counter()
            metrics, _, _ = evaluate_baseline_vs_gan(
                variant, cached, kind, opts, gt=gt, progress=False
            )
            times.append(time.perf_counter() - t)
        out.append(
            {
                "bench": "proposal_budget",
                "stage": stage,
                "variant": cfg.variant.name,
                "images": len(items),
                "top_k": top_k,
                "rescore_min_score": thresh,
                "rois_per_image": round(rois / max(1, len(items)), 1),
                "s_per_image": round(min(times) / max(1, len(items)), 4),
                "gan": {k: round(metrics["gan"][k], 5) for k in METRICS[stage]},
                "baseline": {k: round(metrics["baseline"][k], 5) for k in METRICS[stage]},
            }
        )
        emit(out[-1])
    return out


class _Cached:
    """The detection dataset with its items decoded once (same ``records`` for the WIDER GT)."""

    def __init__(self, ds: Any, items: list[Any]) -> None:
        self.records, self.items = ds.records, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def recommend(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Cheapest budget whose GAN AP is within ``tolerance`` points of the full budget's."""
    full = rows[0]
    ok = [
        r
        for r in rows
        if all(100 * (full["gan"][k] - r["gan"][k]) <= tolerance for k in full["gan"])
    ]
    best = min(ok, key=lambda r: r["s_per_image"])
    return {
        "bench": "proposal_budget",
        "stage": full["stage"],
        "recommendation": {"top_k": best["top_k"], "rescore_min_score": best["rescore_min_score"]},
        "full": {"top_k": full["top_k"], "rescore_min_score": 0.0},
        "speedup": round(full["s_per_image"] / best["s_per_image"], 2),
        "roi_ratio": round(full["rois_per_image"] / max(best["rois_per_image"], 1e-9), 2),
        "ap_drop_points": {
            k: round(100 * (full["gan"][k] - best["gan"][k]), 3) for k in full["gan"]
        },
        "tolerance_points": tolerance,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-dir", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="train `demo --quick` if none is there")
    p.add_argument("--stages", nargs="+", default=list(METRICS), choices=list(METRICS))
    p.add_argument("--top-k", nargs="+", type=int, default=[100, 50, 25])
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.01, 0.05, 0.1, 0.2])
    p.add_argument("--repeat", type=int, default=1, help="timed passes per budget (best kept)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per budget")
    p.add_argument("--tolerance", type=float, default=0.2, help="AP points")
    a = p.parse_args()
    ensure_demo(a.demo_dir, a.quick)
    for stage in a.stages:
        rows = stage_budgets(a.demo_dir, stage, a.top_k, a.thresholds, a.repeat, a.warmup)
        emit(recommend(rows, a.tolerance))


if __name__ == "__main__":
    main()
