"""Builds the Trainer, loggers and callbacks from a config; runs fit and validate."""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricExperimentWriter
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from gan_detect.checkpoints import SafeCheckpointIO, load_checkpoint, newest_loadable
from gan_detect.data import build_datamodule
from gan_detect.engine import GANDetectionModule
from gan_detect.schema import ExperimentConfig, to_container


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted.

    With ``resumed`` set, the first row logged (the first step after the checkpoint) drops the
    file's rows of that step and later: a run killed after its last checkpoint had logged steps
    that the resumed run logs again, and they must not appear twice.
    """

    resumed = False

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes the file here; a resumed run must keep every step logged before.
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                header = f.readline().strip()
            self.metrics_keys = sorted(k for k in header.split(",") if k)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self.resumed and step is not None:
            self.resumed = False
            self._drop_rows_from_step(step)
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from_step(self, step: int) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = list(reader.fieldnames or []), list(reader)
        keep = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) < step]
        if len(keep) < len(rows):
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(keep)
            os.replace(tmp, path)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (or a restart after SIGKILL).

    A fresh fit never meets an old file: :func:`gan_detect.run_folder.prepare_run_folder` refuses
    or clears an old run's folder first.
    """

    def mark_resumed(self) -> None:
        """Called when a checkpoint is restored: rows after it are replaced, not duplicated."""
        writer = self.experiment
        if isinstance(writer, _AppendingWriter):
            writer.resumed = True

    @property
    @rank_zero_experiment
    def experiment(self) -> _FabricExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_logger(cfg: ExperimentConfig) -> Logger | bool:
    """CSV, W&B (offline unless ``logger.mode=online``; rank 0 only), TensorBoard or none."""
    lc = cfg.logger
    out = Path(cfg.output_dir)
    if lc.kind == "none":
        return False
    if lc.kind == "csv":
        return AppendingCSVLogger(save_dir=str(out), name="logs", version="")
    if lc.kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(out), name="tb", version="")
    # WandbLogger creates the run on rank 0 only; the resolved config is uploaded once from there.
    return WandbLogger(
        project=lc.project,
        entity=lc.entity,
        mode=lc.mode,
        tags=list(lc.tags),
        save_dir=str(out),
        config=to_container(cfg),
        log_model=False,
    )


# Summaries a sweep optimises: W&B keeps their best value, not the last one.
WANDB_MAX_METRICS: tuple[str, ...] = ("val/ap_hard", "val/map_small")


class ResumeCallback(Callback):
    """Mid-epoch checkpoints: every ``n`` batches and when SIGTERM arrives (as SLURM sends it).

    After each finished batch it tells a :class:`~gan_detect.distributed.ResumableDataLoader` how
    many batches of the epoch were consumed (Lightning pre-fetches, so the loader cannot know),
    then writes ``last.ckpt`` when due. Saving at batch end is Lightning's "restarted on train
    batch end" path: the resumed run continues with the next batch of the same epoch.
    ``n`` counts batches, not ``global_step`` (which advances once per optimiser).
    """

    def __init__(self, ckpt_dir: str | Path, every_n_batches: int = 0) -> None:
        self.path = Path(ckpt_dir) / "last.ckpt"
        self.every_n_batches = every_n_batches
        self.saved_on_sigterm = False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        from gan_detect.distributed import ResumableDataLoader

        loader = trainer.train_dataloader
        if isinstance(loader, ResumableDataLoader):
            loader.mark_consumed(batch_idx + 1)
        due = self.every_n_batches > 0 and (batch_idx + 1) % self.every_n_batches == 0
        if self._any_rank_sigterm(trainer):
            self.saved_on_sigterm = True
            due = True
        if due:
            trainer.save_checkpoint(self.path)

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
                trainer.save_checkpoint(self.path)


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


