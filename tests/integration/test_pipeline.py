"""End to end on generated data: DataModules feed the engine; the CLI fits and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gan_detect.config import PRESETS
from gan_detect.data.proposals import write_wider_tree
from gan_detect.data.records import Proposals
from gan_detect.data.synthetic import write_synthetic_faces, write_synthetic_objects
from gan_detect.data.wider_face import parse_wider_annotations

ROOT = Path(__file__).resolve().parents[2]
EXP = PRESETS


def fake_detector(records, seed: int = 0) -> dict[str, Proposals]:
    """Proposals like a weak detector: jittered true boxes plus random false positives."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in records:
        tp = r.boxes[~r.ignore]
        wh = tp[:, 2:] - tp[:, :2]
        jit = tp + rng.normal(0, 0.08, tp.shape) * np.concatenate([wh, wh], 1)
        n_fp = 30
        xy = rng.uniform(0, 280, (n_fp, 2))
        side = rng.uniform(6, 40, (n_fp, 1))
        fp = np.concatenate([xy, xy + side], 1)
        boxes = np.concatenate([jit, fp]).astype(np.float32)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(jit)), rng.uniform(0.02, 0.9, n_fp)])
        out[r.image_id] = Proposals(boxes, scores, np.ones(len(boxes)))
    return out


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    write_synthetic_faces(root, num_train=10, num_val=6, seed=0)
    val = parse_wider_annotations(
        root / "wider_face_split" / "wider_face_val_bbx_gt.txt", root / "WIDER_val" / "images"
    )
    write_wider_tree(fake_detector(val), root / "proposals_val")
    return root


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gan_detect", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_fit_then_evaluate_on_generated_faces(faces: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        str(EXP / "tiny_face_wider.yaml"),
        str(EXP / "smoke.yaml"),
        f"data.root={faces}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"output_dir={run}",
        "data.max_train_images=6",
        "data.max_val_images=3",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "data.gt_dir=null",
    ]
    fit = _cli(
        "fit",
        *common,
        "data.val_detection=true",
        f"data.val_proposals={faces / 'proposals_val'}",
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    log = (run / "logs" / "metrics.csv").read_text()
    assert log.count("train/loss_g") == 1
    # detection metrics of the GAN's re-scoring are logged at validation (height fallback here)
    assert "val/ap_hard" in log and "val/map_small" in log and "val/psnr_sr" in log
    val = _cli("validate", *common, f"ckpt={run / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    assert "val/psnr_sr" in val.stdout and "val/psnr_bicubic" in val.stdout
    ev = _cli(
        "evaluate",
        *common,
        f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        f"data.val_proposals={faces / 'proposals_val'}",
        f"data.gt_dir={faces / 'ground_truth'}",
        cwd=tmp_path,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    res = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(res["metrics"]) == {"baseline", "gan"}
    assert res["official_wider_settings"] is True
    from gan_detect.app.wider_eval import evaluate_wider_tree
    from gan_detect.data.proposals import read_wider_tree_arrays

    for m in ("baseline", "gan"):
        tree = run / "eval" / m / "wider_txt"
        ids = set(read_wider_tree_arrays(tree))
        assert len(ids) == 3  # data.max_val_images
        # The reported AP is the official protocol's on the written files (re-read from disk).
        again = evaluate_wider_tree(tree, faces / "ground_truth", image_ids=ids)
        for s in ("easy", "medium", "hard"):
            assert res["metrics"][m][f"ap_{s}"] == pytest.approx(again[f"ap_{s}"], abs=1e-6), (m, s)
    # The baseline is the fake detector's proposals, whose true boxes mostly outscore its false
    # positives: well above chance (a broken matcher or score order would give ~0).
    assert res["metrics"]["baseline"]["ap_hard"] > 0.3, res["metrics"]["baseline"]
    assert "delta" in ev.stdout


def test_cli_bad_key_is_named(tmp_path: Path) -> None:
    bad = _cli("fit", str(EXP / "tiny_face_wider.yaml"), "variant.nope=1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "variant.nope" in bad.stderr and "adv_weight" in bad.stderr


@pytest.mark.parametrize("name", ["wider_face", "coco"])
def test_both_datamodules_feed_the_engine(name: str, tmp_path: Path) -> None:
    import lightning as L

    from gan_detect.app.cli import load_config
    from gan_detect.config.validate import to_container
    from gan_detect.data import build_datamodule
    from gan_detect.train.gan_module import GANDetectionModule
    from gan_detect.train.trainer import build_trainer

    if name == "wider_face":
        root = write_synthetic_faces(tmp_path / "d", num_train=4, num_val=2, seed=1)
        files = [EXP / "tiny_face_wider.yaml", EXP / "smoke.yaml"]
        extra = []
    else:
        root = write_synthetic_objects(tmp_path / "d", num_train=4, num_val=2, seed=1)
        files = [EXP / "sod_mtgan_coco.yaml", EXP / "smoke.yaml"]
        extra = ["data.num_classes=5", "data.train_split=train", "data.val_split=val"]
    cfg = load_config(
        files,
        [
            f"data.root={root}",
            f"data.cache_dir={tmp_path / 'c'}",
            f"output_dir={tmp_path / 'run'}",
            "logger.kind=none",
            *extra,
        ],
    )
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale)
    module = GANDetectionModule(to_container(cfg))
    trainer = build_trainer(
        cfg,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[],
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
    )
    L.seed_everything(0)
    trainer.fit(module, datamodule=dm)
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    assert "val/psnr_sr" in trainer.callback_metrics
    # The ROI store is reused on a second setup, not rebuilt.
    meta = (Path(dm.train_store) / "meta.json").stat().st_mtime_ns
    dm2 = build_datamodule(cfg.data, scale=cfg.variant.scale)
    dm2.setup("fit")
    assert dm2.train_store == dm.train_store
    assert (Path(dm2.train_store) / "meta.json").stat().st_mtime_ns == meta
