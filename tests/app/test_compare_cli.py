"""Comparisons that resolve, at the command line and in the printed verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gan_detect.app.cli import main
from gan_detect.app.demo import verdict_line
from gan_detect.app.report import verdict
from gan_detect.data.paths import shared_data_dir

DATA = shared_data_dir()


def _coco_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 40-image COCO case: B finds every object, A has noisy scores on the same boxes."""
    rng = np.random.default_rng(0)
    images, anns, res_a, res_b = [], [], [], []
    for i in range(1, 41):
        images.append({"id": i, "width": 200, "height": 200})
        for _ in range(3):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 50, 2)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
            res_b.append({"image_id": i, "category_id": 1, "bbox": [x, y, w, h], "score": 0.9})
            res_a.append({"image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                          "score": float(rng.uniform(0.1, 0.9))})  # fmt: skip
            fx, fy = rng.uniform(0, 150, 2)  # a false positive each, scored between
            fp = {"image_id": i, "category_id": 1, "bbox": [fx, fy, 20, 20], "score": 0.5}
            res_a.append(fp)
            res_b.append(fp)
    gt = tmp_path / "instances.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(res_a))
    b.write_text(json.dumps(res_b))
    return gt, a, b


def test_coco_eval_compare_prints_intervals_and_writes_the_json_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, a, b = _coco_files(tmp_path)
    out = tmp_path / "cmp.json"
    assert main(["coco-eval", str(a), "--gt", str(gt), "--compare", str(b),
                 "--bootstrap", "200", "--json", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "95 % interval" in text and "B better" in text
    res = json.loads(out.read_text())
    d = res["difference"]["map_50"]
    assert d["point"] > 0 and d["low"] > 0 and d["high"] >= d["low"]
    assert {"map", "map_50", "map_75", "map_small", "map_tiny"} <= set(res["difference"])
    # The same file against itself: a difference of 0 with a zero-width interval.
    assert main(["coco-eval", str(a), "--gt", str(gt), "--compare", str(a),
                 "--bootstrap", "100", "--json", str(out)]) == 0  # fmt: skip
    same = json.loads(out.read_text())["difference"]["map"]
    assert same["point"] == 0 and same["low"] == 0 and same["high"] == 0
    # One file alone: its AP.
    assert main(["coco-eval", str(b), "--gt", str(gt)]) == 0
    assert "map_50" in capsys.readouterr().out


@pytest.mark.skipif(DATA is None, reason="../shared/data (or GAN_DETECT_DATA) not found")
def test_wider_eval_compare_of_a_prediction_set_with_itself_is_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert DATA is not None
    pred = DATA / "widerface" / "predictions" / "retinaface_mobilenet0.25_biubug6"
    gt = DATA / "widerface" / "ground_truth"
    out = tmp_path / "cmp.json"
    assert main(["wider-eval", str(pred), "--gt", str(gt), "--compare", str(pred),
                 "--bootstrap", "50", "--json", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    for s in ("easy", "medium", "hard"):
        d = res["difference"][s]
        assert d["point"] == 0 and d["low"] == 0 and d["high"] == 0
        assert abs(res["a"][s] - {"easy": 90.708, "medium": 88.165, "hard": 73.827}[s]) < 0.01


def _hard(low: float, high: float, point: float = 5.0) -> dict:
    return {"wider": {"difference": {"hard": {"point": point, "low": low, "high": high}}}}


def test_verdicts_say_better_only_when_the_interval_clears_zero(tmp_path: Path) -> None:
    m = {"baseline": {"ap_hard": 0.20}, "gan": {"ap_hard": 0.25}}
    resolved, unresolved = _hard(1.0, 9.0), _hard(-2.0, 9.0)
    assert "beats" in verdict(m, resolved, 16) and "on these 16 images only" in verdict(
        m, resolved, 16
    )
    assert "not resolved" in verdict(m, unresolved) and "beats" not in verdict(m, unresolved)
    (tmp_path / "comparison.json").write_text(json.dumps(unresolved))
    assert "not resolved" in verdict_line(tmp_path, "ap_hard", m)
    (tmp_path / "comparison.json").write_text(json.dumps(resolved))
    line = verdict_line(tmp_path, "ap_hard", m, 16)
    assert (
        line
        == "GAN - baseline on ap_hard: +5.00 [+1.00, +9.00]: GAN better on these 16 images only"
    )
    # Clearing 0 by no more than the printed precision (0.01) is not a result: it would print
    # as [+0.00, ...] or [+0.01, ...] and is rounding.
    for low in (0.004, 0.01):
        (tmp_path / "comparison.json").write_text(json.dumps(_hard(low, 9.0)))
        assert "not resolved on these 16 images" in verdict_line(tmp_path, "ap_hard", m, 16)
        assert "not resolved" in verdict(m, _hard(low, 9.0), 16)
    (tmp_path / "comparison.json").write_text(json.dumps(_hard(-9.0, -0.02, -4.0)))
    assert verdict_line(tmp_path, "ap_hard", m, 16).endswith("GAN worse on these 16 images only")


def test_a_difference_within_rounding_is_printed_and_not_resolved() -> None:
    """wider-eval --compare once called B - A = 0.0004 AP points (a JSON round trip of the
    scores) "B better" with [+0.000, +0.001]."""
    from gan_detect.metrics.compare import format_comparison_table
    from gan_detect.metrics.resampling import paired_bootstrap

    class Tables:
        metrics = ("hard",)
        n_images = 50

        def __init__(self, offset: float) -> None:
            self.offset = offset

        def ap(self, weights: np.ndarray) -> np.ndarray:
            # A per-image effect, so the resamples spread a little: 4e-6 = 0.0004 AP points.
            share = weights @ np.linspace(0.5, 1.5, self.n_images) / weights.sum(1)
            return (0.7 + self.offset * share)[:, None]

    res = paired_bootstrap(Tables(0.0), Tables(4e-6), n_boot=200, seed=0)
    d = res.metrics["hard"].difference
    assert 0 < d.low < d.high < 0.01  # the interval excludes 0 ...
    assert not d.resolved  # ... but not by more than the printed precision
    layout = {"metrics": ["hard"], "a": {"hard": res.metrics["hard"].a},
              "b": {"hard": res.metrics["hard"].b}, "difference": res.to_dict()["difference"],
              "bootstrap": res.to_dict()["bootstrap"]}  # fmt: skip
    table = format_comparison_table(layout)
    assert "B better" not in table and "not resolved (< 0.01)" in table
    assert "+0.0004" in table  # the difference itself, not +0.000
    assert "over the 50 evaluation images only" in table and "training noise" in table


def test_nested_seed_bootstrap_and_the_demo_seeds_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each seed has its own images (as each demo seed generates its own data): identical
    methods give 0 with a zero-width interval, a method better on every image an interval > 0;
    ``demo --seeds`` summarises finished per-seed runs that way."""
    import gan_detect.app.demo as demo
    from gan_detect.metrics.bootstrap import (
        coco_results_to_dt,
        coco_tables,
        load_coco_gt,
        nested_seed_bootstrap,
    )

    pairs_same, pairs_better = [], []
    for s in range(3):
        d = tmp_path / f"case{s}"
        d.mkdir()
        gt, a, b = _coco_files(d)
        cgt = load_coco_gt(gt)
        ta = coco_tables(cgt, coco_results_to_dt(cgt, a))
        tb = coco_tables(cgt, coco_results_to_dt(cgt, b))
        pairs_same.append((ta, ta))
        pairs_better.append((ta, tb))
    same = nested_seed_bootstrap(pairs_same, n_boot=100)["map_50"]["difference"]
    assert same["point"] == 0 and same["low"] == 0 and same["high"] == 0
    better = nested_seed_bootstrap(pairs_better, n_boot=100)
    assert better["map_50"]["difference"]["low"] > 0 and len(better["map_50"]["diff"]) == 3

    def fake_demo(out_dir: Path, quick: bool = False, seed: int = 0, progress: bool = True) -> Path:
        gt, a, b = _coco_files(tmp_path / f"case{seed}")
        root = Path(out_dir)
        ann = root / "data" / "objects" / "annotations"
        ann.mkdir(parents=True)
        (ann / "instances_val.json").write_text(gt.read_text())
        for method, src in (("baseline", a), ("gan", b)):
            (root / "objects" / "eval" / method).mkdir(parents=True)
            (root / "objects" / "eval" / method / "detections.json").write_text(src.read_text())
        return root

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    summary = demo.run_demo_seeds(tmp_path / "demo", [0, 1, 2], quick=True, n_boot=100)
    assert summary["objects"]["map"]["difference"]["low"] > 0
    out = capsys.readouterr().out
    assert "over seeds [0, 1, 2]" in out and "resolved" in out
    assert (tmp_path / "demo" / "seeds.json").is_file()
