"""G + D inference on the CPU: fp32 vs bf16 autocast vs channels_last vs BatchNorm folding vs
torch.compile.

    python benchmarks/cpu_modes.py                              # small config, 256 LR crops
    python benchmarks/cpu_modes.py --modes fp32 bf16 compile    # compile: minutes of warm-up

One chunk of ``--rois`` LR crops (the chunk ``refine_detections`` sends) through
``variant.discriminate_sr`` (G then D) in each mode; the modes are interleaved round by round (same machine load
for each) and the median ROIs/s is reported with the speed-up over fp32 and the largest score
difference from fp32 (bf16 changes the numbers; compile and channels_last should not). bf16 pays
only where the CPU has bf16 units (AVX512-BF16 / AMX: the ``cpu_flags`` field says which).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

try:
    from _common import emit, median, raw_config
except ImportError:  # imported as benchmarks.cpu_modes
    from benchmarks._common import emit, median, raw_config

from gan_detect.config.validate import to_experiment_config
from gan_detect.models.fusion import fold_batchnorm
from gan_detect.variants import VARIANTS, build_variant

# fold_channels_last is what inference runs by default (gan_detect.infer.inference.inference_variant).
MODES = (
    "fp32",
    "bf16",
    "channels_last",
    "bf16_channels_last",
    "fold",
    "fold_channels_last",
    "bf16_fold_channels_last",
    "compile",
)


def _flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have = set(text.split())
    return sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)


def build_modes(variant: torch.nn.Module, modes: list[str]) -> dict[str, Any]:
    """mode -> (callable lr -> probs, channels_last input?)."""
    out: dict[str, Any] = {}
    for mode in modes:
        v = copy.deepcopy(variant).eval()
        cl = "channels_last" in mode
        if "fold" in mode:
            fold_batchnorm(v)
        if cl:
            v = v.to(memory_format=torch.channels_last)
        if mode == "compile":
            v.generator = torch.compile(v.generator)
            v.discriminator = torch.compile(v.discriminator)
        bf16 = mode.startswith("bf16")

        def run(lr: torch.Tensor, v: Any = v, bf16: bool = bf16, cl: bool = cl) -> torch.Tensor:
            x = lr.contiguous(memory_format=torch.channels_last) if cl else lr
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return v.discriminate_sr(x).cls_logits.float()

        out[mode] = run
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["tiny_face"], choices=sorted(VARIANTS))
    p.add_argument("--size", default="small", help="small | paper | tiny")
    p.add_argument("--rois", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--modes", nargs="+", default=list(MODES[:-1]), choices=MODES)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in a.variants:
        raw = raw_config(name, a.size, batch_size=1)
        cfg = to_experiment_config(raw)
        torch.manual_seed(0)
        variant = build_variant(cfg.variant, cfg.data.num_classes).eval()
        lr_side = raw["data"]["hr_size"] // variant.scale
        lr = torch.rand(a.rois, 3, lr_side, lr_side) * 2 - 1
        runs = build_modes(variant, a.modes)
        ref = runs["fp32"](lr) if "fp32" in runs else None
        warm: dict[str, float] = {}
        for mode, fn in runs.items():  # warm-up (compile happens here)
            t = time.perf_counter()
            fn(lr)
            warm[mode] = time.perf_counter() - t
        times: dict[str, list[float]] = {m: [] for m in runs}
        for _ in range(a.rounds):
            for mode, fn in runs.items():
                t = time.perf_counter()
                fn(lr)
                times[mode].append(time.perf_counter() - t)
        base = median(times["fp32"]) if "fp32" in times else None
        for mode, fn in runs.items():
            t_m = median(times[mode])
            rec: dict[str, Any] = {
                "bench": "cpu_modes",
                "variant": name,
                "size": a.size,
                "mode": mode,
                "rois": a.rois,
                "rounds": a.rounds,
                "rois_per_s": round(a.rois / t_m, 1),
                "warmup_s": round(warm[mode], 2),
                "cpu_flags": _flags(),
            }
            if base is not None and ref is not None:
                rec["speedup_vs_fp32"] = round(base / t_m, 2)
                rec["max_abs_score_diff"] = float((fn(lr) - ref).abs().max())
            emit(rec)


if __name__ == "__main__":
    main()
