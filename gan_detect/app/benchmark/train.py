"""Training benchmarks: one GAN step (D then G) under precision / memory format / compile
(``train``), the Lightning engine against the same step as a plain loop (``engine``), and
training throughput with 1 vs 2 CPU processes under DDP (``ddp``)."""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from gan_detect.app.benchmark.ceiling import (
    best_ceiling,
    ceiling_fields,
    count_flops,
    machine_ceiling,
)
from gan_detect.app.benchmark.common import (
    Recorder,
    adam_pair,
    build_from_raw,
    device_of,
    median,
    plain_step,
    quartiles,
    raw_config,
    roi_loader,
    smooth_rois,
    split_batches,
    sync,
    to_device,
)
from gan_detect.app.benchmark.modes import Mode, modes_from_args
from gan_detect.data.batch import RoiBatch

TARGET_ENGINE_RATIO = 1.05  # Lightning / plain step time


def _common_fields(raw: dict[str, Any], size: str, args: argparse.Namespace) -> dict[str, Any]:
    v = raw["variant"]
    return {
        "variant": v["name"],
        "size": size,
        "backbone": v["backbone"],
        "g": [v[k] for k in ("g_channels", "g_res_blocks", "g_upsample_channels")],
        "batch": raw["data"]["batch_size"],
        "hr": raw["data"]["hr_size"],
    }


class TrainMode:
    """One mode's own copy of the networks and optimisers, and its timings."""

    def __init__(self, mode: Mode, base: Any, device: torch.device) -> None:
        self.mode, self.device = mode, device
        self.variant = mode.prepare(base).to(device).train()
        self.opt_g, self.opt_d = adam_pair(self.variant)
        self.times: list[float] = []
        self.first: list[float] = []

    def step(self, b: RoiBatch, timed_step: bool) -> None:
        b = RoiBatch(
            self.mode.input(b.lr), self.mode.input(b.hr), b.labels, b.box_targets, b.src_sizes
        )
        sync()
        t0 = time.perf_counter()
        with self.mode.autocast(self.device):
            plain_step(self.variant, self.opt_g, self.opt_d, b)
        sync()
        (self.times if timed_step else self.first).append(time.perf_counter() - t0)

    @torch.no_grad()
    def sr_mse(self, b: RoiBatch) -> float:
        """SR MSE after training (same batches, same seed for every mode)."""
        return float(F.mse_loss(self.variant.generator(b.lr).sr.float(), b.hr))


