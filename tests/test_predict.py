"""A short-trained detector + GAN pipeline finds the objects planted in generated images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from _synth import tiny_config
from PIL import Image
from test_detector import TINY, loader, write_shapes
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from gan_detect.data.batch import RoiBatch
from gan_detect.data.roi_store import RoiStoreDataset, build_roi_store
from gan_detect.detector.module import DetectorModule
from gan_detect.engine import GANDetectionModule
from gan_detect.inference import InferenceOptions
from gan_detect.predict import Pipeline, run_predict


@pytest.mark.slow
def test_short_trained_pipeline_finds_planted_objects(tmp_path: Path) -> None:
    torch.set_num_threads(1)  # shared 2-core machines: oversubscription costs 10x
    train = write_shapes(tmp_path / "train", 32, seed=0)
    val = write_shapes(tmp_path / "val", 8, seed=1)
    det = DetectorModule(
        {
            **TINY,
            "arch": "retinanet",
            "fpn_channels": 32,
            "optimizer": "adamw",
            "lr": 1e-3,
            "warmup_steps": 10,
            "milestones": [6],
        }
    )
    trainer_kw = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    L.seed_everything(0)
    L.Trainer(max_epochs=8, **trainer_kw).fit(det, loader(train, 4, shuffle=True))

    # The GAN refiner, briefly trained on ROIs mined around the planted objects.
    store = build_roi_store(
        train,
        None,
        tmp_path / "rois",
        hr_size=32,
        rois_per_image=16,
        positive_fraction=0.5,
        progress=False,
    )
    ds = RoiStoreDataset(store, scale=4)
    gan = GANDetectionModule(tiny_config("tiny_face"))
    L.Trainer(max_epochs=3, limit_val_batches=0, **trainer_kw).fit(
        gan, DataLoader(ds, batch_size=16, shuffle=True, collate_fn=RoiBatch.collate)
    )

    opts = InferenceOptions(lr_size=8, min_score=0.0)
    pipe = Pipeline(det, gan, ["shape"], opts, score_threshold=0.0)
    alone = Pipeline(det, None, ["shape"], opts, score_threshold=0.0)
    summary = run_predict(pipe, [str(tmp_path / "val")], tmp_path / "out", progress=False)
    assert len(summary["processed"]) == len(val) and not summary["failed"]

    def recall(p: Pipeline) -> float:
        hits = total = 0
        for rec in val:
            d = p(Image.open(rec.path))
            assert set(d.label_names) <= {"shape"}
            top = torch.from_numpy(d.boxes[: 10 * len(rec.boxes)])
            total += len(rec.boxes)
            if len(top):
                hits += int((box_iou(torch.from_numpy(rec.boxes), top).max(1).values >= 0.5).sum())
        return hits / total

    r_pipe, r_alone = recall(pipe), recall(alone)
    print(
        f"recall of planted objects in the top 10x: pipeline {r_pipe:.2f}, detector alone {r_alone:.2f}"
    )
    # Measured (seed 0, one thread): pipeline 0.65, detector alone 0.75; an untrained detector's
    # top boxes find under 0.3 (tests/test_detector.py).
    assert r_alone >= 0.6 and r_pipe >= 0.5, (r_pipe, r_alone)
    # The drawn copy keeps the input size.
    run_predict(pipe, [val[0].path], tmp_path / "drawn", draw=True, progress=False)
    with (
        Image.open(val[0].path) as a,
        Image.open(tmp_path / "drawn" / f"{Path(val[0].path).stem}_boxes.png") as b,
    ):
        assert a.size == b.size
    assert np.isfinite(pipe(np.asarray(Image.open(val[0].path))).scores).all()
