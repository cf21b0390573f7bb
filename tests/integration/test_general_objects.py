"""General objects with zero training: ``gan-detect predict photo.jpg --detector yolox_nano|fastestdet
--weights PATH --draw`` runs a built-in COCO detector alone (no GAN) on a real COCO photo and
writes boxes named by COCO class and a drawing of them.

Needs the shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``): the coco128 images
and annotations, ``coco/detectors/yolox_nano/`` and ``coco/val2017_person/fastestdet/``;
skipped otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gan_detect.app.cli import main
from gan_detect.data.paths import shared_data_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

DATA = shared_data_dir()
IMAGE_ID = 36  # coco128: a person under an umbrella
WEIGHTS = {  # the README's sources: a folder, and the .onnx file itself
    "yolox_nano": Path("coco/detectors/yolox_nano"),
    "fastestdet": Path("coco/val2017_person/fastestdet/FastestDet.onnx"),
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    area = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]))
    return inter / (area - inter)


@pytest.mark.parametrize("detector", sorted(WEIGHTS))
def test_builtin_coco_detector_names_and_draws_real_objects(detector: str, tmp_path: Path) -> None:
    from PIL import Image, ImageFont

    from gan_detect.app.predict import BOX_COLOUR, draw_style, label_layout
    from gan_detect.detector.onnx_common import COCO_CLASS_NAMES
    from gan_detect.infer.pipeline import Detections

    coco = None if DATA is None else DATA / "coco" / "coco128_train2017"
    weights = None if DATA is None else DATA / WEIGHTS[detector]
    if coco is None or weights is None or not coco.is_dir() or not weights.exists():
        pytest.skip("coco128 or the detector's weights not found (set GAN_DETECT_DATA)")
    photo = coco / "train2017" / f"{IMAGE_ID:012d}.jpg"
    out = tmp_path / "pred"
    argv = ["predict", str(photo), f"--detector={detector}", f"--weights={weights}", "--draw"]
    assert main([*argv, f"--out={out}"]) == 0
    rows = json.loads((out / f"{photo.stem}.json").read_text())["detections"]
    names = [r["label_name"] for r in rows]
    assert rows and set(names) <= set(COCO_CLASS_NAMES)
    assert all(r["score"] >= 0.3 for r in rows)  # predict's default threshold
    # Each annotated object is found under its own class name (IoU >= 0.5).
    gt = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    cats = {c["id"]: c["name"] for c in gt["categories"]}
    objects = [a for a in gt["annotations"] if a["image_id"] == IMAGE_ID]
    assert sorted(cats[a["category_id"]] for a in objects) == ["person", "umbrella"]
    for a in objects:
        x, y, w, h = a["bbox"]
        truth = np.array([x, y, x + w, y + h])
        same = [np.array(r["box_xyxy"]) for r in rows if r["label_name"] == cats[a["category_id"]]]
        assert max((_iou(truth, b) for b in same), default=0.0) >= 0.5, cats[a["category_id"]]
    # The drawing: the photo's size, the boxes' colour on their edges, labels with class names.
    drawn = Image.open(out / f"{photo.stem}_boxes.png").convert("RGB")
    with Image.open(photo) as im:
        assert drawn.size == im.size
    lw, size = draw_style(*drawn.size)
    x0, y0, x1, y1 = rows[0]["box_xyxy"]
    outline = 2 * lw * ((x1 - x0) + (y1 - y0))  # the best box's edge, in pixels
    with Image.open(photo) as im:
        before = int((np.asarray(im.convert("RGB")) == BOX_COLOUR).all(2).sum())
    after = int((np.asarray(drawn) == BOX_COLOUR).all(2).sum())
    assert after - before > 0.5 * outline  # labels and the legend may cover some of it
    det = Detections(
        np.array([r["box_xyxy"] for r in rows], np.float32),
        np.array([r["score"] for r in rows], np.float32),
        np.array([r["label"] for r in rows]),
        names,
    )
    font = ImageFont.load_default(size=size)
    texts = [t for _, _, t, _ in label_layout(det, *drawn.size, font)]
    assert any(t.startswith("person ") for t in texts)
