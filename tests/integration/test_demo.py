"""The main job: a shortened demo, the comparison report, and predict on its pipelines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_detect.app.report import COCO_KEYS, WIDER_KEYS, write_report

SECTIONS = [
    "## Metrics",
    "## AP by object size",
    "## Precision-recall curves",
    "## Super-resolved samples",
    "## Training curves",
]


def _table_values(report: str) -> dict[tuple[str, str, int], list[str]]:
    """(run name, method, number of metric columns) -> cells, for both tables of the report
    (columns: run, method, fusion, then the metrics)."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and cells[1] in ("baseline", "gan"):
            rows[(cells[0], cells[1], len(cells) - 3)] = cells[3:]
    return rows


def test_demo_report_has_every_section_and_its_table_equals_the_metrics_files(demo: Path) -> None:
    report = (demo / "report" / "report.md").read_text()
    for s in SECTIONS:
        assert s in report, s
    assert report.count("the baseline on ") == 2  # one verdict sentence per run
    for png in (
        "ap_by_size.png",
        "pr_curves.png",
        "training_curves.png",
        "sr_grid_0.png",
        "sr_grid_1.png",
    ):
        with Image.open(demo / "report" / png) as im:
            assert im.width > 100 and im.height > 100
    rows = _table_values(report)
    checked = 0
    for run, keys in (("faces", WIDER_KEYS), ("faces", COCO_KEYS), ("objects", COCO_KEYS)):
        metrics = json.loads((demo / run / "eval" / "metrics.json").read_text())["metrics"]
        for (name, method, _), cells in rows.items():
            if f"[{run}]" in name and len(cells) == len(keys):
                want = [
                    ("n/a" if metrics[method][k] < 0 else f"{100 * metrics[method][k]:.2f}")
                    for k in keys
                ]
                assert cells == want, (run, method)
                checked += 1
    assert checked == 6  # baseline and gan rows: faces in both tables, objects in the COCO one


def test_demo_log_has_no_progress_bar_redraws_and_its_time_counts_start_up(demo: Path) -> None:
    """Redirected stderr (here: captured) gets the stage messages, not tqdm's carriage returns."""
    err = (demo / "demo_stderr.txt").read_text()
    assert "\r" not in err and "it/s]" not in err
    timings = json.loads((demo / "timings.json").read_text())
    assert timings["total_s"] > timings["stages_s"] > 0  # start-up and imports included


def test_compare_cli_on_two_runs_writes_the_report(demo: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "gan_detect",
            "compare",
            str(demo / "faces"),
            str(demo / "objects"),
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    text = (tmp_path / "report.md").read_text()
    assert all(s in text for s in SECTIONS)
    assert "tiny_face (wider_face)" in text and "sod_mtgan (coco)" in text
    # The table and the verdicts on stdout too, the same rows as report.md's.
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| ") and " | baseline | " in ln]
    assert len(rows) == 3 and all(r in text for r in rows)  # faces twice, objects once
    assert res.stdout.count("the baseline on ") == 2 and "training noise" in res.stdout


def test_compare_names_a_run_without_evaluation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        write_report([tmp_path], tmp_path / "out")


def test_predict_skips_a_corrupt_file_and_draws_at_input_size(demo: Path, tmp_path: Path) -> None:
    imgs = sorted((demo / "data" / "objects" / "val").glob("*.jpg"))[:2]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in imgs:
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.jpg").write_bytes(b"not a jpeg at all")
    Image.open(imgs[0]).convert("L").save(inputs / "gray.png")  # grayscale is converted
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "gan_detect",
            "predict",
            "--ckpt",
            str(demo / "objects"),
            str(inputs),
            "--out",
            str(out),
            "--draw",
            "--score-threshold",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "broken.jpg" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(f["path"]).name for f in summary["failed"]] == ["broken.jpg"]
    assert len(summary["processed"]) == 3
    for entry in summary["processed"]:
        with Image.open(entry["path"]) as a, Image.open(entry["drawn"]) as b:
            assert a.size == b.size

    # The Python API gives the CLI's boxes.
    from gan_detect.infer.pipeline import Pipeline

    pipe = Pipeline.load(demo / "objects", score_threshold=0.0)
    det = pipe(Image.open(inputs / imgs[0].name))
    cli = json.loads((out / f"{imgs[0].stem}.json").read_text())["detections"]
    assert len(cli) == len(det.scores)
    if cli:
        np.testing.assert_allclose([d["box_xyxy"] for d in cli], det.boxes, atol=0.01)
        assert [d["label_name"] for d in cli] == det.label_names
    # numpy and tensor inputs agree with PIL input
    arr = np.asarray(Image.open(inputs / imgs[0].name).convert("RGB"))
    det_np = pipe(arr)
    np.testing.assert_allclose(det_np.scores, det.scores, atol=1e-5)


def test_predict_with_a_demo_pipeline_warns_it_learnt_generated_data(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ckpt runs/demo/faces`` on photos: the pipeline's detector and GAN both learnt
    generated faces, so its confident boxes on a real photo mean little; one warning says so."""
    from gan_detect.app.cli import main

    photo = sorted((demo / "data" / "faces" / "WIDER_val").rglob("*.jpg"))[0]
    Image.open(photo).save(tmp_path / "photo.png")  # a copy outside the generated folder
    args = ["predict", "--ckpt", str(demo / "faces"), str(tmp_path / "photo.png")]
    assert main([*args, "--out", str(tmp_path / "out"), "--score-threshold", "0"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "trained on generated faces" in ln]
    assert len(lines) == 1 and lines[0].startswith("gan-detect predict: warning:")
    # --top-k bounds what is re-scored, and the cut is said (the quick detector proposes many).
    assert (
        main([*args, "--out", str(tmp_path / "k2"), "--score-threshold", "0", "--top-k", "2"]) == 0
    )
    err = capsys.readouterr().err
    assert "only the detector's best 2 per image are kept" in err
    det = json.loads((tmp_path / "k2" / "photo.json").read_text())["detections"]
    assert len(det) <= 2


def test_pipeline_file_loads_with_weights_only(demo: Path) -> None:
    import torch

    bundle = torch.load(demo / "faces" / "pipeline.pt", weights_only=True)
    assert bundle["class_names"] == ["face"] and bundle["gan"] is not None
    assert re.match(r"gan-detect-pipeline/\d+", bundle["format"])
