"""D's class accuracy diagnostic (experiment ``class_accuracy``, benchmark ``d_classes``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from gan_detect.experiment.diagnostics import (
    class_accuracy_table,
    d_class_predictions,
    gt_roi_set,
)

BUCKETS = [("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), (">32", 32.0, 1e5)]


def _item(boxes: list[list[float]], labels: list[int], props: dict[str, list]) -> SimpleNamespace:
    return SimpleNamespace(
        images=[torch.rand(3, 64, 64)],
        targets=[
            {
                "boxes": torch.tensor(boxes),
                "labels": torch.tensor(labels),
                "ignore": torch.zeros(len(boxes), dtype=torch.bool),
            }
        ],
        proposals=[{k: torch.tensor(v) for k, v in props.items()}],
    )


def test_gt_rois_take_the_class_of_the_best_overlapping_proposal() -> None:
    items = [
        _item(
            [[4, 4, 14, 14], [30, 30, 60, 60]],
            [3, 7],
            # box 0: a weak proposal of class 3 and a stronger one of class 5 on it -> 5;
            # box 1: only a proposal at IoU < 0.5 -> missed (-1)
            {
                "boxes": [[4, 4, 14, 14], [4, 4, 14, 15], [30, 30, 40, 40]],
                "scores": [0.3, 0.9, 0.99],
                "labels": [3, 5, 7],
            },
        ),
        _item([[0, 0, 40, 40]], [3], {"boxes": [[1, 1, 40, 40]], "scores": [0.5], "labels": [3]}),
    ]
    gt = gt_roi_set(items, hr_size=32, context=1.0, scale=4)
    assert gt["lr"].shape == (3, 3, 8, 8)
    assert gt["label"].tolist() == [3, 7, 3]
    assert gt["det_label"].tolist() == [5, -1, 3]
    assert gt["image"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(gt["size"], [10.0, 30.0, 40.0])

    table = class_accuracy_table(gt, np.array([3, 7, 1]), BUCKETS)
    assert table["<16"] == {
        "objects": 1, "d": 100.0, "detector": 0.0, "detector_found": 100.0, "majority": 100.0
    }  # fmt: skip
    assert table["16-32"]["d"] == 100.0 and table["16-32"]["detector_found"] == 0.0
    assert table[">32"]["d"] == 0.0 and table[">32"]["detector"] == 100.0
    assert abs(table["all"]["d"] - 200 / 3) < 1e-9
    assert abs(table["all"]["majority"] - 200 / 3) < 1e-9  # class 3 is 2 of the 3 objects


def test_d_predictions_exclude_background_and_see_the_generator_output() -> None:
    seen: list[tuple[int, ...]] = []

    class D(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> SimpleNamespace:
            seen.append(tuple(x.shape))
            logits = torch.zeros(len(x), 5)
            logits[:, 0] = 10.0  # background wins overall, but is not a class answer
            logits[:, 2] = 1.0
            return SimpleNamespace(cls_logits=logits)

    variant = SimpleNamespace(
        generator=None, discriminator=D(), scale=4, training=False, eval=lambda: None
    )
    variant.train = lambda flag=True: None
    pred = d_class_predictions(variant, torch.zeros(7, 3, 8, 8), batch=4)
    assert pred.tolist() == [2] * 7
    assert seen == [(4, 3, 32, 32), (3, 3, 32, 32)]  # bicubic x4 when the row has no G


def test_the_report_names_the_seeds_of_a_first_seed_row() -> None:
    from gan_detect.experiment.diagnostics import class_accuracy_markdown

    cell = {"objects": 4, "d": 50.0, "detector": 75.0, "detector_found": 100.0, "majority": 25.0}
    res = {
        "detector": "YOLOX-nano",
        "labels": {"sod": "SOD-MTGAN", "carn_ft": "CARN-M"},
        "class_accuracy": {
            "seeds": [0, 1, 2],
            "rows": {
                "sod": {"per_seed": {s: {"all": cell} for s in (0, 1, 2)}, "mean": {"all": cell}},
                "carn_ft": {"per_seed": {0: {"all": cell}}, "mean": {"all": cell}},
            },
        },
    }
    text = "\n".join(class_accuracy_markdown(res))
    assert "| D of SOD-MTGAN | 50.0 [50.0, 50.0] |" in text
    assert "| D of CARN-M (seed 0) | 50.0 |" in text
