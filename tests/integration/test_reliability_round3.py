"""Reliability, round three (issue 34): every file read back is checked; photos read as shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_detect.data.image_io import image_size, load_image, read_image
from gan_detect.data.paths import shared_data_dir
from gan_detect.utils.errors import InputError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _two_halves(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue (raw pixels, before any EXIF orientation)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2 :] = BLUE
    return Image.fromarray(arr)


def _exif_rotated_jpeg(path: Path) -> Path:
    """A phone photo: raw 40x20 pixels, EXIF orientation 6 (shown rotated 90 degrees CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    _two_halves().save(path, quality=95, exif=exif)
    return path


def _close(px: tuple[int, ...], want: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(px[:3], want, strict=True))


def test_exif_rotated_photo_is_read_as_shown_by_every_entry_point(tmp_path: Path) -> None:
    from gan_detect.app.predict import _open_rgb
    from gan_detect.infer.pipeline import to_image_tensor

    path = _exif_rotated_jpeg(tmp_path / "phone.jpg")
    im = read_image(path)
    # Rotated 90 degrees clockwise: 20 wide, 40 tall, the raw left (red) half now on top.
    assert im.size == (20, 40)
    assert _close(im.getpixel((10, 5)), RED) and _close(im.getpixel((10, 35)), BLUE)
    assert image_size(path) == (40, 20)  # (H, W) from the header agrees with the decode
    ref = np.asarray(im)
    t = load_image(path)  # training, propose, evaluate (FullImageDataset, ROI store)
    assert tuple(t.shape) == (3, 40, 20)
    np.testing.assert_array_equal((t * 255).round().byte().permute(1, 2, 0).numpy(), ref)
    np.testing.assert_array_equal(np.asarray(_open_rgb(path)), ref)  # predict
    with Image.open(path) as raw:  # the Python API on an opened photo
        api = to_image_tensor(raw)
    np.testing.assert_array_equal((api * 255).round().byte().permute(1, 2, 0).numpy(), ref)


def test_sixteen_bit_and_integer_grayscale_are_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "g32.tif")
    want = np.rint(ramp / 257.0)
    for name in ("g16.png", "g32.tif"):
        got = np.asarray(read_image(tmp_path / name)).astype(np.int64)
        assert got.shape == (32, 32, 3)
        assert np.abs(got[..., 0] - want).max() <= 1, name
        assert (got[..., 0] == got[..., 2]).all()
        assert got.mean() < 200  # a bare convert("RGB") makes almost every pixel 255


def test_float_image_in_unit_range_is_scaled_and_nan_is_black(tmp_path: Path) -> None:
    arr = np.full((8, 8), 0.5, np.float32)
    arr[0, 0] = np.nan
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    got = np.asarray(read_image(tmp_path / "f.tif"))
    assert got[4, 4].tolist() == [128, 128, 128] and got[0, 0].tolist() == [0, 0, 0]


def test_transparent_pixels_show_the_background_not_the_palette_key(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 255, 0, 200, 30, 30] + [0] * 762)  # index 0 = green colour key
    pal.paste(0, (0, 0, 4, 8))
    pal.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(read_image(tmp_path / "p.png"))
    assert got[2, 2].tolist() == [255, 255, 255]  # transparent: white, never the key's green
    assert got[2, 6].tolist() == [200, 30, 30]
    la = Image.fromarray(np.stack([np.full((8, 8), 40, np.uint8), np.zeros((8, 8), np.uint8)], 2))
    assert la.mode == "LA"
    la.save(tmp_path / "la.png")
    assert np.asarray(read_image(tmp_path / "la.png"))[0, 0].tolist() == [255, 255, 255]


