"""Inference benchmarks: G + D on one chunk of LR crops in each precision / memory format /
BN-folding / compile mode (``infer``), and full-image inference, proposals to detections, with
peak memory and the fraction of the machine's ceiling (``image``)."""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import resource
import time
from pathlib import Path
from typing import Any

import torch

from gan_detect.app.benchmark.ceiling import (
    best_ceiling,
    ceiling_fields,
    count_flops,
    heaviest_conv,
    machine_ceiling,
)
from gan_detect.app.benchmark.common import (
    Recorder,
    build_from_raw,
    device_of,
    median,
    raw_config,
    sync,
    timed,
)
from gan_detect.app.benchmark.modes import modes_from_args

IMAGE_WH = (1024, 768)


def run_infer(args: argparse.Namespace, rec: Recorder) -> None:
    """``infer``: ``--rois`` LR crops (the chunk ``refine_detections`` sends) through
    ``discriminate_sr`` (G then D) in each mode, interleaved round by round; ROIs/s, the speed-up
    over the first mode and the largest score difference from it (bf16 moves the scores;
    folding, channels-last and compile should not)."""
    device = device_of(args)
    for size in args.sizes:
        for name in args.variants:
            raw = raw_config(name, size, batch_size=1, hr_size=args.hr, backbone=args.backbone)
            variant = build_from_raw(raw, args.seed).to(device).eval()
            lr_side = raw["data"]["hr_size"] // variant.scale
            g = torch.Generator().manual_seed(args.seed)
            lr = (torch.rand(args.rois, 3, lr_side, lr_side, generator=g) * 2 - 1).to(device)
            runs: dict[str, Any] = {}
            errors: dict[str, str] = {}
            for mode in modes_from_args(args, fold=True):
                try:
                    runs[mode.name] = (mode, mode.prepare(variant).eval())
                except Exception as err:
                    errors[mode.name] = f"{type(err).__name__}: {err}"[:500]

            def forward(
                key: str, runs: dict[str, Any] = runs, lr: torch.Tensor = lr
            ) -> torch.Tensor:
                mode, v = runs[key]
                with torch.no_grad(), mode.autocast(device):
                    return v.discriminate_sr(mode.input(lr)).cls_logits.float()

            warm: dict[str, float] = {}
            for key in list(runs):  # warm-up (compilation happens here)
                try:
                    with timed() as t:
                        for _ in range(max(1, args.warmup)):
                            forward(key)
                    warm[key] = t[0]
                except Exception as err:
                    errors[key] = f"{type(err).__name__}: {err}"[:500]
                    del runs[key]
            times: dict[str, list[float]] = {k: [] for k in runs}
            for r in range(args.rounds):
                if rec.out_of_time():
                    break
                for key in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                    sync()
                    t0 = time.perf_counter()
                    forward(key)
                    sync()
                    times[key].append(time.perf_counter() - t0)
            common = {
                "variant": name,
                "size": size,
                "backbone": raw["variant"]["backbone"],
                "rois": args.rois,
                "lr": lr_side,
                "device": device.type,
            }
            ref_key = next(iter(runs), None)
            ref = forward(ref_key) if ref_key else None
            for key, msg in errors.items():
                rec.emit({**common, "mode": key, "error": msg})
            for key in runs:
                if not times[key]:
                    rec.emit({**common, "mode": key, "error": "time budget spent"})
                    continue
                t_m = median(times[key])
                assert ref is not None and ref_key is not None
                rec.emit(
                    {
                        **common,
                        "mode": key,
                        "rounds": len(times[key]),
                        "rois_per_s": round(args.rois / t_m, 1),
                        "speedup": round(median(times[ref_key]) / t_m, 2),
                        "max_abs_score_diff": float((forward(key) - ref).abs().max()),
                        "warmup_s": round(warm[key], 2),
                        **(
                            {
                                "peak_gpu_mb_all_modes": round(
                                    torch.cuda.max_memory_allocated() / 2**20, 1
                                )
                            }
                            if device.type == "cuda"
                            else {}
                        ),
                    }
                )


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


