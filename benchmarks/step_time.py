"""One GAN training step (D step then G step) through the Lightning engine vs a plain PyTorch loop.

Both sides run the same networks (``build_variant`` with the same seed), the same losses
(``variant.discriminator_losses`` / ``generator_losses``), Adam, and the same in-memory ROI
batches; the plain loop freezes D during the G step as Lightning's ``toggled_optimizer`` does,
so both compute the same gradients. The two are interleaved step by step inside one ``Trainer.fit``
(a callback runs one plain step next to each Lightning step, before it on even steps and after
it on odd ones), and the Lightning/plain ratio is the median of the per-step ratios, which damps
the noise of a shared machine; quartiles of the ratios say how much to trust it.

    python benchmarks/step_time.py                    # small CPU config, both variants
    python benchmarks/step_time.py --paper --steps 3 --rounds 1

Prints one JSON line per (variant, implementation, round) and one summary line per variant with
the Lightning/plain ratio (target <= 1.05), the FLOPs of one training step per ROI (D and G,
forward and backward, ``FlopCounterMode``) and the fraction of the machine's ceiling (a 2048
matmul and one 3x3 conv of G's width, measured in the same run) that the plain step reaches.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

try:
    from _common import (
        best_ceiling,
        ceiling_fields,
        count_flops,
        emit,
        machine_ceiling,
        median,
        raw_config,
        roi_loader,
        smooth_rois,
        sync,
    )
except ImportError:  # imported as benchmarks.step_time
    from benchmarks._common import (
        best_ceiling,
        ceiling_fields,
        count_flops,
        emit,
        machine_ceiling,
        median,
        raw_config,
        roi_loader,
        smooth_rois,
        sync,
    )

from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.trainer import build_trainer
from gan_detect.variants import VARIANTS, GANVariant, build_variant

TARGET_RATIO = 1.05


class PairedTimer(Callback):
    """Times each Lightning iteration and one plain step next to it, alternating the order.

    Pairing at step granularity puts both under the same machine load, so the per-step ratio is
    far less noisy than comparing two separate runs on a shared machine. The plain step runs
    right before the Lightning step on even iterations and right after it on odd ones, so neither
    side always inherits the other's warm caches. A Lightning iteration is the time from the end
    of the previous iteration (or plain step) to ``on_train_batch_end`` minus the plain step in
    between: data fetch, hooks, logging and both optimiser steps. The plain step fetches its own
    batch too.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning: list[float] = []
        self.plain_times: list[float] = []
        self._mark: float | None = None
        self._before = 0.0  # Lightning time before on_train_batch_start (fetch, hooks)

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        sync()
        now = time.perf_counter()
        # Iteration 0 starts here (Trainer setup is not timed).
        self._before = 0.0 if self._mark is None else now - self._mark
        if len(self.lightning) % 2 == 0:
            self.plain_times.append(self.plain.step())
        self._mark = time.perf_counter()

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        sync()
        assert self._mark is not None
        self.lightning.append(self._before + time.perf_counter() - self._mark)
        if len(self.lightning) % 2 == 0:  # odd iteration just ended: plain step after it
            self.plain_times.append(self.plain.step())
        self._mark = time.perf_counter()


