"""``sr``: CARN-M vs bicubic on real crops (x4 PSNR by HR size) and ms per ROI of the papers'
generator and CARN-M.

PSNR (``what: psnr``): random HR crops of WIDER FACE val and COCO val2017 images, LR = the
antialiased bicubic x4 downscale of ROI mining (``gan_detect.data.roi.make_lr``), restored by
bicubic up-sampling and by CARN-M (the authors' DIV2K weights, x4 branch); PSNR on RGB [0, 1],
4 px border shaved (:mod:`gan_detect.metrics.sr_quality`). Cost (``what: cost``): forward time
per ROI at ``--batch`` of the papers' generator at the real WIDER experiment's size
(``--sizes experiment``: 16 channels, 2 residual blocks, 32-channel up-sampling and refinement,
bicubic skip) and of CARN-M, alternated batch by batch in one run (the ratio is the robust
number on a shared machine). Results: ``benchmarks/results/sr_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path
from typing import Any

import torch

from gan_detect.app.benchmark.common import SIZES, Recorder, median, warn

# The real COCO val2017 person images where `gan-detect fetch-coco --out` puts them by default
# (relative to the working directory, as the experiment files name them).
COCO_IMAGES = Path("data/coco_val2017_person/images")


def sr_sources(data: Path, coco_images: Path | None) -> dict[str, list[str]]:
    """Source name -> sorted JPEG paths: WIDER FACE val, and the COCO val2017 person images
    (``coco_images``; else ``data/coco_val2017_person/images``; else the shared coco128 subset)."""
    wider = sorted(glob.glob(str(data / "widerface" / "WIDER_val" / "images" / "*" / "*.jpg")))
    coco_dir = coco_images or (
        COCO_IMAGES if COCO_IMAGES.is_dir() else data / "coco" / "coco128_train2017"
    )
    coco = sorted(glob.glob(str(coco_dir / "**" / "*.jpg"), recursive=True))
    return {"wider_val": wider, "coco": coco}


def psnr_rows(
    carn: torch.nn.Module,
    sources: dict[str, list[str]],
    crops: int,
    sizes: list[int],
    seed: int,
    max_images: int | None,
) -> list[dict[str, Any]]:
    """Per source and HR size: mean PSNR of bicubic and CARN-M, the gain, share of crops won."""
    from gan_detect.metrics.sr_quality import bicubic_up, random_crops, restore_psnr

    rows = []
    for src, images in sources.items():
        images = images[:max_images] if max_images else images
        if not images:
            warn(f"--bench sr: no images for {src}; skipped")
            continue
        for size in sizes:
            hr = random_crops(images, size, crops, seed)  # (crops, 3, size, size) in [0, 1]
            p_bic = restore_psnr(hr, lambda lr: bicubic_up(lr, 4))
            p_carn = restore_psnr(hr, lambda lr: carn(lr).sr)
            rows.append(
                {
                    "what": "psnr",
                    "source": src,
                    "images": len(images),
                    "hr": size,
                    "lr": size // 4,
                    "crops": crops,
                    "seed": seed,
                    "bicubic_db": round(float(p_bic.mean()), 3),
                    "carn_m_db": round(float(p_carn.mean()), 3),
                    "gain_db": round(float((p_carn - p_bic).mean()), 3),
                    "carn_better": round(float((p_carn > p_bic).float().mean()), 3),
                }
            )
    return rows


def paper_generator() -> torch.nn.Module:
    """The papers' G at the real WIDER experiment's size (``SIZES["experiment"]``)."""
    from gan_detect.models.generator import SRGenerator

    s = SIZES["experiment"]
    return SRGenerator(
        scale=4,
        channels=s["g_channels"],
        num_res_blocks=s["g_res_blocks"],
        upsample_channels=s["g_upsample_channels"],
        refine_channels=s["g_refine_channels"],
        bicubic_skip=s["g_bicubic_skip"],
    )


@torch.no_grad()
def cost_rows(
    carn: torch.nn.Module, lr_sizes: list[int], batch: int, reps: int, seed: int
) -> list[dict[str, Any]]:
    """ms per ROI (median of ``reps`` batches (batch, 3, lr, lr)) of each generator, alternated
    batch by batch after one untimed warm-up call each."""
    torch.manual_seed(seed)
    nets: dict[str, torch.nn.Module] = {
        "paper_full_budget": paper_generator().eval(),
        "carn_m": carn,
    }
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    rows = []
    for lr in lr_sizes:
        x = torch.rand(batch, 3, lr, lr) * 2 - 1
        times: dict[str, list[float]] = {k: [] for k in nets}
        for net in nets.values():
            net(x)  # warm-up (allocator, oneDNN kernels)
        for _ in range(reps):
            for k, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[k].append(time.perf_counter() - t0)
        base = median(times["paper_full_budget"])
        for k in nets:
            rows.append(
                {
                    "what": "cost",
                    "generator": k,
                    "params": params[k],
                    "lr": lr,
                    "hr": 4 * lr,
                    "batch": batch,
                    "reps": reps,
                    "ms_per_roi": round(1e3 * median(times[k]) / batch, 4),
                    "vs_paper": round(median(times[k]) / base, 2),
                }
            )
    return rows


def run_sr(args: argparse.Namespace, rec: Recorder) -> None:
    """``sr``: ``--crops`` crops per source and ``--hr-sizes`` size (PSNR), then ``--lr-sizes``
    at ``--batch`` for ``--rounds`` alternated batches (cost); ``--sr-parts`` picks either."""
    from gan_detect.app.benchmark.evaluation import data_dir
    from gan_detect.data.paths import CARN_M_SHARED, carn_m_weights_path
    from gan_detect.models.carn import CARNM, load_carn_m_weights

    data = data_dir(args)
    if data is None:
        raise SystemExit("--bench sr needs the shared data folder (CARN-M weights, WIDER crops)")
    carn = CARNM(scale=4).eval()
    weights = args.weights or carn_m_weights_path(str(data / CARN_M_SHARED))
    load_carn_m_weights(carn, weights)
    if "psnr" in args.sr_parts:
        sources = sr_sources(data, Path(args.images) if args.images else None)
        for row in psnr_rows(carn, sources, args.crops, args.hr_sizes, args.seed, args.max_images):
            rec.emit(row)
    if "cost" in args.sr_parts:
        for row in cost_rows(carn, args.lr_sizes, args.batch, args.rounds, args.seed):
            rec.emit(row)
