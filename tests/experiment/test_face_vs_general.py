"""`gan-detect experiment face-vs-general` on constructed results files of the two experiments."""

from __future__ import annotations

import json
from pathlib import Path

from gan_detect.app.cli import main


def _run(args: list[str]) -> int:
    return main(["experiment", "face-vs-general", *args])


def _metric(a: float, b: float, low: float, high: float) -> dict[str, object]:
    return {
        "mean_a": a,
        "mean_b": b,
        "difference": {"point": b - a, "low": low, "high": high},
    }


def _files(tmp_path: Path) -> tuple[Path, Path]:
    wider = {
        "seeds": [0, 1],
        "num_val_images": 276,
        "comparisons": {
            "Each row against RetinaFace alone": {
                "RetinaFace → tiny-face GAN, d_only": {
                    "hard": _metric(50.0, 52.0, 1.0, 3.0),
                    "ap50_<10": _metric(10.0, 14.5, 2.0, 7.0),
                    "ap50_10-16": _metric(40.0, 39.0, -2.0, 0.5),
                    "ap50_16-32": _metric(70.0, 70.0, -1.0, 1.0),
                    "ap50_>32": _metric(90.0, 89.0, -1.5, -0.5),
                },
                # Another row with the same fusion must not be picked.
                "RetinaFace → control: D on bicubic LR (no G), d_only": {
                    "hard": _metric(50.0, 10.0, -41.0, -39.0),
                },
            }
        },
    }
    coco = {
        "seeds": [0],
        "num_test_images": 655,
        "detector": "FastestDet alone",
        "comparisons": {
            "Each row against FastestDet alone": {
                "FastestDet → SOD-MTGAN, d_only": {
                    "map": _metric(9.0, 7.0, -3.0, -1.0),
                    "map_tiny": _metric(0.5, 1.25, 0.25, 1.5),
                    "map_small": _metric(2.0, 2.5, -0.5, 1.5),
                    "map_medium": _metric(10.0, 8.0, -3.0, -1.0),
                    "map_large": _metric(20.0, 15.0, -7.0, -3.0),
                }
            }
        },
        "comparison_keys": {
            "Each row against FastestDet alone": {
                "FastestDet → SOD-MTGAN, d_only": "FastestDet alone|sod / d_only"
            }
        },
    }
    w, c = tmp_path / "wider.json", tmp_path / "coco.json"
    w.write_text(json.dumps(wider))
    c.write_text(json.dumps(coco))
    return w, c


def test_gains_side_by_side_by_size(tmp_path: Path) -> None:
    w, c = _files(tmp_path)
    out = tmp_path / "report.md"
    assert _run(["--wider", str(w), "--coco", str(c), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Score fusion: d_only" in text
    # Fusions neither file has are left out, not printed empty.
    assert "## Score fusion: learned" not in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "px |" in line}
    assert "+4.50 [+2.00, +7.00]*" in rows["< 10 px"]
    assert "AP_tiny" in rows["10-16 px"] and "+0.75 [+0.25, +1.50]*" in rows["10-16 px"]
    assert "-1.00 [-2.00, +0.50]" in rows["10-16 px"]
    assert "-5.00 [-7.00, -3.00]*" in rows["> 96 px"]
    all_sizes = next(line for line in text.splitlines() if line.startswith("| all sizes"))
    assert "+2.00 [+1.00, +3.00]*" in all_sizes and "-2.00 [-3.00, -1.00]*" in all_sizes
    assert "-40.00" not in text  # the control row was not taken for the GAN
    assert "approximate the official" in text
    assert "SOD-MTGAN re-scoring FastestDet" in text and "| FastestDet | SOD-MTGAN |" in text


def test_the_general_side_names_the_detector_its_results_carry(tmp_path: Path) -> None:
    w, c = _files(tmp_path)
    raw = c.read_text().replace("FastestDet", "YOLOX-nano")
    c.write_text(raw)
    out = tmp_path / "report.md"
    assert _run(["--wider", str(w), "--coco", str(c), "--out", str(out)]) == 0
    text = out.read_text()
    assert "SOD-MTGAN re-scoring YOLOX-nano" in text and "| YOLOX-nano | SOD-MTGAN |" in text
    assert "FastestDet" not in text
    assert "-5.00 [-7.00, -3.00]*" in text  # its gains found under the new name


def test_missing_results_file_is_a_clear_error(tmp_path: Path) -> None:
    w, _ = _files(tmp_path)
    assert _run(["--wider", str(w), "--coco", str(tmp_path / "none.json")]) == 2
