"""predict's file handling and drawing, with a stand-in pipeline (no networks): relative output
paths, missing inputs, decompression bombs, readable drawings, read-only arrays."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFont

from gan_detect.app.cli import main
from gan_detect.app.predict import draw_detections, draw_style, label_layout, run_predict
from gan_detect.infer.pipeline import Detections, to_image_tensor


class FakePipeline:
    """One 10x10 box at the top-left per image, score 0.9."""

    def predict_batch(self, images: Sequence[Any]) -> list[Detections]:
        box = np.array([[1, 1, 11, 11]], np.float32)
        return [Detections(box, np.array([0.9], np.float32), np.array([1]), ["x"]) for _ in images]


def _img(path: Path, size: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


def test_same_file_names_in_two_folders_keep_their_relative_paths(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "in" / "a" / "img.jpg"), _img(tmp_path / "in" / "b" / "img.jpg")
    _img(tmp_path / "in" / "b" / "img.png")  # same stem in one folder: both kept
    s = run_predict(FakePipeline(), [str(tmp_path / "in")], tmp_path / "out", progress=False)
    assert len(s["processed"]) == 3
    assert (tmp_path / "out" / "a" / "img.json").is_file()
    assert json.loads((tmp_path / "out" / "b" / "img.jpg.json").read_text())["image"] == str(b)
    assert (tmp_path / "out" / "b" / "img.png.json").is_file()
    # Two files named on the command line: relative to their common folder.
    s = run_predict(FakePipeline(), [str(a), str(b)], tmp_path / "out2", draw=True, progress=False)
    assert sorted(
        Path(e["json"]).relative_to(tmp_path / "out2").as_posix() for e in s["processed"]
    ) == [
        "a/img.json",
        "b/img.json",
    ]
    assert (tmp_path / "out2" / "a" / "img_boxes.png").is_file()


def test_missing_input_and_no_images_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    # Both fail before the pipeline file is read (it does not exist here).
    assert main(["predict", "--ckpt", str(tmp_path / "nope.pt"), str(tmp_path / "no_such")]) == 2
    assert "no_such" in capsys.readouterr().err
    assert main(["predict", "--ckpt", str(tmp_path / "nope.pt"), str(tmp_path / "empty")]) == 1
    assert "no image found" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nothing_matches"):
        run_predict(FakePipeline(), [str(tmp_path / "nothing_matches*.jpg")], tmp_path / "o")


def test_decompression_bomb_is_skipped_and_the_summary_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _img(tmp_path / "in" / "ok.png", (20, 20))  # 400 px
    _img(tmp_path / "in" / "warn.png", (40, 40))  # 1600 px: over the limit (PIL warns)
    _img(tmp_path / "in" / "bomb.png", (100, 100))  # 10000 px: over twice the limit (PIL raises)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    s = run_predict(FakePipeline(), [str(tmp_path / "in")], tmp_path / "out", progress=False)
    assert [Path(e["path"]).name for e in s["processed"]] == ["ok.png"]
    assert sorted(Path(f["path"]).name for f in s["failed"]) == ["bomb.png", "warn.png"]
    assert {f["error"].split(":")[0] for f in s["failed"]} == {
        "DecompressionBombError",
        "DecompressionBombWarning",
    }
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failed"] == s["failed"]


def _many_boxes(n: int, w: int, h: int) -> Detections:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [w - 20, h - 20], size=(n, 2))
    wh = rng.uniform(4, 30, size=(n, 2))
    boxes = np.c_[xy, xy + wh].astype(np.float32)
    scores = rng.uniform(0.3, 1.0, n).astype(np.float32)
    return Detections(boxes, scores, np.ones(n, np.int64), ["face"] * n)


def test_drawing_at_320x240_has_thick_lines_and_non_overlapping_labels(tmp_path: Path) -> None:
    lw, size = draw_style(320, 240)
    assert lw >= 2 and size >= 11
    assert draw_style(1920, 1080) > (lw, size)  # both grow with the image
    det = _many_boxes(35, 320, 240)
    font = ImageFont.load_default(size=size)
    legend = (0.0, 220.0, 320.0, 240.0)
    labels = label_layout(det, 320, 240, font, max_labels=10, avoid=[legend])
    assert 1 <= len(labels) <= 10
    rects = [r for *_, r in labels]
    assert all(r[3] <= legend[1] for r in rects)  # none under the legend
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 320 and 0 <= a[1] and a[3] <= 240
        for b in rects[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    out = draw_detections(Image.new("RGB", (320, 240)), det, tmp_path / "d.png")
    with Image.open(out) as im:
        assert im.size == (320, 240)
        # the legend (white text on black) sits in the bottom-left corner
        corner = np.asarray(im)[-30:, :150]
        assert (corner == 255).all(axis=-1).any()


def test_read_only_arrays_give_no_warning() -> None:
    arr = np.zeros((8, 8, 3), np.uint8)
    arr.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = to_image_tensor(arr)
        t2 = to_image_tensor(Image.new("RGB", (8, 8)))
    assert t.shape == t2.shape == (3, 8, 8)


def test_without_out_a_second_run_takes_the_next_free_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's predict blocks run in order: the second once met the first's predictions/
    and was refused."""
    import gan_detect.app.predict as predict

    monkeypatch.setattr(predict, "_load_pipeline", lambda ns: FakePipeline())
    monkeypatch.chdir(tmp_path)
    img = _img(tmp_path / "photo.jpg")
    (tmp_path / "predictions_2").write_text("a file, not a folder: skipped")
    for want in ("predictions", "predictions_3", "predictions_4"):
        assert main(["predict", str(img)]) == 0
        out = capsys.readouterr().out
        assert f"1 image processed, 0 failed; results in {want}\n" in out
        assert (tmp_path / want / "photo.json").is_file()
    # --overwrite without --out replaces the default folder's run.
    assert main(["predict", str(img), "--overwrite"]) == 0
    assert "results in predictions\n" in capsys.readouterr().out
    assert not (tmp_path / "predictions_5").exists()
