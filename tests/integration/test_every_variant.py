"""Every registered variant through the whole chain by the same code: fit, checkpoint, resume,
evaluate, compare, export and predict; and a throw-away fourth variant registered in the test.

No per-variant table: the dataset comes from what the variant accepts (``accepts_num_classes``,
faces for one class, COCO-layout shapes for several) and expectations from its interface.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _synth import variant_cases
from PIL import Image

from gan_detect.app.evaluate import evaluate
from gan_detect.app.report import write_report
from gan_detect.config import PRESETS
from gan_detect.config.load import load_config
from gan_detect.config.validate import ExperimentConfig
from gan_detect.data import build_datamodule
from gan_detect.data.proposals import write_coco_results, write_wider_tree
from gan_detect.data.synthetic import (
    SHAPE_CATEGORIES,
    write_synthetic_faces,
    write_synthetic_objects,
)
from gan_detect.detector.module import DetectorModule
from gan_detect.infer.pipeline import Pipeline, export_pipeline
from gan_detect.train.fit import fit
from gan_detect.variants import VARIANTS, GANVariant, GANVariantConfig
from gan_detect.variants.common import (
    build_discriminator,
    build_generator,
    face_accuracy,
    face_candidates,
)
from tests.integration.test_pipeline import fake_detector

EXP = PRESETS
DET_TINY = {"backbone": "test_resnet", "fpn_channels": 32, "min_size": [128], "max_size": 160}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Generated data with detector-like val proposals: 1 class (WIDER layout) and several (COCO)."""
    out: dict[int, Path] = {}
    faces = write_synthetic_faces(tmp_path_factory.mktemp("faces"), 4, 2, seed=1)
    objects = write_synthetic_objects(tmp_path_factory.mktemp("objects"), 4, 2, seed=1)
    for n, root in ((1, faces), (len(SHAPE_CATEGORIES), objects)):
        cfg = _config("tiny_face" if n == 1 else "sod_mtgan", n, root, root / "unused", [])
        dm = build_datamodule(cfg.data, scale=cfg.variant.scale)  # type: ignore[arg-type]
        props = fake_detector(dm.records("val"))
        if n == 1:
            write_wider_tree(props, root / "proposals_val")
        else:
            write_coco_results(props, root / "proposals_val.json", category_ids=dm.category_ids())
        out[n] = root
    return out


def _config(
    name: str, num_classes: int, root: Path, run: Path, extra: list[str]
) -> ExperimentConfig:
    """experiments/smoke.yaml with the variant and dataset chosen by override (no per-variant
    experiment file needed), tiny sizes, proposals from ``datasets``."""
    if num_classes == 1:
        data = [
            "data.name=wider_face",
            "data.gt_dir=null",
            f"data.val_proposals={root}/proposals_val",
        ]
    else:
        data = [
            "data.name=coco",
            f"data.num_classes={num_classes}",
            "data.train_split=train",
            "data.val_split=val",
            f"data.val_proposals={root}/proposals_val.json",
        ]
    return load_config(
        [EXP / "smoke.yaml"],
        [
            f"variant.name={name}",
            *data,
            f"data.root={root}",
            f"data.cache_dir={run.parent / 'cache'}",
            f"output_dir={run}",
            "data.rois_per_image=8",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "logger.kind=csv",
            "evaluate.top_k=20",
            *extra,
        ],
    )


