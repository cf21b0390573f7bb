"""Shared fixtures: offline W&B, seeding, and one quick demo run per session.

The tests mirror the package: ``tests/<name>/`` holds the tests of ``gan_detect/<name>/`` (what a
test mainly exercises decides), ``tests/integration/`` the end-to-end ones. This folder is put on
``sys.path`` so the shared helpers next to this file (``from _synth import ...``) import from any
of them; a test module imports another's helpers by package (``from tests.train.test_distributed
import faces``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Tests never talk to W&B servers.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed() -> None:
    import lightning as L

    L.seed_everything(0, workers=True)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gan-detect demo --quick`` once per test session (test_demo.py, test_readme.py)."""
    out = tmp_path_factory.mktemp("demo")
    # Not verbose whatever an earlier in-process test left in the environment.
    env = {k: v for k, v in os.environ.items() if k != "GAN_DETECT_VERBOSE"}
    env["WANDB_MODE"] = "disabled"
    res = subprocess.run(
        [sys.executable, "-m", "gan_detect", "demo", "--quick", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "=== summary" in res.stdout and f"report: {out / 'report' / 'report.md'}" in res.stdout
    (out / "demo_stdout.txt").write_text(res.stdout)
    (out / "demo_stderr.txt").write_text(res.stderr)
    return out