def run_paired(
    raw: dict, batches: RoiBatch, batch: int, warmup: int, steps: int, seed: int
) -> tuple[list[float], list[float]]:
    """Trainer.fit for ``warmup + steps`` batches, a plain step after each; times after warm-up."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plain = PlainLoop(raw, roi_loader(batches, batch), seed, device)
    torch.manual_seed(seed)
    module = GANDetectionModule(raw)
    timer = PairedTimer(plain)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            to_experiment_config(raw),
            logger=False,
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            limit_train_batches=warmup + steps,
            limit_val_batches=0,
            default_root_dir=tmp,
        )
        trainer.fit(module, train_dataloaders=roi_loader(batches, batch))
    return timer.lightning[warmup:], timer.plain_times[warmup:]


def _requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def plain_step(
    variant: GANVariant,
    opt_g: torch.optim.Optimizer | None,
    opt_d: torch.optim.Optimizer,
    b: RoiBatch,
) -> None:
    """The engine's training step without Lightning: D step on detached SR, then G step (none
    when ``opt_g`` is None: a variant without a trainable generator)."""
    g, d = variant.generator, variant.discriminator
    fake = g(b.lr)
    _requires_grad(g, False)  # toggled_optimizer(opt_d) freezes G's parameters
    d_terms = variant.discriminator_losses(b, fake.detach())
    loss_d = torch.stack([v for k, v in d_terms.items() if k.startswith("loss_")]).sum()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    _requires_grad(g, True)
    if opt_g is None:
        return
    _requires_grad(d, False)  # toggled_optimizer(opt_g): no D weight gradients in the G step
    g_terms = variant.generator_losses(b, fake)
    loss_g = torch.stack([v for k, v in g_terms.items() if k.startswith("loss_")]).sum()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    _requires_grad(d, True)


class PlainLoop:
    """The same networks (same seed), losses and Adam settings as the engine, without Lightning."""

    def __init__(self, raw: dict, loader: Any, seed: int, device: torch.device) -> None:
        cfg = to_experiment_config(raw)
        torch.manual_seed(seed)
        self.variant = build_variant(cfg.variant, cfg.data.num_classes).to(device).train()
        o = cfg.optim
        betas = (float(o.betas[0]), float(o.betas[1]))
        self.opt_g = (
            torch.optim.Adam(self.variant.generator.parameters(), lr=o.lr_g, betas=betas)
            if self.variant.has_trainable_generator
            else None
        )
        self.opt_d = torch.optim.Adam(
            self.variant.discriminator.parameters(), lr=o.lr_d, betas=betas
        )
        self.batches = iter(loader)
        self.device = device

    def step(self) -> float:
        """Fetch a batch, move it to the device, run one D+G step; wall seconds."""
        sync()
        t0 = time.perf_counter()
        b = next(self.batches)
        b = RoiBatch(*(t.to(self.device, non_blocking=True) for t in vars(b).values()))
        plain_step(self.variant, self.opt_g, self.opt_d, b)
        sync()
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--paper", action="store_true", help="paper-sized G (64/8/256) + vgg19")
    p.add_argument("--size", default=None, help="small | paper | tiny (overrides --paper)")
    p.add_argument("--backbone", default=None, help="override the size's discriminator trunk")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hr", type=int, default=64, help="HR crop side (LR = hr / 4)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    p.add_argument("--rounds", type=int, default=1, help="repeats (fresh Trainer and networks)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    size = a.size or ("paper" if a.paper else "small")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    L.seed_everything(a.seed, verbose=False)

    for name in a.variants:
        raw = raw_config(name, size, a.batch, a.hr, backbone=a.backbone)
        n = a.batch * (a.warmup + a.steps)
        rois = smooth_rois(n, a.hr, raw["data"]["num_classes"], a.seed)
        common = {
            "bench": "step_time",
            "variant": name,
            "size": size,
            "backbone": raw["variant"]["backbone"],
            "g": [raw["variant"][k] for k in ("g_channels", "g_res_blocks", "g_upsample_channels")],
            "batch": a.batch,
            "hr": a.hr,
            "lr": a.hr // 4,
            "steps": a.steps,
            "warmup": a.warmup,
            "device": device,
        }
        lt: list[float] = []
        pt: list[float] = []
        ceil_before = machine_ceiling(raw["variant"]["g_channels"], a.hr // 4, batch=a.batch)
        for r in range(a.rounds):
            l_times, p_times = run_paired(raw, rois, a.batch, a.warmup, a.steps, a.seed + r)
            lt += l_times
            pt += p_times
            for impl, times in (("lightning", l_times), ("plain", p_times)):
                emit(
                    {
                        **common,
                        "impl": impl,
                        "round": r,
                        "median_step_s": round(median(times), 4),
                        "rois_per_s": round(a.batch / median(times), 2),
                        "step_s": [round(t, 4) for t in times],
                    }
                )
        # FLOPs of one D+G step (fresh networks, one batch), then the ceiling right after the runs.
        counter = PlainLoop(raw, roi_loader(rois, a.batch), a.seed, torch.device(device))
        b = next(counter.batches)
        b = RoiBatch(*(t.to(device) for t in vars(b).values()))
        step_flops = count_flops(
            functools.partial(plain_step, counter.variant, counter.opt_g, counter.opt_d, b)
        )
        ceil = best_ceiling(
            ceil_before, machine_ceiling(raw["variant"]["g_channels"], a.hr // 4, batch=a.batch)
        )
        # Per-step ratios of paired steps (same load), then their median.
        ratios = [x / y for x, y in zip(lt, pt, strict=True)]
        ratio = median(ratios)
        t_l, t_p = median(lt), median(pt)
        emit(
            {
                **common,
                "impl": "summary",
                "rounds": a.rounds,
                "lightning_step_s": round(t_l, 4),
                "plain_step_s": round(t_p, 4),
                "lightning_rois_per_s": round(a.batch / t_l, 2),
                "plain_rois_per_s": round(a.batch / t_p, 2),
                "ratio_lightning_over_plain": round(ratio, 4),
                "ratio_of_medians": round(t_l / t_p, 4),
                "ratio_min_max": [round(min(ratios), 4), round(max(ratios), 4)],
                "ratio_quartiles": [round(q, 4) for q in statistics.quantiles(ratios, n=4)]
                if len(ratios) >= 2
                else None,
                "pairs": len(ratios),
                "target": TARGET_RATIO,
                "target_met": ratio <= TARGET_RATIO,
                **ceiling_fields(ceil, step_flops / a.batch, a.batch / t_p),
            }
        )


if __name__ == "__main__":
    main()
