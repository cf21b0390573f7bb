"""The benchmark tool (``benchmarks/benchmark.py`` = ``gan_detect.app.benchmark``): its quickest
kind end to end into JSONL, the ``--table`` rendering, the mode grid and the recall counter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gan_detect.app.benchmark import KINDS, build_parser, main
from gan_detect.app.benchmark.detector import GroundTruth, RecallCounter, parse_setting
from gan_detect.app.benchmark.modes import modes_from_args
from gan_detect.app.benchmark.table import render
from gan_detect.utils.device import cpu_model

ROOT = Path(__file__).resolve().parents[2]


def test_infer_kind_writes_one_jsonl_line_per_mode_with_machine_and_options(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.jsonl"
    argv = ["--bench", "infer", "--sizes", "tiny", "--variants", "tiny_face", "--rois", "4",
            "--rounds", "1", "--warmup", "1", "--channels-last", "both", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["mode"] for r in lines] == ["fp32", "fp32+channels_last"]
    for r in lines:
        assert r["bench"] == "infer" and r["variant"] == "tiny_face" and r["size"] == "tiny"
        assert r["machine"]["cpu"] == cpu_model()
        assert r["machine"]["torch"] == torch.__version__
        assert r["options"]["channels_last"] == "both" and r["options"]["rois"] == 4
        assert r["rois_per_s"] > 0 and r["rounds"] == 1
        # channels-last changes the memory layout, not the numbers
        assert r["max_abs_score_diff"] < 1e-4
    assert lines[0]["speedup"] == 1.0


def test_table_renders_one_row_per_measurement_and_names_the_machine(tmp_path: Path) -> None:
    machine = {"cpu": "Test CPU 9000", "cores": 2, "gpu": None, "torch": "9.9", "loadavg_1m": 0.5}
    recs = [
        {"bench": "train", "mode": "fp32", "step_s": 0.345, "rounds": 8, "machine": machine},
        {"bench": "train", "mode": "fp32+channels_last", "step_s": 0.19212345, "rounds": 8,
         "machine": machine, "options": {"sizes": ["small"]}},
        {"bench": "eval", "what": "coco", "backend": "pycocotools", "seconds": 3.92,
         "machine": machine},
    ]  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    md = render([path])
    assert "### train" in md and "### eval (coco)" in md
    assert "Machine: Test CPU 9000, 2 cores, no GPU, torch 9.9" in md
    assert "| mode | step_s | rounds |" in md
    assert "| fp32+channels_last | 0.1921 | 8 |" in md  # short cells: 4 significant digits
    assert "| pycocotools | 3.92 |" in md
    assert "options" not in md
    path.write_text("{not json\n")
    with pytest.raises(SystemExit, match=r"r\.jsonl:1"):
        render([path])


def test_detector_ap_rows_render_with_full_row_names(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--bench", "detector_ap", "--detector", "retinaface", "--tile-sizes", "176", "256"]
    )
    assert args.detector == "retinaface" and args.tile_sizes == [176, 256]
    row = "direct (whole image + 176-px tiles), NMS 0.45, 100 per image, person alone"
    recs = [
        {"bench": "detector_ap", "what": "coco", "detector": "fastestdet", "tile_sizes": [176],
         "row": row, "classes": "person", "per_image_cap": 100, "images": 655,
         "ap": {"AP": 0.2341, "AP50": 0.462, "AP_tiny": 0.0066}},
        {"bench": "detector_ap", "what": "wider", "detector": "retinaface", "row": "published",
         "images": 276, "ap": {"easy": 0.917744, "medium": 0.907692, "hard": 0.764608}},
    ]  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    md = render([path])
    assert "### detector_ap (coco)" in md and "### detector_ap (wider)" in md
    assert f"| fastestdet | 176 | {row} | person | 100 | 655 | 0.2341 | 0.462 | - |" in md
    assert "| retinaface | published | 276 | 0.9177 | 0.9077 | 0.7646 |" in md


def test_mode_grid_from_the_shared_options() -> None:
    args = build_parser().parse_args(
        ["--precision", "fp32", "bf16", "--channels-last", "both", "--fold-bn", "--compile"]
    )
    names = [m.name for m in modes_from_args(args, fold=True)]
    assert names == [
        "fp32+fold+compile", "fp32+fold+channels_last+compile",
        "bf16+fold+compile", "bf16+fold+channels_last+compile",
    ]  # fmt: skip
    assert [m.name for m in modes_from_args(build_parser().parse_args([]))] == ["fp32"]


def test_recall_counter_by_size_and_budget() -> None:
    # A tiny (10x10) and a large (200x200) object; proposals by score: a miss, the large one
    # with the wrong class, then the tiny one.
    gt = GroundTruth(
        torch.tensor([[0.0, 0, 10, 10], [100, 100, 300, 300]]),
        torch.tensor([100.0, 40000.0]),
        torch.tensor([1, 2]),
    )
    boxes = torch.tensor([[50.0, 50, 60, 60], [100, 100, 300, 300], [0, 0, 10, 10]])
    c = RecallCounter()
    c.add(gt, boxes, torch.tensor([1, 3, 1]))
    rec, rec_cls = c.table(c.found), c.table(c.found_cls)
    assert rec["100"] == {"tiny": 1.0, "small": 1.0, "medium": 0.0, "large": 1.0, "all": 1.0}
    assert rec_cls["100"]["large"] == 0.0 and rec_cls["100"]["tiny"] == 1.0
    assert parse_setting("full+256+176") == ((256, 176), True)
    assert parse_setting("176") == ((176,), False)
    assert parse_setting("native") == ((), True)
    assert parse_setting("full+256:drop") == ((256,), True)  # the caller reads ":drop"


def test_recall_coco_rows_keep_the_100_best_as_xywh() -> None:
    from gan_detect.app.benchmark.detector import coco_rows

    boxes = torch.tensor([[10.0, 20, 40, 60]]).repeat(150, 1)
    rows = coco_rows(7, boxes, torch.full((150,), 18), torch.linspace(1, 0, 150))
    assert len(rows) == 100
    assert rows[0] == {"image_id": 7, "category_id": 18, "score": 1.0, "bbox": [10, 20, 30, 40]}


def test_detector_ap_independent_decoder_scores_a_planted_box() -> None:
    """One YOLOX output cell (stride 8, cell (5, 3)) set to a 40x24 px box of class 0 at a
    letterbox scale of 0.5: the decoder must put it at (2x) image px, and COCOeval must give
    AP 1 for it against that box as ground truth and AP 0 against a box elsewhere."""
    import math

    from gan_detect.app.benchmark.detector_ap import own_candidates, own_results, pycocotools_ap

    raw = torch.full((1, 3549, 85), -20.0)
    raw[..., 4:] = 0.0  # objectness and classes 0: nothing above 0.001
    cell = 3 * 52 + 5  # row 3, column 5 of the 52x52 stride-8 grid (x fastest)
    raw[0, cell, :4] = torch.tensor([0.5, 0.5, math.log(40 / 8), math.log(24 / 8)])
    raw[0, cell, 4], raw[0, cell, 5] = 0.9, 0.8
    boxes, scores, labels = own_candidates(raw.numpy(), 0.5, 800, 600, best_only=False)
    assert len(boxes) == 1 and int(labels[0]) == 0 and abs(float(scores[0]) - 0.72) < 1e-6
    # centre (5.5 * 8, 3.5 * 8) = (44, 28), size 40 x 24, then / 0.5
    assert torch.allclose(boxes[0], torch.tensor([48.0, 32, 128, 80]))
    rows = own_results({1: (boxes, scores, labels)}, nms=0.45, thresh=0.001, top=100)
    assert rows[0]["category_id"] == 1 and rows[0]["bbox"] == [48.0, 32.0, 80.0, 48.0]

    def gt(bbox: list[float]) -> dict:
        return {
            "images": [{"id": 1, "width": 800, "height": 600}],
            "categories": [{"id": 1, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox,
                             "area": bbox[2] * bbox[3], "iscrowd": 0}],
        }  # fmt: skip

    assert pycocotools_ap(gt([48.0, 32, 80, 48]), rows)["AP"] == 1.0
    assert pycocotools_ap(gt([400.0, 300, 80, 48]), rows)["AP"] == 0.0


def test_sr_rows_psnr_and_cost_on_generated_images(tmp_path: Path) -> None:
    """``sr``'s rows on two generated JPEGs: a "CARN-M" that is bicubic up-sampling gains 0 dB
    and wins no crop; the cost rows name both generators with the papers' G as the unit."""
    import numpy as np
    from PIL import Image

    from gan_detect.app.benchmark.sr import cost_rows, psnr_rows
    from gan_detect.metrics.sr_quality import bicubic_up

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(paths[-1])

    class Bicubic(torch.nn.Module):
        def forward(self, lr: torch.Tensor) -> object:
            return type("Out", (), {"sr": bicubic_up(lr, 4)})()

    rows = psnr_rows(Bicubic(), {"gen": paths, "none": []}, 3, [32], 0, None)
    assert len(rows) == 1  # the empty source is skipped
    r = rows[0]
    assert (r["what"], r["source"], r["hr"], r["lr"], r["crops"]) == ("psnr", "gen", 32, 8, 3)
    assert 5 < r["bicubic_db"] < 40 and r["gain_db"] == 0.0 and r["carn_better"] == 0.0
    carn = torch.nn.Conv2d(3, 3, 3, padding=1)
    cost = cost_rows(carn, [8], batch=2, reps=1, seed=0)
    assert [c["generator"] for c in cost] == ["paper_full_budget", "carn_m"]
    assert cost[0]["vs_paper"] == 1.0 and cost[1]["params"] == 84
    assert all(c["ms_per_roi"] > 0 for c in cost)


