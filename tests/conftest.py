"""Shared fixtures: offline W&B, small configs, generated ROI pairs."""

from __future__ import annotations

import os

import pytest

# Tests never talk to W&B servers.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _seed() -> None:
    import lightning as L

    L.seed_everything(0, workers=True)
