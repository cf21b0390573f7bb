"""``predict --format json,wider,coco``: predict's output goes straight to ``wider-eval`` and
``coco-eval`` (round trips on real WIDER FACE and COCO images), and the id checks that come
before any network loads.

The real-image tests need the shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``):
``widerface/`` (val images and the official ground truth), ``coco/coco128_train2017/`` and
``coco/detectors/yolox_nano/``; they skip otherwise.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gan_detect.app.predict as predict_module
from gan_detect.app.cli import main
from gan_detect.app.predict_formats import COCO_FILE, WIDER_DIR, WIDER_LIST, parse_formats
from gan_detect.data.paths import shared_data_dir
from gan_detect.infer.pipeline import Detections

DATA = shared_data_dir()
WIDER = None if DATA is None else DATA / "widerface"
COCO128 = None if DATA is None else DATA / "coco" / "coco128_train2017"
# Two couples (big faces) and a parade (many small ones): all three settings have faces.
VAL_IMAGES = [
    "19--Couple/19_Couple_Couple_19_156",
    "19--Couple/19_Couple_Couple_19_910",
    "0--Parade/0_Parade_Parade_0_628",
]
COCO_IDS = [9, 25, 30, 34]


def _need(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        pytest.skip(f"{what} not found (set GAN_DETECT_DATA or use ../shared/data)")
    return path


def _copy_val_images(dest: Path) -> Path:
    src = _need(WIDER, "widerface") / "WIDER_val" / "images"
    for image_id in VAL_IMAGES:
        (dest / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f"{image_id}.jpg", dest / f"{image_id}.jpg")
    return dest


def test_wider_round_trip_on_real_val_images(tmp_path: Path) -> None:
    """predict (built-in RetinaFace) -> wider_txt/ -> wider-eval --images: the official APs."""
    images = _copy_val_images(tmp_path / "images")
    gt = _need(WIDER, "widerface") / "ground_truth"
    out = tmp_path / "pred"
    argv = ["predict", str(images), f"--out={out}", "--format=json,wider", "--score-threshold=0.02"]
    assert main(argv) == 0
    txts = sorted(p.relative_to(out / WIDER_DIR).with_suffix("").as_posix()
                  for p in (out / WIDER_DIR).rglob("*.txt"))  # fmt: skip
    assert txts == sorted(VAL_IMAGES)
    assert (out / WIDER_LIST).read_text().split() == sorted(VAL_IMAGES)
    assert (out / "0--Parade" / "0_Parade_Parade_0_628.json").is_file()  # json kept too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["formats"]["wider"] == str(out / WIDER_DIR)
    # The WIDER file and the per-image JSON hold the same boxes.
    rows = json.loads((out / "19--Couple" / "19_Couple_Couple_19_910.json").read_text())
    lines = (out / WIDER_DIR / "19--Couple" / "19_Couple_Couple_19_910.txt").read_text().split("\n")
    assert lines[0] == "19_Couple_Couple_19_910" and int(lines[1]) == len(rows["detections"])
    result = tmp_path / "ap.json"
    argv = ["wider-eval", str(out / WIDER_DIR), f"--gt={gt}", f"--images={out / WIDER_LIST}"]
    assert main([*argv, f"--json={result}"]) == 0
    ap = json.loads(result.read_text())
    assert ap["num_images"] == 3 and ap["missing"] == 0 and ap["official_gt_list"] is True
    # RetinaFace-MobileNet0.25 on these three images (measured: 97.7 / 96.2 / 80.9).
    assert ap["ap_easy"] > 0.9 and ap["ap_medium"] > 0.85 and ap["ap_hard"] > 0.6


def _coco_subset_gt(path: Path, rename: dict[int, str] | None = None) -> Path:
    """coco128's instances restricted to ``COCO_IDS`` (file names renamed when asked)."""
    gt = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())  # type: ignore[operator]
    gt["images"] = [im for im in gt["images"] if im["id"] in COCO_IDS]
    for im in gt["images"]:
        im["file_name"] = (rename or {}).get(im["id"], im["file_name"])
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in COCO_IDS]
    path.write_text(json.dumps(gt))
    return path


