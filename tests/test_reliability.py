"""Reliability (issue 14): the right checkpoint every time, no silent success, no code from files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from gan_detect.checkpoints import (
    CheckpointError,
    SafeCheckpointIO,
    atomic_torch_save,
    load_checkpoint,
)
from gan_detect.cli import load_config, main
from gan_detect.data.synthetic import write_synthetic_faces
from gan_detect.run_folder import LOCK_FILE, RunFolderError, run_lock
from gan_detect.training import fit, resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"


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
    run = tmp_path / "run"
    _fit(faces, run, "trainer.max_epochs=1", "trainer.checkpoint_every_n_batches=1")
    _fit(faces, run, "trainer.max_epochs=2", "trainer.checkpoint_every_n_batches=1", "resume=auto")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]  # no last-v1.ckpt
    assert _step(run / "checkpoints" / "last.ckpt") == _step(run / "checkpoints" / "epoch001.ckpt")
    assert _step(run / "checkpoints" / "last.ckpt")[0] == 1
    # 3: the resumed run continued metrics.csv (epoch 0's rows are still there)
    with (run / "logs" / "metrics.csv").open() as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("epoch")}
    assert {"0", "1"} <= epochs
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
    import gan_detect.training as T

    class Term(Callback):  # SIGTERM (as SLURM sends it) before the 2nd epoch's batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                signal.raise_signal(signal.SIGTERM)

    _build = T.build_callbacks
    T.build_callbacks = lambda cfg: [*_build(cfg), Term()]
    from gan_detect.cli import main
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


# ---- 5, 6: unwritable checkpoints folder, old run folder, lock ----------------------------------
def test_run_folder_is_refused_locked_or_unwritable(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    with pytest.raises(CheckpointError, match="refused"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


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
    with warnings.catch_warnings():
        try:
            code = main(argv)
        except SystemExit as err:  # argparse's own error exit (predict)
            code = int(err.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"gan-detect {argv[0]}: error:")


def test_debug_flag_shows_the_traceback() -> None:
    from gan_detect.schema import ConfigError

    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        main(["fit", str(EXP / "tiny_face_wider.yaml"), "trainer.max_epochs=-5", "--debug"])
