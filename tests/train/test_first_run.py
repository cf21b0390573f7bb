"""A failed first run leaves no half-made run folder; the README's output folders are ignored."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gan_detect.app.cli import main
from gan_detect.config import PRESETS
from gan_detect.train.fit import new_run_folder

ROOT = Path(__file__).resolve().parents[2]


def test_failed_fit_leaves_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    files = [str(PRESETS / f) for f in ("tiny_face_wider.yaml", "smoke.yaml")]
    rc = main(
        ["fit", *files, f"data.root={tmp_path / 'nope'}", f"output_dir={run}", "logger.kind=none"]
    )
    assert rc == 2 and "no such folder" in capsys.readouterr().err
    assert not run.exists()


def test_new_run_folder_removes_only_what_it_made_and_nothing_written(tmp_path: Path) -> None:
    for name, extra, pre_exists, removed in [
        ("only_config", None, False, True),
        ("with_checkpoint", "checkpoints/last.ckpt", False, False),  # resumable: kept
        ("existing", None, True, False),  # the user's folder: kept
    ]:
        out = tmp_path / name
        if pre_exists:
            out.mkdir()
        with pytest.raises(RuntimeError), new_run_folder(out):
            out.mkdir(exist_ok=True)
            (out / "config.yaml").write_text("seed: 0\n")
            if extra:
                (out / extra).parent.mkdir(parents=True)
                (out / extra).write_text("x")
            raise RuntimeError("failed")
        assert out.exists() != removed, name


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_default_output_folders_are_git_ignored() -> None:
    paths = ["predictions/img.json", "reports/compare/report.md", "runs/demo/report/report.md"]
    res = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert res.stdout.split() == paths