def test_cmyk_photo_keeps_its_colours(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    assert _close(read_image(tmp_path / "c.jpg").getpixel((8, 8)), (255, 0, 0), tol=20)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(InputError, match="notes.jpg: not a readable image"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def _valid_fitted() -> dict:
    from gan_detect.infer.fusion_fit import fit_fusions

    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.4).astype(np.float64)
    rows = {
        "det": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, n), 0.01, 0.99),
        "d": np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, n), 0.01, 0.99),
        "size": rng.uniform(4, 120, n),
        "label": y,
    }
    return json.loads(json.dumps(fit_fusions(rows)))


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda f: '{"learned": {"kind": "lear', "not valid JSON"),
        (lambda f: json.dumps([f["learned"]]), "expected an object"),
        (lambda f: json.dumps({"learned": {**f["learned"], "edges": None}}), "'edges'"),
        (
            lambda f: json.dumps(
                {"learned": {**f["learned"], "weights": [[float("nan"), 1.0, 0.0]] * 5}}
            ),
            "non-finite",
        ),
        (
            lambda f: json.dumps(
                {"learned": {**f["learned"], "weights": f["learned"]["weights"][:3]}}
            ),
            "must be 5 rows",
        ),
        (lambda f: json.dumps({"learned": {**f["learned"], "edges": [10, 5, 40, 80]}}), "increase"),
        (lambda f: json.dumps({"size_gated": {"threshold": "big"}}), "'threshold'"),
    ],
)
def test_damaged_score_fusion_json_is_one_error_naming_it(
    tmp_path: Path, damage, needle: str
) -> None:
    from gan_detect.infer.fusion_fit import FUSION_FILE, fusion_for_checkpoint, load_fusion

    fitted = _valid_fitted()
    assert load_fusion(tmp_path) is None
    (tmp_path / FUSION_FILE).write_text(json.dumps(fitted))
    assert load_fusion(tmp_path)["learned"]["weights"] == fitted["learned"]["weights"]
    (tmp_path / FUSION_FILE).write_text(damage(fitted))
    (tmp_path / "checkpoints").mkdir()
    for call in (
        lambda: load_fusion(tmp_path),
        lambda: fusion_for_checkpoint(tmp_path / "checkpoints" / "last.ckpt"),
    ):
        with pytest.raises(InputError, match=needle) as err:
            call()
        assert str(tmp_path / FUSION_FILE) in str(err.value) and "\n" not in str(err.value)


def test_fitted_fusion_params_are_checked_wherever_they_come_from() -> None:
    from gan_detect.infer.inference import InferenceOptions

    good = _valid_fitted()["learned"]
    InferenceOptions(score_fusion="learned", fusion_params=good)
    bad = {**good, "weights": good["weights"][:-1]}  # a pipeline file whose table is short
    with pytest.raises(InputError, match="fusion_params: learned: 'weights' must be 5 rows"):
        InferenceOptions(score_fusion="learned", fusion_params=bad)
    with pytest.raises(InputError, match="needs a fitted combiner") as err:
        InferenceOptions(score_fusion="size_gated")
    assert "fit-fusion" not in str(err.value)  # no such command


def test_learned_fusion_without_a_fitted_file_names_the_file(tmp_path: Path) -> None:
    from gan_detect.infer.fusion_fit import FUSION_FILE, fusion_for_checkpoint

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    assert fusion_for_checkpoint(ckpt, needed="d_only") is None
    with pytest.raises(InputError, match="does not exist") as err:
        fusion_for_checkpoint(ckpt, needed="learned")
    assert str(tmp_path / "run" / FUSION_FILE) in str(err.value)
    assert "fit-fusion" not in str(err.value)
    (tmp_path / "run" / FUSION_FILE).write_text(json.dumps({"size_gated": {"threshold": 12.0}}))
    with pytest.raises(InputError, match="has no 'learned' entry"):
        fusion_for_checkpoint(ckpt, needed="learned")
    assert fusion_for_checkpoint(ckpt, needed="size_gated")["size_gated"]["threshold"] == 12.0


