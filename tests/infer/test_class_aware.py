"""Class-aware re-scoring: each proposal keeps the detector's class; with a class head that knows
nothing, the class-aware learned fusion keeps the detector's AP (the property that makes it safe
as the default for multi-class variants)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _synth import tiny_config

from gan_detect.config.validate import to_experiment_config
from gan_detect.data.records import ImageRecord
from gan_detect.infer.fusion_fit import collect_candidates, fit_fusions
from gan_detect.infer.inference import (
    InferenceOptions,
    class_aware_candidates,
    refine_detections_batch,
)
from gan_detect.variants import build_variant

NUM_CLASSES = 3


def test_candidates_take_the_detectors_class() -> None:
    scores = torch.tensor([[0.1, 0.6, 0.2], [0.3, 0.1, 0.1]])  # (K, C), background = the rest
    boxes = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    b, p, lab, extra = class_aware_candidates(boxes, scores, torch.tensor([3, 1]))
    assert torch.allclose(p[:, 0], torch.tensor([0.2, 0.3]))
    assert lab[:, 0].tolist() == [3, 1] and torch.equal(b[:, 0], boxes[[0, 1], [2, 0]])
    assert torch.allclose(extra["bg"], torch.tensor([0.1, 0.5]))
    assert extra["agree"].tolist() == [0.0, 1.0]  # D's top class: 2 for the first, 1 for the second
    with pytest.raises(ValueError, match="labels span 1..4 but D scores classes 1..3"):
        class_aware_candidates(boxes, scores, torch.tensor([4, 1]))


def _scene(seed: int, n: int = 24) -> tuple[list[torch.Tensor], list[dict], list[ImageRecord]]:
    """Images with objects on a grid; per object one proposal of its class (a true positive) and
    one false proposal of a random class elsewhere; the detector's scores are informative but
    overlap (its AP is well below 100)."""
    g = np.random.default_rng(seed)
    images, props, recs = [], [], []
    for i in range(n):
        gt, gl, pb, ps, pl = [], [], [], [], []
        for cell in range(4):
            x0, y0 = 8 + 40 * (cell % 2), 8 + 40 * (cell // 2)
            if g.random() < 0.6:  # an object here, found by the detector
                box = [x0, y0, x0 + 20, y0 + 20]
                lab = int(g.integers(1, NUM_CLASSES + 1))
                gt.append(box)
                gl.append(lab)
                pb.append([x0 + 1, y0 + 1, x0 + 21, y0 + 21])
                ps.append(float(np.clip(g.normal(0.6, 0.2), 0.01, 0.99)))
                pl.append(lab)
            else:  # a false proposal
                pb.append([x0 + 4, y0 + 4, x0 + 22, y0 + 22])
                ps.append(float(np.clip(g.normal(0.4, 0.2), 0.01, 0.99)))
                pl.append(int(g.integers(1, NUM_CLASSES + 1)))
        images.append(
            torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(seed * 100 + i))
        )
        props.append({"boxes": torch.tensor(pb, dtype=torch.float32),
                      "scores": torch.tensor(ps), "labels": torch.tensor(pl)})  # fmt: skip
        recs.append(
            ImageRecord(
                f"img{seed}_{i}",
                "unused",
                boxes=np.array(gt, np.float32).reshape(-1, 4),
                labels=np.array(gl, np.int64),
                ignore=np.zeros(len(gt), bool),
                width=96,
                height=96,
            )
        )
    return images, props, recs


def _ap_tables(dets: list[dict[str, torch.Tensor]], recs: list[ImageRecord]):  # type: ignore[no-untyped-def]
    from gan_detect.metrics.bootstrap import coco_results_to_dt, coco_tables
    from gan_detect.metrics.compare import records_to_coco_gt

    gt, index = records_to_coco_gt(recs, NUM_CLASSES)
    rows = []
    for rec, d in zip(recs, dets, strict=True):
        for (x0, y0, x1, y1), s, lab in zip(
            d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True
        ):
            rows.append({"image_id": index[rec.image_id], "category_id": int(lab),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})  # fmt: skip
    return coco_tables(gt, coco_results_to_dt(gt, rows), max_dets=100)


def test_an_uninformative_class_head_keeps_the_detectors_ap() -> None:
    from gan_detect.metrics.bootstrap import paired_bootstrap

    cfg = to_experiment_config(tiny_config("sod_mtgan", num_classes=NUM_CLASSES))
    torch.manual_seed(0)
    variant = build_variant(cfg.variant, NUM_CLASSES).eval()
    for p in variant.discriminator.cls_head.parameters():  # uniform softmax: D knows nothing
        p.data.zero_()
    opts = InferenceOptions(top_k=100, lr_size=8, refine_boxes=False, nms_iou=0.5)
    rows = collect_candidates(variant, *_scene(1), opts)
    assert {"bg", "agree"} <= set(rows)  # the class-aware inputs were collected
    params = fit_fusions(rows)["learned"]
    assert params["features"] == "class_aware" and len(params["weights"][0]) == 5
    images, props, recs = _scene(2, n=40)
    learned = refine_detections_batch(
        variant, images, props,
        dataclasses.replace(opts, score_fusion="learned", fusion_params=params),
    )  # fmt: skip
    d_only = refine_detections_batch(variant, images, props, opts)
    # Every proposal keeps the detector's class, under every fusion.
    for p, d in zip(props, d_only, strict=True):
        assert sorted(d["labels"].tolist()) == sorted(p["labels"].tolist())
    detector = [{k: p[k] for k in ("boxes", "scores", "labels")} for p in props]
    res = paired_bootstrap(_ap_tables(detector, recs), _ap_tables(learned, recs), n_boot=300)
    det_ap, diff = res.metrics["map"].a, res.metrics["map"].difference
    assert 30.0 < det_ap < 95.0  # a detector worth keeping, not a perfect one (AP points)
    assert diff.low <= 0.0 <= diff.high, diff  # the detector's AP kept within its interval
    # The papers' rule with the same D (its own top class): the classes are now D's guesses.
    papers = refine_detections_batch(
        variant, images, props, dataclasses.replace(opts, class_aware=False)
    )
    worse = paired_bootstrap(_ap_tables(detector, recs), _ap_tables(papers, recs), n_boot=300)
    assert worse.metrics["map"].difference.high < 0  # resolved below the detector
