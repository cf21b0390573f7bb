"""The built-in YOLOX-nano proposer (ONNX, COCO): decoding of a hand-built output, the letterbox,
weight errors, and on real COCO images that it finds the annotated objects.

The real-data tests need ``coco/detectors/yolox_nano/yolox_nano.onnx`` and
``coco/val2017_person/`` in the shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``),
with the images at ``<repo>/data/coco_val2017_person/images/`` (or ``$GAN_DETECT_COCO_IMAGES``);
they skip otherwise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from gan_detect.data.paths import shared_data_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from gan_detect.detector.onnx_common import (  # noqa: E402
    COCO_CATEGORY_IDS,
    COCO_CLASS_NAMES,
    WeightsError,
    tiled_candidates,
)
from gan_detect.detector.yolox_nano import (  # noqa: E402
    INPUT_SIZE,
    YoloxNanoDetector,
    decode,
    letterbox,
    resolve_weights,
)

ROWS = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26}  # first output row of each stride


def _row(stride: int, gx: int, gy: int) -> int:
    return ROWS[stride] + gy * (INPUT_SIZE // stride) + gx


def test_decode_hand_built_output_gives_known_boxes() -> None:
    """Known cells of each stride -> the boxes the README's formulas give, every class kept."""
    out = np.zeros((1, 3549, 85), dtype=np.float32)
    # stride 8, cell (3, 5): centre ((0.5 + 3) * 8, (0.25 + 5) * 8) = (28, 42), size 16 x 8
    r = _row(8, 3, 5)
    out[0, r, :5] = [0.5, 0.25, math.log(2.0), 0.0, 0.9]
    out[0, r, 5 + 2] = 0.8  # class 2: 0.72
    out[0, r, 5 + 7] = 0.5  # class 7: 0.45, a second class of the same cell, also kept
    out[0, r, 5 + 9] = 0.001  # 0.0009 < 0.001: dropped
    # stride 16, cell (10, 20): centre (168, 328), size 16 x 32
    r = _row(16, 10, 20)
    out[0, r, :5] = [0.5, 0.5, 0.0, math.log(2.0), 0.5]
    out[0, r, 5 + 0] = 0.6  # person: 0.3
    # stride 32, cell (12, 0): centre (384, 0), size 64 x 64: crosses the top and right edges
    r = _row(32, 12, 0)
    out[0, r, :5] = [0.0, 0.0, math.log(2.0), math.log(2.0), 1.0]
    out[0, r, 5 + 79] = 0.2
    ratio = 0.5  # input px = image px * 0.5
    boxes, scores, labels = decode(out, ratio, width=800, height=700, score_thresh=0.001)
    got = {
        int(lab): (b.tolist(), float(s)) for b, s, lab in zip(boxes, scores, labels, strict=True)
    }
    assert sorted(got) == [0, 2, 7, 79]
    assert got[2][0] == pytest.approx([40.0, 76.0, 72.0, 92.0])  # (20, 38, 36, 46) / 0.5
    assert got[7][0] == got[2][0] and got[7][1] == pytest.approx(0.45)
    assert got[2][1] == pytest.approx(0.72)
    assert got[0][0] == pytest.approx([320.0, 624.0, 352.0, 688.0])  # (160, 312, 176, 344) / 0.5
    assert got[0][1] == pytest.approx(0.3)
    assert got[79][0] == pytest.approx([704.0, 0.0, 800.0, 64.0])  # (352, -32, 416, 32) clipped
    assert labels.dtype == torch.int64 and scores.dtype == torch.float32


def test_decode_gives_each_box_its_cells_best_classes() -> None:
    out = np.zeros((1, 3549, 85), dtype=np.float32)
    r = _row(8, 3, 5)
    out[0, r, :5] = [0.5, 0.25, 0.0, 0.0, 0.5]
    out[0, r, 5 + 2], out[0, r, 5 + 7], out[0, r, 5 + 9] = 0.8, 0.6, 0.1  # 0.4, 0.3, 0.05
    boxes, scores, labels, top, top_s = decode(out, 1.0, 416, 416, 0.1, top_classes=3)
    assert labels.tolist() == [2, 7]  # 0.05 < 0.1: not a box of its own, still a top class
    assert top.tolist() == [[2, 7, 9], [2, 7, 9]]
    assert top_s[0].tolist() == pytest.approx([0.4, 0.3, 0.05])
    assert len(decode(out, 1.0, 416, 416, 0.1)) == 3  # not asked: the three tensors only


def test_decode_refuses_an_output_of_another_shape() -> None:
    with pytest.raises(ValueError, match="3549"):
        decode(np.zeros((1, 85, 22, 22), dtype=np.float32), 1.0, 100, 100)


