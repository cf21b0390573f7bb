"""``gan-detect fetch-coco`` (``gan_detect.data.coco_fetch``) on a made-up repository: git dir,
archive, folder."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gan_detect.app.cli import main


def fetch_coco(*argv: str) -> int:
    return main(["fetch-coco", *argv])


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A small tree like the source repo, and an images.txt listing two of its three files."""
    root = tmp_path / "coco_yolo"
    files = {
        "coco/images/train2017/000000000001.jpg": b"first image bytes",
        "coco/images/val2017/000000000002.jpg": b"second image bytes",
        "coco/images/val2017/000000000003.jpg": b"not listed",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    listed = list(files)[:2]
    lines = ["# header 1", "# header 2", "# header 3"]
    lines += [f"{hashlib.md5(files[r]).hexdigest()}  {r}" for r in listed]
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(lines) + "\n")
    return root, listing


def _names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_archive_with_a_leading_folder(repo: tuple[Path, Path], tmp_path: Path) -> None:
    root, listing = repo
    archive = tmp_path / "snap.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="coco_yolo-abc123")
    out = tmp_path / "out"
    assert fetch_coco("--archive", str(archive), "--out", str(out), "--list", str(listing)) == 0
    assert _names(out) == {"000000000001.jpg", "000000000002.jpg"}  # flat, unlisted file left out


def test_git_dir_at_a_commit(repo: tuple[Path, Path], tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    root, listing = repo
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}  # fmt: skip
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, env=env)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    (root / "coco/images/train2017/000000000001.jpg").write_bytes(b"changed after the commit")
    out = tmp_path / "out"
    argv = ["--git-dir", str(root / ".git"), "--commit", commit, "--out", str(out)]
    assert fetch_coco(*argv, "--list", str(listing)) == 0
    assert (out / "000000000001.jpg").read_bytes() == b"first image bytes"  # the commit's bytes


def test_md5_mismatch_and_missing_fail(
    repo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, listing = repo
    (root / "coco/images/val2017/000000000002.jpg").write_bytes(b"corrupted")
    (root / "coco/images/train2017/000000000001.jpg").unlink()
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(root / "coco/images/val2017/000000000002.jpg", flat)
    out = tmp_path / "out"
    assert fetch_coco("--folder", str(flat), "--out", str(out), "--list", str(listing)) == 1
    err = capsys.readouterr().err
    assert "1 md5 mismatches, 1 missing" in err
    assert not (out / "000000000002.jpg").exists()  # a file failing its md5 is not written


def test_without_a_list_or_shared_data_the_error_names_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gan_detect.data.paths as paths

    monkeypatch.setattr(paths, "shared_data_dir", lambda: None)
    assert fetch_coco("--folder", str(tmp_path), "--out", str(tmp_path / "out")) == 2
    assert "give --list PATH/images.txt" in capsys.readouterr().err