def measure_image(
    raw: dict[str, Any],
    proposals: int,
    rounds: int,
    warmup: int,
    threads: int | None,
    seed: int,
    device_name: str,
) -> dict[str, Any]:
    """Time one variant on one image (runs in its own process, so the peak memory is its own)."""
    from gan_detect.data.roi import crop_lr_for_inference
    from gan_detect.infer.inference import InferenceOptions, inference_variant, refine_detections

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    variant = build_from_raw(raw, seed).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, IMAGE_WH[1], IMAGE_WH[0], generator=g).to(device)
    props = {k: v.to(device) for k, v in random_proposals(proposals, IMAGE_WH, seed).items()}
    # The defaults: an inference copy (BatchNorm folded, channels-last on the CPU).
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
    with torch.no_grad():
        heavy = heaviest_conv(lambda: variant.discriminate_sr(lr_chunks[0]))
    ceil_args = (raw["variant"]["g_channels"], opts.lr_size)
    ceil_kw: dict[str, Any] = {"batch": min(opts.chunk_size, proposals), "heaviest": heavy}
    ceil_before = machine_ceiling(*ceil_args, **ceil_kw)
    for _ in range(warmup):
        refine_detections(variant, image, props, opts)
    full: list[float] = []
    crop: list[float] = []
    gd: list[float] = []
    gd_plain: list[float] = []
    n_det = 0
    for _ in range(rounds):
        with timed() as t:
            dets = refine_detections(variant, image, props, opts)
        full.append(t[0])
        n_det = int(dets["scores"].numel())
        with timed() as t:
            crops()
        crop.append(t[0])
        for net, sink in ((fast, gd), (variant, gd_plain)):  # G + D alone: copy vs the model
            with timed() as t, torch.no_grad():
                for lr in lr_chunks:
                    net.discriminate_sr(lr)
            sink.append(t[0])
    with timed() as t:
        refine_detections(variant, image, props, plain_opts)
    full_plain = t[0]
    with torch.no_grad():  # the unfolded model: BN is not counted either way
        per_roi = count_flops(lambda: variant.discriminate_sr(lr_chunks[0][:8])) / 8
    ceil = best_ceiling(ceil_before, machine_ceiling(*ceil_args, **ceil_kw))
    image_gflops = per_roi * proposals / median(full) / 1e9
    out: dict[str, Any] = {
        "s_per_image": round(median(full), 3),
        "s_per_image_plain": round(full_plain, 3),
        "speedup_over_plain": round(full_plain / median(full), 2),
        "crop_s": round(median(crop), 3),
        "gd_s": round(median(gd), 3),
        "gd_plain_s": round(median(gd_plain), 3),
        "gd_rois_per_s": round(proposals / median(gd), 1),
        "image_rois_per_s": round(proposals / median(full), 1),
        "detections": n_det,
        "runs_s": [round(x, 3) for x in full],
        **ceiling_fields(ceil, per_roi, proposals / median(gd)),
        "fraction_full_image": round(image_gflops / ceil["conv_gflops"], 3),
    }
    if "heaviest_conv_gflops" in ceil:
        out["fraction_full_image_of_heaviest_conv"] = round(
            image_gflops / ceil["heaviest_conv_gflops"], 3
        )
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:  # ru_maxrss is KiB on Linux; the process peak includes imports and the networks
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["rss_after_build_mb"] = round(rss_model, 1)
    return out


def run_image(args: argparse.Namespace, rec: Recorder) -> None:
    """``image``: ``--proposals`` random boxes (6-200 px) on a 1024x768 image through
    ``refine_detections`` (the path ``gan-detect evaluate`` takes: crops, G + D, NMS) with the
    inference defaults, the plain model beside it, each variant in a fresh (spawned) process."""
    device = device_of(args)
    ctx = mp.get_context("spawn")
    for size in args.sizes:
        for name in args.variants:
            raw = raw_config(name, size, batch_size=1, hr_size=args.hr, backbone=args.backbone)
            with ctx.Pool(1) as pool:
                out = pool.apply(
                    measure_image,
                    (
                        raw,
                        args.proposals,
                        args.rounds,
                        args.warmup,
                        args.threads,
                        args.seed,
                        device.type,
                    ),
                )
            rec.emit(
                {
                    "variant": name,
                    "size": size,
                    "backbone": raw["variant"]["backbone"],
                    "image_wh": list(IMAGE_WH),
                    "proposals": args.proposals,
                    "lr": raw["data"]["hr_size"] // 4,
                    "device": device.type,
                    "rounds": args.rounds,
                    **out,
                }
            )
