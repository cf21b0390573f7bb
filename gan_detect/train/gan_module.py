"""The one LightningModule that trains any GAN variant: manual optimisation, D step then G step.

Follows Lightning's GAN example (``toggled_optimizer``, ``manual_backward``) with the fixes from
docs/design.md §3: one D forward on cat(real, fake), schedules in epochs, ``clip_gradients``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio

from gan_detect.config import EvalConfig
from gan_detect.config.validate import ExperimentConfig, to_experiment_config
from gan_detect.data.batch import DetectionBatch, RoiBatch
from gan_detect.data.synthetic import dataset_origin
from gan_detect.infer.evaluation import DetectionEvaluator
from gan_detect.infer.inference import InferenceOptions, inference_options, refine_detections_batch
from gan_detect.infer.score_fusion import FITTED_FUSIONS
from gan_detect.metrics import WiderGroundTruth, load_wider_ground_truth
from gan_detect.utils.checkpoints import building_from, load_checkpoint
from gan_detect.utils.errors import InputError
from gan_detect.utils.visualize import bicubic_upsample, save_sr_grid
from gan_detect.variants import GANVariant, build_variant
from gan_detect.variants.base import state_dict_follows


class GANDetectionModule(L.LightningModule):
    """Trains ``VARIANTS[cfg.variant.name]`` on ROI batches; validates SR quality and detection.

    Args:
        config: the resolved experiment config as plain containers (what ``save_hyperparameters``
            stores in checkpoints, loadable with ``weights_only=True``); re-validated here.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False
        self.cfg: ExperimentConfig = to_experiment_config(config)
        self.variant: GANVariant = build_variant(self.cfg.variant, self.cfg.data.num_classes)
        self.variant.run_config = self.cfg  # inference reads its ROI-mining settings
        self._val_grid_batch: RoiBatch | None = None
        self.val_psnr_sr = PeakSignalNoiseRatio(data_range=(-1.0, 1.0))
        self.val_psnr_bicubic = PeakSignalNoiseRatio(data_range=(-1.0, 1.0))
        self._det_eval: DetectionEvaluator | None = None
        self._wider_gt: WiderGroundTruth | None = None
        # Read now, while the data folder is there: a checkpoint says what it was trained on.
        self.trained_on = dataset_origin(self.cfg.data.name, getattr(self.cfg.data, "root", None))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Inference warns when a GAN trained on generated data meets real photos.
        checkpoint["trained_on"] = dict(self.trained_on)

    # ---- optimisation ------------------------------------------------------------------------
    def _roles(self) -> tuple[str, ...]:
        """Optimiser order: ("g", "d"), or ("d",) for a variant without a trainable generator."""
        return ("g", "d") if self.variant.has_trainable_generator else ("d",)

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        betas = (float(o.betas[0]), float(o.betas[1]))
        nets = {"g": (self.variant.generator, o.lr_g), "d": (self.variant.discriminator, o.lr_d)}
        opts = [
            torch.optim.Adam(
                nets[r][0].parameters(), lr=nets[r][1], betas=betas, weight_decay=o.weight_decay
            )
            for r in self._roles()
        ]
        scheds = [
            torch.optim.lr_scheduler.MultiStepLR(opt, list(o.milestones), o.gamma) for opt in opts
        ]
        return opts, scheds

    def _optimizers_by_role(self) -> dict[str, Any]:
        opts = self.optimizers()
        return dict(zip(self._roles(), opts if isinstance(opts, list) else [opts], strict=True))

    def in_warmup(self) -> bool:
        """True during the pixel-loss-only generator warm-up epochs (never without a G to train)."""
        return self.variant.has_trainable_generator and (
            self.current_epoch < self.cfg.optim.warmup_epochs
        )

    def training_step(self, batch: RoiBatch, batch_idx: int) -> None:
        opts = self._optimizers_by_role()
        warmup = self.in_warmup()
        train_g = "g" in opts
        with torch.set_grad_enabled(train_g):  # a fixed G (bicubic) needs no graph
            fake = self.variant.generator(batch.lr)
        logs: dict[str, Tensor] = {}

        if not warmup:
            opt_d = opts["d"]
            with self.toggled_optimizer(opt_d):
                d_terms = self.variant.discriminator_losses(batch, fake.detach())
                loss_d = _sum_losses(d_terms)
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(loss_d)
                opt_d.step()  # clips in on_before_optimizer_step
            logs.update({f"train/{k}": v.detach() for k, v in d_terms.items()})
            logs["train/loss_d"] = loss_d.detach()

        if train_g:
            opt_g = opts["g"]
            with self.toggled_optimizer(opt_g):
                g_terms = self.variant.generator_losses(batch, fake, pixel_only=warmup)
                loss_g = _sum_losses(g_terms)
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(loss_g)
                opt_g.step()
            logs.update({f"train/{k}": v.detach() for k, v in g_terms.items()})
            logs["train/loss_g"] = loss_g.detach()
        self.log_dict(logs, prog_bar=False, batch_size=len(batch), sync_dist=False)
        bar = "loss_g" if train_g else "loss_d"
        self.log(f"train/{bar}_step", logs[f"train/{bar}"], prog_bar=True, logger=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called inside opt.step(), after the precision plugin unscaled 16-mixed gradients:
        # clipping before opt.step() would clip loss-scaled gradients.
        clip = self.cfg.optim.grad_clip_norm
        if clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_train_epoch_end(self) -> None:
        # Schedules are in GAN epochs: ``optim.milestones`` count epochs after the MSE warm-up
        # (the paper's "3 epochs at 1e-4, then 3 at 1e-5" is the adversarial schedule), so the
        # schedulers never step during warm-up (D has not stepped then either). In epochs, not
        # steps: global_step counts both optimisers' steps.
        if self.in_warmup():
            return
        scheds = self.lr_schedulers()
        for sched in scheds if isinstance(scheds, list) else [scheds]:
            sched.step()  # type: ignore[union-attr]

    # ---- validation --------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(batch, RoiBatch):
            self._validate_rois(batch, batch_idx)
        elif isinstance(batch, DetectionBatch):
            self._validate_detections(batch)
        else:
            raise TypeError(f"unexpected validation batch type {type(batch).__name__}")

    def _validate_rois(self, batch: RoiBatch, batch_idx: int) -> None:
        fake = self.variant.generator(batch.lr)
        bicubic = bicubic_upsample(batch.lr, self.variant.scale)
        mse_sr = F.mse_loss(fake.sr, batch.hr)
        mse_bic = F.mse_loss(bicubic, batch.hr)
        # PSNR on [0, 1] images: 10 log10(1 / mse), mse scaled by (1/2)^2 from [-1, 1].
        # torchmetrics accumulates squared errors and counts, so PSNR is that of the whole val
        # set whatever the batching or the number of DDP ranks (not a mean of batch PSNRs).
        self.val_psnr_sr.update(fake.sr, batch.hr)
        self.val_psnr_bicubic.update(bicubic, batch.hr)
        stats = self.variant.validation_stats(batch, fake)  # cls_acc and variant-specific keys
        self.log_dict(
            {
                "val/mse_sr": mse_sr,
                "val/mse_bicubic": mse_bic,
                "val/psnr_sr": self.val_psnr_sr,
                "val/psnr_bicubic": self.val_psnr_bicubic,
                **{f"val/{k}": v for k, v in stats.items()},
            },
            batch_size=len(batch),
            add_dataloader_idx=False,
            sync_dist=True,
        )
        if batch_idx == 0:
            k = self.cfg.logger.num_val_images
            self._val_grid_batch = RoiBatch(
                batch.lr[:k],
                batch.hr[:k],
                batch.labels[:k],
                batch.box_targets[:k],
                batch.src_sizes[:k],
            )

    @classmethod
    def from_checkpoint(  # type: ignore[override]
        cls, path: str | Path, map_location: str | torch.device = "cpu"
    ) -> GANDetectionModule:
        """Load a trained module safely (``weights_only=True``: a checkpoint cannot run code)."""
        state = load_checkpoint(path, expect="gan", map_location=map_location)
        with building_from(path), state_dict_follows():
            module = cls(state["hyper_parameters"]["config"])
            module.load_state_dict(state["state_dict"])
        module.eval()
        return module

    def inference_options(self, eval_cfg: EvalConfig | None = None) -> InferenceOptions:
        """Inference settings: LR size and context from this model's ROI mining (they must match
        what G was trained on); top-K, fusion and NMS from ``eval_cfg`` (default: own config).

        A fitted fusion (``learned``, ``size_gated``) exists only after training: validation
        during training scores with ``d_only`` then."""
        e = eval_cfg or self.cfg.evaluate
        if e.score_fusion in FITTED_FUSIONS:
            e = dataclasses.replace(e, score_fusion="d_only")
        return inference_options(self.cfg, e)

    def _validate_detections(self, batch: DetectionBatch) -> None:
        if batch.proposals is None:
            raise InputError("detection validation needs proposals (data.val_proposals)")
        if self._det_eval is None:
            kind = "wider" if self.cfg.data.name == "wider_face" else "coco"
            gt_dir = getattr(self.cfg.data, "gt_dir", None)
            if kind == "wider" and gt_dir and self._wider_gt is None:
                self._wider_gt = load_wider_ground_truth(gt_dir)
            self._det_eval = DetectionEvaluator(
                kind, self._wider_gt, self.cfg.evaluate.coco_max_dets
            )
            self._det_eval.to(self.device)
        # The speed options (fold_bn, channels_last) act on an inference copy, never on the
        # model being trained (its optimiser state and DDP wrappers stay as built).
        opts = self.inference_options()
        # One G + D pass over the batch's images (ROIs batched across images).
        preds = refine_detections_batch(self.variant, batch.images, batch.proposals, opts)
        self._det_eval.update(preds, batch.targets, batch.image_ids)

    def on_validation_epoch_end(self) -> None:
        if self._det_eval is not None:
            # torchmetrics gathers the states of every rank inside compute().
            metrics = self._det_eval.compute()
            self._det_eval = None
            self.log_dict({f"val/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)
        if self._val_grid_batch is not None and self.trainer.is_global_zero:
            self._log_grid(self._val_grid_batch)
            self._val_grid_batch = None

    def _class_names(self) -> list[str] | None:
        """The DataModule's label names (for the SR grid), when training with one."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "class_names", None)
        try:
            return list(names()) if callable(names) else None
        except Exception:  # names are a nicety of a picture; never fail validation for them
            return None

    def _log_grid(self, batch: RoiBatch) -> None:
        with torch.no_grad():
            sr = self.variant.generator(batch.lr).sr
        out_dir = Path(self.cfg.output_dir) / "val_images"
        path = save_sr_grid(
            batch.lr,
            sr,
            batch.hr,
            self.variant.roi_captions(batch.lr, self._class_names()),
            batch.labels,
            self.variant.scale,
            out_dir / f"epoch_{self.current_epoch:03d}.png",
            class_names=self._class_names(),
        )
        logger = self.logger
        if logger is not None and hasattr(logger, "log_image"):
            try:
                logger.log_image(key="val/sr_grid", images=[str(path)], step=self.current_epoch)
            except Exception as err:  # a logging failure must not kill a training run
                self.print(f"warning: could not log the SR grid: {err}")


def _sum_losses(terms: dict[str, Tensor]) -> Tensor:
    """Sum the ``loss_*`` entries (other keys are statistics for logging)."""
    losses = [v for k, v in terms.items() if k.startswith("loss_")]
    if not losses:
        raise ValueError(f"no loss_* terms in {sorted(terms)}")
    return torch.stack(losses).sum()
