"""The proposal budget on real data: hard AP and time against proposals re-scored per image, for
the real WIDER FACE experiment's trained GAN (``experiments/real_wider.py``).

    python benchmarks/proposal_budget_real.py --run runs/real_wider/seed0/runs/gan

Each budget (``evaluate.top_k`` x ``evaluate.rescore_min_score``) re-scores the 276 val images'
RetinaFace proposals through the package's fast path (``discriminate_proposals``: the
BatchNorm-folded inference copy, ROIs batched across images), timed over the whole pass; the
official protocol scores the result under the run's fusions, and a paired image bootstrap
(1,000 resamples) compares each budget with the full one (600, no threshold). One JSON line per
(budget, fusion), then a ``recommendation`` line per fusion: the cheapest budget whose hard AP is
not resolved as lower than the full budget's (the interval of budget - full holds 0 or is above)
and at most ``--tolerance`` points lower at the point estimate.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gan_detect.utils.threads import configure_threads

configure_threads(None)

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:
    from _common import emit
except ImportError:  # imported as benchmarks.proposal_budget_real
    from benchmarks._common import emit

from gan_detect.config.validate import to_experiment_config  # noqa: E402
from gan_detect.data import build_datamodule  # noqa: E402
from gan_detect.data.records import xyxy_to_xywh  # noqa: E402
from gan_detect.infer.fusion_fit import load_fusion  # noqa: E402
from gan_detect.infer.inference import (  # noqa: E402
    discriminate_proposals,
    inference_options,
    postprocess_detections,
)
from gan_detect.metrics import load_wider_ground_truth  # noqa: E402
from gan_detect.metrics.bootstrap import paired_bootstrap, wider_tables  # noqa: E402
from gan_detect.variants import GANVariant  # noqa: E402


@torch.no_grad()
def run_budget(
    variant: GANVariant, ds: Any, opts: Any, fusions: list[str], fitted: dict
) -> tuple[dict, float]:
    """Detections per fusion (image id -> (K, 5) xywh + score) and the seconds of the pass."""
    out: dict[str, dict[str, np.ndarray]] = {f: {} for f in fusions}
    start = time.perf_counter()
    for s in range(0, len(ds), 8):
        items = [ds[i] for i in range(s, min(s + 8, len(ds)))]
        raw = discriminate_proposals(
            variant, [it.images[0] for it in items], [it.proposals[0] for it in items], opts
        )
        for it, (hw, boxes, det, d_img) in zip(items, raw, strict=True):
            for f in fusions:
                o = replace(opts, score_fusion=f, fusion_params=(fitted or {}).get(f))
                d = postprocess_detections(variant, boxes, det, d_img, hw, o)
                b = xyxy_to_xywh(d["boxes"].numpy().astype(np.float64))
                out[f][it.image_ids[0]] = np.concatenate([b, d["scores"].numpy()[:, None]], 1)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a trained row of real_wider.py")
    p.add_argument("--top-k", nargs="+", type=int, default=[600, 300, 150, 75])
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.05, 0.2])
    p.add_argument("--fusions", nargs="+", default=["learned", "geometric_mean"])
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument(
        "--tolerance", type=float, default=0.5, help="largest point loss in hard AP accepted"
    )
    ns = p.parse_args(argv)
    variant = GANVariant.from_checkpoint(ns.run / "checkpoints" / "last.ckpt")
    cfg = variant.run_config
    assert cfg is not None
    fitted = load_fusion(ns.run) or {}
    fusions = [f for f in ns.fusions if f not in ("learned", "size_gated") or f in fitted]
    full_cfg = to_experiment_config(
        {**_plain(cfg), "data": {**_plain(cfg)["data"], "top_k": max(ns.top_k)}}
    )
    dm = build_datamodule(full_cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    ds = dm.detection_dataset("val")
    gt = load_wider_ground_truth(cfg.data.gt_dir).subset({r.image_id for r in ds.records})  # type: ignore[attr-defined]
    base = inference_options(cfg, fusion=fitted)
    results: dict[tuple[int, float], dict[str, Any]] = {}
    for k in sorted(ns.top_k, reverse=True):
        for t in ns.thresholds:
            dets, secs = run_budget(
                variant, ds, replace(base, top_k=k, rescore_min_score=t), fusions, fitted
            )
            results[(k, t)] = {"dets": dets, "s_per_image": secs / len(ds)}
    full = (max(ns.top_k), 0.0)
    for f in fusions:
        tf = wider_tables(results[full]["dets"][f], gt)
        best = None
        for (k, t), r in sorted(results.items(), key=lambda kv: kv[1]["s_per_image"]):
            tb = wider_tables(r["dets"][f], gt)
            cmp = paired_bootstrap(tf, tb, ns.bootstrap, 0).to_dict()
            hard = cmp["difference"]["hard"]
            rec = {
                "bench": "proposal_budget_real",
                "fusion": f,
                "top_k": k,
                "rescore_min_score": t,
                "s_per_image": r["s_per_image"],
                "speedup_vs_full": results[full]["s_per_image"] / r["s_per_image"],
                "ap_hard": cmp["b"]["hard"],
                "ap_hard_full": cmp["a"]["hard"],
                "hard_minus_full": hard["point"],
                "low": hard["low"],
                "high": hard["high"],
            }
            emit(rec)
            # Not resolved as lower, and no more than --tolerance lower at the point.
            not_lower = (hard["high"] is None or hard["high"] >= 0) and hard[
                "point"
            ] >= -ns.tolerance
            if not_lower and (best is None or r["s_per_image"] < best["s_per_image"]):
                best = rec
        emit({"bench": "proposal_budget_real", "recommendation": f, **(best or {})})
    return 0


def _plain(cfg: Any) -> dict[str, Any]:
    from gan_detect.config.validate import to_container

    return to_container(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
