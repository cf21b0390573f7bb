"""``gan-detect export``: a trained run's re-scorer as ONNX, checked with onnxruntime on crops of
real WIDER FACE photos; the sidecar; one-line errors; the command in ``--help``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _synth import PairDataset, roi_batch, tiny_config
from torch.utils.data import DataLoader

import gan_detect.infer.onnx_export as onnx_export
from gan_detect.app.cli import main
from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.data.paths import shared_data_dir
from gan_detect.data.synthetic import SHAPE_CATEGORIES
from gan_detect.infer.onnx_export import real_crops, written_opset
from gan_detect.infer.pipeline import export_pipeline
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.trainer import build_trainer
from gan_detect.variants import GANVariant

ROOT = Path(__file__).resolve().parents[2]
SHAPES = [name for _, name, _ in SHAPE_CATEGORIES]
DATA = shared_data_dir()
WIDER_VAL = None if DATA is None else DATA / "widerface" / "WIDER_val" / "images"
needs_wider = pytest.mark.skipif(
    WIDER_VAL is None or not WIDER_VAL.is_dir(),
    reason="real WIDER FACE val photos ($GAN_DETECT_DATA/widerface/WIDER_val) not present",
)


def _train_run(raw: dict, run: Path) -> Path:
    """A run folder trained for 4 steps on in-memory ROI pairs (seconds): its checkpoint holds
    moved BatchNorm statistics, so the folded copy and the heads' outputs are not trivial."""
    torch.set_num_threads(1)  # shared 2-core machines: oversubscription costs 10x
    module = GANDetectionModule(raw)
    pairs = roi_batch(32, hr_size=32, num_classes=raw["data"]["num_classes"])
    trainer = build_trainer(
        to_experiment_config(raw),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        default_root_dir=str(run),
        max_epochs=1,
        limit_val_batches=0,
    )
    loader = DataLoader(PairDataset(pairs), batch_size=8, collate_fn=RoiBatch.collate)
    trainer.fit(module, train_dataloaders=loader)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``face``: tiny-face; ``objects``: SOD-MTGAN (softmax and box head) with a pipeline file
    naming its classes, as the demo leaves one. Both with G's bicubic skip, as the real
    experiments (atanh in G; after 4 steps a G without it passes too little of the crop on)."""
    root = tmp_path_factory.mktemp("export_runs")
    face = root / "face"
    _train_run(tiny_config("tiny_face", **{"variant.g_bicubic_skip": True}), face)
    objects = root / "objects"
    ckpt = _train_run(tiny_config("sod_mtgan", **{"variant.g_bicubic_skip": True}), objects)
    export_pipeline("retinaface", ckpt, objects / "pipeline.pt", SHAPES)
    return {"face": face, "objects": objects}


def _reference(variant: GANVariant, crops: torch.Tensor) -> list[np.ndarray]:
    """The trained model's own outputs (not the folded copy that was exported)."""
    with torch.no_grad():
        out = variant.discriminate_sr(crops)
    logits = out.cls_logits
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)
    return [t.numpy() for t in (probs, out.box_deltas) if t is not None]


@needs_wider
@pytest.mark.parametrize(
    ("kind", "exporter"), [("face", "dynamo"), ("face", "torchscript"), ("objects", "dynamo")]
)
def test_export_matches_pytorch_on_real_crops_and_describes_itself(
    runs: dict[str, Path], kind: str, exporter: str, tmp_path: Path, capsys
) -> None:
    run, out = runs[kind], tmp_path / "onnx"
    rc = main(["export", str(run), "--format", "onnx", "--out", str(out), "--exporter", exporter])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert f"{out / 'rescorer.onnx'}" in stdout and "max abs diff" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["rescorer.json", "rescorer.onnx"]

    side = json.loads((out / "rescorer.json").read_text())
    variant = GANVariant.from_checkpoint(run / "checkpoints" / "last.ckpt")
    box = kind == "objects"
    assert side["variant"] == variant.name == ("sod_mtgan" if box else "tiny_face")
    assert side["class_names"] == (SHAPES if box else ["face"])
    assert side["input"]["shape"] == ["N", 3, 8, 8]  # hr_size 32 / scale 4
    assert (side["input"]["scale"], side["input"]["hr_size"], side["input"]["context"]) == (
        4,
        32,
        1.0,
    )
    assert [o["name"] for o in side["outputs"]] == (["probs", "box_deltas"] if box else ["probs"])
    k = len(SHAPES) + 1 if box else 1
    assert side["outputs"][0]["shape"] == ["N", k]
    assert side["opset"] == 18 == written_opset(out / "rescorer.onnx")
    assert side["exporter"] == exporter
    check = side["check"]
    assert check["crops"] == 8 * 32 and len(check["source"]["images"]) == 8
    assert 0 <= check["max_abs_diff"] <= check["tolerance"] == 1e-3

    # Independently: onnxruntime on crops of other real photos, against the unfolded model,
    # with batch sizes other than the export's example (the batch axis is dynamic).
    photos = sorted(WIDER_VAL.rglob("*.jpg"))[1::40][:4]  # type: ignore[union-attr]
    crops = real_crops(photos, 8, 4, 1.0, per_image=25, seed=7)
    session = ort.InferenceSession(str(out / "rescorer.onnx"), providers=["CPUExecutionProvider"])
    ref = _reference(variant, crops)
    for n in (1, 100):
        got = session.run(None, {"lr": crops[:n].numpy()})
        assert [o.name for o in session.get_outputs()] == [o["name"] for o in side["outputs"]]
        for a, b in zip(ref, got, strict=True):
            assert b.shape == a[:n].shape
            assert np.abs(a[:n] - b).max() < 1e-4
    # Not vacuous: D's probabilities differ from crop to crop.
    assert ref[0].std(axis=0).max() > 1e-3


@needs_wider
def test_a_runtime_that_disagrees_fails_in_one_line_and_writes_nothing(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real = onnx_export._onnx_outputs

    def off_by_a_hundredth(session, crops, chunk):
        return [x + 0.01 for x in real(session, crops, chunk)]

    monkeypatch.setattr(onnx_export, "_onnx_outputs", off_by_a_hundredth)
    out = tmp_path / "onnx"
    args = ["export", str(runs["face"]), "--out", str(out), "--exporter", "torchscript"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gan-detect export: error: onnxruntime")
    assert "> tolerance 0.001" in err and "nothing written" in err
    assert list(out.iterdir()) == []  # no unchecked rescorer.onnx, no temporary file


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "gan_detect", "export", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_a_bad_run_or_option_is_one_line_with_exit_2(tmp_path: Path) -> None:
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == (
        f"gan-detect export: error: no such run folder or checkpoint: {tmp_path / 'nope'}"
    )
    empty = _cli(str(tmp_path))  # a folder, but no checkpoints/last.ckpt
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
    assert f"{tmp_path}: no checkpoints/last.ckpt" in empty.stderr
    fmt = _cli(str(tmp_path), "--format", "tflite")
    assert fmt.returncode == 2 and "invalid choice: 'tflite'" in fmt.stderr


def test_an_opset_the_graph_cannot_have_is_refused_before_loading(
    runs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    assert main(["export", str(runs["face"]), "--opset", "9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gan-detect export: error: --opset 9: the re-scorer needs opset 11 or later"


def test_help_lists_export_and_its_options(capsys) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "export" in top and "the re-scorer as ONNX" in top
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    for must in ("--format {onnx}", "--out DIR", "--opset N", "--exporter", "rescorer.json"):
        assert must in text, must
