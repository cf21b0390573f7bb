"""One size-bucket rule for every COCO AP: the annotation's ``area`` when it has one, else w * h.

``evaluate`` (ground truth from the dataset's records) and ``coco-eval`` (the instances JSON)
must give the same AP_tiny / AP_S / ... on the same detections; they once used w * h and the
annotated area respectively (demo objects: map_tiny 9.28 vs 16.89).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gan_detect.app.cli import main
from gan_detect.config import PRESETS
from gan_detect.config.load import load_config
from gan_detect.data.synthetic import SHAPE_CATEGORIES, write_synthetic_objects
from gan_detect.metrics.coco_eval import object_areas, with_object_areas
from gan_detect.metrics.compare import compare_coco

SIZE_KEYS = ("map", "map_small", "map_medium", "map_tiny")


def test_object_areas_takes_the_annotated_area_else_the_box() -> None:
    boxes = [[0, 0, 10, 4], [5, 5, 3, 3], [1, 1, 2, 8]]
    np.testing.assert_allclose(object_areas(boxes), [40, 9, 16])
    np.testing.assert_allclose(object_areas(boxes, [12.5, 0, -1]), [12.5, 9, 16])
    filled = with_object_areas(
        {"images": [], "annotations": [{"bbox": [0, 0, 4, 5]}, {"bbox": [0, 0, 4, 5], "area": 3}]}
    )
    assert [a["area"] for a in filled["annotations"]] == [20.0, 3]


def _jittered_results(instances: Path, out: Path) -> Path:
    """Every non-crowd object found with a jittered box and a random score, plus a few misses
    of the score order: a non-trivial AP in every bucket."""
    data = json.loads(instances.read_text())
    rng = np.random.default_rng(0)
    rows = []
    for a in data["annotations"]:
        if a.get("iscrowd"):
            continue
        x, y, w, h = np.asarray(a["bbox"], float) + rng.normal(0, 1.0, 4)
        rows.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [float(x), float(y), float(max(w, 1)), float(max(h, 1))],
                     "score": float(rng.uniform(0.05, 1))})  # fmt: skip
    out.write_text(json.dumps(rows))
    return out


def test_evaluate_and_coco_eval_give_the_same_bucket_ap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.evaluate import evaluate

    root = write_synthetic_objects(tmp_path / "objects", num_train=2, num_val=12, seed=3)
    instances = root / "annotations" / "instances_val.json"
    props = _jittered_results(instances, tmp_path / "proposals_val.json")
    cfg = load_config(
        [PRESETS / "sod_mtgan_coco.yaml", PRESETS / "smoke.yaml"],
        [f"data.root={root}", f"data.num_classes={len(SHAPE_CATEGORIES)}",
         "data.train_split=train", "data.val_split=val", f"data.val_proposals={props}",
         f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}",
         "logger.kind=none", "evaluate.bootstrap=0"],
    )  # fmt: skip
    metrics = evaluate(cfg, None, tmp_path / "eval", progress=False)["baseline"]
    written = tmp_path / "eval" / "baseline" / "detections.json"
    out = tmp_path / "coco_eval.json"
    assert main(["coco-eval", str(written), "--gt", str(instances), "--json", str(out)]) == 0
    capsys.readouterr()
    cli = json.loads(out.read_text())["metrics"]
    for k in SIZE_KEYS:
        assert metrics[k] > 0, k  # every bucket has objects and hits
        # AP points (coco-eval) vs fractions (evaluate); the JSON rounds boxes to 0.01 px.
        assert cli[k] == pytest.approx(100 * metrics[k], abs=0.05), k

    # The rule matters on this data: with w * h for every object the tiny bucket changes.
    data = json.loads(instances.read_text())
    for a in data["annotations"]:
        a.pop("area")
    boxes_only = tmp_path / "instances_no_area.json"
    boxes_only.write_text(json.dumps(data))
    by_box = compare_coco(written, written, boxes_only, n_boot=0)["a"]
    assert abs(by_box["map_tiny"] - cli["map_tiny"]) > 1.0


def test_records_carry_the_annotated_area_into_the_in_memory_ground_truth(tmp_path: Path) -> None:
    """The experiments' and ``evaluate``'s intervals build their COCO ground truth from records."""
    from gan_detect.data.coco import load_coco_records
    from gan_detect.metrics.compare import records_to_coco_gt

    root = write_synthetic_objects(tmp_path / "objects", num_train=1, num_val=4, seed=1)
    instances = root / "annotations" / "instances_val.json"
    recs = load_coco_records(instances, root / "val").records
    gt, _ = records_to_coco_gt(recs, len(SHAPE_CATEGORIES))
    want = sorted(a["area"] for a in json.loads(instances.read_text())["annotations"])
    got = sorted(a["area"] for a in gt.dataset["annotations"])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Filtering a record keeps its areas aligned with its boxes.
    r = next(r for r in recs if len(r.boxes) > 1)
    with pytest.warns(UserWarning, match="outside"):
        small = r.clipped_to(10, 10)
    assert len(small.areas) == len(small.boxes) < len(r.boxes)


def test_size_labels_and_bands_come_from_the_one_definition() -> None:
    from gan_detect.app.report import SIZE_KEYS, SIZE_TICKS
    from gan_detect.metrics.coco_eval import side_bands

    assert [t.split("\n")[0] for t in SIZE_TICKS] == [k.removeprefix("map_") for k in SIZE_KEYS]
    assert SIZE_TICKS[0] == "tiny\n<16" and SIZE_TICKS[-1] == "large"
    assert side_bands() == [
        ("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), ("32-96", 32.0, 96.0), (">96", 96.0, 1e5)
    ]  # fmt: skip
