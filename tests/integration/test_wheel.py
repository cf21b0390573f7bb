"""A built wheel runs on its own: presets ship as package data, the entry point works.

The wheel is built from this checkout, unpacked with pip into a temporary folder and run from
another folder, so nothing of the checkout (its experiments/ folder, an editable install) is on
the path; the subprocess checks that it really imports the unpacked copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("wheel")
    from setuptools import build_meta  # the build backend pyproject.toml names

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        name = build_meta.build_wheel(str(tmp / "dist"))
    finally:
        os.chdir(cwd)
        for leftover in ("build",):  # setuptools' scratch folder in the checkout
            subprocess.run(["rm", "-rf", str(ROOT / leftover / "bdist.linux-x86_64")], check=False)
    wheel = tmp / "dist" / name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "gan_detect/config/presets/demo.yaml" in names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    return tmp, env


def _run(
    tmp: Path, env: dict[str, str], *args: str, timeout: int = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_wheel_imports_its_own_copy_and_answers_help(
    installed: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = installed
    r = _run(tmp, env, "-c", "import gan_detect; print(gan_detect.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(tmp / "site"), r.stdout
    r = _run(tmp, env, "-m", "gan_detect", "--help")
    assert r.returncode == 0, r.stderr
    assert (
        "demo" in r.stdout
        and "tiny_face_wider" in _run(tmp, env, "-m", "gan_detect", "fit", "--help").stdout
    )


@pytest.mark.slow
def test_wheel_runs_the_quick_demo(installed: tuple[Path, dict[str, str]]) -> None:
    tmp, env = installed
    r = _run(
        tmp, env, "-m", "gan_detect", "demo", "--quick", "--out", str(tmp / "demo"), timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (tmp / "demo" / "faces" / "eval" / "metrics.json").is_file()
    assert (tmp / "demo" / "report" / "report.md").is_file()
