"""What channels-last, bf16 autocast and ``torch.compile`` buy for one GAN training step at the
real-data experiment's size (tiny-face GAN: HR 32 px, G 16 channels / 2 blocks, D = MobileNetV2,
batch 32), on this machine's CPU.

Each mode trains its own copy of the same networks (same seed) with the same batches; the modes
run round-robin, one step each per round, so a shared machine's load hits all of them alike, and
each mode's time is the median over rounds. Compile time (the first steps of the compiled mode)
is reported apart. bf16 is reported only where the CPU has bf16 units (``avx512_bf16`` or
``amx_bf16`` in /proc/cpuinfo): elsewhere it runs emulated and says nothing about the option.
The loss after the last round of each mode is printed beside the fp32 one (same batches, same
seed): a mode that pays must not move training beyond the seed spread.

    python benchmarks/train_modes.py [--rounds 12] [--batch 32] [--no-compile]

One JSON line per mode, then a summary line with the ratios to fp32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from gan_detect.utils.threads import configure_threads

configure_threads(None)  # bounded OpenMP spinning before torch loads, as the CLI does

import torch  # noqa: E402

try:
    from _common import emit, smooth_rois
    from step_time import plain_step
except ImportError:  # imported as benchmarks.train_modes
    from benchmarks._common import emit, smooth_rois
    from benchmarks.step_time import plain_step

from gan_detect.config.validate import to_experiment_config  # noqa: E402
from gan_detect.data.batch import RoiBatch  # noqa: E402
from gan_detect.variants import build_variant  # noqa: E402


def bf16_units() -> bool:
    """Whether the CPU has native bf16 instructions (else autocast emulates them)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def experiment_raw(batch: int) -> dict[str, Any]:
    """The real WIDER experiment's network sizes (experiments/real_wider.py FULL budget)."""
    return {
        "variant": {
            "name": "tiny_face",
            "scale": 4,
            "backbone": "tv_mobilenet_v2",
            "pretrained": False,  # the weights do not change the time
            "g_channels": 16,
            "g_res_blocks": 2,
            "g_upsample_channels": 32,
            "g_refine_channels": 32,
            "g_bicubic_skip": True,
        },
        "data": {"name": "wider_face", "root": "unused", "hr_size": 32, "batch_size": batch},
        "optim": {"lr_g": 1e-3, "lr_d": 1e-4, "milestones": [1000]},
        "logger": {"kind": "none"},
        "output_dir": "unused",
    }


class Mode:
    """One way of running the step: its own networks, optimisers and timings."""

    def __init__(self, name: str, base: Any, channels_last: bool, bf16: bool, compile_: bool):
        self.name, self.bf16 = name, bf16
        self.variant = copy.deepcopy(base).train()
        if channels_last:
            self.variant.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compile_:
            self.variant.generator.compile()
            self.variant.discriminator.compile()
        self.opt_g = torch.optim.Adam(self.variant.generator.parameters(), lr=1e-3)
        self.opt_d = torch.optim.Adam(self.variant.discriminator.parameters(), lr=1e-4)
        self.times: list[float] = []
        self.first: list[float] = []
        self.loss = float("nan")

    def step(self, b: RoiBatch, warm: bool) -> None:
        ctx = torch.autocast("cpu", torch.bfloat16) if self.bf16 else nullcontext()
        start = time.perf_counter()
        with ctx:
            plain_step(self.variant, self.opt_g, self.opt_d, b)
        (self.times if warm else self.first).append(time.perf_counter() - start)

    @torch.no_grad()
    def eval_loss(self, b: RoiBatch) -> float:
        fake = self.variant.generator(b.lr)
        return float(torch.nn.functional.mse_loss(fake.sr.float(), b.hr))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="timed rounds (one step per mode each)")
    ap.add_argument(
        "--warmup", type=int, default=3, help="untimed first steps (compile happens here)"
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode")
    ns = ap.parse_args(argv)
    cfg = to_experiment_config(experiment_raw(ns.batch))
    torch.manual_seed(0)
    base = build_variant(cfg.variant, cfg.data.num_classes)
    rois = smooth_rois(ns.batch * 4, hr_size=32, num_classes=1, seed=0)
    batches = [
        RoiBatch(
            *(
                t[i * ns.batch : (i + 1) * ns.batch]
                for t in (rois.lr, rois.hr, rois.labels, rois.box_targets, rois.src_sizes)
            )
        )
        for i in range(4)
    ]
    has_bf16 = bf16_units()
    modes = [
        Mode("fp32", base, False, False, False),
        Mode("channels_last", base, True, False, False),
    ]
    if has_bf16:
        modes.append(Mode("bf16-mixed", base, False, True, False))
        modes.append(Mode("bf16-mixed+channels_last", base, True, True, False))
    if not ns.no_compile:
        modes.append(Mode("compile", base, False, False, True))
    for r in range(ns.warmup + ns.rounds):
        b = batches[r % len(batches)]
        order = modes if r % 2 == 0 else modes[::-1]  # alternate who goes first
        for m in order:
            m.step(b, warm=r >= ns.warmup)
    ref = None
    summary: dict[str, Any] = {"bench": "train_modes", "bf16_units": has_bf16, "batch": ns.batch}
    for m in modes:
        med = statistics.median(m.times)
        m.loss = m.eval_loss(batches[0])
        ref = ref or med
        rec = {
            "bench": "train_modes",
            "mode": m.name,
            "step_s_median": med,
            "step_s_quartiles": statistics.quantiles(m.times, n=4) if len(m.times) > 1 else [med],
            "first_steps_s": sum(m.first),  # compile time lands here for the compiled mode
            "speedup_vs_fp32": ref / med,
            "sr_mse_after": m.loss,
            "rounds": ns.rounds,
        }
        emit(rec)
        summary[m.name] = round(ref / med, 3)
    if not has_bf16:
        summary["bf16-mixed"] = "not measurable: this CPU has no bf16 units (emulated)"
    emit(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