def test_coco_round_trip_with_and_without_coco_gt(tmp_path: Path) -> None:
    """predict (built-in YOLOX-nano) -> coco_results.json -> coco-eval: integer file names are
    the ids; other names are mapped by --coco-gt's file_name, classes by name."""
    coco = _need(COCO128, "coco128") / "train2017"
    _need(DATA / "coco" / "detectors" / "yolox_nano" / "yolox_nano.onnx", "YOLOX-nano")  # type: ignore[operator]
    files = [coco / f"{i:012d}.jpg" for i in COCO_IDS]
    gt = _coco_subset_gt(tmp_path / "gt.json")
    out = tmp_path / "pred"
    base = ["--detector=yolox_nano", "--score-threshold=0.01"]
    assert main(["predict", *map(str, files), f"--out={out}", "--format=coco", *base]) == 0
    assert not list(out.glob("0*.json"))  # no json in the list: no per-image files
    results = json.loads((out / COCO_FILE).read_text())
    assert {r["image_id"] for r in results} == set(COCO_IDS)
    # Official category ids, not contiguous labels: zebra is 24 and giraffe 25 (labels 23, 24).
    assert {24, 25} <= {r["category_id"] for r in results}
    metrics = tmp_path / "ap.json"
    assert main(["coco-eval", str(out / COCO_FILE), f"--gt={gt}", f"--json={metrics}"]) == 0
    ap = json.loads(metrics.read_text())["metrics"]
    assert ap["map"] > 40 and ap["map_50"] > 60  # in %; measured 75.7 and 95.2
    # The same photos under other names: ids and categories through --coco-gt.
    renamed = tmp_path / "photos"
    renamed.mkdir()
    names = {i: f"photo_{n}.jpg" for n, i in enumerate(COCO_IDS)}
    for i, f in zip(COCO_IDS, files, strict=True):
        shutil.copy(f, renamed / names[i])
    gt2 = _coco_subset_gt(tmp_path / "gt_renamed.json", names)
    out2 = tmp_path / "pred2"
    argv = ["predict", str(renamed), f"--out={out2}", "--format=coco", f"--coco-gt={gt2}", *base]
    assert main(argv) == 0
    again = json.loads((out2 / COCO_FILE).read_text())
    key = sorted((r["image_id"], r["category_id"], r["score"]) for r in results)
    assert sorted((r["image_id"], r["category_id"], r["score"]) for r in again) == key


class _FakePipeline:
    """One 10x10 box per image (label 1, score 0.9): the CLI path without networks."""

    class_names = ["face"]
    detector = None
    fusion = None

    def predict_batch(self, images: Sequence[Any]) -> list[Detections]:
        box = np.array([[1, 1, 11, 11]], np.float32)
        one = (box, np.array([0.9], np.float32), np.array([1]), ["face"])
        return [Detections(*one) for _ in images]


def _img(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (90, 90, 90)).save(path)
    return path


def test_overwrite_replaces_the_tree_and_a_stray_tree_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(predict_module, "_load_pipeline", lambda ns: _FakePipeline())
    for n in range(3):
        _img(tmp_path / "in" / "ev" / f"img{n}.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), f"--out={out}", "--format=wider"]) == 0
    assert len(list((out / WIDER_DIR).rglob("*.txt"))) == 3
    assert "--score-threshold 0.3 leaves out" in capsys.readouterr().err  # evaluation note
    one = str(tmp_path / "in" / "ev" / "img0.jpg")
    assert main(["predict", one, f"--out={out}", "--format=wider"]) == 2  # another run: refused
    assert main(["predict", one, f"--out={out}", "--format=wider", "--overwrite"]) == 0
    assert [p.name for p in (out / WIDER_DIR).rglob("*.txt")] == ["img0.txt"]
    assert (out / WIDER_LIST).read_text() == "ev/img0\n"
    # A tree that no predict run wrote would be mixed into wider-eval's input: refused.
    stray = tmp_path / "stray"
    (stray / WIDER_DIR / "ev").mkdir(parents=True)
    (stray / WIDER_DIR / "ev" / "other.txt").write_text("other\n0\n")
    capsys.readouterr()
    assert main(["predict", one, f"--out={stray}", "--format=wider"]) == 2
    assert "holds a wider_txt/ tree of no predict run" in capsys.readouterr().err


def test_bad_format_requests_fail_before_any_network_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_networks(ns: object) -> None:
        raise AssertionError("the networks must not load for a bad request")

    monkeypatch.setattr(predict_module, "_load_pipeline", no_networks)
    a = _img(tmp_path / "a" / "x" / "img.jpg")
    b = _img(tmp_path / "b" / "x" / "img.jpg")
    named = _img(tmp_path / "c" / "photo.jpg")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 7, "file_name": "other.jpg"}], "annotations": []}))
    out = f"--out={tmp_path / 'out'}"
    cases = [
        ([str(a), str(b), "--format=wider"], "would both be wider_txt/x/img.txt"),
        ([str(named), "--format=coco"], "'photo.jpg' is not an integer file name"),
        ([str(named), "--format=coco", f"--coco-gt={gt}"], "1 of 1 images have no"),
        ([str(named), f"--coco-gt={gt}"], "it goes with --format ...,coco"),
        ([str(named), "--format=json,xml"], "expected a comma list of json, wider, coco"),
        (
            [
                str(_img(tmp_path / "d" / "coco_results.jpg")),
                "--format=json,coco",
                f"--coco-gt={gt}",
            ],
            "would sit in this run's wider_txt/ or be its coco_results.json",
        ),
    ]
    for args, needle in cases:
        assert main(["predict", *args, out]) == 2, needle
        assert needle in capsys.readouterr().err
    assert parse_formats("wider, json,wider") == ("wider", "json")
