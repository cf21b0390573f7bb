"""Training throughput with 1 vs 2 CPU processes (``ddp``): gloo, per-submodule DDP, the smoke
preset's networks, each setting a fresh ``python -m gan_detect.app.benchmark`` process."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gan_detect.app.benchmark.common import Recorder
from gan_detect.data.batch import RoiBatch

# The smoke preset's networks: what the DDP measurement trains (HR 32 px).
_DDP_VARIANT = {
    "name": "tiny_face",
    "g_channels": 16,
    "g_res_blocks": 2,
    "g_upsample_channels": 32,
    "g_refine_channels": 32,
    "g_bicubic_skip": True,
    "backbone": "test_resnet",
    "pretrained": False,
}


def ddp_worker(args: argparse.Namespace) -> None:
    """One DDP setting (``--ddp-devices N``); Lightning re-executes the command for ranks > 0.
    Rank 0 appends one JSON object to ``--ddp-worker-out``."""
    import lightning as L
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.train.gan_module import GANDetectionModule
    from gan_detect.train.trainer import build_trainer

    n_dev, batch, timed_n, warm = args.ddp_devices, args.batch, args.rounds, args.warmup
    raw = {
        "variant": _DDP_VARIANT,
        "data": {"name": "wider_face", "root": "unused", "hr_size": 32, "batch_size": batch},
        "optim": {"lr_g": 1e-3, "lr_d": 1e-3, "milestones": [100]},
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": n_dev,
            "strategy": "ddp" if n_dev > 1 else "auto",
            "enable_progress_bar": False,
        },
        "logger": {"kind": "none"},
        "output_dir": str(Path(args.ddp_worker_out).parent / f"run{n_dev}"),
    }
    n = batch * n_dev * (timed_n + warm)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(-1, 1)
    ds = TensorDataset(lr, hr, torch.randint(0, 2, (n,), generator=g))

    def collate(items: list[tuple[torch.Tensor, ...]]) -> RoiBatch:
        lr_, hr_, lab = (torch.stack(t) for t in zip(*items, strict=True))
        return RoiBatch(lr_, hr_, lab, torch.zeros(len(lab), 4), torch.full((len(lab), 2), 32.0))

    class Data(L.LightningDataModule):
        def train_dataloader(self) -> DataLoader[Any]:
            t = self.trainer
            assert t is not None
            s: DistributedSampler[Any] = DistributedSampler(
                ds, t.world_size, t.global_rank, shuffle=True, drop_last=True
            )
            return DataLoader(ds, batch, sampler=s, collate_fn=collate, drop_last=True)

    class Timer(L.Callback):
        t0 = 0.0
        elapsed = 0.0

        def on_train_batch_end(self, trainer: Any, *rest: Any) -> None:
            batch_idx = rest[-1]
            if trainer.world_size > 1:  # rank 0's clock covers every rank's step
                torch.distributed.barrier()
            if batch_idx + 1 == warm:
                self.t0 = time.perf_counter()
            elif batch_idx + 1 == warm + timed_n:
                self.elapsed = time.perf_counter() - self.t0

    timer = Timer()
    trainer = build_trainer(
        to_experiment_config(raw),
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(GANDetectionModule(raw), datamodule=Data())
    if trainer.is_global_zero:
        rois = timed_n * batch * n_dev
        with open(args.ddp_worker_out, "a") as f:
            f.write(
                json.dumps(
                    {
                        "processes": n_dev,
                        "batch_per_rank": batch,
                        "timed_batches": timed_n,
                        "seconds": round(timer.elapsed, 3),
                        "rois_per_s": round(rois / timer.elapsed, 1),
                    }
                )
                + "\n"
            )


def run_ddp(args: argparse.Namespace, rec: Recorder) -> None:
    """``ddp``: ROI pairs/s of GAN training (gloo, per-submodule DDP, smoke networks, HR 32 px)
    with 1 and 2 CPU processes, each a fresh ``python -m gan_detect.app.benchmark`` run with one
    OpenMP thread per rank; each rank trains its own shard with a per-rank batch of ``--batch``."""
    if args.ddp_devices:
        ddp_worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.jsonl"
        base = None
        for devices in args.ddp_processes:
            cmd = [
                sys.executable,
                "-m",
                "gan_detect.app.benchmark",
                "--bench",
                "ddp",
                "--ddp-devices",
                str(devices),
                "--ddp-worker-out",
                str(out),
                "--batch",
                str(args.batch),
                "--rounds",
                str(args.rounds),
                "--warmup",
                str(args.warmup),
            ]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                rec.emit({"processes": devices, "error": res.stderr[-500:]})
                continue
            r = json.loads(out.read_text().splitlines()[-1])
            base = base or r["rois_per_s"]
            rec.emit({**r, "threads_per_rank": 1, "speedup": round(r["rois_per_s"] / base, 2)})
