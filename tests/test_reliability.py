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

ROOT = Path(__file__).resolve().parents[1]
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
    from test_wider_face_ap import PREDS, _write_mats

    from gan_detect.app.wider_eval import evaluate_wider_tree
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.records import Proposals

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