def _coco_case(tmp_path: Path, n_images: int = 12) -> tuple[Path, list[dict]]:
    """Ground truth of ``n_images`` images (two objects each) and a perfect results list."""
    rng = np.random.default_rng(1)
    images, anns, res = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 200})
        for _ in range(2):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(10, 40, 2)
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                 "area": w * h, "iscrowd": 0}
            )  # fmt: skip
            res.append({"image_id": i, "category_id": 1, "bbox": [x, y, w, h], "score": 0.9})
    gt = tmp_path / "instances.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    return gt, res


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2', "not valid JSON"),
        ('{"image_id": 1}', "a JSON list of detections, got a JSON object"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]', "entry 0: missing score"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}]', "finite"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5}]', "negative"),
        (
            '[{"image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5}]',
            "category_id 7",
        ),
    ],
)
def test_bad_coco_results_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    from gan_detect.app.cli import main
    from gan_detect.metrics.coco_map import evaluate_coco_files

    gt, _ = _coco_case(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert main(["coco-eval", str(bad), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and needle in err, err
    with pytest.raises(InputError, match=needle):  # the torchmetrics path reads it the same way
        evaluate_coco_files(gt, bad)


def test_compare_of_results_on_different_images_gives_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.cli import main

    gt, res = _coco_case(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([r for r in res if r["image_id"] <= 6]))  # half the images
    b.write_text(json.dumps(res + [{**res[0], "image_id": 999}]))  # an id the GT lacks
    out = tmp_path / "cmp.json"
    with pytest.warns(UserWarning) as caught:
        assert main(["coco-eval", str(a), "--gt", str(gt), "--compare", str(b),
                     "--bootstrap", "50", "--json", str(out)]) == 0  # fmt: skip
    messages = [str(w.message) for w in caught]
    assert any(
        "cover different images" in m and "A has detections on 6 of 12" in m for m in messages
    )
    assert any(
        m.startswith(f"{b}: 1 detections are on images not in the ground truth") for m in messages
    )
    res_json = json.loads(out.read_text())
    assert "cover different images" in res_json["notice"]
    assert (
        res_json["a"]["images_with_detections"] == 6
        and res_json["b"]["images_with_detections"] == 12
    )
    capsys.readouterr()
    # The same images on both sides: no notice.
    with warnings_none():
        assert (
            main(["coco-eval", str(b), "--gt", str(gt), "--compare", str(b), "--bootstrap", "0"])
            == 0
        )


class warnings_none:  # noqa: N801 - reads as a context manager
    """Fails when a 'cover different images' warning is raised inside."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        assert not [w for w in self._caught if "cover different images" in str(w.message)]


def test_bootstrap_is_capped_and_json_folder_checked_before_evaluating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.cli import main

    gt, res = _coco_case(tmp_path)
    a = tmp_path / "a.json"
    a.write_text(json.dumps(res))
    assert main(["coco-eval", str(a), "--gt", str(gt), "--compare", str(a),
                 "--bootstrap", "10000000"]) == 2  # fmt: skip
    assert "--bootstrap 10000000 is too many: at most 20000" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "cmp.json"
    assert main(["coco-eval", str(a), "--gt", str(gt), "--json", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"--json {missing}: folder {missing.parent} does not exist" in err


def test_wider_predictions_with_negative_sizes_are_refused(tmp_path: Path) -> None:
    from gan_detect.metrics.compare import read_wider_predictions
    from gan_detect.metrics.wider_gt import WiderGroundTruth

    gt = WiderGroundTruth(["0--Parade/a"], [np.array([[10, 10, 20, 20]])], [np.ones((1, 3), bool)])
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "a.txt").write_text("a\n2\n1 1 5 5 0.9\n10 10 -20 20 0.8\n")
    with pytest.raises(InputError, match=r"0--Parade/a\.txt: box 2 .* negative width"):
        read_wider_predictions(tmp_path, gt)


def test_wider_eval_images_naming_unknown_ids_names_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.cli import main
    from gan_detect.metrics.wider_gt import UnknownImageIds, WiderGroundTruth

    gt = WiderGroundTruth(["0--Parade/a"], [np.array([[10, 10, 20, 20]])], [np.ones((1, 3), bool)])
    with pytest.raises(UnknownImageIds, match="1 of 2 image ids are not in"):
        gt.subset({"0--Parade/a", "9--Nope/b"})
    data = shared_data_dir()
    if data is None or not (data / "widerface" / "ground_truth").is_dir():
        pytest.skip("WIDER FACE ground truth not found (GAN_DETECT_DATA)")
    listed = tmp_path / "ids.txt"
    listed.write_text("0--Parade/0_Parade_marchingband_1_465\nnot/an_image\n")
    pred = tmp_path / "pred"
    (pred / "0--Parade").mkdir(parents=True)
    (pred / "0--Parade" / "0_Parade_marchingband_1_465.txt").write_text(
        "0_Parade_marchingband_1_465\n1\n1 1 5 5 0.9\n"
    )
    rc = main(["wider-eval", str(pred), "--gt", str(data / "widerface" / "ground_truth"),
               "--images", str(listed)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"--images {listed}: 1 of 2 image ids are not in" in err, err


# ---- (5) one-line errors for user input; config values checked at load ---------------------


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.fusion_holdout_fraction=1", "'data.fusion_holdout_fraction': must be in [0, 1)"),
        ("data.fusion_holdout_fraction=-0.1", "'data.fusion_holdout_fraction': must be in [0, 1)"),
        ("detector.tile_sizes=[8]", "'detector.tile_sizes': tile sides are px >= 16"),
        ("detector.tile_sizes=[256,256]", "repeats a size"),
        ("detector.tile_overlap=1.0", "'detector.tile_overlap': must be in [0, 1)"),
        ("evaluate.split=test", "'evaluate.split': must be one of"),
    ],
)
def test_config_values_are_checked_when_the_config_loads(override: str, needle: str) -> None:
    from gan_detect.config import PRESETS
    from gan_detect.config.load import load_config
    from gan_detect.config.validate import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config([PRESETS / "tiny_face_wider.yaml"], [override])
    assert needle in str(err.value)
    load_config([PRESETS / "tiny_face_wider.yaml"], ["data.fusion_holdout_fraction=0.25"])


def _gan_checkpoint(path: Path) -> Path:
    """A real (untrained) tiny GAN checkpoint in the training module's layout."""
    import torch

    from gan_detect.config import PRESETS
    from gan_detect.config.load import load_config
    from gan_detect.config.validate import to_container
    from gan_detect.variants import build_variant

    cfg = load_config([PRESETS / "tiny_face_wider.yaml", PRESETS / "smoke.yaml"])
    variant = build_variant(cfg.variant, cfg.data.num_classes)
    state = {f"variant.{k}": v for k, v in variant.state_dict().items()}
    torch.save({"hyper_parameters": {"config": to_container(cfg)}, "state_dict": state}, path)
    return path


def test_predict_gan_checkpoint_missing_a_weight_or_with_a_newer_key_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from gan_detect.app.cli import main
    from gan_detect.infer.pipeline import Pipeline
    from gan_detect.utils.checkpoints import CheckpointError

    ckpt = _gan_checkpoint(tmp_path / "gan.ckpt")
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"].pop(next(iter(state["state_dict"])))
    missing = tmp_path / "missing.ckpt"
    torch.save(state, missing)
    with pytest.raises(CheckpointError, match=rf"^{missing}: does not fit .*Missing key"):
        Pipeline.retinaface(missing)
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["config"]["variant"]["from_the_future"] = 1
    newer = tmp_path / "newer.ckpt"
    torch.save(state, newer)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    rc = main(["predict", str(img), "--gan", str(newer), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and f"{newer}: does not fit" in err, err


def test_holdout_without_positives_fails_before_training(tmp_path: Path) -> None:
    from gan_detect.config import PRESETS
    from gan_detect.config.load import load_config
    from gan_detect.data import build_datamodule
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals
    from gan_detect.data.synthetic import write_synthetic_faces
    from gan_detect.data.wider_face import read_wider_annotations
    from gan_detect.infer.fusion_fit import check_holdout_can_fit

    data = write_synthetic_faces(tmp_path / "faces", num_train=8, num_val=2, seed=0)
    ann = data / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    recs = read_wider_annotations(ann, data / "WIDER_train" / "images").records
    far = Proposals(np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([0.5]), np.array([1]))
    props = tmp_path / "props"
    write_wider_tree({r.image_id: far for r in recs}, props)  # nowhere near a face

    def dm(*extra: str):  # type: ignore[no-untyped-def]
        cfg = load_config(
            [PRESETS / "tiny_face_wider.yaml", PRESETS / "smoke.yaml"],
            [f"data.root={data}", "data.max_train_images=null", "data.fusion_holdout_fraction=0.25",
             f"data.cache_dir={tmp_path / 'cache'}", *extra],
        )  # fmt: skip
        return build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)

    with pytest.raises(InputError, match="set data.train_proposals"):
        check_holdout_can_fit(dm(), 0.25)
    with pytest.raises(
        InputError, match=r"fusion_holdout_fraction=0.25: the \d+ held-out .* 0 true"
    ):
        check_holdout_can_fit(dm(f"data.train_proposals={props}"), 0.25)

    def near(r):  # type: ignore[no-untyped-def]
        """The first face exactly (when there is one) and a far-off box."""
        boxes = np.concatenate([r.boxes[:1], [[0.0, 0.0, 2.0, 2.0]]])
        scores = np.linspace(0.9, 0.1, len(boxes))
        return Proposals(boxes, scores, np.ones(len(boxes), np.int64))

    write_wider_tree({r.image_id: near(r) for r in recs}, tmp_path / "near")
    check_holdout_can_fit(dm(f"data.train_proposals={tmp_path / 'near'}"), 0.25)


# ---- (6) relocatable run folders; (7) names, seeds --------------------------------------------


def test_moved_run_folder_is_read_at_its_new_place(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from gan_detect.app.commands._common import config_files_and_overrides
    from gan_detect.config import PRESETS
    from gan_detect.config.load import MovedRunWarning, load_config
    from gan_detect.config.validate import to_container

    old, new = tmp_path / "run", tmp_path / "moved" / "lr=0.1"
    cfg = load_config(
        [PRESETS / "tiny_face_wider.yaml"],
        [f"output_dir={old}", f"data.cache_dir={old}/cache", "data.root=/data/faces"],
    )
    (new / "checkpoints").mkdir(parents=True)  # mv run moved/lr=0.1
    OmegaConf.save(OmegaConf.create(to_container(cfg)), new / "config.yaml")
    with pytest.warns(MovedRunWarning, match="is not the folder it lives in"):
        moved = load_config([new / "config.yaml"])
    assert moved.output_dir == str(new) and moved.data.cache_dir == f"{new}/cache"
    assert moved.data.root == "/data/faces"  # outside the run: unchanged
    with pytest.warns(MovedRunWarning):
        chosen = load_config([new / "config.yaml"], [f"output_dir={tmp_path / 'other'}"])
    assert chosen.output_dir == str(tmp_path / "other")  # an override still wins
    # The folder's own config (not moved), and a config.yaml outside any run: no change.
    OmegaConf.save(OmegaConf.create(to_container(moved)), new / "config.yaml")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", MovedRunWarning)
        assert load_config([new / "config.yaml"]).output_dir == str(new)
        (tmp_path / "plain").mkdir()
        OmegaConf.save(OmegaConf.create(to_container(cfg)), tmp_path / "plain" / "config.yaml")
        assert load_config([tmp_path / "plain" / "config.yaml"]).output_dir == str(old)
    # A config path with "=" in it is a file, not an override.
    files, overrides = config_files_and_overrides(
        [str(new / "config.yaml"), "trainer.max_epochs=2"]
    )
    assert files == [str(new / "config.yaml")] and overrides == ["trainer.max_epochs=2"]


def test_output_names_never_collide() -> None:
    from gan_detect.app.predict import output_names

    base = Path("/imgs")
    for files in (["x.png", "x.png.jpg"], ["x.png", "x.jpg", "x.png.jpg"], ["a/b.jpg", "a/b.png",
                  "a/b.png.png", "summary.jpg"]):  # fmt: skip
        names = output_names([base / f for f in files], base)
        jsons = [n.with_name(n.name + ".json") for n in names]
        assert len(set(jsons)) == len(files) and Path("summary.json") not in jsons, names


def test_demo_seeds_are_run_and_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app import demo

    ran: list[int] = []
    summarised: list[list[int]] = []
    monkeypatch.setattr(demo, "run_demo", lambda out, quick=False, seed=0: ran.append(seed))
    monkeypatch.setattr(demo, "seeds_summary", lambda out, seeds, n: summarised.append(seeds) or {})
    demo.run_demo_seeds(tmp_path, [0, 0, 1], quick=True, n_boot=10)
    assert ran == [0, 1] and summarised == [[0, 1]]
    assert "repeat a seed; running each once: [0, 1]" in capsys.readouterr().err


def test_every_built_in_proposer_caps_huge_images() -> None:
    import torch

    from gan_detect.detector.fastestdet import FastestDetDetector
    from gan_detect.detector.onnx_common import ImageListDetector
    from gan_detect.detector.retinaface import RetinaFaceDetector

    assert issubclass(FastestDetDetector, ImageListDetector)
    assert issubclass(RetinaFaceDetector, ImageListDetector)

    class Probe(ImageListDetector):
        max_pixels = 160 * 120

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, ...]] = []

        def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            self.seen.append(tuple(image.shape))
            h, w = image.shape[1:]
            box = torch.tensor([[0.0, 0.0, float(w), float(h)]])  # the whole (scaled) image
            return {
                "boxes": box,
                "scores": torch.ones(1),
                "labels": torch.ones(1, dtype=torch.int64),
            }

    probe = Probe()
    with pytest.warns(UserWarning, match=r"Probe: a 640x480 image .* scaled by 0\.25"):
        (props,) = probe.predict([torch.rand(3, 480, 640)])
    assert probe.seen == [(3, 120, 160)]
    np.testing.assert_allclose(props.boxes, [[0, 0, 640, 480]])  # mapped back to the input
    probe.predict([torch.rand(3, 100, 100)])
    assert probe.seen[-1] == (3, 100, 100)  # small images untouched


def test_refused_resume_does_not_first_say_it_resumes(tmp_path: Path) -> None:
    import warnings

    import torch

    from gan_detect.config import PRESETS
    from gan_detect.config.load import load_config
    from gan_detect.train.resume import resume_checkpoint
    from gan_detect.utils.checkpoints import CheckpointError

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    base = torch.load(_gan_checkpoint(tmp_path / "g.ckpt"), weights_only=True)
    old = run / "checkpoints" / "epoch000.ckpt"
    torch.save({**base, "epoch": 0, "global_step": 4}, old)
    torch.save({**base, "epoch": 2, "global_step": 12}, run / "hpc_ckpt_1.ckpt")  # newer
    os.utime(old, (1_000_000, 1_000_000))  # the SLURM save is the later file, whatever the clock
    cfg = load_config([PRESETS / "tiny_face_wider.yaml"], [f"output_dir={run}", f"resume={old}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="epoch 0 .* is older than hpc_ckpt_1.ckpt"):
            resume_checkpoint(cfg)
    assert not [w for w in caught if "resuming from it as asked" in str(w.message)]


def test_propose_images_skips_an_unreadable_file_and_lists_it(tmp_path: Path) -> None:
    import torch

    from gan_detect.data.proposals import read_wider_tree
    from gan_detect.detector.onnx_common import ImageListDetector
    from gan_detect.detector.propose import SKIPPED_FILE, WIDER_DIR, propose_folder

    class Whole(ImageListDetector):
        score_thresh, nms_thresh, detections_per_img = 0.02, 0.4, 10

        def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            h, w = image.shape[1:]
            return {"boxes": torch.tensor([[1.0, 1.0, w - 1.0, h - 1.0]]),
                    "scores": torch.tensor([0.9]), "labels": torch.ones(1, dtype=torch.int64)}  # fmt: skip

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.new("RGB", (40, 30), (90, 90, 90)).save(folder / name)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")  # a truncated download
    out = tmp_path / "props"
    with pytest.warns(UserWarning, match="1 of 3 images under .* were unreadable"):
        written = propose_folder(folder, out, Whole(), progress=False)
    skipped = json.loads((out / SKIPPED_FILE).read_text())
    assert [s["image_id"] for s in skipped] == ["photos/b"] and "b.jpg" in skipped[0]["error"]
    props = read_wider_tree(out / WIDER_DIR)
    assert sorted(props) == ["photos/a", "photos/c"] and "wider" in written


# ---- (1) no cache or run file is ever unpickled; disk full names the file in plain words ---------


def test_no_cache_or_run_file_is_unpickled_by_the_package() -> None:
    import re

    root = Path(__file__).resolve().parents[2] / "gan_detect"
    risky = re.compile(
        r"pickle\.loads?\(|allow_pickle\s*=\s*True|import (joblib|shelve|dill)|weights_only\s*=\s*False\)"
    )
    found = []
    for f in root.rglob("*.py"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            # save_checkpoint(weights_only=False) writes the full training state; loads are
            # weights_only=True (test_reliability checks every torch.load).
            if risky.search(code) and "save_checkpoint" not in code:
                found.append(f"{f.name}:{n}: {line.strip()}")
    assert not found, found


def test_checkpoint_write_failure_is_plain_words_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from gan_detect.app.cli import _one_line
    from gan_detect.utils.checkpoints import atomic_torch_save

    def fail(*a: object, **k: object) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", fail)
    target = tmp_path / "last.ckpt"
    with pytest.raises(OSError) as err:
        atomic_torch_save({"a": 1}, target)
    line = _one_line(err.value)
    assert str(target) in line and "is the disk full?" in line and "MB free there" in line
    assert "inline_container" not in line and "enforce fail" not in line


def test_bad_coco_ground_truth_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.cli import main

    gt, res = _coco_case(tmp_path)
    results = tmp_path / "r.json"
    results.write_text(json.dumps(res))
    good = json.loads(gt.read_text())
    for damage, needle in (
        ({**good, "images": [{"file_name": "x.jpg"}]}, "images[0] needs an integer id"),
        ({**good, "annotations": [{**good["annotations"][0], "image_id": 999}]}, "annotations[0]"),
        ([good], "expected a COCO instances object"),
    ):
        gt.write_text(json.dumps(damage))
        assert main(["coco-eval", str(results), "--gt", str(gt)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{gt}: " in err and needle in err, err


def test_report_on_a_cut_off_metrics_file_names_it(tmp_path: Path) -> None:
    from gan_detect.app.report import load_run

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text('{"baseline": {"ap_hard": 0.2')
    with pytest.raises(InputError, match=r"metrics\.json: not valid JSON"):
        load_run(tmp_path)


def test_flipped_bytes_inside_a_checkpoint_tensor_are_detected(tmp_path: Path) -> None:
    import zipfile

    from gan_detect.utils.checkpoints import CheckpointError, load_checkpoint

    ckpt = _gan_checkpoint(tmp_path / "gan.ckpt")
    load_checkpoint(ckpt, expect="gan")  # intact: loads
    with zipfile.ZipFile(ckpt) as z:
        rec = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(ckpt.read_bytes())
    raw[rec.header_offset + 100 + rec.file_size // 2] ^= 0x40  # inside the tensor's bytes
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"^{flipped}: damaged checkpoint: .* CRC check"):
        load_checkpoint(flipped, expect="gan")
