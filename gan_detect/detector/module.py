"""Lightning training and validation of the baseline proposal detector (see ``model.py``).

The config is a plain dict (checkpoints then hold plain containers) validated against
:class:`DetectorConfig`, whose fields are the defaults.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import Tensor
from torchmetrics.aggregation import SumMetric
from torchvision.ops import box_iou

from gan_detect.config import ExperimentConfig
from gan_detect.config.sections import DetectorConfig
from gan_detect.data.batch import DetectionBatch
from gan_detect.data.records import Proposals
from gan_detect.detector.builtin import BUILTIN_ARCHS
from gan_detect.detector.model import build_detector, training_targets
from gan_detect.metrics.coco_map import CocoMeanAP, coco_metric_inputs
from gan_detect.metrics.wider_face_metric import WiderFaceAP


def detector_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The detector's own config as plain containers; classes and metric follow ``data``."""
    det = cfg.detector if isinstance(cfg.detector, DetectorConfig) else DetectorConfig()
    out = dataclasses.asdict(det)
    out["num_classes"] = cfg.data.num_classes
    out["eval_metric"] = "wider" if cfg.data.name == "wider_face" else "coco"
    return out


def load_detector_config(config: Mapping[str, Any] | DetectorConfig) -> DetectorConfig:
    """Validate a plain mapping against :class:`DetectorConfig`.

    Raises:
        omegaconf.errors.ConfigKeyError / ValidationError: naming an unknown key or a value of
            the wrong type.
    """
    if isinstance(config, DetectorConfig):
        return config
    merged = OmegaConf.merge(OmegaConf.structured(DetectorConfig), dict(config))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DetectorConfig)
    return cfg


def proposal_recall(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    iou_thresh: float = 0.5,
    min_size: float = 16.0,
) -> tuple[int, int]:
    """Count ground-truth objects overlapped by a same-label detection at ``iou_thresh``.

    Any detection counts (no one-to-one matching and no score cut), which is what matters for a
    proposal source: the GAN can only re-score boxes it is given.

    Args:
        preds: per image ``boxes`` (K, 4) xyxy px and ``labels`` (K,).
        targets: per image ``boxes`` (M, 4), ``labels`` (M,) and optionally ``ignore`` (M,).
        min_size: objects with ``sqrt(w * h)`` below this (px) are not counted (COCO's area
            measure); ignored objects never count.

    Returns:
        (recalled, counted) object numbers.
    """
    hits, total = 0, 0
    for p, t in zip(preds, targets, strict=True):
        boxes = t["boxes"].float().reshape(-1, 4)
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
        keep = (wh[:, 0] * wh[:, 1]).sqrt() >= min_size
        if "ignore" in t:
            keep &= ~t["ignore"].bool()
        boxes, labels = boxes[keep], t["labels"][keep]
        total += len(boxes)
        if len(boxes) == 0 or len(p["boxes"]) == 0:
            continue
        iou = box_iou(boxes, p["boxes"].float().to(boxes.device))  # (M, K)
        iou = iou * (labels[:, None] == p["labels"].to(labels.device)[None, :])
        hits += int((iou.max(dim=1).values >= iou_thresh).sum())
    return hits, total


