"""The real-COCO experiment command (experiments/real_coco.py) end to end in its --quick mode."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gan_detect.data.paths import shared_data_dir

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "real_coco.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_coco_experiment", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_missing_images_name_the_fetch_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _script()
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "test": []}))
    args = ["--images", str(tmp_path / "nowhere"), "--instances", str(inst), "--split", str(split)]
    assert rc.main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "fetch_coco_val2017_person.py" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_real_coco_experiment_runs_every_row_and_caches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="FastestDet needs onnxruntime")
    pytest.importorskip("cv2", reason="FastestDet needs opencv-python")
    root = shared_data_dir()
    if root is None or not (root / "coco" / "coco128_train2017" / "train2017").is_dir():
        pytest.skip("coco128 not found in the shared data folder (GAN_DETECT_DATA)")
    if not (root / "coco" / "val2017_person" / "fastestdet" / "FastestDet.onnx").is_file():
        pytest.skip("FastestDet weights not found in the shared data folder")
    rc = _script()
    out = tmp_path / "quick"
    # Two rows keep the suite short: the full model and the control (the ablations are the
    # same code path with other loss weights).
    rows = ["sod", "bicubic"]
    assert (
        rc.main(["--quick", "--bootstrap", "20", "--out", str(out), "--rows", ",".join(rows)]) == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["num_test_images"] == 32 and res["budget"]["train_images"] == 96
    methods = set(res["table"])
    assert rc.DETECTOR in methods
    for key in rows:
        for fusion in ("d_only", "geometric_mean"):
            assert f"{key} / {fusion}" in methods
    assert f"{rc.NO_REFINE} / d_only" in methods
    for vals in res["table"].values():
        assert set(rc.COLS) <= set(vals)
        for c in rc.COLS:
            v = vals[c]["mean"]
            assert v is None or 0.0 <= v <= 100.0
    # The real detector finds the large objects of coco128.
    assert res["table"][rc.DETECTOR]["map_large"]["mean"] > 5.0
    vs_det = res["comparisons"][f"Each row against {rc.DETECTOR}"]
    assert len(vs_det) == len(methods) - 1
    diff = next(iter(vs_det.values()))["map"]["difference"]
    assert diff["low"] is not None and diff["low"] <= diff["point"] <= diff["high"]
    assert len(res["per_class"]["classes"]) == 10
    assert set(res["refinement_ap75"]) >= {"d_only", "geometric_mean"}
    report = (out / "report.md").read_text()
    assert "approximate the official" in report and "AP_tiny" in report
    assert "box refinement" in report
    # A rerun reuses the proposals and the trained rows: no detector and no training time.
    assert rc.main(["--quick", "--bootstrap", "0", "--out", str(out), "--rows", "sod"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["timing"]["proposals_s"] == 0.0 and again["timing"]["train_s"] < 10.0
    assert math.isclose(
        again["table"]["sod / d_only"]["map"]["mean"],
        res["table"]["sod / d_only"]["map"]["mean"],
        abs_tol=1e-9,
    )
