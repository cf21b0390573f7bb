"""Generated datasets: official layouts read back by the same parsers, .mat structure, determinism."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO

from gan_detect.data.coco import coco_split_paths, load_coco_records
from gan_detect.data.paths import shared_data_dir
from gan_detect.data.synthetic import (
    SETTING_MIN_HEIGHT,
    write_synthetic_faces,
    write_synthetic_objects,
)
from gan_detect.data.wider_face import list_events, read_wider_annotations, wider_split_paths
from gan_detect.metrics.coco_eval import evaluate_coco

MAT_KEYS = {
    "event_list", "file_list", "face_bbx_list", "blur_label_list", "expression_label_list",
    "illumination_label_list", "invalid_label_list", "occlusion_label_list", "pose_label_list",
}  # fmt: skip


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_faces(tmp_path_factory.mktemp("faces"), num_train=12, num_val=9, seed=3)


@pytest.fixture(scope="module")
def objects_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_objects(tmp_path_factory.mktemp("objs"), num_train=12, num_val=6, seed=3)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("split", ["train", "val"])
def test_faces_read_back_by_wider_parser(faces_root: Path, split: str) -> None:
    ann = read_wider_annotations(*wider_split_paths(faces_root, split), check_images=True)
    recs = ann.records
    assert len(recs) == (12 if split == "train" else 9)
    assert list_events(recs) == ["0--Gathering", "1--Street", "2--Portrait"]
    boxes = np.concatenate([r.boxes for r in recs])
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert widths.min() >= 6 and widths.max() <= 200
    assert (widths < 32).mean() > 0.4  # skewed towards small faces
    assert (heights > 50).any()  # but some large ones too (the "easy" setting is not empty)
    for r in recs:
        assert (r.width, r.height) == (320, 240)
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= r.width).all()
        assert (r.boxes[:, 3] <= r.height).all()
        assert (r.labels == 1).all()
    assert any(r.ignore.any() for r in recs)  # a few invalid faces, kept as ignore
    assert len(recs[-1].boxes) == 0  # the zero-face image
    assert ann.num_dropped == 1  # only its all-zero row


def test_faces_zero_face_entries_use_official_conventions(faces_root: Path) -> None:
    for split, count in (("train", "0"), ("val", "1")):
        lines = (faces_root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").read_text()
        lines = lines.splitlines()
        assert lines[-2:] == [count, "0 0 0 0 0 0 0 0 0 0 "]


def test_faces_mat_files_match_txt_and_height_rule(faces_root: Path) -> None:
    ann = read_wider_annotations(faces_root / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    rows = {r.image_id: r for r in ann.records}
    gt = faces_root / "ground_truth"
    full = scipy.io.loadmat(gt / "wider_face_val.mat")
    assert MAT_KEYS <= set(full) and "gt_list" not in full
    assert full["__header__"].startswith(b"MATLAB 5.0 MAT-file")
    settings = {
        s: scipy.io.loadmat(gt / f"wider_{s}_val.mat")["gt_list"] for s in SETTING_MIN_HEIGHT
    }
    n_images = 0
    for e in range(full["event_list"].shape[0]):
        event = str(full["event_list"][e, 0][0])
        files = full["file_list"][e, 0]
        for j in range(files.shape[0]):
            n_images += 1
            rec = rows[f"{event}/{files[j, 0][0]}"]
            bbx = full["face_bbx_list"][e, 0][j, 0]
            invalid = full["invalid_label_list"][e, 0][j, 0]
            assert bbx.dtype == np.int32 and bbx.shape[1] == 4 and invalid.shape == (len(bbx), 1)
            if len(rec.boxes) == 0:  # zero-face image: one all-zero row, empty gt_list
                assert bbx.tolist() == [[0, 0, 0, 0]]
                assert all(settings[s][e, 0][j, 0].size == 0 for s in settings)
                continue
            xyxy = np.concatenate([bbx[:, :2], bbx[:, :2] + bbx[:, 2:]], 1)
            np.testing.assert_array_equal(xyxy, rec.boxes)
            np.testing.assert_array_equal(invalid[:, 0] == 1, rec.ignore)
            kept = {}
            for s, min_h in SETTING_MIN_HEIGHT.items():
                g = settings[s][e, 0][j, 0]
                assert g.ndim == 2 and g.shape[1] == 1  # 1-based column vector
                want = np.flatnonzero((invalid[:, 0] == 0) & (bbx[:, 3] > min_h)) + 1
                np.testing.assert_array_equal(g[:, 0], want)
                kept[s] = set(g[:, 0].tolist())
            assert kept["easy"] <= kept["medium"] <= kept["hard"]
    assert n_images == 9
    hard_total = sum(settings["hard"][e, 0][j, 0].size for e in range(3) for j in range(3))
    assert hard_total > sum(settings["easy"][e, 0][j, 0].size for e in range(3) for j in range(3))


def test_faces_mat_nesting_matches_real_ground_truth(faces_root: Path) -> None:
    data = shared_data_dir()
    real_path = None if data is None else data / "widerface/ground_truth/wider_hard_val.mat"
    if real_path is None or not real_path.is_file():
        pytest.skip("real wider_hard_val.mat not found (set GAN_DETECT_DATA or ../shared/data)")
    real = scipy.io.loadmat(real_path)
    ours = scipy.io.loadmat(faces_root / "ground_truth" / "wider_hard_val.mat")
    assert {k for k in real if not k.startswith("__")} == {
        k for k in ours if not k.startswith("__")
    }
    for key in MAT_KEYS | {"gt_list"}:
        r, o = real[key], ours[key]
        assert (r.dtype, r.ndim, r.shape[1]) == (o.dtype, o.ndim, o.shape[1]), key
        r_in, o_in = r[0, 0], o[0, 0]
        assert (r_in.dtype.kind, r_in.ndim) == (o_in.dtype.kind, o_in.ndim), key
        if key != "event_list":
            assert r_in.shape[1] == o_in.shape[1] == 1, key
            r_el, o_el = r_in[0, 0], o_in[0, 0]
            assert r_el.dtype.kind == o_el.dtype.kind and r_el.ndim == o_el.ndim, key
    # The zero-face images of the real file and ours are written alike.
    for mat in (real, ours):
        zero = [
            (mat["face_bbx_list"][e, 0][j, 0], mat["gt_list"][e, 0][j, 0])
            for e in range(mat["event_list"].shape[0])
            for j in range(mat["file_list"][e, 0].shape[0])
            if not mat["face_bbx_list"][e, 0][j, 0].any()
        ]
        assert zero and all(b.shape == (1, 4) and g.shape == (0, 0) for b, g in zero)


def test_objects_read_back_by_coco_loader(objects_root: Path) -> None:
    out = load_coco_records(*coco_split_paths(objects_root, "train"))
    assert out.category_ids == [1, 2, 3, 5, 7] and out.num_classes == 5
    assert out.category_id_to_label == {1: 1, 2: 2, 3: 3, 5: 4, 7: 5}
    assert len(out.records) == 12
    boxes = np.concatenate([r.boxes for r in out.records])
    labels = np.concatenate([r.labels for r in out.records])
    ignore = np.concatenate([r.ignore for r in out.records])
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[~ignore]
    assert set(labels.tolist()) == {1, 2, 3, 4, 5}
    assert 1 <= ignore.sum() < 0.2 * len(ignore)  # a few crowd regions
    assert (side < 32).mean() > 0.5 and (side < 16).any()
    for r in out.records:
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= r.width).all()
        assert (r.boxes[:, 3] <= r.height).all()
        assert Path(r.path).is_file()


def test_objects_json_is_standard_coco(objects_root: Path) -> None:
    """pycocotools evaluates the ground truth against itself as AP 1 (valid fields, areas)."""
    ann_file = objects_root / "annotations" / "instances_val.json"
    data = json.loads(ann_file.read_text())
    assert {"area", "iscrowd", "bbox", "segmentation"} <= set(data["annotations"][0])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0}
            for a in data["annotations"] if not a["iscrowd"]
        ]  # fmt: skip
        stats = evaluate_coco(gt, gt.loadRes(dets), backend="pycocotools")
    assert stats["map"] == pytest.approx(1.0)
    assert stats["map_small"] == pytest.approx(1.0)  # AP_small exists: there are small objects


@pytest.mark.parametrize("writer", [write_synthetic_faces, write_synthetic_objects])
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, writer: object) -> None:
    assert callable(writer)
    a = _digest(writer(tmp_path / "a", num_train=3, num_val=2, seed=5))
    b = _digest(writer(tmp_path / "b", num_train=3, num_val=2, seed=5))
    c = _digest(writer(tmp_path / "c", num_train=3, num_val=2, seed=6))
    assert a == b != c


def test_rejects_tiny_image_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        write_synthetic_faces(tmp_path, 1, 1, image_size=(32, 32))


def test_generated_ground_truth_drives_official_wider_ap(faces_root: Path) -> None:
    """The WIDER AP metric reads our .mat files on its official (gt_list) path."""
    wider_gt = pytest.importorskip("gan_detect.metrics.wider_gt")
    wider_ap = pytest.importorskip("gan_detect.metrics.wider_face_ap")
    gt = wider_gt.load_wider_ground_truth(faces_root / "ground_truth")
    assert gt.official and len(gt) == 9
    recs = read_wider_annotations(*wider_split_paths(faces_root, "val")).records
    preds = {
        r.image_id: np.c_[
            r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2], np.linspace(1, 0.5, len(r.boxes))
        ]
        for r in recs
    }
    ap = wider_ap.wider_face_ap(preds, gt)
    assert ap["ap_easy"] == pytest.approx(1.0) and ap["ap_hard"] == pytest.approx(1.0)
    half = wider_ap.wider_face_ap({k: v[: len(v) // 2] for k, v in preds.items()}, gt)
    assert half["ap_hard"] < 0.9