def _fit_and_evaluate(name: str, num_classes: int, root: Path, run: Path) -> dict:
    """fit one epoch (checkpoint), resume for a second, evaluate; returns metrics.json."""
    cfg = _config(name, num_classes, root, run, [])
    module, _ = fit(cfg)
    last = run / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=True)
    n_opt = 2 if module.variant.has_trainable_generator else 1
    assert len(first["optimizer_states"]) == n_opt
    more = _config(name, num_classes, root, run, ["trainer.max_epochs=2"])
    resumed, trainer = fit(more, ckpt_path=str(last))
    assert trainer.current_epoch == 2  # resumed after epoch 1, trained epoch 2
    second = torch.load(last, map_location="cpu", weights_only=True)
    assert second["global_step"] > first["global_step"]
    changed = [k for k in first["state_dict"] if "discriminator" in k]
    assert any(not torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in changed)
    evaluate(more, last, progress=False)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"baseline", "gan"}
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize(("name", "num_classes"), variant_cases())
def test_every_variant_fits_resumes_evaluates_compares_and_predicts(
    name: str, num_classes: int, datasets: dict[int, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    metrics = _fit_and_evaluate(name, num_classes, datasets[num_classes], run)
    key = "ap_hard" if num_classes == 1 else "map"
    assert 0.0 <= metrics["metrics"]["gan"][key] <= 1.0
    report = write_report([run], tmp_path / "report")
    assert f"{name} (" in report.read_text()
    # export with a (random, tiny) detector, then predict on a val image
    det_ckpt = tmp_path / "det.ckpt"
    det = DetectorModule({**DET_TINY, "num_classes": num_classes})
    torch.save({"hyper_parameters": dict(det.hparams), "state_dict": det.state_dict()}, det_ckpt)
    names = [f"c{i}" for i in range(1, num_classes + 1)]
    pipe_path = export_pipeline(det_ckpt, run / "checkpoints" / "last.ckpt", run / "p.pt", names)
    pipe = Pipeline.load(pipe_path, score_threshold=0.0)
    assert pipe.gan is not None and pipe.gan.name == name
    image = next((datasets[num_classes]).rglob("*.jpg"))
    d = pipe(Image.open(image))
    assert np.isfinite(d.scores).all() and set(d.label_names) <= set(names)


_TWO_BOX_CALLS: list[tuple[int, int]] = []  # image sizes _TwoBox.candidates saw


@dataclass
class _TwoBoxConfig(GANVariantConfig):
    name: str = "two_box"


class _TwoBox(GANVariant):
    """A head layout neither paper has: each ROI gives two candidates (as proposed, grown 20 %)."""

    name = "two_box"
    Config = _TwoBoxConfig

    @classmethod
    def build(cls, cfg: GANVariantConfig, num_classes: int) -> _TwoBox:
        return cls(build_generator(cfg), build_discriminator(cfg, 1, box_head=False), cfg)

    @classmethod
    def accepts_num_classes(cls, num_classes: int) -> bool:
        return num_classes == 1

    def task_losses(self, batch, real_out, fake_out, prefix, generator):
        return {}  # adversarial and pixel terms only

    def candidates(self, out, boxes, image_size, refine_boxes, context=1.0):
        _TWO_BOX_CALLS.append(tuple(image_size))
        b, s, lab = face_candidates(out, boxes)
        c, wh = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * 0.6
        grown = torch.cat([c - wh, c + wh], dim=1)[:, None]
        return torch.cat([b, grown], 1), torch.cat([s, 0.9 * s], 1), torch.cat([lab, lab], 1)

    def validation_stats(self, batch, fake):
        out = self.discriminator(fake.sr)
        return {
            "cls_acc": face_accuracy(out, batch.labels),
            "two_box_mean_logit": out.cls_logits.mean(),
        }


def test_a_fourth_variant_needs_only_its_class_and_a_registry_entry(
    monkeypatch: pytest.MonkeyPatch, datasets: dict[int, Path], tmp_path: Path
) -> None:
    monkeypatch.setitem(VARIANTS, "two_box", _TwoBox)
    _TWO_BOX_CALLS.clear()
    metrics = _fit_and_evaluate("two_box", 1, datasets[1], tmp_path / "run")
    assert 0.0 <= metrics["metrics"]["gan"]["ap_hard"] <= 1.0
    # evaluate scored the val images through the variant's own head semantics (320 x 240 images)
    assert (240, 320) in _TWO_BOX_CALLS
    log = (tmp_path / "run" / "logs" / "metrics.csv").read_text()
    assert "val/two_box_mean_logit" in log and "train/loss_adv" in log


def test_the_readme_example_variant_trains_and_detects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's "Writing your own variant" code, registered, takes a few engine steps."""
    import lightning as L
    from _synth import loader, roi_batch, tiny_config

    from gan_detect.train.gan_module import GANDetectionModule

    text = (Path(__file__).resolve().parents[2] / "docs" / "usage.md").read_text()
    section = text.split("## Writing your own variant", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    ns: dict = {"__name__": "readme_variant"}
    monkeypatch.setitem(sys.modules, "readme_variant", types.ModuleType("readme_variant"))
    exec(compile(code, "README.md", "exec"), ns)  # @register_variant adds it to the registry
    assert VARIANTS["my_variant"] is ns["MyVariant"]
    monkeypatch.delitem(VARIANTS, "my_variant")  # gone again after the test ...
    monkeypatch.setitem(VARIANTS, "my_variant", ns["MyVariant"])  # ... present during it
    module = GANDetectionModule(tiny_config("my_variant", output_dir=str(tmp_path)))
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(tmp_path),
    )
    b = roi_batch(16)
    trainer.fit(module, loader(b), loader(b, shuffle=False))
    assert {"train/loss_cls", "train/loss_d_cls", "val/cls_acc"} <= set(trainer.callback_metrics)
    props = torch.tensor([[1.0, 2, 12, 14], [0, 0, 31, 31], [5, 5, 9, 20]])
    boxes, scores, labels = module.variant.detect(b.lr[:3], props, (32, 32), True)
    assert torch.equal(boxes[:, 0], props) and bool(((scores > 0) & (scores < 1)).all())
    assert boxes.shape == (3, 1, 4) and scores.shape == labels.shape == (3, 1)