@pytest.mark.parametrize("hw", [(200, 300), (416, 100), (640, 480)])
def test_letterbox_round_trip(hw: tuple[int, int]) -> None:
    """A bright square goes to the top-left canvas at scale r and comes back at 1/r; BGR order."""
    h, w = hw
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = w // 4, h // 4, w // 2, h // 2
    image[0, y1:y2, x1:x2] = 1.0  # red in RGB
    bgr = YoloxNanoDetector.to_bgr(image)
    assert bgr[y1, x1].tolist() == [0, 0, 255]
    x, r = letterbox(bgr)
    assert x.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    assert r == pytest.approx(min(INPUT_SIZE / h, INPUT_SIZE / w))
    nh, nw = int(h * r), int(w * r)
    assert (x[0, :, nh:, :] == 114).all() and (x[0, :, :, nw:] == 114).all()  # grey padding
    red = x[0, 2] > 127  # BGR: red is the last channel, 0-255, not scaled
    assert x[0, 2].max() == 255 and x[0, 0, :nh, :nw].max() == 0
    ys, xs = np.nonzero(red)
    back = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / r
    assert back == pytest.approx([x1, y1, x2, y2], abs=1.5 / r + 1)


def test_drop_cut_leaves_out_tile_boxes_on_inner_tile_edges() -> None:
    """Two tiles of a 200x100 image; a box on an inner tile edge is a cut object's part."""
    bgr = np.zeros((100, 200, 3), dtype=np.uint8)

    def tiles(h: int, w: int) -> list[tuple[int, int, int, int]]:
        return [(0, 0, 120, 100), (80, 0, 200, 100)]

    def decode_tile(img: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = img.shape[1]  # on the right edge, inside, on the left edge (tile px)
        b = torch.tensor([[w - 10.0, 10, w, 20], [10, 10, 20, 20], [0, 30, 10, 40]])
        return b, torch.ones(3), torch.zeros(3, dtype=torch.int64)

    kept, _, _ = tiled_candidates(bgr, decode_tile, False, tiles, drop_cut=True)
    # tile 1: its right edge (x=120) is inner, its left edge the image's; tile 2 the reverse.
    expected = [[10, 10, 20, 20], [0, 30, 10, 40], [190, 10, 200, 20], [90, 10, 100, 20]]
    assert sorted(kept.tolist()) == sorted(expected)
    every, _, _ = tiled_candidates(bgr, decode_tile, False, tiles, drop_cut=False)
    assert len(every) == 6


# --- weights ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    data = shared_data_dir()
    folder = None if data is None else data / "coco" / "detectors" / "yolox_nano"
    if folder is None or not (folder / "yolox_nano.onnx").is_file():
        pytest.skip("yolox_nano.onnx not found (set GAN_DETECT_DATA or use ../shared/data)")
    return folder


@pytest.fixture(scope="module")
def detector(weights_dir: Path) -> YoloxNanoDetector:
    return YoloxNanoDetector(weights_dir, num_threads=1)


def test_weights_resolve_from_folder_file_or_default(weights_dir: Path) -> None:
    assert resolve_weights(weights_dir) == weights_dir / "yolox_nano.onnx"
    assert resolve_weights(weights_dir / "yolox_nano.onnx") == weights_dir / "yolox_nano.onnx"
    assert resolve_weights(None) == weights_dir / "yolox_nano.onnx"  # the shared-data copy
    assert (weights_dir / "LICENSE").is_file()  # the Apache-2.0 licence travels with it


def test_missing_weights_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="YOLOX-nano weights not found") as err:
        YoloxNanoDetector(tmp_path / "nope.onnx")
    assert str(tmp_path / "nope.onnx") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="without yolox_nano.onnx"):
        YoloxNanoDetector(tmp_path)


