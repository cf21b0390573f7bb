"""Proposal / detection files: WIDER FACE txt trees and COCO results JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from gan_detect.data.proposals import (
    load_proposals,
    read_coco_results,
    read_wider_tree,
    read_wider_txt,
    write_coco_results,
    write_wider_tree,
)
from gan_detect.data.records import Proposals

DATA = Path(
    os.environ.get(
        "GAN_DETECT_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)


def _dets(seed: int = 0, labels: int = 1) -> dict[str, Proposals]:
    rng = np.random.default_rng(seed)
    out = {}
    for n, image_id in enumerate(["0--Parade/a_1", "0--Parade/a_2", "12--Group/b_3"]):
        k = 4 - n  # also an image with a single box
        xy = rng.uniform(0, 500, (k, 2)).round(2)
        wh = rng.uniform(1, 80, (k, 2)).round(2)
        out[image_id] = Proposals(
            np.c_[xy, xy + wh], rng.uniform(0, 1, k), rng.integers(1, labels + 1, k)
        )
    return out


def test_wider_tree_round_trip(tmp_path: Path) -> None:
    dets = _dets()
    write_wider_tree(dets, tmp_path)
    assert (tmp_path / "12--Group" / "b_3.txt").read_text().splitlines()[:2] == ["b_3", "2"]
    back = read_wider_tree(tmp_path)
    assert set(back) == set(dets)
    for image_id, p in dets.items():
        order = np.argsort(-p.scores, kind="stable")  # the writer sorts by score
        np.testing.assert_allclose(back[image_id].boxes, p.boxes[order], atol=1e-4)
        np.testing.assert_array_equal(back[image_id].scores, p.scores[order])
        np.testing.assert_array_equal(back[image_id].labels, 1)


def test_wider_reader_top_k_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "ev").mkdir()
    f = tmp_path / "ev" / "img.txt"
    f.write_text("img.jpg\n3\n\n1 2 3 4 0.1\n5 6 7 8 0.9 \n\n9 9 2 2 0.5\n")
    np.testing.assert_array_equal(read_wider_txt(f)[:, 4], [0.1, 0.9, 0.5])
    top = read_wider_tree(tmp_path, top_k=2)["ev/img"]
    np.testing.assert_allclose(top.scores, [0.9, 0.5])
    np.testing.assert_allclose(top.boxes[0], [5, 6, 12, 14])  # xywh -> xyxy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img\n2\n1 2 3 4 0.5\n1 2 3 0.5\n", r"img.txt:4: expected 'x y w h score'"),
        ("img\n1\n1 2 3 4 abc\n", r"img.txt:3: expected"),
        ("img\n3\n1 2 3 4 0.5\n", r"img.txt:2: count says 3 boxes, file has 1"),
        ("img\nmany\n", r"img.txt:2: expected a box count"),
        ("other\n0\n", r"img.txt:1: image name 'other'"),
        ("img\n1\n1 2 3 4 nan\n", r"img.txt:3: non-finite"),
    ],
)
def test_wider_reader_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "img.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_wider_txt(f)


def test_coco_results_round_trip_with_category_map(tmp_path: Path) -> None:
    dets = {str(k): p for k, p in zip((42, 73, 9), _dets(1, labels=3).values(), strict=True)}
    cats = [1, 5, 90]  # contiguous label l -> COCO id cats[l - 1]
    path = tmp_path / "res.json"
    write_coco_results(dets, path, category_ids=cats)
    entries = json.loads(path.read_text())
    assert {e["category_id"] for e in entries} <= set(cats)
    assert all(isinstance(e["image_id"], int) for e in entries)
    back = read_coco_results(path, category_id_to_label={c: i + 1 for i, c in enumerate(cats)})
    for image_id, p in dets.items():
        np.testing.assert_allclose(back[image_id].boxes, p.boxes, atol=1e-4)
        np.testing.assert_allclose(back[image_id].scores, p.scores, rtol=1e-6)
        np.testing.assert_array_equal(back[image_id].labels, p.labels)
    assert len(load_proposals(path, top_k=1)["42"]) == 1


def test_top_classes_round_trip_and_follow_top_k(tmp_path: Path) -> None:
    """The detector's best classes per box (``class_labels`` / ``class_scores``) survive the
    results file (as ``class_scores: [[category_id, score]]``) and the top-k selection."""
    cats = [1, 5, 90]
    p = Proposals(
        np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]]),
        np.array([0.2, 0.9, 0.5]),
        np.array([1, 3, 2]),
        np.array([[1, 2], [3, 1], [2, 3]]),
        np.array([[0.2, 0.1], [0.9, 0.05], [0.5, 0.4]]),
    )
    top = p.top_k(2)
    assert top.labels.tolist() == [3, 2] and top.class_labels.tolist() == [[3, 1], [2, 3]]
    path = tmp_path / "res.json"
    write_coco_results({"7": p}, path, category_ids=cats)
    entries = json.loads(path.read_text())
    assert [c for c, _ in entries[1]["class_scores"]] == [90, 1]
    assert [v for _, v in entries[1]["class_scores"]] == pytest.approx([0.9, 0.05])
    back = read_coco_results(path, category_id_to_label={c: i + 1 for i, c in enumerate(cats)})
    np.testing.assert_array_equal(back["7"].class_labels, p.class_labels)
    np.testing.assert_allclose(back["7"].class_scores, p.class_scores, rtol=1e-6)
    # A file without them (any other detector): None, as before.
    entries[0].pop("class_scores")
    path.write_text(json.dumps(entries))
    assert read_coco_results(path)["7"].class_labels is None
    entries[1]["class_scores"] = [[90, "high"]]
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"res.json: entry 1: class_scores must be"):
        read_coco_results(path)
    with pytest.raises(ValueError, match="come together"):
        Proposals(p.boxes, p.scores, p.labels, p.class_labels, None)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}, "entry 1: bbox"),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}, "entry 1 needs"),
        ({"image_id": 1, "category_id": "dog", "bbox": [1, 2, 3, 4], "score": 0.5}, "entry 1: cat"),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": None}, "entry 1: score"),
    ],
)
def test_coco_reader_names_file_and_entry(tmp_path: Path, entry: dict, message: str) -> None:
    good = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    path = tmp_path / "res.json"
    path.write_text(json.dumps([good, entry]))
    with pytest.raises(ValueError, match=f"res.json: {message}"):
        read_coco_results(path)


def test_coco_writer_rejects_non_integer_ids_and_bad_labels(tmp_path: Path) -> None:
    p = Proposals(np.zeros((1, 4)), np.ones(1), np.array([3]))
    with pytest.raises(ValueError, match="integers"):
        write_coco_results({"ev/name": p}, tmp_path / "r.json")
    with pytest.raises(ValueError, match="label 3 outside 1..2"):
        write_coco_results({"7": p}, tmp_path / "r.json", category_ids=[1, 2])


def test_load_proposals_dispatch_and_errors(tmp_path: Path) -> None:
    write_wider_tree(_dets(), tmp_path / "tree")
    assert len(load_proposals(tmp_path / "tree")) == 3
    with pytest.raises(FileNotFoundError, match="nothing"):
        load_proposals(tmp_path / "nothing.json")
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(ValueError, match="expected a WIDER"):
        load_proposals(tmp_path / "x.csv")


def test_reads_real_retinaface_tree() -> None:
    tree = DATA / "widerface" / "predictions" / "retinaface_mobilenet0.25_biubug6"
    if not tree.exists():
        pytest.skip(f"real data not found at {tree} (set GAN_DETECT_DATA)")
    one = read_wider_txt(tree / "0--Parade" / "0_Parade_marchingband_1_20.txt")
    np.testing.assert_allclose(one[0], [541, 358, 36, 40, 0.99907434])
    dets = load_proposals(tree)
    assert len(dets) == 3226 and sum(len(v) for v in dets.values()) == 297298
    densest = max(dets.values(), key=len)
    assert len(densest) > 750 and len(densest.top_k(750)) == 750


def test_box_helpers_match_torchvision_and_round_trip() -> None:
    """The numpy conversions agree with ``torchvision.ops.box_convert`` and never alias input."""
    import torch
    from torchvision.ops import box_convert

    from gan_detect.data.records import xywh_to_xyxy, xyxy_to_xywh

    xyxy = np.array([[1.5, 2.0, 11.5, 7.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    xywh = xyxy_to_xywh(xyxy)
    assert xywh.dtype == np.float64 and xywh.tolist() == [[1.5, 2.0, 10.0, 5.0], [0, 0, 0, 0]]
    ref = box_convert(torch.from_numpy(xyxy).double(), "xyxy", "xywh").numpy()
    np.testing.assert_array_equal(xywh, ref)
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), xyxy)
    assert xyxy[0, 2] == 11.5 and xyxy_to_xywh(np.zeros((0, 4))).shape == (0, 4)
