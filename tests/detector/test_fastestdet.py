"""The built-in FastestDet proposer (ONNX, COCO): decoding on a real image, wiring, weight errors.

Needs ``coco/val2017_person/fastestdet/FastestDet.onnx`` and ``coco/coco128_train2017`` in the
shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``); skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from gan_detect.data.paths import shared_data_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from gan_detect.detector.fastestdet import (  # noqa: E402
    COCO_CATEGORY_IDS,
    FastestDetDetector,
    WeightsError,
    decode,
    resolve_weights,
)

ZEBRA_IMAGE = "000000000034.jpg"  # coco128: one large zebra (about a third of the image)
ZEBRA_ID = 24


def _data() -> Path | None:
    return shared_data_dir()


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    data = _data()
    folder = None if data is None else data / "coco" / "val2017_person" / "fastestdet"
    if folder is None or not (folder / "FastestDet.onnx").is_file():
        pytest.skip("FastestDet.onnx not found (set GAN_DETECT_DATA or use ../shared/data)")
    return folder


@pytest.fixture(scope="module")
def coco128() -> Path:
    data = _data()
    root = None if data is None else data / "coco" / "coco128_train2017"
    if root is None or not (root / "train2017" / ZEBRA_IMAGE).is_file():
        pytest.skip("coco128 not found (set GAN_DETECT_DATA or use ../shared/data)")
    return root


@pytest.fixture(scope="module")
def detector(weights_dir: Path) -> FastestDetDetector:
    return FastestDetDetector(weights_dir, num_threads=1)


def _ground_truth(root: Path, file_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 4) xyxy boxes and (M,) category ids of one coco128 image (crowd left out)."""
    js = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    image_id = next(im["id"] for im in js["images"] if im["file_name"] == file_name)
    anns = [a for a in js["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), torch.tensor(
        [a["category_id"] for a in anns]
    )


def test_category_ids_are_the_official_80() -> None:
    assert len(COCO_CATEGORY_IDS) == 80 and len(set(COCO_CATEGORY_IDS)) == 80
    assert COCO_CATEGORY_IDS[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert COCO_CATEGORY_IDS[-1] == 90 and COCO_CATEGORY_IDS[22] == ZEBRA_ID  # index 22: zebra


def test_decode_grid_geometry() -> None:
    """A lone confident cell decodes to the box the README formula gives, in image pixels."""
    out = np.zeros((1, 85, 22, 22), np.float32)
    out[0, 5] = 1.0  # class 0 certain everywhere, but objectness 0 -> score 0
    out[0, 0, 3, 7] = 1.0  # cell row 3, column 7
    out[0, 1:3, 3, 7] = 0.0  # tanh(0) = 0: centre at the cell's corner
    out[0, 3:5, 3, 7] = 0.0  # sigmoid(0) = 0.5: half the image
    boxes, scores, labels = decode(out, width=440, height=220, score_thresh=0.5)
    assert boxes.shape == (1, 4) and labels.tolist() == [0]
    assert scores.item() == pytest.approx(1.0)
    cx, cy = 7 / 22 * 440, 3 / 22 * 220
    want = [max(cx - 110, 0), max(cy - 55, 0), cx + 110, cy + 55]
    assert boxes[0].tolist() == pytest.approx(want)


def test_large_object_found_on_a_real_image(detector: FastestDetDetector, coco128: Path) -> None:
    """The zebra of a real COCO image: the best detection is it, at IoU > 0.5 with its box."""
    from gan_detect.data.full_image import load_image

    image = load_image(str(coco128 / "train2017" / ZEBRA_IMAGE))
    det = detector([image])[0]
    assert det["boxes"].shape[1] == 4 and det["labels"].min() >= 1 and det["labels"].max() <= 80
    assert torch.all(det["scores"][:-1] >= det["scores"][1:])  # sorted by score
    h, w = image.shape[1:]
    assert det["boxes"][:, 0::2].max() <= w and det["boxes"][:, 1::2].max() <= h
    gt_boxes, gt_cats = _ground_truth(coco128, ZEBRA_IMAGE)
    zebra = gt_boxes[gt_cats == ZEBRA_ID]
    assert len(zebra) >= 1
    top_cat = COCO_CATEGORY_IDS[int(det["labels"][0]) - 1]
    assert top_cat == ZEBRA_ID, f"top detection is category {top_cat}, not zebra"
    assert box_iou(det["boxes"][:1], zebra).max() > 0.5
    assert det["scores"][0] > 0.5


def test_score_threshold_and_budget(detector: FastestDetDetector, coco128: Path) -> None:
    from gan_detect.data.full_image import load_image

    image = load_image(str(coco128 / "train2017" / ZEBRA_IMAGE))
    many = detector([image])[0]  # default 0.001: a proposer's threshold
    assert 20 <= len(many["scores"]) <= 484 and many["scores"].min() >= 0.001
    saved = detector.score_thresh, detector.detections_per_img
    try:
        detector.score_thresh, detector.detections_per_img = 0.3, 5
        few = detector([image])[0]
    finally:
        detector.score_thresh, detector.detections_per_img = saved
    assert 1 <= len(few["scores"]) <= 5 and few["scores"].min() >= 0.3


def test_propose_folder_writes_official_category_ids(
    weights_dir: Path, coco128: Path, tmp_path: Path
) -> None:
    """``gan-detect propose --images=DIR detector.arch=fastestdet detector.weights=PATH``."""
    from gan_detect.app.cli import main

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(coco128 / "train2017" / ZEBRA_IMAGE, images / ZEBRA_IMAGE)
    out = tmp_path / "out"
    rc = main(
        [
            "propose",
            f"--images={images}",
            f"--out={out}",
            "detector.arch=fastestdet",
            f"detector.weights={weights_dir / 'FastestDet.onnx'}",
        ]
    )
    assert rc == 0
    dets = json.loads((out / "proposals.json").read_text())
    assert {d["image_id"] for d in dets} == {34}
    best = max(dets, key=lambda d: d["score"])
    assert best["category_id"] == ZEBRA_ID
    assert min(d["score"] for d in dets) >= 0.001  # FastestDet's own proposal threshold
    # The chosen sliced setting through the same command: more boxes for the same image.
    tiled = tmp_path / "tiled"
    argv = ["propose", f"--images={images}", f"--out={tiled}", "detector.arch=fastestdet"]
    assert main([*argv, f"detector.weights={weights_dir}", "detector.tile_sizes=[176]"]) == 0
    assert len(json.loads((tiled / "proposals.json").read_text())) > len(dets)
    assert main([*argv, "detector.tile_sizes=[x]"]) == 2


def test_pipeline_takes_it(detector: FastestDetDetector, coco128: Path) -> None:
    from PIL import Image

    from gan_detect.infer.inference import InferenceOptions
    from gan_detect.infer.pipeline import Pipeline

    names = [str(i) for i in COCO_CATEGORY_IDS]
    pipe = Pipeline(detector, None, names, InferenceOptions(), score_threshold=0.5)
    with Image.open(coco128 / "train2017" / ZEBRA_IMAGE) as im:
        det = pipe(im)
    assert det.label_names[0] == str(ZEBRA_ID)


def test_weights_resolve_from_folder_or_file(weights_dir: Path) -> None:
    assert resolve_weights(weights_dir) == weights_dir / "FastestDet.onnx"
    assert resolve_weights(weights_dir / "FastestDet.onnx") == weights_dir / "FastestDet.onnx"
    assert (weights_dir / "LICENSE.md").is_file()  # the BSD-3 notice travels with the weights


def test_missing_weights_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FastestDet weights not found") as err:
        FastestDetDetector(tmp_path / "nope.onnx")
    assert str(tmp_path / "nope.onnx") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="without FastestDet.onnx"):
        FastestDetDetector(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all\n" * 10])
def test_garbage_weights_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "FastestDet.onnx"
    bad.write_bytes(content)
    (tmp_path / "LICENSE.md").write_text("licence")
    with pytest.raises(WeightsError, match="not a valid ONNX model") as err:
        FastestDetDetector(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_builtin_arch_is_not_trainable() -> None:
    from gan_detect.detector.module import DetectorModule

    with pytest.raises(ValueError, match="built-in pretrained"):
        DetectorModule({"arch": "fastestdet"})


def test_sliced_inference_keeps_the_large_object_and_adds_boxes(
    weights_dir: Path, coco128: Path
) -> None:
    """Tiles of 256 px plus the whole image: more candidates, the zebra still found whole."""
    pytest.importorskip("sahi")
    from gan_detect.data.full_image import load_image

    image = load_image(str(coco128 / "train2017" / ZEBRA_IMAGE))
    h, w = image.shape[1:]
    sliced = FastestDetDetector(weights_dir, tile_sizes=(256,), num_threads=1)
    tiles = sliced.tiles(h, w)
    assert len(tiles) >= 4 and all(x2 - x1 <= 256 and y2 - y1 <= 256 for x1, y1, x2, y2 in tiles)
    covered = torch.zeros(h, w, dtype=torch.bool)
    for x1, y1, x2, y2 in tiles:
        covered[y1:y2, x1:x2] = True
    assert covered.all()  # the grid leaves no pixel out
    native = FastestDetDetector(weights_dir, num_threads=1)
    n_native = len(native.candidates(image)[0])
    boxes, _, _ = sliced.candidates(image)
    assert len(boxes) > n_native
    assert boxes[:, 0::2].max() <= w and boxes[:, 1::2].max() <= h and boxes.min() >= 0
    det = sliced([image])[0]
    gt_boxes, gt_cats = _ground_truth(coco128, ZEBRA_IMAGE)
    zebra = det["labels"] == COCO_CATEGORY_IDS.index(ZEBRA_ID) + 1
    assert box_iou(det["boxes"][zebra], gt_boxes[gt_cats == ZEBRA_ID]).max() > 0.5


def test_bad_tile_settings_are_refused(weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="tile_sizes"):
        FastestDetDetector(weights_dir, tile_sizes=(8,))


def test_config_route_writes_proposals(weights_dir: Path, coco128: Path, tmp_path: Path) -> None:
    """``gan-detect propose CONFIG detector.arch=fastestdet detector.weights=... tile_sizes``."""
    pytest.importorskip("sahi")
    from gan_detect.app.cli import main

    cfg = tmp_path / "coco128.yaml"
    cfg.write_text(
        "task: detector\n"
        f"output_dir: {tmp_path / 'run'}\n"
        "data:\n  name: coco\n"
        f"  root: {coco128}\n"
        "  num_classes: 80\n  train_split: train2017\n  val_split: train2017\n"
        "  max_val_images: 3\n  val_rois: false\n"
    )
    out = tmp_path / "props"
    rc = main(
        [
            "propose", str(cfg), f"--out={out}", "detector.arch=fastestdet",
            f"detector.weights={weights_dir}", "detector.tile_sizes=[256]",
            "evaluate.proposal_score_thresh=0.001", "evaluate.top_k=1000",
        ]
    )  # fmt: skip
    assert rc == 0
    dets = json.loads((out / "proposals.json").read_text())
    assert len({d["image_id"] for d in dets}) == 3
    assert {d["category_id"] for d in dets} <= set(COCO_CATEGORY_IDS)
    per_image = max(sum(d["image_id"] == i for d in dets) for i in {d["image_id"] for d in dets})
    assert per_image > 484  # more than one whole-image pass can give: the tiles were used


def test_builtin_refuses_tiles_for_retinaface() -> None:
    from gan_detect.detector.builtin import builtin_detector

    with pytest.raises(ValueError, match="fastestdet"):
        builtin_detector("retinaface", tile_sizes=(256,))
    with pytest.raises(ValueError, match="unknown built-in detector .fcos.; valid: fastestdet"):
        builtin_detector("fcos")


def test_fastestdet_arch_is_used_not_trained(capsys: pytest.CaptureFixture[str]) -> None:
    from gan_detect.app.cli import main

    assert main(["fit", "detector_coco", "detector.arch=fastestdet"]) == 2
    assert "fastestdet is a built-in pretrained detector" in capsys.readouterr().err


def test_weights_without_their_licence_warn(weights_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "FastestDet.onnx"
    shutil.copy(weights_dir / "FastestDet.onnx", lone)
    with pytest.warns(UserWarning, match="no LICENSE.md beside"):
        FastestDetDetector(lone)