def test_garbage_weights_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "yolox_nano.onnx"
    bad.write_bytes(b"not an onnx model\n" * 10)
    (tmp_path / "LICENSE").write_text("licence")
    with pytest.raises(WeightsError, match="not a valid ONNX model") as err:
        YoloxNanoDetector(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_another_onnx_model_is_refused_by_its_shapes() -> None:
    """FastestDet's ONNX file is a valid model with the wrong input and output."""
    data = shared_data_dir()
    other = None if data is None else data / "coco" / "val2017_person" / "fastestdet"
    if other is None or not (other / "FastestDet.onnx").is_file():
        pytest.skip("FastestDet.onnx not found")
    with pytest.raises(WeightsError, match="not YOLOX-nano") as err:
        YoloxNanoDetector(other / "FastestDet.onnx")
    assert "[1, 3549, 85]" in str(err.value) and "\n" not in str(err.value)


def test_weights_without_their_licence_warn(weights_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "yolox_nano.onnx"
    shutil.copy(weights_dir / "yolox_nano.onnx", lone)
    with pytest.warns(UserWarning, match="no LICENSE beside .*Apache-2.0"):
        YoloxNanoDetector(lone)


def test_builtin_and_config_build_it_with_the_chosen_tiles(weights_dir: Path) -> None:
    from gan_detect.config.sections import DetectorConfig
    from gan_detect.detector.builtin import builtin_detector, builtin_from_config

    det = builtin_detector("yolox_nano", tile_sizes=(256,), tile_drop_cut=True)
    assert isinstance(det, YoloxNanoDetector) and det.weights == weights_dir / "yolox_nano.onnx"
    assert det.tile_sizes == (256,) and det.drop_cut and det.full_image
    cfg = DetectorConfig(arch="yolox_nano", tile_sizes=[256], tile_drop_cut=True)
    from_cfg = builtin_from_config(cfg)
    assert isinstance(from_cfg, YoloxNanoDetector) and from_cfg.drop_cut
    assert from_cfg.score_thresh == 0.001  # its own proposal threshold, not the config's 0.02


def test_builtin_arch_is_not_trainable() -> None:
    from gan_detect.detector.module import DetectorModule

    with pytest.raises(ValueError, match="built-in pretrained"):
        DetectorModule({"arch": "yolox_nano"})


# --- real COCO images ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco() -> tuple[dict, Path]:
    """The val2017 person subset's instances JSON and the folder of its JPEGs."""
    data = shared_data_dir()
    folder = None if data is None else data / "coco" / "val2017_person"
    if folder is None or not (folder / "instances_val2017_person.json").is_file():
        pytest.skip("coco/val2017_person not found (set GAN_DETECT_DATA)")
    repo = Path(__file__).resolve().parents[2]
    candidates = [
        os.environ.get("GAN_DETECT_COCO_IMAGES"),
        repo / "data" / "coco_val2017_person" / "images",
    ]
    images = next((Path(c) for c in candidates if c and Path(c).is_dir()), None)
    if images is None:
        pytest.skip("the val2017 person JPEGs are not extracted (GAN_DETECT_COCO_IMAGES)")
    js = json.loads((folder / "instances_val2017_person.json").read_text())
    js["split"] = json.loads((folder / "split.json").read_text())
    return js, images


def _first_test_images(coco: tuple[dict, Path], n: int) -> list[tuple[int, Path]]:
    js, images = coco
    files = {im["id"]: im["file_name"] for im in js["images"]}
    return [(i, images / files[i]) for i in sorted(js["split"]["test"])[:n]]


def _ground_truth(js: dict, image_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    anns = [a for a in js["annotations"] if a["image_id"] == image_id]
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return boxes, xywh[:, 2] * xywh[:, 3], torch.tensor([a["category_id"] for a in anns])


def test_finds_the_annotated_objects_on_real_images(
    detector: YoloxNanoDetector, coco: tuple[dict, Path]
) -> None:
    """Class-aware recall at IoU 0.5 with the 100 best boxes, first 8 test images.

    Measured: 85 / 128 objects (0.66), small 15 / 43 (0.35); FastestDet on the same images
    57 / 128 (0.45), small 7 / 43 (0.16), below both bounds.
    """
    from gan_detect.data.full_image import load_image

    found = total = found_small = total_small = 0
    for image_id, path in _first_test_images(coco, 8):
        det = detector.detect(load_image(str(path)))
        gt, area, cats = _ground_truth(coco[0], image_id)
        boxes = det["boxes"][:100]
        pred_cats = torch.tensor(COCO_CATEGORY_IDS)[det["labels"][:100] - 1]
        hit = ((box_iou(gt, boxes) >= 0.5) & (cats[:, None] == pred_cats[None, :])).any(1)
        small = area < 32**2
        found, total = found + int(hit.sum()), total + len(gt)
        found_small, total_small = (
            found_small + int(hit[small].sum()),
            total_small + int(small.sum()),
        )
    assert total == 128 and total_small == 43  # the ground truth these bounds were measured on
    assert found / total > 0.6
    assert found_small / total_small > 0.25


def test_detections_are_sorted_labelled_and_inside_the_image(
    detector: YoloxNanoDetector, coco: tuple[dict, Path]
) -> None:
    from gan_detect.data.full_image import load_image

    image = load_image(str(_first_test_images(coco, 1)[0][1]))
    h, w = image.shape[1:]
    det = detector.detect(image)
    assert 0 < len(det["boxes"]) <= detector.detections_per_img
    assert (det["scores"][:-1] >= det["scores"][1:]).all()
    assert det["scores"].min() >= 0.001
    assert 1 <= det["labels"].min() and det["labels"].max() <= 80
    assert det["boxes"].min() >= 0 and det["boxes"][:, 2].max() <= w
    assert det["boxes"][:, 3].max() <= h
    # Several classes from one cell survive NMS (per-class NMS keeps them apart).
    uniq = torch.unique(det["boxes"], dim=0)
    assert len(uniq) < len(det["boxes"])
    # Each box carries its cell's three best classes, best first; the best scores at least
    # the box's own class, which is one of them whenever it ranks in the top three.
    top, top_s = det["class_labels"], det["class_scores"]
    assert top.shape == top_s.shape == (len(det["boxes"]), 3)
    assert (top_s[:, :-1] >= top_s[:, 1:]).all() and (top_s[:, 0] >= det["scores"] - 1e-6).all()
    assert 1 <= top.min() and top.max() <= 80
    ranks = det["scores"] > top_s[:, 2] + 1e-6  # its class beats the cell's third best
    assert ranks.any() and (top == det["labels"][:, None]).any(1)[ranks].all()


def test_sliced_inference_adds_boxes(weights_dir: Path, coco: tuple[dict, Path]) -> None:
    pytest.importorskip("sahi")
    from gan_detect.data.full_image import load_image

    image = load_image(str(_first_test_images(coco, 1)[0][1]))
    whole = YoloxNanoDetector(weights_dir, num_threads=1)
    sliced = YoloxNanoDetector(weights_dir, num_threads=1, tile_sizes=(320,))
    assert len(sliced.tiles(*image.shape[1:])) >= 2
    assert len(sliced.candidates(image)[0]) > len(whole.candidates(image)[0])
    boxes = sliced.detect(image)["boxes"]
    assert boxes[:, 2].max() <= image.shape[2] and boxes.min() >= 0


def test_propose_cli_writes_coco_category_ids(
    weights_dir: Path, coco: tuple[dict, Path], tmp_path: Path
) -> None:
    """``gan-detect propose --images=DIR detector.arch=yolox_nano detector.weights=PATH``."""
    from gan_detect.app.cli import main

    images = tmp_path / "images"
    images.mkdir()
    chosen = _first_test_images(coco, 2)
    for _, path in chosen:
        (images / path.name).symlink_to(path)
    out = tmp_path / "props"
    argv = ["propose", f"--images={images}", f"--out={out}", "detector.arch=yolox_nano"]
    assert main([*argv, f"detector.weights={weights_dir}"]) == 0
    dets = json.loads((out / "proposals.json").read_text())
    assert {d["image_id"] for d in dets} == {i for i, _ in chosen}
    assert {d["category_id"] for d in dets} <= set(COCO_CATEGORY_IDS)
    assert 1 in {d["category_id"] for d in dets}  # persons: every image of the subset has one
    assert min(d["score"] for d in dets) >= 0.001
    # The detector's three best classes per box travel in the file and are read back.
    assert all(len(d["class_scores"]) == 3 for d in dets)
    assert {c for d in dets for c, _ in d["class_scores"]} <= set(COCO_CATEGORY_IDS)
    from gan_detect.data.proposals import read_coco_results

    props = read_coco_results(
        out / "proposals.json", {c: i + 1 for i, c in enumerate(COCO_CATEGORY_IDS)}
    )
    p = next(iter(props.values()))
    assert p.class_labels is not None and p.class_labels.shape == (len(p), 3)
    assert p.class_labels.max() <= 80


def test_pipeline_and_predict_take_it(coco: tuple[dict, Path], tmp_path: Path) -> None:
    """``Pipeline.coco`` names COCO classes; ``export_pipeline`` / ``Pipeline.load`` keep it;
    ``gan-detect predict --detector yolox_nano`` writes a person box."""
    from PIL import Image

    from gan_detect.app.cli import main
    from gan_detect.infer.pipeline import Pipeline, export_pipeline

    path = _first_test_images(coco, 1)[0][1]
    pipe = Pipeline.coco("yolox_nano", score_threshold=0.5)
    with Image.open(path) as im:
        det = pipe(im)
    assert "person" in det.label_names
    assert set(det.label_names) <= set(COCO_CLASS_NAMES)
    saved = export_pipeline("yolox_nano", None, tmp_path / "pipeline.pt", COCO_CLASS_NAMES)
    again = Pipeline.load(saved, score_threshold=0.5)
    assert isinstance(again.detector, YoloxNanoDetector)
    with Image.open(path) as im:
        assert again(im).label_names == det.label_names
    out = tmp_path / "pred"
    assert main(["predict", str(path), f"--out={out}", "--detector=yolox_nano"]) == 0
    rows = json.loads((out / f"{path.stem}.json").read_text())["detections"]
    assert any(r["label_name"] == "person" and r["score"] >= 0.3 for r in rows)
