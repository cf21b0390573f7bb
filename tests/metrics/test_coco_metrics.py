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
        "GAN_DETECT_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
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


# Rank RANK of a 2-process gloo group: evaluates its DistributedSampler shard of 5 images (the
# sampler pads rank 1 with image 0 again) and writes the gathered metrics.
_DDP_WORKER = """
import json, os, sys
import torch, torch.distributed as dist
from torch.utils.data import DistributedSampler
sys.path.insert(0, os.environ["GD_TESTS"])
from test_coco_metrics import _scene
from gan_detect.infer.evaluation import DetectionEvaluator

rank, world = int(os.environ["RANK"]), 2
dist.init_process_group("gloo", init_method="file://" + os.environ["GD_PG"], rank=rank,
                        world_size=world)
idx = list(DistributedSampler(range(5), num_replicas=world, rank=rank, shuffle=False))
ev = DetectionEvaluator("coco")
for i in idx:
    pred, target = _scene(i)
    ev.update([pred], [target], [f"img{i}"])
out = ev.compute()
if rank == 0:
    with open(os.environ["GD_OUT"], "w") as f:
        json.dump({"metrics": out, "idx": idx}, f)
dist.destroy_process_group()
"""


def _scene(i: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Image ``i``: 3 GT boxes (2 classes), jittered detections and false positives."""
    g = torch.Generator().manual_seed(100 + i)
    xy = torch.rand(3, 2, generator=g) * 80
    gt = torch.cat([xy, xy + 8 + torch.rand(3, 2, generator=g) * 30], 1)
    labels = torch.tensor([1, 2, 1])
    det = gt + torch.randn(3, 4, generator=g) * 3
    fp_xy = torch.rand(3, 2, generator=g) * 80
    fp = torch.cat([fp_xy, fp_xy + 12], 1)
    pred = {
        "boxes": torch.cat([det, fp]),
        "scores": torch.rand(6, generator=g),
        "labels": torch.tensor([1, 2, 1, 1, 2, 2]),
    }
    return pred, {"boxes": gt, "labels": labels, "ignore": torch.zeros(3, dtype=torch.bool)}


@pytest.mark.slow
def test_coco_map_under_two_process_ddp_counts_padded_images_once(tmp_path: Path) -> None:
    """5 images on 2 gloo ranks: DistributedSampler repeats image 0 on rank 1; the gathered
    COCO AP must equal the one-process AP over the 5 images (de-duplicated by image id)."""
    import json
    import subprocess
    import sys

    from gan_detect.infer.evaluation import DetectionEvaluator

    env = {
        **os.environ,
        "GD_TESTS": str(Path(__file__).parent),
        "GD_PG": str(tmp_path / "pg"),
        "GD_OUT": str(tmp_path / "out.json"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DDP_WORKER],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["idx"] == [0, 2, 4]  # rank 0; rank 1 got [1, 3, 0]: image 0 twice overall
    single = DetectionEvaluator("coco")
    for i in range(5):
        pred, target = _scene(i)
        single.update([pred], [target], [f"img{i}"])
    want = single.compute()
    padded = DetectionEvaluator("coco")  # what counting the padding twice would give
    for n, i in enumerate([0, 1, 2, 3, 4, 0]):
        pred, target = _scene(i)
        padded.update([pred], [target], [f"pad{n}"])
    assert padded.compute()["map"] != pytest.approx(want["map"], abs=1e-4)  # the test can fail
    for k, v in want.items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-6), k
