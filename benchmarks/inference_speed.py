"""Full-image GAN inference speed: 600 proposals on a 1024x768 image -> crops -> G -> D -> NMS.

Per variant: milliseconds per image through ``refine_detections`` (the path ``gan-detect
evaluate`` takes), the split into LR cropping and the G+D forward (ROIs/s), and peak memory.
Each variant runs in a fresh (spawned) process so its peak is its own: on CPU the peak resident
set (``ru_maxrss``; tracemalloc cannot see torch's buffers) next to the resident set after the
networks are built; on GPU ``torch.cuda.max_memory_allocated`` during inference.

Inference runs with the defaults (an inference copy of G and D with BatchNorm folded and, on the
CPU, channels-last weights); the plain model (both off) is timed in the same run for the ratio.

The same process also measures the machine's ceiling before and after the runs (best kept;
``_common.machine_ceiling``): a 2048 matmul, one 3x3 conv of G's width on a chunk of LR crops,
and the heaviest conv shape of G + D itself (found by hooks, timed alone), each conv in the
better of the NCHW / NHWC formats; with the G+D FLOPs per ROI (``FlopCounterMode``) it reports
the fraction of each ceiling that the G+D forward and the whole image reach (target: the whole
image >= 60 %).

    python benchmarks/inference_speed.py                  # small CPU config
    python benchmarks/inference_speed.py --paper --repeat 2

Untrained networks (seeded): the time does not depend on the weights; NMS sees ~uniform scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import resource
from pathlib import Path
from typing import Any

import torch

try:
    from _common import (
        best_ceiling,
        ceiling_fields,
        count_flops,
        emit,
        heaviest_conv,
        machine_ceiling,
        median,
        raw_config,
        timed,
    )
except ImportError:  # imported as benchmarks.inference_speed
    from benchmarks._common import (
        best_ceiling,
        ceiling_fields,
        count_flops,
        emit,
        heaviest_conv,
        machine_ceiling,
        median,
        raw_config,
        timed,
    )

from gan_detect.config.validate import to_experiment_config
from gan_detect.data.roi import crop_lr_for_inference
from gan_detect.infer.inference import InferenceOptions, inference_variant, refine_detections
from gan_detect.variants import VARIANTS, build_variant

IMAGE_WH = (1024, 768)


def random_proposals(k: int, wh: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    """``k`` boxes, sides log-uniform in 6-200 px, inside a ``wh`` image; uniform scores."""
    g = torch.Generator().manual_seed(seed)
    w, h = wh
    side = torch.exp(torch.empty(k, 2).uniform_(1.79, 5.3, generator=g))  # ~6 .. 200 px
    x0 = torch.rand(k, generator=g) * (w - side[:, 0])
    y0 = torch.rand(k, generator=g) * (h - side[:, 1])
    boxes = torch.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], dim=1)
    return {
        "boxes": boxes,
        "scores": torch.rand(k, generator=g),
        "labels": torch.ones(k, dtype=torch.int64),
    }


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    raw: dict, proposals: int, repeat: int, warmup: int, threads: int | None, seed: int
) -> dict[str, Any]:
    """Time one variant (runs in its own process); returns the JSON record."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = to_experiment_config(raw)
    torch.manual_seed(seed)
    variant = build_variant(cfg.variant, cfg.data.num_classes).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, IMAGE_WH[1], IMAGE_WH[0], generator=g).to(device)
    props = {k: v.to(device) for k, v in random_proposals(proposals, IMAGE_WH, seed).items()}
    # The defaults: G + D run as an inference copy (BatchNorm folded, channels-last on the CPU).
    opts = InferenceOptions(top_k=proposals, lr_size=raw["data"]["hr_size"] // variant.scale)
    plain_opts = dataclasses.replace(opts, fold_bn=False, channels_last=False)
    rss_model = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def crops() -> list[torch.Tensor]:
        boxes = props["boxes"]
        return [
            crop_lr_for_inference(image, boxes[i : i + opts.chunk_size], opts.lr_size)
            for i in range(0, boxes.shape[0], opts.chunk_size)
        ]

    lr_chunks = crops()
    fast = inference_variant(variant, opts, probe=lr_chunks[0][:4])
    # The ceiling: G's width at the LR size, and the heaviest conv of G + D at its real shape.
    with torch.no_grad():
        heavy = heaviest_conv(lambda: variant.discriminate_sr(lr_chunks[0]))
    ceil_args = (raw["variant"]["g_channels"], opts.lr_size)
    ceil_kw = {"batch": min(opts.chunk_size, proposals), "heaviest": heavy}
    ceil_before = machine_ceiling(*ceil_args, **ceil_kw)
    for _ in range(warmup):  # allocator, cudnn autotuning, caches
        refine_detections(variant, image, props, opts)
    full, crop, gd, gd_plain = [], [], [], []
    n_det = 0
    for _ in range(repeat):
        with timed() as t:
            dets = refine_detections(variant, image, props, opts)
        full.append(t[0])
        n_det = int(dets["scores"].numel())
        with timed() as t:
            crops()
        crop.append(t[0])
        for net, out in ((fast, gd), (variant, gd_plain)):  # G + D alone, copy vs the model
            with timed() as t, torch.no_grad():
                for lr in lr_chunks:
                    net.discriminate_sr(lr)
            out.append(t[0])
    with timed() as t:
        refine_detections(variant, image, props, plain_opts)
    full_plain = t[0]
    # FLOPs per ROI of G + D (8 crops; the unfolded model: BN is not counted either way), and
    # the machine's ceiling measured right after the runs.
    with torch.no_grad():
        per_roi = count_flops(lambda: variant.discriminate_sr(lr_chunks[0][:8])) / 8
    ceil = best_ceiling(ceil_before, machine_ceiling(*ceil_args, **ceil_kw))
    rec: dict[str, Any] = {
        "ms_per_image": round(1000 * median(full), 1),
        "crop_ms": round(1000 * median(crop), 1),
        "gd_ms": round(1000 * median(gd), 1),
        "gd_rois_per_s": round(proposals / median(gd), 1),
        "gd_plain_ms": round(1000 * median(gd_plain), 1),  # fold_bn / channels_last off
        "ms_per_image_plain": round(1000 * full_plain, 1),
        "speedup_over_plain": round(full_plain / median(full), 2),
        "image_rois_per_s": round(proposals / median(full), 1),
        "detections": n_det,
        "runs_s": [round(x, 3) for x in full],
        "torch_threads": torch.get_num_threads(),
        **ceiling_fields(ceil, per_roi, proposals / median(gd)),
        "fraction_full_image": round(
            per_roi * proposals / median(full) / 1e9 / ceil["conv_gflops"], 3
        ),
        "fraction_full_image_of_heaviest_conv": round(
            per_roi * proposals / median(full) / 1e9 / ceil["heaviest_conv_gflops"], 3
        ),
    }
    if device.type == "cuda":
        rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        # ru_maxrss is in KiB on Linux; the process peak includes imports and the networks.
        rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        rec["rss_after_build_mb"] = round(rss_model, 1)
    return rec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--paper", action="store_true", help="paper-sized G (64/8/256) + vgg19")
    p.add_argument("--size", default=None, help="small | paper | tiny (overrides --paper)")
    p.add_argument("--backbone", default=None, help="override the size's discriminator trunk")
    p.add_argument("--hr", type=int, default=64, help="training HR size (LR crop = hr / 4)")
    p.add_argument("--proposals", type=int, default=600)
    p.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    size = a.size or ("paper" if a.paper else "small")
    if a.threads:
        torch.set_num_threads(a.threads)
    ctx = mp.get_context("spawn")  # a fresh process per variant: its own peak memory
    for name in a.variants:
        raw = raw_config(name, size, batch_size=1, hr_size=a.hr, backbone=a.backbone)
        with ctx.Pool(1) as pool:
            rec = pool.apply(measure, (raw, a.proposals, a.repeat, a.warmup, a.threads, a.seed))
        emit(
            {
                "bench": "inference_speed",
                "variant": name,
                "size": size,
                "backbone": raw["variant"]["backbone"],
                "g": [
                    raw["variant"][k] for k in ("g_channels", "g_res_blocks", "g_upsample_channels")
                ],
                "image_wh": list(IMAGE_WH),
                "proposals": a.proposals,
                "repeat": a.repeat,
                "warmup": a.warmup,
                "lr": a.hr // 4,
                "hr": a.hr,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                **rec,
            }
        )


if __name__ == "__main__":
    main()
