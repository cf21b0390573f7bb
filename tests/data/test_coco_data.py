"""COCO annotation loader: label map, crowd -> ignore, empty images, errors, and coco128 counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gan_detect.data.coco import coco_split_paths, load_coco_records
from gan_detect.data.paths import shared_data_dir


def _tiny() -> dict[str, Any]:
    return {
        "images": [
            {"id": 7, "file_name": "b.jpg", "width": 100, "height": 80},
            {"id": 3, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 9, "file_name": "empty.jpg", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 18, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 5, "bbox": [0, 0, 30, 5], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 90, "bbox": [5.5, 6, 4, 0], "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [5.5, 6, 4, 2], "area": 8},
        ],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 5, "name": "airplane"},
            {"id": 18, "name": "dog"},
        ],
    }


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(data))
    return path


def test_label_map_sorted_by_category_id(tmp_path: Path) -> None:
    out = load_coco_records(_write(tmp_path, _tiny()), tmp_path / "img")
    assert out.category_ids == [5, 18, 90]
    assert out.class_names == ["airplane", "dog", "toothbrush"]
    assert out.category_id_to_label == {5: 1, 18: 2, 90: 3}
    assert out.num_classes == 3


def test_records_boxes_crowd_empty_and_dropped(tmp_path: Path) -> None:
    out = load_coco_records(_write(tmp_path, _tiny()), tmp_path / "img")
    by_id = {r.image_id: r for r in out.records}
    assert [r.image_id for r in out.records] == ["3", "7", "9"]
    a = by_id["3"]
    np.testing.assert_allclose(a.boxes, [[1, 2, 11, 22], [0, 0, 30, 5]])  # xywh -> xyxy
    np.testing.assert_array_equal(a.labels, [2, 1])
    np.testing.assert_array_equal(a.ignore, [False, True])  # crowd -> ignore
    assert (a.width, a.height) == (64, 48)
    assert a.path == str(tmp_path / "img" / "a.jpg")
    b = by_id["7"]  # the zero-height box is dropped, the other kept (iscrowd defaults to 0)
    np.testing.assert_allclose(b.boxes, [[5.5, 6, 9.5, 8]])
    np.testing.assert_array_equal(b.ignore, [False])
    assert out.num_dropped == 1
    assert by_id["9"].boxes.shape == (0, 4)  # images without annotations are kept


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d.pop("categories"), "missing or non-list key 'categories'"),
        (lambda d: d["images"][1].pop("width"), r"images\[1\] lacks key\(s\) \['width'\]"),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] lacks key"),
        (lambda d: d["annotations"][2].update(image_id=1234), "unknown image_id 1234"),
        (lambda d: d["annotations"][3].update(category_id=6), "unknown category_id 6"),
        (lambda d: d["annotations"][3].update(bbox=[1, 2, 3]), r"annotations\[3\] bbox"),
    ],
)
def test_bad_content_names_file_and_entry(tmp_path: Path, mutate: Any, pattern: str) -> None:
    data = _tiny()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=pattern) as info:
        load_coco_records(path, tmp_path)
    assert str(path) in str(info.value)


def test_missing_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_records(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        load_coco_records(bad, tmp_path)
    with pytest.raises(ValueError, match="top level must be an object"):
        load_coco_records(_write(tmp_path, [1, 2]), tmp_path)


def test_split_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        coco_split_paths(tmp_path, "val2017")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        coco_split_paths(tmp_path, "val2017")
    (tmp_path / "val2017").mkdir()
    assert coco_split_paths(tmp_path, "val2017") == (
        tmp_path / "annotations" / "instances_val2017.json",
        tmp_path / "val2017",
    )


def test_real_coco128_counts() -> None:
    data = shared_data_dir()
    root = None if data is None else data / "coco" / "coco128_train2017"
    if root is None or not root.is_dir():
        pytest.skip("coco128 not found (set GAN_DETECT_DATA or use ../shared/data)")
    out = load_coco_records(*coco_split_paths(root, "train2017"))
    assert len(out.records) == 128 and out.num_classes == 80
    assert sum(len(r.boxes) for r in out.records) == 939 and out.num_dropped == 0
    assert sum(int(r.ignore.sum()) for r in out.records) == 10
    assert out.category_ids[:3] == [1, 2, 3] and out.category_ids[-1] == 90
    assert out.class_names[0] == "person"
    assert all(Path(r.path).is_file() for r in out.records)
    for r in out.records:
        assert r.labels.min(initial=1) >= 1 and r.labels.max(initial=1) <= 80
        assert (r.boxes[:, 2] <= r.width + 0.5).all() and (r.boxes[:, 3] <= r.height + 0.5).all()
