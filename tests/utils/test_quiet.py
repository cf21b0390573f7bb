"""Lightning's chatter is silenced by default and restored by --verbose / GAN_DETECT_VERBOSE."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytest

from gan_detect.utils.quiet import VERBOSE_ENV, quiet_lightning

NOISE = [
    "litlogger",
    "`Trainer(limit_train_batches=1.0)` was configured",
    "GPU available:",
    "TPU available:",
    "Total params",
    "LeafSpec",
    "smaller than the logging interval",
    "Seed set to",
]


def test_quick_demo_output_has_no_lightning_chatter(demo: Path) -> None:
    out = (demo / "demo_stdout.txt").read_text()
    err = (demo / "demo_stderr.txt").read_text()
    for s in NOISE:
        assert s not in out + err, s
    # What a user needs stays: stage headers and where the results went. Progress bars only on
    # a terminal: captured here, so none (their redraws would fill a redirected log).
    assert "=== [faces] training the baseline detector" in out
    assert "Epoch 0" not in out + err
    assert f"report: {demo / 'report' / 'report.md'}" in out


def test_verbose_restores_lightning_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "lightning.pytorch.utilities.rank_zero"
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with warnings.catch_warnings():
        quiet_lightning()
        assert logging.getLogger(name).level == logging.WARNING
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # the default filter order: ours were added first
            quiet_lightning()
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1
            )
        assert not caught
    monkeypatch.setenv(VERBOSE_ENV, "1")
    quiet_lightning()
    assert logging.getLogger(name).level == logging.NOTSET


def test_verbose_switch_sets_the_environment_and_the_model_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning.pytorch.callbacks import ModelSummary

    from gan_detect.app.cli import load_config, main
    from gan_detect.train.trainer import build_trainer

    cfg = load_config(
        [],
        ["variant.name=tiny_face", "data.name=wider_face", "data.root=/x", "logger.kind=none"],
    )

    def has_summary() -> bool:
        trainer = build_trainer(cfg, accelerator="cpu", default_root_dir=str(tmp_path))
        return any(isinstance(c, ModelSummary) for c in trainer.callbacks)  # type: ignore[attr-defined]

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert not has_summary()
    assert main(["--verbose", "config", "show", "data.root=/x"]) == 0
    assert os.environ[VERBOSE_ENV] == "1"
    assert has_summary()
    monkeypatch.delenv(VERBOSE_ENV)
    quiet_lightning()