def test_export_kind_times_pytorch_and_onnxruntime_per_roi(tmp_path: Path) -> None:
    """``export``: one JSONL line per variant x LR side x exporter, both runtimes timed on the
    same crops, and their outputs agree (seeded random weights, BatchNorm statistics moved)."""
    out = tmp_path / "export.jsonl"
    argv = ["--bench", "export", "--sizes", "tiny", "--variants", "tiny_face", "sod_mtgan",
            "--lr-sizes", "8", "--rois", "4", "--rounds", "2", "--warmup", "1",
            "--exporters", "torchscript", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["variant"], r["lr"], r["exporter"]) for r in lines] == [
        ("tiny_face", 8, "torchscript"),
        ("sod_mtgan", 8, "torchscript"),
    ]
    for r in lines:
        assert r["bench"] == "export" and r["rois"] == 4 and r["rounds"] == 2
        assert r["threads"] == 1 and r["opset"] == 18 and r["onnx_mb"] > 0
        assert r["torch_ms_per_roi"] > 0 and r["ort_ms_per_roi"] > 0
        assert r["ort_speedup"] == pytest.approx(
            r["torch_ms_per_roi"] / r["ort_ms_per_roi"], rel=0.02
        )
        assert r["max_abs_diff"] < 1e-4
        assert r["machine"]["cpu"] == cpu_model()


