"""Loggers from ``cfg.logger``: a CSV logger that appends on resume, W&B, TensorBoard."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricExperimentWriter
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from gan_detect.config.validate import ExperimentConfig, to_container


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

    A fresh fit never meets an old file: :func:`gan_detect.train.run_folder.prepare_run_folder` refuses
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


def wandb_mode(configured: str) -> str:
    """``$WANDB_MODE`` when set (``disabled`` in the tests, a cluster's ``offline``), else the
    config's ``logger.mode``: a ``mode=`` argument would override W&B's own reading of the
    variable, so a preset's ``offline`` wrote runs where the user had disabled W&B."""
    env = os.environ.get("WANDB_MODE", "").strip()
    return env or configured


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
        mode=wandb_mode(lc.mode),
        tags=list(lc.tags),
        save_dir=str(out),
        config=to_container(cfg),
        log_model=False,
    )
