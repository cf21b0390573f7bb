"""BatchNorm folding for inference (gan_detect.models.fusion)."""

from __future__ import annotations

import copy

import pytest
import torch
from _synth import tiny_config
from torch import nn

from gan_detect.config.validate import to_experiment_config
from gan_detect.models.fusion import fold_batchnorm
from gan_detect.variants import build_variant


def _with_trained_bn_stats(model: nn.Module, forward, batch: torch.Tensor) -> None:
    """BN statistics gathered on random data (fresh stats, mean 0 / var 1, fold trivially)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            forward(batch)
    model.eval()


@pytest.mark.parametrize("backbone", ["test_resnet", "resnet18", "vgg11_bn", "tv_mobilenet_v2"])
def test_folded_g_and_d_match_the_originals(backbone: str) -> None:
    raw = tiny_config("sod_mtgan")
    raw["variant"]["backbone"] = backbone
    raw["variant"]["pretrained"] = False
    torch.manual_seed(0)
    variant = build_variant(to_experiment_config(raw).variant, 3)
    lr = torch.rand(8, 3, 8, 8)
    _with_trained_bn_stats(variant, variant.discriminate_sr, lr)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in variant.modules())
    folded = copy.deepcopy(variant)
    n = fold_batchnorm(folded)
    assert n == bns > 0  # every BN of G and of these trunks sits right after a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, out = variant.discriminate_sr(lr), folded.discriminate_sr(lr)
        sr_ref, sr_out = variant.generator(lr).sr, folded.generator(lr).sr
    torch.testing.assert_close(sr_out, sr_ref, atol=1e-5, rtol=1e-4)
    for a, b in ((ref.cls_logits, out.cls_logits), (ref.box_deltas, out.box_deltas)):
        assert b is not None
        # float rounding through ~20 layers; a wrong fold moves these by O(1)
        torch.testing.assert_close(b, a, atol=1e-3 * (1 + float(a.abs().max())), rtol=0)


def test_fold_needs_eval_mode_and_leaves_unpaired_bn() -> None:
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net)
    net.eval()
    assert fold_batchnorm(net) == 1  # the leading BN has no conv before it
    assert isinstance(net[0], nn.BatchNorm2d) and isinstance(net[2], nn.Identity)
