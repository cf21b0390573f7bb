"""The ``lightning.Trainer`` a config describes: strategy, precision, loggers, callbacks, speed options."""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import lightning as L
import torch

from gan_detect.config.validate import ExperimentConfig
from gan_detect.train.callbacks import build_callbacks
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.loggers import build_logger
from gan_detect.utils.checkpoints import SafeCheckpointIO
from gan_detect.utils.console import show_progress


def build_trainer(cfg: ExperimentConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer``; keyword overrides win (tests pass e.g. callbacks).

    Lightning's tips, hardware lines and model summary only with ``--verbose`` (``gan_detect.utils.quiet``).
    """
    from gan_detect.utils.quiet import quiet_lightning, verbose

    quiet_lightning()
    t = cfg.trainer
    kwargs: dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(cfg),
        precision=t.precision,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        # Lightning draws on stdout: only on a terminal, not redraws into a redirected log.
        enable_progress_bar=show_progress(t.enable_progress_bar, sys.stdout),
        deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm,
        default_root_dir=cfg.output_dir,
        logger=build_logger(cfg),
        callbacks=build_callbacks(cfg),
        # Our DataModules build their own DistributedSampler (seeded per epoch).
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        # Atomic saves next to the target; loads always weights_only=True (a resume runs no code).
        plugins=[SafeCheckpointIO()],
        enable_model_summary=verbose(),
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def _strategy(cfg: ExperimentConfig) -> Any:
    """``ddp`` / ``ddp_gan`` -> per-submodule GAN DDP; ``ddp_spawn`` the same, spawned."""
    s = cfg.trainer.strategy
    if s in ("ddp", "ddp_gan", "ddp_spawn"):
        from gan_detect.train.distributed import GANDDPStrategy

        kwargs: dict[str, Any] = {"find_unused_parameters": cfg.trainer.find_unused_parameters}
        if not cfg.trainer.broadcast_buffers:
            # Newer torch renamed the flag (the old name warns).
            params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
            key = (
                "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
            )
            kwargs[key] = False
        return GANDDPStrategy(start_method="spawn" if s == "ddp_spawn" else "popen", **kwargs)
    return s


def apply_speed_options(module: GANDetectionModule, cfg: ExperimentConfig) -> None:
    """``trainer.channels_last`` and ``trainer.compile`` on the generator and discriminator.

    ``nn.Module.compile`` compiles in place, so state_dict keys (and checkpoints) are unchanged.
    Convolutions follow their weights' memory format, so inputs need no conversion.
    """
    t = cfg.trainer
    nets = [module.variant.generator, module.variant.discriminator]
    for net in nets:
        if t.channels_last:
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if t.compile:
            net.compile()


def _launch_rank() -> int:
    """Global rank from the launcher's environment (before the process group exists)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    if os.environ.get("NODE_RANK", "0") == "0":
        return int(os.environ.get("LOCAL_RANK", "0"))
    return -1  # a non-zero node of a multi-node launch
