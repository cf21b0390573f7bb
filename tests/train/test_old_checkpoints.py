"""A GAN checkpoint written by the flat layout (before the subpackages) still loads.

``tests/fixtures/old_layout_gan.ckpt`` was written at commit cd05fea by
``tests/fixtures/write_old_layout_gan.py`` (see ``tests/fixtures/README.md``); the expected outputs
below are what that commit's own modules printed for the same fixed inputs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.utils.checkpoints import load_checkpoint
from gan_detect.variants import GANVariant

DATA = Path(__file__).resolve().parents[1] / "fixtures"
CKPT = DATA / "old_layout_gan.ckpt"

# Printed by write_old_layout_gan.py with the old modules, right after saving.
EXPECTED_ADV = [-0.12068648636341095, -0.12239702045917511]
EXPECTED_CLS = [[-0.11120951175689697], [-0.11489150673151016]]
EXPECTED_SR_SUM = 41.64168344938662
EXPECTED_SR_ABS_SUM = 3542.6756968626287


@pytest.fixture(autouse=True)
def _tiny_trunk() -> Iterator[None]:
    """Register the checkpoint's discriminator trunk with timm; one thread for exact sums."""
    sys.path.insert(0, str(DATA))
    try:
        import old_layout_trunk  # noqa: F401
    finally:
        sys.path.remove(str(DATA))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fixed_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The writer's HR (2, 3, 32, 32) and LR (2, 3, 8, 8) inputs: arithmetic only, no RNG."""
    hr = torch.sin(torch.arange(2 * 3 * 32 * 32, dtype=torch.float32) * 0.37).reshape(2, 3, 32, 32)
    lr = torch.cos(torch.arange(2 * 3 * 8 * 8, dtype=torch.float32) * 0.53).reshape(2, 3, 8, 8)
    return hr, lr


def _check_outputs(variant: GANVariant) -> None:
    hr, lr = _fixed_inputs()
    variant.eval()
    with torch.no_grad():
        d = variant.discriminator(hr)
        sr = variant.generator(lr).sr
    torch.testing.assert_close(d.adv_logits, torch.tensor(EXPECTED_ADV), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d.cls_logits, torch.tensor(EXPECTED_CLS), rtol=1e-4, atol=1e-5)
    assert d.box_deltas is None  # tiny_face has no box head
    assert float(sr.double().sum()) == pytest.approx(EXPECTED_SR_SUM, rel=1e-4)
    assert float(sr.double().abs().sum()) == pytest.approx(EXPECTED_SR_ABS_SUM, rel=1e-5)


def test_the_file_is_an_old_lightning_checkpoint() -> None:
    """What the old layout wrote: a full Lightning checkpoint (optimiser states included)."""
    assert 0 < CKPT.stat().st_size < 600_000
    state = load_checkpoint(CKPT, expect="gan")
    assert {"state_dict", "optimizer_states", "hyper_parameters"} <= set(state)
    assert state["hyper_parameters"]["config"]["variant"]["backbone"] == "old_layout_tiny_resnet"


def test_old_checkpoint_loads_for_inference_with_the_same_outputs() -> None:
    _check_outputs(GANVariant.from_checkpoint(CKPT))


def test_old_checkpoint_loads_for_training_with_the_same_outputs() -> None:
    module = GANDetectionModule.from_checkpoint(CKPT)
    assert module.cfg.variant.name == "tiny_face" and module.cfg.variant.g_channels == 8
    _check_outputs(module.variant)