def run_train(args: argparse.Namespace, rec: Recorder) -> None:
    """``train``: the engine's step as a plain loop in each mode, round-robin (one step per mode
    per round, the order alternating), so a shared machine's load hits all modes alike."""
    device = device_of(args)
    for size in args.sizes:
        for name in args.variants:
            raw = raw_config(name, size, args.batch, args.hr, backbone=args.backbone)
            common = _common_fields(raw, size, args)
            base = build_from_raw(raw, args.seed)
            rois = smooth_rois(
                args.batch * 4, raw["data"]["hr_size"], raw["data"]["num_classes"], args.seed
            )
            batches = [to_device(b, device) for b in split_batches(rois, args.batch)]
            modes: list[TrainMode] = []
            for mode in modes_from_args(args):
                try:
                    modes.append(TrainMode(mode, base, device))
                except Exception as err:  # one failing mode must not end the run
                    rec.emit(
                        {**common, "mode": mode.name, "error": f"{type(err).__name__}: {err}"[:500]}
                    )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            failed: dict[str, str] = {}
            for r in range(args.warmup + args.rounds):
                if rec.out_of_time():
                    break
                for m in modes if r % 2 == 0 else modes[::-1]:
                    if m.mode.name in failed:
                        continue
                    try:
                        m.step(batches[r % len(batches)], r >= args.warmup)
                    except Exception as err:  # e.g. a compile error
                        failed[m.mode.name] = f"{type(err).__name__}: {err}"[:500]
            ref: float | None = None
            for m in modes:
                out: dict[str, Any] = {**common, "mode": m.mode.name, "device": device.type}
                if m.mode.name in failed or not m.times:
                    rec.emit({**out, "error": failed.get(m.mode.name, "time budget spent")})
                    continue
                med = median(m.times)
                ref = ref or med
                rec.emit(
                    {
                        **out,
                        "rounds": len(m.times),
                        "step_s": round(med, 4),
                        "step_s_quartiles": quartiles(m.times),
                        "rois_per_s": round(args.batch / med, 1),
                        "speedup": round(ref / med, 3),
                        # compile time lands in the untimed first steps of a compiled mode
                        "warmup_s": round(sum(m.first), 2),
                        "sr_mse_after": round(m.sr_mse(batches[0]), 5),
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
            del modes
            if device.type == "cuda":
                torch.cuda.empty_cache()


class _PairedTimer:
    """Times each Lightning iteration and one plain step next to it, alternating the order.

    Pairing at step granularity puts both under the same machine load. The plain step runs right
    before the Lightning step on even iterations and right after it on odd ones, so neither side
    always inherits the other's warm caches. A Lightning iteration is the time from the end of
    the previous iteration (or plain step) to ``on_train_batch_end``: data fetch, hooks,
    logging and both optimiser steps; the plain step fetches its own batch too.
    """

    def __init__(self, plain: _PlainLoop) -> None:
        self.plain = plain
        self.lightning: list[float] = []
        self.plain_times: list[float] = []
        self._mark: float | None = None
        self._before = 0.0

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        sync()
        now = time.perf_counter()
        self._before = 0.0 if self._mark is None else now - self._mark
        if len(self.lightning) % 2 == 0:
            self.plain_times.append(self.plain.step())
        self._mark = time.perf_counter()

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        sync()
        assert self._mark is not None
        self.lightning.append(self._before + time.perf_counter() - self._mark)
        if len(self.lightning) % 2 == 0:  # an odd iteration just ended: plain step after it
            self.plain_times.append(self.plain.step())
        self._mark = time.perf_counter()


class _PlainLoop:
    """The engine's networks (same seed), losses and Adam settings, without Lightning."""

    def __init__(
        self, raw: dict[str, Any], batches: RoiBatch, batch: int, seed: int, device: torch.device
    ) -> None:
        from gan_detect.config.validate import to_experiment_config

        o = to_experiment_config(raw).optim
        self.variant = build_from_raw(raw, seed).to(device).train()
        betas = (float(o.betas[0]), float(o.betas[1]))
        g_params = self.variant.generator.parameters()
        self.opt_g = (
            torch.optim.Adam(g_params, lr=o.lr_g, betas=betas)
            if self.variant.has_trainable_generator
            else None
        )
        self.opt_d = torch.optim.Adam(
            self.variant.discriminator.parameters(), lr=o.lr_d, betas=betas
        )
        self.batches = iter(roi_loader(batches, batch))
        self.device = device

    def step(self) -> float:
        """Fetch a batch, move it to the device, run one D + G step; wall seconds."""
        sync()
        t0 = time.perf_counter()
        b = to_device(next(self.batches), self.device)
        plain_step(self.variant, self.opt_g, self.opt_d, b)
        sync()
        return time.perf_counter() - t0


def _run_paired(
    raw: dict[str, Any], rois: RoiBatch, args: argparse.Namespace, device: torch.device
) -> tuple[list[float], list[float]]:
    """Trainer.fit for warm-up + rounds batches with a plain step next to each; timed ones."""
    from lightning.pytorch.callbacks import Callback

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.train.gan_module import GANDetectionModule
    from gan_detect.train.trainer import build_trainer

    timer = _PairedTimer(_PlainLoop(raw, rois, args.batch, args.seed, device))

    class _Hook(Callback):
        def on_train_batch_start(self, *a: Any, **k: Any) -> None:
            timer.on_train_batch_start()

        def on_train_batch_end(self, *a: Any, **k: Any) -> None:
            timer.on_train_batch_end()

    torch.manual_seed(args.seed)
    module = GANDetectionModule(raw)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            to_experiment_config(raw),
            logger=False,
            callbacks=[_Hook()],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            limit_train_batches=args.warmup + args.rounds,
            limit_val_batches=0,
            default_root_dir=tmp,
        )
        trainer.fit(module, train_dataloaders=roi_loader(rois, args.batch))
    return timer.lightning[args.warmup :], timer.plain_times[args.warmup :]


def run_engine(args: argparse.Namespace, rec: Recorder) -> None:
    """``engine``: Lightning / plain step time (median of per-step ratios of paired steps), with
    the FLOPs of one step and the fraction of the machine's ceiling the plain step reaches."""
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    device = device_of(args)
    for size in args.sizes:
        for name in args.variants:
            raw = raw_config(name, size, args.batch, args.hr, backbone=args.backbone)
            hr = raw["data"]["hr_size"]
            common = _common_fields(raw, size, args)
            rois = smooth_rois(
                args.batch * (args.warmup + args.rounds), hr, raw["data"]["num_classes"], args.seed
            )
            g_ch = raw["variant"]["g_channels"]
            ceil_before = machine_ceiling(g_ch, hr // 4, batch=args.batch, device=device)
            lt, pt = _run_paired(raw, rois, args, device)
            counter = _PlainLoop(raw, rois, args.batch, args.seed, device)
            b = to_device(next(counter.batches), device)
            step_flops = count_flops(
                functools.partial(plain_step, counter.variant, counter.opt_g, counter.opt_d, b)
            )
            ceil = best_ceiling(
                ceil_before, machine_ceiling(g_ch, hr // 4, batch=args.batch, device=device)
            )
            ratios = [x / y for x, y in zip(lt, pt, strict=True)]
            t_l, t_p = median(lt), median(pt)
            rec.emit(
                {
                    **common,
                    "device": device.type,
                    "pairs": len(ratios),
                    "lightning_step_s": round(t_l, 4),
                    "plain_step_s": round(t_p, 4),
                    "lightning_rois_per_s": round(args.batch / t_l, 2),
                    "plain_rois_per_s": round(args.batch / t_p, 2),
                    "ratio": round(median(ratios), 4),
                    "ratio_of_medians": round(t_l / t_p, 4),
                    "ratio_quartiles": quartiles(ratios),
                    "target": TARGET_ENGINE_RATIO,
                    "target_met": median(ratios) <= TARGET_ENGINE_RATIO,
                    "lightning_steps_s": [round(t, 4) for t in lt],
                    "plain_steps_s": [round(t, 4) for t in pt],
                    **ceiling_fields(ceil, step_flops / args.batch, args.batch / t_p),
                }
            )