class DetectorModule(L.LightningModule):
    """Trains the baseline detector; validation logs ``val/recall_50`` (and COCO mAP).

    Args:
        config: plain dict of :class:`DetectorConfig` fields (missing keys take the defaults).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = load_detector_config(config)
        # Stored resolved and plain, so a checkpoint loads with torch's weights_only default.
        self.save_hyperparameters({"config": asdict(self.cfg)}, logger=False)
        c = self.cfg
        if c.arch in BUILTIN_ARCHS:
            raise ValueError(
                f"detector.arch={c.arch} is a built-in pretrained detector, not a trainable "
                "DetectorModule: use gan_detect.detector.builtin.builtin_detector"
            )
        self.model = build_detector(
            c.arch,  # type: ignore[arg-type]  # the built-in archs are refused above
            c.backbone,
            num_classes=c.num_classes,
            pretrained=c.pretrained,
            pretrained_path=c.pretrained_path,
            p2=c.p2,
            fpn_channels=c.fpn_channels,
            min_size=tuple(c.min_size),
            max_size=c.max_size,
            smallest_size=c.smallest_size,
            score_thresh=c.score_thresh,
            nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img,
            frozen_bn=c.frozen_bn,
        )
        self.recall_hits = SumMetric()
        self.recall_total = SumMetric()
        self.coco_map: CocoMeanAP | None = None
        if c.eval_metric == "coco":
            # The package's COCO AP (float64 thresholds, one occurrence per image under DDP), so
            # val/map is the number `evaluate` reports for the same boxes. maxDets is raised to
            # the detection budget: dense images would be truncated at 100.
            self.coco_map = CocoMeanAP(
                max_detection_thresholds=(1, 100, max(100, c.detections_per_img))
            )
        # WIDER FACE AP (official matching; settings by face height unless the targets carry
        # keep_easy/medium/hard masks, in which case the result is flagged official).
        self.wider_ap = WiderFaceAP() if c.eval_metric == "wider" else None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Eval-mode detections: per image ``boxes`` (K, 4) xyxy px, ``scores``, ``labels``."""
        return self.model(images)  # type: ignore[no-any-return]

    def training_step(self, batch: DetectionBatch, batch_idx: int) -> Tensor:
        """Sum of the torchvision loss terms; each is logged as ``train/loss_<name>``."""
        losses = self.model(batch.images, training_targets(batch.targets))
        total = torch.stack(list(losses.values())).sum()
        logs = {
            f"train/{k if k.startswith('loss_') else 'loss_' + k}": v for k, v in losses.items()
        }
        logs["train/loss"] = total
        self.log_dict(logs, prog_bar=False, batch_size=len(batch))
        return total

    def validation_step(self, batch: DetectionBatch, batch_idx: int) -> None:
        """Detect and accumulate recall (and COCO mAP) states; metrics sync across ranks."""
        preds = self.model(batch.images)
        hits, total = proposal_recall(
            preds, batch.targets, self.cfg.recall_iou, self.cfg.recall_min_size
        )
        self.recall_hits.update(torch.tensor(float(hits), device=self.device))
        self.recall_total.update(torch.tensor(float(total), device=self.device))
        if self.coco_map is not None:
            self.coco_map.update(*coco_metric_inputs(preds, batch.targets), batch.image_ids)

        if self.wider_ap is not None:
            self.wider_ap.update(
                [{k: p[k] for k in ("boxes", "scores")} for p in preds],
                batch.targets,
                batch.image_ids,
            )

    def on_validation_epoch_end(self) -> None:
        """Log ``val/recall_50``; COCO ``val/map*`` or WIDER ``val/ap_easy|medium|hard``."""
        total = float(self.recall_total.compute())
        hits = float(self.recall_hits.compute())
        self.recall_hits.reset()
        self.recall_total.reset()
        # Recall is undefined without countable objects; nothing is logged then.
        if total > 0:
            self.log("val/recall_50", hits / total, sync_dist=False)
        if self.coco_map is not None:
            res = self.coco_map.compute()
            self.coco_map.reset()
            for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"):
                self.log(f"val/{key}", float(res[key]))
        if self.wider_ap is not None:
            with warnings.catch_warnings():
                # the height fallback warns that it is not the official protocol; the logged
                # val/official = 0 says so too
                warnings.simplefilter("ignore")
                res = self.wider_ap.compute()
            self.wider_ap.reset()
            for key, value in res.items():
                self.log(f"val/{key}", float(value))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> DetectorModule:  # type: ignore[override]
        """Load a trained detector with ``weights_only=True`` (a checkpoint cannot run code)."""
        from gan_detect.utils.checkpoints import building_from, load_checkpoint

        state = load_checkpoint(path, expect="detector")
        with building_from(path):
            module = cls(state["hyper_parameters"]["config"])
            module.load_state_dict(state["state_dict"])
        return module.eval()

    def predict(self, images: list[Tensor]) -> list[Proposals]:
        """Detections for (3, H, W) [0, 1] images as :class:`Proposals` (boxes in input px).

        Uses eval mode without gradients and restores the previous mode.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.model([im.to(self.device) for im in images])
        finally:
            self.train(was_training)
        return [detections_to_proposals(o) for o in out]

    def configure_optimizers(self) -> Any:
        """SGD (momentum) or AdamW; linear warm-up per step, then x``gamma`` at epoch milestones."""
        c = self.cfg
        params = [p for p in self.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        scheds: list[dict[str, Any]] = [
            {
                "scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, c.milestones, c.gamma),
                "interval": "epoch",
            }
        ]
        if c.warmup_steps > 0:
            warm = torch.optim.lr_scheduler.LinearLR(opt, 1e-3, 1.0, total_iters=c.warmup_steps)
            scheds.insert(0, {"scheduler": warm, "interval": "step"})
        return [opt], scheds


def detections_to_proposals(det: Mapping[str, Tensor]) -> Proposals:
    """One torchvision detection dict -> :class:`Proposals`; background (label 0) rows dropped.
    Optional keys ``class_labels`` / ``class_scores`` (K, T) become the proposals' top classes."""
    keep = det["labels"] > 0
    top = [det[k][keep].detach().cpu().numpy() if k in det else None
           for k in ("class_labels", "class_scores")]  # fmt: skip
    return Proposals(
        det["boxes"][keep].detach().float().cpu().numpy(),
        det["scores"][keep].detach().float().cpu().numpy(),
        det["labels"][keep].detach().cpu().numpy(),
        *top,
    )
