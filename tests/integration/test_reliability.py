"""Reliability (issue 14): the right checkpoint every time, no silent success, no code from files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _synth import fake_command

from gan_detect.app.cli import load_config, main
from gan_detect.config import PRESETS
from gan_detect.data.synthetic import write_synthetic_faces
from gan_detect.train.fit import fit
from gan_detect.train.resume import resume_checkpoint
from gan_detect.train.run_folder import LOCK_FILE, RunFolderError, run_lock
from gan_detect.utils.checkpoints import (
    CheckpointError,
    SafeCheckpointIO,
    atomic_torch_save,
    load_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
EXP = PRESETS


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_faces(tmp_path_factory.mktemp("faces"), num_train=4, num_val=2, seed=3)


def _args(faces: Path, run: Path, *extra: str) -> list[str]:
    """A 1-batch-per-epoch tiny fit (4 images x 2 ROIs, batch 8): ~1 s an epoch on CPU."""
    return [
        str(EXP / "tiny_face_wider.yaml"),
        str(EXP / "smoke.yaml"),
        f"data.root={faces}",
        f"data.cache_dir={run.parent / 'cache'}",
        "data.gt_dir=null",
        "data.max_train_images=4",
        "data.max_val_images=2",
        "data.rois_per_image=4",
        "data.batch_size=8",
        "trainer.enable_progress_bar=false",
        f"output_dir={run}",
        *extra,
    ]


def _cfg(faces: Path, run: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = _args(faces, run, *extra)
    return load_config(args[:2], args[2:])


def _fit(faces: Path, run: Path, *extra: str) -> None:
    cfg = _cfg(faces, run, *extra)
    fit(cfg, ckpt_path=resume_checkpoint(cfg))


def _step(path: Path) -> tuple[int, int]:
    s = torch.load(path, map_location="cpu", weights_only=True)
    return int(s["epoch"]), int(s["global_step"])


# ---- 1, 4: last.ckpt is the newest state; atomic saves; fallback to a loadable checkpoint ------
def test_last_ckpt_is_the_final_state_after_resume_with_periodic_saves(
    faces: Path, tmp_path: Path
) -> None:
    """4 batches an epoch, a checkpoint every 2; a crash before global batch 7, then resume."""
    from lightning.pytorch.callbacks import Callback

    from gan_detect.train.callbacks import build_callbacks

    class Crash(Callback):  # a hard stop (like SIGKILL): only the periodic checkpoint survives
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 1 and batch_idx == 3:
                raise RuntimeError("simulated crash")

    run = tmp_path / "run"
    extra = ["trainer.max_epochs=2", "trainer.checkpoint_every_n_batches=2",
             "data.rois_per_image=8", "trainer.log_every_n_steps=1"]  # fmt: skip
    cfg = _cfg(faces, run, *extra)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg, callbacks=[*build_callbacks(cfg), Crash()])
    assert _step(run / "checkpoints" / "last.ckpt") == (1, 12)  # after global batch 6 of 8
    _fit(faces, run, *extra, "resume=auto")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]  # no last-v1.ckpt
    assert _step(run / "checkpoints" / "last.ckpt") == _step(run / "checkpoints" / "epoch001.ckpt")
    assert _step(run / "checkpoints" / "last.ckpt") == (1, 16)
    # 3: metrics.csv continued: every train step once (the re-done step 6 not twice), both vals
    with (run / "logs" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    train = [int(r["step"]) for r in rows if r.get("train/loss_g")]
    val = [int(r["step"]) for r in rows if r.get("val/psnr_sr")]
    assert train == list(range(8)) and val == [3, 7], (train, val)
    # 4: resume=auto skips (and names) a truncated last.ckpt and takes the newest loadable one
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    cfg = _cfg(faces, run, "resume=auto")
    with pytest.warns(UserWarning, match=r"last\.ckpt: truncated"):
        chosen = resume_checkpoint(cfg)
    assert chosen == str(run / "checkpoints" / "epoch001.ckpt")


def test_atomic_save_keeps_the_old_file_when_the_save_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ckpt" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"a": torch.ones(2)}, target)
    renames: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    SafeCheckpointIO().save_checkpoint({"a": torch.zeros(2)}, target)
    # written next to the target (same file system), then renamed over it
    assert renames == [(target.with_name("last.ckpt.tmp"), target)]

    def full_disk(obj: object, f: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_torch_save({"a": torch.full((2,), 7.0)}, target)
    assert torch.equal(SafeCheckpointIO().load_checkpoint(target)["a"], torch.zeros(2))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


# ---- 2: SIGTERM exits non-zero; resume after it ends with last.ckpt the newest ------------------
SIGTERM_WORKER = textwrap.dedent(
    """
    import signal, sys
    from lightning.pytorch.callbacks import Callback
    import gan_detect.train.trainer as T

    class Term(Callback):  # SIGTERM (as SLURM sends it) before the 2nd epoch's batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                signal.raise_signal(signal.SIGTERM)

    _build = T.build_callbacks
    T.build_callbacks = lambda cfg: [*_build(cfg), Term()]
    from gan_detect.app.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigterm_exits_143_and_resume_finishes_in_last_ckpt(faces: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    worker = tmp_path / "worker.py"
    worker.write_text(SIGTERM_WORKER)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(worker), "fit", *_args(faces, run, "trainer.max_epochs=3")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "stopped by SIGTERM" in proc.stderr
    assert not (run / LOCK_FILE).exists()  # the lock is released on the way out
    assert _step(run / "checkpoints" / "last.ckpt")[0] == 1  # saved in epoch 2, mid-epoch
    _fit(faces, run, "trainer.max_epochs=3", "resume=auto")
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch000.ckpt", "epoch001.ckpt", "epoch002.ckpt", "last.ckpt"], names
    assert _step(run / "checkpoints" / "last.ckpt") == _step(run / "checkpoints" / "epoch002.ckpt")


DETECTOR_SIGTERM_WORKER = textwrap.dedent(
    """
    import signal, sys
    from lightning.pytorch.callbacks import Callback
    import gan_detect.train.trainer as T

    class Term(Callback):  # SIGTERM before the 2nd epoch's first batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                signal.raise_signal(signal.SIGTERM)

    # fit_detector names its callbacks itself; add Term to the list it hands build_trainer.
    _build = T.build_trainer
    def build_trainer(cfg, **kw):
        kw["callbacks"] = [*kw.get("callbacks", []), Term()]
        return _build(cfg, **kw)
    T.build_trainer = build_trainer
    from gan_detect.app.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _detector_args(faces: Path, run: Path, *extra: str) -> list[str]:
    """A tiny ``task: detector`` fit (the test detector of test_detector.py): 2 batches an epoch."""
    return [
        str(EXP / "detector_wider.yaml"),
        f"data.root={faces}",
        f"data.cache_dir={run.parent / 'cache'}",
        "data.gt_dir=null",
        "data.max_train_images=4",
        "data.max_val_images=2",
        "data.val_batch_size=2",
        "data.num_workers=0",
        "detector.backbone=test_resnet",
        "detector.pretrained=false",
        "detector.fpn_channels=64",
        "detector.min_size=[128]",
        "detector.max_size=128",
        "detector.warmup_steps=0",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        "logger.kind=csv",
        f"output_dir={run}",
        *extra,
    ]


def test_detector_fit_killed_by_sigterm_resumes_to_the_last_epoch(
    faces: Path, tmp_path: Path
) -> None:
    """A ``task: detector`` fit keeps the resume callback: SIGTERM leaves last.ckpt, and
    ``resume=auto`` continues from it to the configured last epoch."""
    run = tmp_path / "det"
    worker = tmp_path / "det_worker.py"
    worker.write_text(DETECTOR_SIGTERM_WORKER)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(worker), "fit", *_detector_args(faces, run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "stopped by SIGTERM" in proc.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    epoch, step = _step(last)
    # Saved mid-epoch 2: the batch running when the signal came finishes first.
    assert (epoch, step) == (1, 3), (epoch, step)
    assert load_checkpoint(last, expect="detector")["hyper_parameters"]["config"]["arch"] == "fcos"
    assert main(["fit", *_detector_args(faces, run, "resume=auto")]) == 0
    epoch, step = _step(last)
    assert (epoch, step) == (2, 6), (epoch, step)  # 3 epochs x 2 batches, none repeated


def test_sigterm_through_the_python_api_is_systemexit_143(faces: Path, tmp_path: Path) -> None:
    import signal

    from lightning.pytorch.callbacks import Callback

    from gan_detect.train.callbacks import build_callbacks

    class Term(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            signal.raise_signal(signal.SIGTERM)

    cfg = _cfg(faces, tmp_path / "run", "trainer.max_epochs=2")
    with pytest.raises(SystemExit) as info:
        fit(cfg, callbacks=[*build_callbacks(cfg), Term()])
    assert info.value.code == 143  # Lightning's own SIGTERMException has code None: exit 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


# ---- 5, 6: unwritable checkpoints folder, old run folder, lock ----------------------------------
def test_run_folder_is_refused_locked_or_unwritable(
    faces: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    _fit(faces, run, "trainer.max_epochs=1")
    old = (run / "checkpoints" / "epoch000.ckpt").stat().st_mtime_ns
    capsys.readouterr()
    # a fresh fit into an old run's folder is refused, naming what is there
    assert main(["fit", *_args(faces, run, "trainer.max_epochs=1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "overwrite=true" in err
    assert (run / "checkpoints" / "epoch000.ckpt").stat().st_mtime_ns == old
    # overwrite=true starts again from scratch (the old checkpoints are gone, not mixed in)
    (run / "checkpoints" / "stale.ckpt").write_bytes(b"old")
    _fit(faces, run, "trainer.max_epochs=1", "overwrite=true")
    assert not (run / "checkpoints" / "stale.ckpt").exists()
    # a live process's lock: refused, naming the lock and the PID
    (run / LOCK_FILE).write_text(f"{os.getppid()} {os.uname().nodename}\n")
    with pytest.raises(RunFolderError, match=rf"{LOCK_FILE}.*PID {os.getppid()}"):
        _fit(faces, run, "trainer.max_epochs=1", "resume=auto")
    # a dead process's lock is taken over with a warning
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_FILE).write_text(f"{dead.pid} {os.uname().nodename}\n")
    with pytest.warns(UserWarning, match="stale lock"), run_lock(run):
        assert (run / LOCK_FILE).read_text().startswith(f"{os.getpid()} ")
    assert not (run / LOCK_FILE).exists()
    # the same SLURM job, requeued on another node, takes over its own lock
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (run / LOCK_FILE).write_text(f"{os.getppid()} node-that-died 4242\n")
    with pytest.warns(UserWarning, match="requeued"), run_lock(run):
        pass
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job: refused
    (run / LOCK_FILE).write_text(f"{os.getppid()} node-that-died 4242\n")
    with pytest.raises(RunFolderError, match="node-that-died"), run_lock(run):
        pass
    (run / LOCK_FILE).unlink()
    # 5: checkpoints/ cannot be written (a file in its place: fails even as root) -> exit 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints").write_text("not a folder")
    capsys.readouterr()
    assert main(["fit", *_args(faces, other, "trainer.max_epochs=1", "resume=auto")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write checkpoints to {other / 'checkpoints'}" in err


# ---- 7, 8: crafted pickles never run; bad files get one line naming them ------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_crafted_checkpoint_runs_no_code_in_any_command(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"config": {}}, "state_dict": {}, "x": _Evil(marker)}, evil)
    # torch's escape hatch: only loads that leave weights_only unset would become unsafe
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run = tmp_path / "run"
    img = next((faces / "WIDER_val" / "images").rglob("*.jpg"))
    commands = {
        "fit": ["fit", *_args(faces, run, f"resume={evil}")],
        "evaluate": ["evaluate", *_args(faces, run, f"ckpt={evil}")],
        "validate": ["validate", *_args(faces, run, f"ckpt={evil}")],
        "propose": ["propose", *_args(faces, run, f"ckpt={evil}")],
        "predict": ["predict", "--ckpt", str(evil), str(img), "--out", str(tmp_path / "p")],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"gan-detect {name}: error: {evil}: refused"), (name, err)
        assert "\n" not in err
        assert not marker.exists(), name
    # Lightning's own resume path (trainer.fit(ckpt_path=...)) reads through SafeCheckpointIO
    from gan_detect.train.trainer import build_trainer

    trainer = build_trainer(_cfg(faces, run), logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    with pytest.raises(CheckpointError, match="refused"):
        trainer.strategy.load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    import re

    calls = []
    for f in (ROOT / "gan_detect").rglob("*.py"):
        calls += [(f.name, m) for m in re.findall(r"torch\.load\(([^)]*)\)", f.read_text())]
    assert any(f == "checkpoints.py" for f, _ in calls)  # the one safe loader is found
    assert all("weights_only=True" in args for _, args in calls), calls


def test_bad_checkpoint_files_get_one_clear_line(faces: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"hyper_parameters": {"config": {"variant": {}}}, "state_dict": {}}, good)
    cases = {
        "empty.ckpt": (b"", "empty file"),
        "random.ckpt": (bytes(range(7, 256)) * 16, "not a valid gan-detect checkpoint"),
        "truncated.ckpt": (good.read_bytes()[:300], "truncated or damaged"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name, expect="gan")
        text = str(info.value)
        assert text.startswith(str(tmp_path / name)) and msg in text and "\n" not in text, text
    det = tmp_path / "det.ckpt"
    torch.save({"hyper_parameters": {"config": {"arch": "fcos"}}, "state_dict": {}}, det)
    with pytest.raises(CheckpointError, match="this is a detector checkpoint .* GAN checkpoint"):
        load_checkpoint(det, expect="gan")
    with pytest.raises(CheckpointError, match="this is a GAN checkpoint .* detector checkpoint"):
        load_checkpoint(good, expect="detector")
    assert load_checkpoint(good, expect="gan")["state_dict"] == {}
    # the reverse through the CLI: a detector checkpoint where evaluate wants a GAN one
    run = tmp_path / "run"
    assert main(["evaluate", *_args(faces, run, f"ckpt={det}")]) == 2


# ---- 13, 14: literal string overrides; one-line CLI errors --------------------------------------
def test_string_overrides_keep_their_literal_text() -> None:
    files = [EXP / "tiny_face_wider.yaml"]
    cfg = load_config(files, ["output_dir=runs/a #b", "data.cache_dir=007", "resume=null"])
    assert (cfg.output_dir, cfg.data.cache_dir, cfg.resume) == ("runs/a #b", "007", None)
    cfg = load_config(files, ["output_dir=007", "optim.lr_g=3e-4", "output_dir='runs/x'"])
    assert (cfg.output_dir, cfg.optim.lr_g) == ("runs/x", 3e-4)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fit", str(EXP / "tiny_face_wider.yaml"), "trainer.max_epochs=-5"], "trainer.max_epochs"),
        (["fit", str(EXP / "tiny_face_wider.yaml"), "data.batch_size=0"], "data.batch_size"),
        (["predict", "--ckpt", "x.pt", "img.jpg", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as err:  # argparse's own error exit (predict)
        code = int(err.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"gan-detect {argv[0]}: error:")


def test_debug_flag_shows_the_traceback() -> None:
    from gan_detect.config.validate import ConfigError

    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        main(["fit", str(EXP / "tiny_face_wider.yaml"), "trainer.max_epochs=-5", "--debug"])


# ---- 9-12: no silent wrong results ----------------------------------------------------------------
def test_proposals_matching_no_image_fail_with_counts(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.data import build_datamodule
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals

    one = Proposals(np.array([[1.0, 2.0, 9.0, 9.0]]), np.array([0.5]), np.ones(1, np.int64))
    write_wider_tree({"99--Other/x": one}, tmp_path / "other_ids")
    write_wider_tree({"0--Parade/x": one}, tmp_path / "level" / "tree")  # one level too high
    (tmp_path / "empty").mkdir()
    cases = {
        "other_ids": "proposals read for 1 images, 0 of them match the 4 images",
        "level": "proposals read for 0 images, 0 of them match the 4 images",
        "empty": "wrong folder level",
    }
    for name, msg in cases.items():
        cfg = _cfg(faces, tmp_path / "run", f"data.train_proposals={tmp_path / name}")
        dm = build_datamodule(cfg.data, scale=cfg.variant.scale)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=msg):
            dm.proposals("train")
    # evaluation: AP 0 with exit 0 before; now one line and exit 2
    capsys.readouterr()
    argv = _args(faces, tmp_path / "run", f"data.val_proposals={tmp_path / 'other_ids'}")
    assert main(["evaluate", *argv]) == 2
    assert "0 of them match the 2 images" in capsys.readouterr().err


def test_unknown_event_is_an_error_naming_the_valid_ones(faces: Path, tmp_path: Path) -> None:
    from gan_detect.data import build_datamodule

    cfg = _cfg(faces, tmp_path / "run", "data.train_events=[19--Coupel]")
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"data.train_events: unknown WIDER FACE event '19--Coupel'"
    ):
        dm.records("train")
    plain = _cfg(faces, tmp_path / "run")
    every = build_datamodule(plain.data, scale=plain.variant.scale)  # type: ignore[arg-type]
    events = sorted({r.image_id.split("/")[0] for r in every.records("train")})
    with pytest.raises(ValueError) as info:
        dm.records("train")
    assert len(events) > 1 and all(e in str(info.value) for e in events)
    cfg = _cfg(faces, tmp_path / "run", f"data.train_events=[{events[0]}]")
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale)  # type: ignore[arg-type]
    assert {r.image_id.split("/")[0] for r in dm.records("train")} == {events[0]}


def test_wider_eval_on_an_empty_or_wrong_level_folder_fails(tmp_path: Path) -> None:
    from gan_detect.app.wider_eval import evaluate_wider_tree
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals
    from tests.metrics.test_wider_face_ap import PREDS, _write_mats

    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    _write_mats(gt_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="none of the 3 ground-truth images has a prediction"):
        evaluate_wider_tree(tmp_path / "empty", gt_dir)
    dets = {
        i: Proposals(np.c_[p[:, :2], p[:, :2] + p[:, 2:4]], p[:, 4], np.ones(len(p)))
        for i, p in PREDS.items()
    }
    write_wider_tree(dets, tmp_path / "up" / "pred")
    with pytest.raises(ValueError, match="3 one folder deeper"):
        evaluate_wider_tree(tmp_path / "up", gt_dir)
    # a .TXT file is reported, not silently skipped
    pred = tmp_path / "up" / "pred"
    one = sorted(pred.glob("*/*.txt"))[0]
    one.rename(one.with_suffix(".TXT"))
    with pytest.warns(UserWarning, match="another case of .txt"):
        evaluate_wider_tree(pred, gt_dir)
    assert main(["wider-eval", str(tmp_path / "empty"), "--gt", str(gt_dir)]) == 2


def test_dropped_and_clipped_annotations_are_counted_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from gan_detect.data.coco import load_coco_records
    from gan_detect.data.datamodules import CocoDataConfig, CocoDataModule

    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 70, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 10, 5, 5], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 5], "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(ann))
    out = load_coco_records(path, tmp_path)
    assert (out.num_dropped, out.num_outside, out.num_clipped) == (1, 1, 1)
    np.testing.assert_allclose(out.records[0].boxes, [[90, 70, 100, 80], [5, 5, 15, 15]])
    c = CocoDataConfig(
        root=str(tmp_path), num_classes=1, train_annotation_file=str(path),
        train_image_dir=str(tmp_path),
    )  # fmt: skip
    CocoDataModule(c).records("train")
    err = capsys.readouterr().err
    assert f"{path}: dropped 1 annotations with zero width or height and 1 wholly" in err
    assert "clipped 1 that ran over the image border" in err
    # WIDER: a real zero-size box is reported; the zero-face placeholder rows are not "lost"
    gt = tmp_path / "gt.txt"
    gt.write_text(
        "0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n5 6 0 8 0 0 0 0 0 0\n"
        "1--Hand/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    cfg = load_config(
        [EXP / "tiny_face_wider.yaml"],
        [f"data.train_annotation_file={gt}", f"data.train_image_dir={tmp_path}"],
    )
    from gan_detect.data import build_datamodule

    build_datamodule(cfg.data, scale=cfg.variant.scale).records("train")  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert f"{gt}: dropped 1 of 3 box rows with zero width or height (besides 1 zero-face" in err


# ==== Round two (issue 22): nothing deleted that gan-detect did not write, nothing trained on what
# the user did not give, every input error one line naming its file. =============================
import errno  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

from gan_detect.config.validate import ConfigError  # noqa: E402
from gan_detect.train.run_folder import RUN_MARKER, prepare_run_folder  # noqa: E402
from gan_detect.utils.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def trained(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch tiny run: checkpoints/epoch000.ckpt, epoch001.ckpt, last.ckpt."""
    run = tmp_path_factory.mktemp("trained") / "run"
    _fit(faces, run, "trainer.max_epochs=2")
    return run


def test_overwrite_deletes_only_a_marked_runs_own_files_and_lists_them(
    faces: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the run marker lists what runs write; overwrite is never saved into config.yaml
    marker = json.loads((trained / RUN_MARKER).read_text())
    assert "eval" in marker["outputs"] and "pipeline.pt" in marker["outputs"]
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert "\noverwrite:" not in (run / "config.yaml").read_text()
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    (run / "pipeline.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("mine")  # not a run's file: kept
    capsys.readouterr()
    _fit(faces, run, "trainer.max_epochs=1", "overwrite=true")
    out = capsys.readouterr().out
    assert f"deleting {run / 'eval'}/" in out and f"deleting {run / 'pipeline.pt'}" in out
    assert not (run / "eval").exists() and not (run / "pipeline.pt").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert "\noverwrite:" not in (run / "config.yaml").read_text()
    # a folder that looks like a run but carries no marker: nothing deleted
    proj = tmp_path / "proj"
    (proj / "logs").mkdir(parents=True)
    (proj / "logs" / "a").write_text("x")
    (proj / "config.yaml").write_text("y")
    with pytest.raises(RunFolderError, match=rf"no {RUN_MARKER}.*deletes nothing"):
        prepare_run_folder(proj, resuming=False, overwrite=True)
    assert (proj / "logs" / "a").read_text() == "x" and (proj / "config.yaml").read_text() == "y"


def test_overwrite_refuses_root_home_and_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for where, what in [("/", "root"), (str(Path.home()), "home"), (".", "current"),
                        (str(tmp_path), "current"), ("..", "current")]:  # fmt: skip
        with pytest.raises(RunFolderError, match=what):
            prepare_run_folder(where, resuming=False, overwrite=True)
    with pytest.raises(ConfigError, match="output_dir"):
        load_config([EXP / "tiny_face_wider.yaml"], ["output_dir="])
    assert main(["fit", str(EXP / "tiny_face_wider.yaml"), "output_dir=", "overwrite=true"]) == 2


def test_resume_never_falls_back_to_a_fresh_start_nor_drops_later_rows(
    faces: Path, trained: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ck = run / "checkpoints"
    # an older epoch while later checkpoints stay: refused, saying what would happen and how
    with pytest.raises(CheckpointError, match=r"epoch000\.ckpt: epoch 0 .* older than .*last"):
        resume_checkpoint(_cfg(faces, run, f"resume={ck / 'epoch000.ckpt'}"))
    # an explicit path is the one resumed, even with a newer SLURM save beside it (named)
    shutil.copy(ck / "epoch001.ckpt", run / "hpc_ckpt_1.ckpt")
    with pytest.warns(UserWarning, match=r"resuming from it as asked.*hpc_ckpt_1"):
        got = resume_checkpoint(_cfg(faces, run, f"resume={ck / 'last.ckpt'}"))
    assert got == str(ck / "last.ckpt")
    # branching from an older epoch into a new folder is allowed
    other = _cfg(faces, tmp_path / "branch", f"resume={ck / 'epoch000.ckpt'}")
    assert resume_checkpoint(other) == str(ck / "epoch000.ckpt")
    # resume=auto with every checkpoint unloadable: a named error, not epoch 0 again
    for p in [*ck.glob("*.ckpt"), run / "hpc_ckpt_1.ckpt"]:
        p.write_bytes(p.read_bytes()[:3000])
    rows = (run / "logs" / "metrics.csv").read_text()
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="none of the 4 check"):
        resume_checkpoint(_cfg(faces, run, "resume=auto"))
    assert main(["fit", *_args(faces, run, "resume=auto")]) == 2
    assert (run / "logs" / "metrics.csv").read_text() == rows


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("evaluate.split=test", "evaluate.split': must be one of train"),
        ("evaluate.score_fusion=geometric", "evaluate.score_fusion': must be one of d_only"),
        ("trainer.max_epochs=0", "trainer.max_epochs': must be >= 1, got 0 (0 trains nothing"),
        ("trainer.max_epochs=-1", "trainer.max_epochs': must be >= 1, got -1"),
        ("data.top_k=0", "data.top_k': must be >= 1"),
        ("data.top_k=-3", "data.top_k': must be >= 1"),
        ("data.missing_proposals=skip", "data.missing_proposals"),
    ],
)
def test_enumerated_and_bounded_config_values_fail_at_load(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([EXP / "tiny_face_wider.yaml"], [override])
    assert needle in str(info.value)


def test_score_fusion_names_have_one_home() -> None:
    from gan_detect.config.schema import SCORE_FUSIONS as IN_CONFIG
    from gan_detect.infer.inference import SCORE_FUSIONS

    assert SCORE_FUSIONS is IN_CONFIG


def test_partial_empty_or_unusable_proposals_are_errors(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.data import build_datamodule
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals

    plain = _cfg(faces, tmp_path / "run")
    ids = [r.image_id for r in build_datamodule(plain.data, scale=4).records("train")]  # type: ignore[arg-type]
    one = Proposals(np.array([[1.0, 2.0, 30.0, 30.0]]), np.array([0.5]), np.ones(1, np.int64))
    write_wider_tree({ids[0]: one}, tmp_path / "partial")
    cfg = _cfg(faces, tmp_path / "run", f"data.train_proposals={tmp_path / 'partial'}")
    dm = build_datamodule(cfg.data, scale=4)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"no proposals for 3 of the 4 images .*missing_proposals"):
        dm.proposals("train")
    cfg = _cfg(faces, tmp_path / "run", f"data.train_proposals={tmp_path / 'partial'}",
               "data.missing_proposals=jitter")  # fmt: skip
    build_datamodule(cfg.data, scale=4).proposals("train")  # type: ignore[arg-type]
    assert "data.missing_proposals=jitter: ground-truth jitter proposals for 3 of the 4" in (
        capsys.readouterr().out
    )
    # every box unusable (zero width): an error naming the proposals, not a store of no negatives
    flat = Proposals(np.array([[5.0, 5.0, 5.0, 20.0]]), np.array([0.5]), np.ones(1, np.int64))
    write_wider_tree(dict.fromkeys(ids, flat), tmp_path / "flat")
    cfg = _cfg(faces, tmp_path / "run", f"data.train_proposals={tmp_path / 'flat'}",
               f"data.cache_dir={tmp_path / 'cache_flat'}")  # fmt: skip
    with pytest.raises(InputError, match=r"train_proposals=.*flat: none of the 4 proposal boxes"):
        build_datamodule(cfg.data, scale=4)._store("train")  # type: ignore[arg-type]


def test_checkpoint_of_another_variant_or_class_count_is_refused(
    faces: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = trained / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    for cmd in ("evaluate", "validate"):
        argv = [cmd, *_args(faces, trained, f"ckpt={ckpt}", "variant.name=bicubic")]
        assert main(argv) == 2, cmd
        err = capsys.readouterr().err
        assert (
            f"{ckpt}: a tiny_face checkpoint with data.num_classes=1, but the config has "
            "variant.name=bicubic"
            in err
            and err.count("\n") == 1
        ), err


def test_newer_checkpoint_config_key_and_missing_weights_name_the_file(
    trained: Path, tmp_path: Path
) -> None:
    from gan_detect.train.gan_module import GANDetectionModule
    from gan_detect.variants import GANVariant

    state = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    newer = tmp_path / "newer.ckpt"
    state["hyper_parameters"]["config"]["variant"]["from_the_future"] = 1
    torch.save(state, newer)
    with pytest.raises(CheckpointError, match=rf"^{newer}: does not fit .*from_the_future"):
        GANVariant.from_checkpoint(newer)
    del state["hyper_parameters"]["config"]["variant"]["from_the_future"]
    state["state_dict"].pop(next(iter(state["state_dict"])))
    missing = tmp_path / "missing.ckpt"
    torch.save(state, missing)
    with pytest.raises(CheckpointError, match=rf"^{missing}: does not fit .*Missing key"):
        GANDetectionModule.from_checkpoint(missing)


def test_crafted_pretrained_path_is_refused_naming_it(tmp_path: Path) -> None:
    from gan_detect.models.backbone import build_backbone

    evil = tmp_path / "weights.pth"
    torch.save({"x": _Evil(tmp_path / "PWNED")}, evil)
    with pytest.raises(CheckpointError, match=rf"{evil}: refused"):
        build_backbone("test_resnet", pretrained_path=str(evil))
    assert not (tmp_path / "PWNED").exists()


def test_cli_catches_input_and_os_errors_but_not_bare_value_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app import cli

    assert all(issubclass(c, InputError) for c in (ConfigError, CheckpointError, RunFolderError))

    def boom(exc: BaseException):  # type: ignore[no-untyped-def]
        def cmd(args: object) -> int:
            raise exc

        return cmd

    error = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run")
    monkeypatch.setitem(cli.COMMANDS, "x", fake_command("x", boom(error)))
    assert main(["x"]) == 2
    assert capsys.readouterr().err == "gan-detect x: error: /mnt/ro/run: Read-only file system\n"
    monkeypatch.setitem(cli.COMMANDS, "x", fake_command("x", boom(ValueError("an internal bug"))))
    with pytest.raises(ValueError, match="an internal bug"):
        main(["x"])


def test_unreadable_training_images_are_named(faces: Path, tmp_path: Path) -> None:
    from gan_detect.data.full_image import load_image

    good = next((faces / "WIDER_train" / "images").rglob("*.jpg")).read_bytes()
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"hello, not a jpeg\n",
        "cut.jpg": good[: len(good) // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=rf"^{tmp_path / name}: not a readable image"):
            load_image(str(tmp_path / name))


def test_disk_full_while_building_a_store_or_saving_a_checkpoint_is_named(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.app.cli import _one_line
    from gan_detect.data import build_datamodule, roi_store

    def full(path: object, *a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    cfg = _cfg(faces, tmp_path / "run", f"data.cache_dir={tmp_path / 'cache'}")
    monkeypatch.setattr(roi_store.np, "save", full)
    with pytest.raises(OSError) as info:
        build_datamodule(cfg.data, scale=4)._store("train")  # type: ignore[arg-type]
    line = _one_line(info.value)
    assert "cannot write the ROI store" in line and str(tmp_path / "cache") in line, line
    assert "No space left" in line
    monkeypatch.undo()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed "
                     "writing file data/0: file write failed")))  # fmt: skip
    target = tmp_path / "ck" / "last.ckpt"
    with pytest.raises(OSError) as info2:
        atomic_torch_save({"a": 1}, target)
    assert info2.value.filename == str(target) and "file write failed" in _one_line(info2.value)
    assert not target.with_name("last.ckpt.tmp").exists()


# A shell without job control starts background jobs with SIGINT ignored, and Python then keeps
# it ignored: the worker restores Python's own handler, as a terminal user's process has it.
CTRL_C_WORKER = SIGTERM_WORKER.replace("signal.SIGTERM", "signal.SIGINT").replace(
    "import signal, sys\n",
    "import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n",
    1,
)


def test_ctrl_c_in_fit_saves_last_ckpt_and_exits_130(faces: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    worker = tmp_path / "worker.py"
    worker.write_text(CTRL_C_WORKER)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(worker), "fit", *_args(faces, run, "trainer.max_epochs=3")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "interrupted (Ctrl-C)" in proc.stderr and "last.ckpt holds the state" in proc.stderr
    assert _step(run / "checkpoints" / "last.ckpt")[0] == 1  # saved in epoch 2
    assert not (run / LOCK_FILE).exists()


class _FakePipeline:
    """Predicts no boxes; Ctrl-C on call number ``stop_at`` (1-based), if given."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls, self.stop_at = 0, stop_at

    def predict_batch(self, images: list) -> list:  # type: ignore[type-arg]
        from gan_detect.infer.pipeline import Detections

        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        none = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), [])
        return [none for _ in images]


def test_predict_out_folder_summary_name_and_interrupt(tmp_path: Path) -> None:
    from PIL import Image

    from gan_detect.app.predict import run_predict

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in ("summary", "a", "b"):
        Image.new("RGB", (32, 24)).save(imgs / f"{n}.jpg")
    elsewhere = tmp_path / "elsewhere.jpg"
    Image.new("RGB", (32, 24)).save(elsewhere)
    (imgs / "link.jpg").symlink_to(elsewhere)  # a symlinked image inside the input folder
    out = imgs / "pred"  # inside the input folder
    s = run_predict(_FakePipeline(), [str(imgs)], out, draw=True, progress=False)  # type: ignore[arg-type]
    assert s["found"] == 4 and len(s["processed"]) == 4
    assert json.loads((out / "summary.jpg.json").read_text())["image"] == str(imgs / "summary.jpg")
    assert json.loads((out / "summary.json").read_text())["found"] == 4
    # a second run into the same --out: refused, then replaced with overwrite; never its own input
    with pytest.raises(InputError, match="holds another predict run"):
        run_predict(_FakePipeline(), [str(imgs)], out, progress=False)  # type: ignore[arg-type]
    s = run_predict(_FakePipeline(), [str(imgs)], out, draw=True, progress=False, overwrite=True)  # type: ignore[arg-type]
    assert s["found"] == 4
    # Ctrl-C after the first batch: that batch's results stay, the summary says so
    out2 = tmp_path / "out2"
    with pytest.raises(KeyboardInterrupt):
        run_predict(_FakePipeline(stop_at=2), [str(imgs)], out2, batch_size=1, progress=False)  # type: ignore[arg-type]
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["interrupted"] is True and len(summary["processed"]) == 1
    assert Path(summary["processed"][0]["json"]).is_file()
    # --out that is a file: one line
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_predict(_FakePipeline(), [str(imgs)], tmp_path / "file", progress=False)  # type: ignore[arg-type]


def test_interrupted_propose_keeps_the_finished_images(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gan_detect.data.records import Proposals
    from gan_detect.detector import propose as P

    one = Proposals(np.array([[1.0, 2.0, 9.0, 9.0]]), np.array([0.5]), np.ones(1, np.int64))

    def stopped(model: object, records: list, **kw: object) -> None:  # type: ignore[type-arg]
        raise P.ProposalsInterrupted({records[0].image_id: one}, len(records))

    monkeypatch.setattr(P, "run_proposals", stopped)
    with pytest.raises(P.ProposalsInterrupted) as info:
        P.propose_folder(
            faces / "WIDER_val" / "images", tmp_path / "out", model=torch.nn.Identity()
        )
    assert info.value.written and all(p.exists() for p in info.value.written.values())
    assert isinstance(info.value, KeyboardInterrupt)


def test_damaged_roi_store_is_rebuilt_and_bad_labels_are_named(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gan_detect.data import build_datamodule
    from gan_detect.data.roi_store import RoiStoreDataset, verify_store

    cfg = _cfg(faces, tmp_path / "run", f"data.cache_dir={tmp_path / 'cache'}")
    dm = build_datamodule(cfg.data, scale=4)  # type: ignore[arg-type]
    store = dm._store("train")
    assert verify_store(store) is None
    shard = store / "hr_00000.npy"
    for damage in (lambda b: b[:128] + bytes(len(b) - 128), lambda b: b[: len(b) // 2]):
        shard.write_bytes(damage(shard.read_bytes()))  # zeroed, then truncated
        assert str(shard) in str(verify_store(store))
        capsys.readouterr()
        dm._store("train")
        out = capsys.readouterr().out
        assert f"{shard} does not match its checksum" in out and "rebuilding" in out
        assert verify_store(store) is None
    labels = np.load(store / "labels.npy")
    labels[0] = 7
    np.save(store / "labels.npy", labels)
    with pytest.raises(InputError, match=r"labels\.npy: labels .*7 outside 0\.\.1"):
        RoiStoreDataset(store, scale=4, num_classes=1)


LOCK_WORKER = textwrap.dedent(
    """
    import sys, time, warnings
    from gan_detect.train.run_folder import RunFolderError, run_lock
    warnings.simplefilter("ignore")
    run, log, go = sys.argv[1], sys.argv[2], sys.argv[3]
    import os
    while not os.path.exists(go):  # start together: the parent creates it once all are up
        time.sleep(0.005)
    try:
        with run_lock(run):
            with open(log, "a") as f:
                f.write(f"in {time.monotonic()}\\n")
            time.sleep(0.3)
            with open(log, "a") as f:
                f.write(f"out {time.monotonic()}\\n")
    except RunFolderError:
        pass
    """
)


def test_taking_over_a_dead_pids_lock_is_atomic_across_processes(tmp_path: Path) -> None:
    import time

    run = tmp_path / "run"
    run.mkdir()
    worker = tmp_path / "w.py"
    worker.write_text(LOCK_WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for trial in range(3):
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (run / LOCK_FILE).write_text(f"{dead.pid} {os.uname().nodename}\n")
        log = tmp_path / f"log{trial}"
        go = tmp_path / f"go{trial}"
        procs = [subprocess.Popen([sys.executable, str(worker), str(run), str(log), str(go)],
                                  env=env) for _ in range(6)]  # fmt: skip
        time.sleep(0.5)  # let them import; a slow start only delays the race, never breaks it
        go.touch()
        for p in procs:
            assert p.wait(timeout=60) == 0
        events = log.read_text().split()
        held = 0
        for kind in events[::2]:  # in/out in time order: never two holders at once
            held += 1 if kind == "in" else -1
            assert held in (0, 1), events
        assert events.count("in") >= 1


def test_retinaface_scales_a_huge_photo_down_to_its_pixel_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("onnxruntime")
    from gan_detect.detector.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector()
    seen: list[tuple[int, ...]] = []
    real = det.preprocess
    monkeypatch.setattr(det, "preprocess", lambda im: (seen.append(tuple(im.shape)), real(im))[1])
    monkeypatch.setattr(det, "max_pixels", 160 * 120)
    with pytest.warns(UserWarning, match=r"640x480 image .* scaled by 0\.25"):
        out = det.detect(torch.rand(3, 480, 640))
    assert seen == [(3, 120, 160)] and out["boxes"].shape[1] == 4