def test_benchmarks_folder_holds_the_tool_without_path_hacks() -> None:
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
    assert scripts == ["benchmark.py", "gpu_suite.py"]
    for p in (ROOT / "benchmarks").glob("*.py"):
        assert "sys.path" not in p.read_text(), p
    assert {"train", "infer", "eval", "proposals", "data"} <= set(KINDS)


def test_eval_reference_loop_gives_the_vectorised_wider_ap() -> None:
    """The benchmark's per-image loop (its speed-up baseline) must score as ``wider_face_ap``."""
    import numpy as np

    from gan_detect.app.benchmark.evaluation import reference_loop_ap
    from gan_detect.metrics.wider_face_ap import wider_face_ap
    from gan_detect.metrics.wider_gt import WiderGroundTruth

    rng = np.random.default_rng(3)
    ids, boxes, keep, preds = [], [], [], {}
    for i in range(10):
        k = int(rng.integers(1, 6))
        b = np.concatenate([rng.uniform(0, 900, (k, 2)), rng.uniform(4, 80, (k, 2))], axis=1)
        kp = np.ones((k, 3), bool)
        kp[:, 0], kp[:, 1] = b[:, 3] > 30, b[:, 3] > 15  # small faces ignored in easy / medium
        ids.append(f"0--E/img_{i}")
        boxes.append(b)
        keep.append(kp)
        found = b[rng.random(k) < 0.7] + rng.normal(0, 1.0, (1, 4))
        bg = np.concatenate([rng.uniform(0, 900, (3, 2)), rng.uniform(4, 60, (3, 2))], axis=1)
        rows = np.concatenate([found, bg])
        preds[ids[-1]] = np.column_stack([rows, rng.uniform(0, 1, len(rows))])
    gt = WiderGroundTruth(ids, boxes, keep)
    fast, slow = wider_face_ap(preds, gt), reference_loop_ap(preds, gt)
    for key in ("ap_easy", "ap_medium", "ap_hard"):
        assert 0.05 < slow[key] < 0.99
        assert abs(slow[key] - float(fast[key])) < 1e-9, key


def test_old_vs_new_splits_the_experiment_runner_output_into_stages() -> None:
    """The default command is the runner; its printed lines (as in a --quick run) move the
    stage forward, and the diagnostics reopening the val ROI store stay in the report stage."""
    from gan_detect.app.benchmark.load import DEFAULT_COMMAND, next_stage

    cmd = DEFAULT_COMMAND.format(tree="/t", out="/o", data="/d")
    assert cmd.endswith("experiment run /t/experiments/real_wider.yaml --out /o")
    lines = [
        "proposals: 10 images, 237 boxes, 1 s -> /o/proposals/train",
        "seed 0: row gan ...",
        "mining ROIs:  40%|####      | 4/10",
        "built ROI store at /o/data_cache/seed0/wider_face_train_rois (47 ROIs)",
        "mining ROIs: 100%|##########| 4/4",
        "built ROI store at /o/data_cache/seed0/wider_face_val_rois (26 ROIs)",
        "reusing ROI store at /o/data_cache/seed0/wider_face_val_rois (26 ROIs)",
        "evaluation: 4 val images",
        "intervals, diagnostics and report ...",
        "reusing ROI store at /o/data_cache/seed0/wider_face_val_rois (26 ROIs)",
        "report: /o/report.md  (9 s)",
    ]
    stage, seen = "proposals", []
    for line in lines:
        new = next_stage(line, stage)
        if new is not None and new != stage:
            stage = new
            seen.append(stage)
    assert seen == ["training", "mining", "training", "evaluation", "report"]
