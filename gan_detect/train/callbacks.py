"""Callbacks every fit gets: mid-epoch and SIGTERM checkpoints, per-epoch checkpoints, W&B summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_detect.config.validate import ExperimentConfig
from gan_detect.train.loggers import AppendingCSVLogger

# Summaries a sweep optimises: W&B keeps their best value, not the last one.
WANDB_MAX_METRICS: tuple[str, ...] = ("val/ap_hard", "val/map_small")


class ResumeCallback(Callback):
    """Mid-epoch checkpoints: every ``n`` batches and when SIGTERM arrives (as SLURM sends it).

    After each finished batch it tells a :class:`~gan_detect.train.distributed.ResumableDataLoader` how
    many batches of the epoch were consumed (Lightning pre-fetches, so the loader cannot know),
    then writes ``last.ckpt`` when due. Saving at batch end is Lightning's "restarted on train
    batch end" path: the resumed run continues with the next batch of the same epoch.
    ``n`` counts batches, not ``global_step`` (which advances once per optimiser).
    """

    def __init__(self, ckpt_dir: str | Path, every_n_batches: int = 0) -> None:
        self.path = Path(ckpt_dir) / "last.ckpt"
        self.every_n_batches = every_n_batches
        self.saved_on_sigterm = False
        self.interrupted = False  # Ctrl-C (KeyboardInterrupt) reached on_exception
        self.saved_on_interrupt = False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        from gan_detect.train.distributed import ResumableDataLoader

        loader = trainer.train_dataloader
        if isinstance(loader, ResumableDataLoader):
            loader.mark_consumed(batch_idx + 1)
        due = self.every_n_batches > 0 and (batch_idx + 1) % self.every_n_batches == 0
        if self._any_rank_sigterm(trainer):
            self.saved_on_sigterm = True
            due = True
        if due:
            trainer.save_checkpoint(
                self.path, weights_only=False
            )  # the full state: a resume needs it

    @staticmethod
    def _any_rank_sigterm(trainer: L.Trainer) -> bool:
        flag = bool(trainer.received_sigterm)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # Every rank must agree, or save_checkpoint's barrier would deadlock.
            t = torch.tensor([int(flag)], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Steps logged after this checkpoint (before a kill) are logged again by the resumed run.
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                if isinstance(lg, AppendingCSVLogger):
                    lg.mark_resumed()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # SIGTERM outside a train batch (validation, epoch end): save if no other rank waits.
        if isinstance(exception, SIGTERMException) and not self.saved_on_sigterm:
            if trainer.world_size == 1:
                trainer.save_checkpoint(
                    self.path, weights_only=False
                )  # the full state: a resume needs it
        # Ctrl-C: the same save (Lightning then exits 1; fit turns that into FitInterrupted).
        # Under DDP a save needs every rank, which may not all have seen the interrupt: none.
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True
            if trainer.world_size == 1 and trainer.state.fn == "fit":
                trainer.save_checkpoint(
                    self.path, weights_only=False
                )  # the full state: a resume needs it
                self.saved_on_interrupt = True


class WandbSummaryCallback(Callback):
    """Rank 0 declares ``val/ap_hard`` and ``val/map_small`` as max-summarised W&B metrics."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                for name in WANDB_MAX_METRICS:
                    lg.experiment.define_metric(name, summary="max")


def build_callbacks(cfg: ExperimentConfig) -> list[Callback]:
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    callbacks: list[Callback] = [
        ResumeCallback(ckpt_dir, cfg.trainer.checkpoint_every_n_batches),
        ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            save_top_k=-1,
            every_n_epochs=1,
            # ResumeCallback writes last.ckpt too: overwrite it, never add last-v1.ckpt.
            enable_version_counter=False,
        ),
    ]
    if cfg.logger.kind == "wandb":
        callbacks.append(WandbSummaryCallback())
    return callbacks