def build_trainer(cfg: ExperimentConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer``; keyword overrides win (tests pass e.g. callbacks).

    Lightning's tips, hardware lines and model summary only with ``--verbose`` (``quiet.py``).
    """
    from gan_detect.quiet import quiet_lightning, verbose

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
        enable_progress_bar=t.enable_progress_bar,
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
        from gan_detect.distributed import GANDDPStrategy

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


def newest_checkpoint(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """``ckpt_path`` or a newer SLURM requeue checkpoint (``hpc_ckpt_*.ckpt``) in ``run_dir``."""
    if ckpt_path is None:
        return None  # no resume asked for (Lightning itself resumes hpc_ckpt under SLURM)
    hpc = sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if hpc and hpc[-1].stat().st_mtime > Path(ckpt_path).stat().st_mtime:
        return str(hpc[-1])
    return ckpt_path


def resume_checkpoint(cfg: ExperimentConfig) -> str | None:
    """The checkpoint ``cfg.resume`` names, checked to load and to be of ``cfg.task``'s kind.

    ``resume=auto``: the newest loadable of ``checkpoints/*.ckpt`` and ``hpc_ckpt_*.ckpt`` in
    ``output_dir`` (an unloadable one, e.g. truncated by a kill, is skipped with a warning naming
    it); None when there is none (a fresh start). ``resume=PATH``: that file or a newer
    ``hpc_ckpt``.

    Raises:
        FileNotFoundError: ``resume=PATH`` does not exist.
        CheckpointError: ``resume=PATH`` is unreadable or of the other task's kind.
    """
    if cfg.resume is None:
        return None
    expect = "detector" if cfg.task == "detector" else "gan"
    out = Path(cfg.output_dir)
    if cfg.resume == "auto":
        found = newest_loadable(
            [*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")],
            expect,  # type: ignore[arg-type]
        )
        return None if found is None else str(found)
    path = newest_checkpoint(cfg.resume, out) if Path(cfg.resume).is_file() else cfg.resume
    load_checkpoint(path, expect)  # type: ignore[arg-type]
    return path


# 128 + SIGTERM, what a shell reports for a process the signal ended: scripts see a failure.
EXIT_SIGTERM = 143


@contextlib.contextmanager
def run_folder_guard(cfg: ExperimentConfig, resuming: bool = False) -> Iterator[None]:
    """Rank 0: refuse an old run's folder (unless resuming / ``overwrite``), lock it, check that
    ``checkpoints/`` is writable, write ``config.yaml``. ``resuming`` (or ``cfg.resume``): the
    run continues from a checkpoint, so its folder may hold outputs. Every rank: SIGTERM leaves as
    ``SIGTERMException(143)`` (a ``SystemExit``), so even a Python caller exits non-zero."""
    from gan_detect.run_folder import check_writable, prepare_run_folder, run_lock

    try:
        if _launch_rank() != 0:
            yield
            return
        out = Path(cfg.output_dir)
        with run_lock(out):
            prepare_run_folder(
                out, resuming=resuming or cfg.resume is not None, overwrite=cfg.overwrite
            )
            check_writable(out / "checkpoints")
            write_run_config(cfg)
            yield
    except SIGTERMException as err:
        # Lightning raises SystemExit(None), exit status 0: a half-trained run would look done.
        if err.code in (None, 0):
            raise SIGTERMException(EXIT_SIGTERM) from None
        raise


def _resumable_train_data(dm: L.LightningDataModule) -> None:
    """Make ``dm.train_dataloader()`` return a loader that resumes mid-epoch (see distributed)."""
    from gan_detect.distributed import make_resumable

    build = dm.train_dataloader

    def train_dataloader() -> Any:
        return make_resumable(build())

    # Until the DataModules build resumable loaders themselves (a no-op once they do).
    dm.train_dataloader = train_dataloader  # type: ignore[method-assign]


def write_run_config(cfg: ExperimentConfig) -> Path:
    """``output_dir/config.yaml``: the resolved config, so a run directory describes itself."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    OmegaConf.save(OmegaConf.create(to_container(cfg)), path)
    return path


@contextlib.contextmanager
def new_run_folder(output_dir: str | Path) -> Iterator[None]:
    """Remove a run folder that this run created if it fails before writing more than its
    ``config.yaml`` (a bad data path, a missing proposals file): a failed start leaves no
    half-made run behind. A run that wrote checkpoints or logs is kept (it can be resumed)."""
    out = Path(output_dir)
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created and _launch_rank() == 0 and out.is_dir():
            files = [p for p in out.rglob("*") if p.is_file()]
            if all(p == out / "config.yaml" for p in files):
                shutil.rmtree(out, ignore_errors=True)
        raise


def fit(
    cfg: ExperimentConfig, ckpt_path: str | None = None, **trainer_overrides: Any
) -> tuple[GANDetectionModule, L.Trainer]:
    """Train ``cfg.variant`` on ``cfg.data``; resumes from ``ckpt_path`` when given.

    Raises:
        RunFolderError: ``output_dir`` holds another run, is locked, or cannot be written.
        SIGTERMException: stopped by SIGTERM (``last.ckpt`` was saved first).
    """
    L.seed_everything(cfg.seed, workers=True)
    with new_run_folder(cfg.output_dir), run_folder_guard(cfg, resuming=ckpt_path is not None):
        dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
        _resumable_train_data(dm)
        module = GANDetectionModule(to_container(cfg))
        apply_speed_options(module, cfg)
        trainer = build_trainer(cfg, **trainer_overrides)
        ckpt = newest_checkpoint(ckpt_path, cfg.output_dir)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module, trainer


def load_module(ckpt: str | Path, map_location: str | torch.device = "cpu") -> GANDetectionModule:
    """Load a trained engine safely (``weights_only=True``: a checkpoint cannot run code)."""
    state = load_checkpoint(ckpt, expect="gan", map_location=map_location)
    module = GANDetectionModule(state["hyper_parameters"]["config"])
    module.load_state_dict(state["state_dict"])
    module.eval()
    return module


def validate(cfg: ExperimentConfig, ckpt: str | Path, **trainer_overrides: Any) -> dict[str, float]:
    """Run validation of a checkpoint on ``cfg.data``; returns the logged metrics."""
    module = load_module(ckpt)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    trainer = build_trainer(cfg, **trainer_overrides)
    results = trainer.validate(module, datamodule=dm)
    merged: dict[str, float] = {}
    for r in results:
        merged.update({k: float(v) for k, v in r.items()})
    return merged


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(
    cfg: ExperimentConfig,
    ckpt: str | Path | None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Baseline (proposal scores) vs the GAN's re-scoring on ``cfg.evaluate.split``.

    Writes ``<out_dir>/{baseline,gan}/`` detections in both official formats and
    ``<out_dir>/metrics.json``; logs the metrics to the configured logger. ``ckpt=None``
    evaluates the baseline alone.
    """
    from gan_detect.data.proposals import write_coco_results, write_wider_tree
    from gan_detect.evaluation import evaluate_baseline_vs_gan, format_comparison, save_metrics
    from gan_detect.inference import InferenceOptions
    from gan_detect.metrics import load_wider_ground_truth

    out = Path(out_dir or Path(cfg.output_dir) / "eval")
    # A bad checkpoint fails before the (slow) data set-up.
    module = load_module(ckpt) if ckpt is not None else None
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    split = cfg.evaluate.split
    ds = dm.detection_dataset(split)
    if ds.proposals is None:
        raise FileNotFoundError(
            f"evaluate needs proposals for the {split} split: set data.{split}_proposals "
            "(a COCO results JSON or a WIDER txt tree, e.g. from `gan-detect propose`)"
        )
    e = cfg.evaluate
    variant = None
    opts = InferenceOptions(top_k=e.top_k)  # the baseline alone needs only top-K
    if module is not None:
        variant = module.variant.to(resolve_device(e.device))
        # LR size and context from the checkpoint (what G was trained on); the rest from cfg.
        opts = module.inference_options(e)
    kind = "wider" if cfg.data.name == "wider_face" else "coco"
    gt = None
    gt_dir = getattr(cfg.data, "gt_dir", None)
    if kind == "wider" and gt_dir:
        ids = {r.image_id for r in ds.records}
        gt = load_wider_ground_truth(gt_dir).subset(ids)
    metrics, dets, curves = evaluate_baseline_vs_gan(
        variant, ds, kind, opts, gt=gt, progress=progress, coco_max_dets=e.coco_max_dets
    )
    cat_ids = dm.category_ids() if hasattr(dm, "category_ids") else None
    for method, per_image in dets.items():
        # WIDER ids are "event/name" strings: the official txt tree; COCO: a results JSON.
        if kind == "wider":
            write_wider_tree(per_image, out / method / "wider_txt")
        else:
            (out / method).mkdir(parents=True, exist_ok=True)
            write_coco_results(per_image, out / method / "detections.json", category_ids=cat_ids)
    save_metrics(
        metrics,
        out / "metrics.json",
        extra={
            "checkpoint": str(ckpt) if ckpt else None,
            "split": split,
            "num_images": len(ds),
            "official_wider_settings": gt is not None,
            "inference": vars(opts),
        },
    )
    (out / "pr_curves.json").write_text(json.dumps(curves))
    print(format_comparison(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    # CSV goes next to the eval outputs: the run's training logs must not be overwritten.
    logger = (
        CSVLogger(save_dir=str(out), name="logs", version="")
        if cfg.logger.kind == "csv"
        else build_logger(cfg)
    )
    if logger:
        flat = {f"eval/{m}/{k}": v for m, vals in metrics.items() for k, v in vals.items()}
        logger.log_metrics(flat)  # type: ignore[union-attr]
        logger.finalize("success")  # type: ignore[union-attr]
    return metrics
