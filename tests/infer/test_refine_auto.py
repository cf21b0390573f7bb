"""``evaluate.refine_boxes=auto``: whether D's box deltas are applied is decided on the held-out
images when the score fusion is fit, by the refined boxes' overlap with their objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _synth import tiny_config

from gan_detect.config.validate import ConfigError, to_experiment_config
from gan_detect.data.records import ImageRecord
from gan_detect.data.roi import encode_roi_targets
from gan_detect.infer.fusion_fit import (
    MIN_REFINE_MATCHES,
    decide_refinement,
    fit_run_fusion,
    refinement_ious,
)
from gan_detect.infer.inference import InferenceOptions, inference_options, resolve_refine
from gan_detect.variants import build_variant
from tests.infer.test_class_aware import NUM_CLASSES, _scene


def test_refinement_ious_match_the_proposals_object_of_its_class() -> None:
    rec = ImageRecord(
        "a", "unused",
        boxes=np.array([[0, 0, 20, 20], [50, 50, 70, 70], [0, 0, 21, 21]], np.float32),
        labels=np.array([1, 2, 2], np.int64),
        ignore=np.array([False, False, True]),
        width=100, height=100,
    )  # fmt: skip
    kept = torch.tensor([[1.0, 1, 21, 21], [50, 50, 70, 70], [0, 0, 20, 20], [80, 80, 90, 90]])
    refined = torch.tensor([[0.0, 0, 20, 20], [60, 60, 80, 80], [0, 0, 20, 20], [0, 0, 9, 9]])
    # Labels: the 3rd proposal is class 2, whose only object there is ignored: not matched;
    # the 4th overlaps nothing.
    after, before = refinement_ious(refined, kept, torch.tensor([1, 2, 2, 1]), rec)
    assert len(after) == len(before) == 2
    assert after[0] == pytest.approx(1.0) and before[0] == pytest.approx(361 / 439)
    assert before[1] == pytest.approx(1.0) and after[1] == pytest.approx(100 / 700)


def test_decision_follows_the_mean_iou_and_keeps_the_papers_default_when_unsure() -> None:
    g = np.random.default_rng(0)
    kept = g.uniform(0.5, 0.9, 200)
    worse = decide_refinement(kept - 0.1, kept)
    better = decide_refinement(np.minimum(kept + 0.05, 1.0), kept)
    assert worse["use"] is False and worse["mean_iou_refined"] < worse["mean_iou_detector"]
    assert better["use"] is True and better["share_improved"] > 0.9
    few = decide_refinement(kept[: MIN_REFINE_MATCHES - 1] - 0.3, kept[: MIN_REFINE_MATCHES - 1])
    assert few["use"] is True and "matched" in few["reason"]


def _sod_with_box_bias(deltas: torch.Tensor):  # type: ignore[no-untyped-def]
    """A tiny SOD-MTGAN whose box head outputs the same (dx, dy, dw, dh) for every ROI/class."""
    cfg = to_experiment_config(tiny_config("sod_mtgan", num_classes=NUM_CLASSES))
    torch.manual_seed(0)
    variant = build_variant(cfg.variant, NUM_CLASSES).eval()
    fc = variant.discriminator.box_head.fc
    fc.weight.data.zero_()
    fc.bias.data.copy_(deltas.repeat(fc.bias.numel() // 4))
    return variant


class _HeldOut:
    """The two things fit_run_fusion reads of a FullImageDataset: items and records."""

    def __init__(self, seed: int) -> None:
        self.images, self.props, self.records = _scene(seed, n=16)
        self.proposals = {r.image_id: p for r, p in zip(self.records, self.props, strict=True)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        return SimpleNamespace(images=[self.images[i]], proposals=[self.props[i]])


@pytest.mark.parametrize("helpful", [True, False])
def test_auto_applies_a_box_head_only_where_it_moves_boxes_onto_objects(helpful: bool) -> None:
    # The scene's true proposals sit 1 px right of and below their objects: the helpful head
    # moves each back onto it, the harmful one by half a box.
    gt, prop = torch.tensor([[8.0, 8, 28, 28]]), torch.tensor([[9.0, 9, 29, 29]])
    good = encode_roi_targets(gt, prop, 1.0)[0]
    variant = _sod_with_box_bias(good if helpful else torch.tensor([0.5, 0.5, 0.0, 0.0]))
    opts = InferenceOptions(top_k=100, lr_size=8, nms_iou=0.5)
    fitted = fit_run_fusion(variant, _HeldOut(3), opts, refine="auto")
    r = fitted["refine_boxes"]
    assert r["use"] is helpful and r["matched"] >= MIN_REFINE_MATCHES
    assert (r["mean_iou_refined"] > 0.95) is helpful  # onto the object, or half a box off
    assert fitted["learned"]["features"] == "class_aware"
    # The run's inference options follow the decision; explicit settings win over it.
    assert resolve_refine("auto", fitted) is helpful
    assert resolve_refine(True, fitted) is True and resolve_refine(False, fitted) is False
    assert resolve_refine("auto", None) is True  # no held-out fit: the papers' default
    # Without auto, no decision is made (the boxes as the options say).
    assert "refine_boxes" not in fit_run_fusion(variant, _HeldOut(3), opts, refine=True)


def test_config_key_is_validated_and_auto_is_the_default() -> None:
    raw = tiny_config("sod_mtgan", num_classes=NUM_CLASSES)
    cfg = to_experiment_config(raw)
    assert cfg.evaluate.refine_boxes == "auto"
    assert inference_options(cfg).refine_boxes is True  # no fusion fit yet
    fitted = {"refine_boxes": {"use": False, "matched": 100}}
    assert inference_options(cfg, fusion=fitted).refine_boxes is False
    raw["evaluate"] = {**raw.get("evaluate", {}), "refine_boxes": "sometimes"}
    with pytest.raises(ConfigError, match="evaluate.refine_boxes.*true, false or auto"):
        to_experiment_config(raw)
