"""Full-image inference: a briefly trained GAN finds the faces planted in generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan_detect.cli import load_config
from gan_detect.data import build_datamodule
from gan_detect.data.records import Proposals
from gan_detect.data.synthetic import write_synthetic_faces
from gan_detect.evaluation import DetectionEvaluator
from gan_detect.inference import InferenceOptions, refine_detections
from gan_detect.training import fit

EXP = Path(__file__).resolve().parents[1] / "experiments"


def _proposals(rec, rng: np.random.Generator, n_bg: int = 40) -> dict[str, torch.Tensor]:
    """The planted faces (slightly jittered) among random background boxes, all scored 0.5."""
    faces = rec.boxes[~rec.ignore]
    wh = faces[:, 2:] - faces[:, :2]
    jit = faces + rng.normal(0, 0.05, faces.shape) * np.concatenate([wh, wh], 1)
    side = rng.uniform(8, 48, (n_bg, 1))
    xy = rng.uniform(0, [320 - 48, 240 - 48], (n_bg, 2))
    boxes = np.concatenate([jit, np.concatenate([xy, xy + side], 1)]).astype(np.float32)
    p = Proposals(boxes, np.full(len(boxes), 0.5), np.ones(len(boxes)))
    return {"boxes": torch.from_numpy(p.boxes), "scores": torch.from_numpy(p.scores),
            "labels": torch.from_numpy(p.labels)}


@pytest.mark.slow
def test_trained_gan_rescoring_finds_planted_faces(tmp_path: Path) -> None:
    root = write_synthetic_faces(tmp_path / "faces", num_train=24, num_val=6, seed=3)
    cfg = load_config(
        [EXP / "tiny_face_wider.yaml", EXP / "smoke.yaml"],
        [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}",
         "logger.kind=none", "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
         "data.val_rois=false", "data.positive_fraction=0.5", "data.gt_dir=null"],
    )
    module, _ = fit(cfg, enable_checkpointing=False, callbacks=[])
    variant = module.variant.eval()
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale)
    opts = InferenceOptions(lr_size=cfg.data.hr_size // 4, nms_iou=0.5, min_score=0.0)
    rng = np.random.default_rng(0)
    gan, chance = DetectionEvaluator("wider"), DetectionEvaluator("wider")
    for rec in dm.records("val"):
        if not (~rec.ignore).any():
            continue
        ds = dm.detection_dataset("val")
        item = ds[[r.image_id for r in ds.records].index(rec.image_id)]
        props = _proposals(rec, rng)
        det = refine_detections(variant, item.images[0], props, opts)
        rand = dict(props, scores=torch.from_numpy(rng.uniform(0, 1, len(props["scores"])).astype(np.float32)))
        gan.update([det], item.targets, item.image_ids)
        chance.update([rand], item.targets, item.image_ids)
    ap_gan, ap_chance = gan.compute()["ap_hard"], chance.compute()["ap_hard"]
    # D's face head ranks the planted faces above the background boxes.
    assert ap_gan > ap_chance + 0.15, (ap_gan, ap_chance)
