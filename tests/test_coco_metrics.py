"""COCO AP through torchmetrics: pycocotools parity, the tiny bucket, dense images."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_detect.metrics.coco_map import COCO_KEYS, CocoMeanAP, evaluate_coco_files, summarize_coco

DATA = Path(
    os.environ.get(
        "GAN_DETECT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
FAKE100 = DATA / "coco" / "cocoapi_val2014_fake100"


def _fake100() -> tuple[Path, Path]:
    if not FAKE100.exists():
        pytest.skip(f"real data not found at {FAKE100} (set GAN_DETECT_DATA)")
    return (
        FAKE100 / "instances_val2014_100.json",
        FAKE100 / "instances_val2014_fakebbox100_results.json",
    )


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_fake100_matches_the_official_pycocotools_printout(backend: str) -> None:
    gt, res = _fake100()
    r = evaluate_coco_files(gt, res, max_detection_thresholds=[1, 10, 100], backend=backend)
    # cocoapi results/val2014_fake_eval_res.txt (stats to 6 digits from SOURCES.md).
    expected = [0.504581, 0.696973, 0.572982, 0.585626, 0.5194, 0.501398]
    assert [r[k] for k in COCO_KEYS[:6]] == pytest.approx(expected, abs=1e-6)


def test_map_tiny_equals_cocoeval_with_a_custom_area_range() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path, res_path = _fake100()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(res_path)), "bbox")
        ev.params.areaRng = [[0, 16.0**2]]
        ev.params.areaRngLbl = ["tiny"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]
    reference = float(prec[prec > -1].mean())
    ours = evaluate_coco_files(gt_path, res_path, [1, 10, 100], backend="faster_coco_eval")
    assert ours["map_tiny"] == pytest.approx(reference, abs=1e-6)  # float32 result
    assert ours["map_tiny"] != pytest.approx(ours["map_small"], abs=1e-3)  # a different bucket


def _grid(n: int, size: float) -> torch.Tensor:
    """n boxes of side ``size`` on a grid, xyxy (well apart, so no two overlap)."""
    xy = torch.stack(torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij"), -1)
    xy = xy.reshape(-1, 2)[:n].float() * (size + 10)
    return torch.cat([xy, xy + size], 1)


def test_tiny_bucket_perfect_and_missing() -> None:
    tiny, big = _grid(5, 8.0), _grid(5, 64.0) + 2000
    metric = CocoMeanAP(backend="faster_coco_eval")
    boxes = torch.cat([tiny, big])
    labels = torch.ones(10, dtype=torch.int64)
    metric.update(
        [{"boxes": boxes, "scores": torch.linspace(1, 0.1, 10), "labels": labels}],
        [{"boxes": boxes, "labels": labels}],
    )
    r = summarize_coco(metric.compute())
    assert r["map"] == pytest.approx(1.0) and r["map_tiny"] == pytest.approx(1.0)
    only_big = CocoMeanAP(backend="faster_coco_eval")
    only_big.update(
        [{"boxes": big, "scores": torch.ones(5), "labels": labels[:5]}],
        [{"boxes": big, "labels": labels[:5]}],
    )
    assert float(only_big.compute()["map_tiny"]) == -1.0  # no tiny ground truth: undefined


def test_default_max_dets_keeps_recall_in_crowded_images() -> None:
    """150 perfectly detected objects in one image: maxDets=100 caps recall at 2/3."""
    boxes = _grid(150, 12.0)
    labels = torch.ones(150, dtype=torch.int64)
    preds = [{"boxes": boxes, "scores": torch.linspace(1, 0.5, 150), "labels": labels}]
    targets = [{"boxes": boxes, "labels": labels}]
    dense = CocoMeanAP(backend="faster_coco_eval")  # default [1, 100, 1000]
    dense.warn_on_many_detections = False
    dense.update(preds, targets)
    capped = CocoMeanAP(max_detection_thresholds=[1, 10, 100], backend="faster_coco_eval")
    capped.warn_on_many_detections = False
    capped.update(preds, targets)
    assert float(dense.compute()["map"]) == pytest.approx(1.0)
    assert float(capped.compute()["map"]) < 0.7


def test_bad_tiny_area_and_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny_area"):
        CocoMeanAP(tiny_area=0)
    with pytest.raises(FileNotFoundError, match="gt.json"):
        evaluate_coco_files(tmp_path / "gt.json", tmp_path / "res.json")


def test_two_updates_equal_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        gt = _grid(6, 20.0)
        noisy = gt + torch.from_numpy(rng.normal(0, 2, gt.shape)).float()
        labels = torch.from_numpy(rng.integers(1, 3, 6))
        batches.append(
            (
                {
                    "boxes": noisy,
                    "scores": torch.rand(6, generator=torch.Generator().manual_seed(1)),
                    "labels": labels,
                },
                {"boxes": gt, "labels": labels},
            )
        )
    one, two = CocoMeanAP(backend="faster_coco_eval"), CocoMeanAP(backend="faster_coco_eval")
    one.update([b[0] for b in batches], [b[1] for b in batches])
    for b in batches:
        two.update([b[0]], [b[1]])
    r1, r2 = summarize_coco(one.compute()), summarize_coco(two.compute())
    assert r1 == pytest.approx(r2) and 0.0 < r1["map"] < 1.0
