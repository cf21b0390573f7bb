"""SRGenerator: shapes, layer placement, initialisation, options and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from gan_detect.models.generator import GeneratorOutput, ResidualBlock, SRGenerator

TINY = dict(channels=8, num_res_blocks=2, convs_per_block=2, upsample_channels=8, refine_channels=8)


def _lr(n: int = 2, size: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 2 - 1


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("refinement", [True, False])
def test_output_is_scale_times_input(scale: int, refinement: bool) -> None:
    g = SRGenerator(scale=scale, refinement=refinement, **TINY)
    out = g(_lr(2, 8))
    assert out.sr.shape == (2, 3, 8 * scale, 8 * scale)
    if refinement:
        assert out.coarse is not None and out.coarse.shape == out.sr.shape
    else:
        assert out.coarse is None


def test_non_square_input() -> None:
    g = SRGenerator(scale=4, **TINY)
    assert g(torch.zeros(1, 3, 6, 10)).sr.shape == (1, 3, 24, 40)


def test_without_refinement_sr_is_upsampling_output() -> None:
    g = SRGenerator(refinement=False, **TINY).eval()
    lr = _lr()
    assert g.refine is None
    torch.testing.assert_close(g(lr).sr, torch.tanh(g.upsample(lr)))


def test_bn_relu_after_every_conv_except_last() -> None:
    blocks, cpb, log2s = 2, 2, 2
    g = SRGenerator(scale=4, **TINY)
    assert g.refine is not None
    # Up-sampling: first conv, 2 blocks x 2 convs, conv, 2 de-convs, then the 1x1 output conv.
    up = _leaves(g.upsample)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in up) == 1 + blocks * cpb + 1 + log2s
    # The last conv of each residual block has no ReLU (identity-friendly SRGAN block).
    assert sum(isinstance(m, nn.ReLU) for m in up) == 1 + blocks * (cpb - 1) + 1 + log2s
    assert isinstance(up[-1], nn.Conv2d) and up[-1].kernel_size == (1, 1)
    assert up[-1].out_channels == 3
    # Refinement: first conv, blocks, conv, two wide convs, then the 3x3 output conv.
    ref = _leaves(g.refine)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ref) == 1 + blocks * cpb + 1 + 2
    assert sum(isinstance(m, nn.ReLU) for m in ref) == 1 + blocks * (cpb - 1) + 1 + 2
    assert isinstance(ref[-1], nn.Conv2d) and ref[-1].kernel_size == (3, 3)
    # Every conv but each sub-network's last is directly followed by BatchNorm.
    for leaves in (up, ref):
        for i, m in enumerate(leaves[:-1]):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                assert isinstance(leaves[i + 1], nn.BatchNorm2d)


def test_default_matches_table1_layer_counts() -> None:
    g = SRGenerator()
    assert g.refine is not None
    up, ref = _leaves(g.upsample), _leaves(g.refine)
    deconvs = [m for m in up if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.out_channels, d.stride) for d in deconvs] == [(256, (2, 2))] * 2
    # 8 residual blocks of 2 convs = 16 convs in each trunk, plus the named convs of Table 1.
    assert sum(isinstance(m, nn.Conv2d) for m in up) == 1 + 16 + 1 + 1
    assert sum(isinstance(m, nn.Conv2d) for m in ref) == 1 + 16 + 1 + 2 + 1
    assert sum(isinstance(m, ResidualBlock) for m in g.modules()) == 16
    assert [m.out_channels for m in ref if isinstance(m, nn.Conv2d)][-3:] == [256, 256, 3]


def test_init_normal_002_and_zero_bias() -> None:
    torch.manual_seed(0)
    g = SRGenerator()
    w = torch.cat(
        [m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    )
    assert abs(w.std().item() - 0.02) < 0.0005
    assert abs(w.mean().item()) < 0.0005
    biases = [m.bias for m in g.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert len(biases) == 2 and all(torch.all(b == 0) for b in biases)


def test_tanh_bounds_output_and_none_is_linear() -> None:
    # Train mode: BatchNorm re-normalises the small N(0, 0.02) activations to unit scale.
    g_tanh = SRGenerator(output_activation="tanh", **TINY)
    g_none = SRGenerator(output_activation="none", **TINY)
    for g in (g_tanh, g_none):
        nn.init.normal_(g.upsample[-1].weight, 0.0, 10.0)  # push pre-activations far past +-1
    g_none.load_state_dict(g_tanh.state_dict())
    lr = _lr()
    out_tanh, out_none = g_tanh(lr), g_none(lr)
    assert out_tanh.coarse is not None and out_none.coarse is not None
    assert out_tanh.sr.abs().max() <= 1 and out_tanh.coarse.abs().max() <= 1
    assert out_none.coarse.abs().max() > 1
    torch.testing.assert_close(out_tanh.coarse, torch.tanh(out_none.coarse))


@pytest.mark.parametrize("act", ["tanh", "none"])
def test_bicubic_skip_reproduces_bicubic_with_zero_residuals(act: str) -> None:
    g = SRGenerator(bicubic_skip=True, output_activation=act, **TINY)
    last = g.upsample[-1]
    assert isinstance(last, nn.Conv2d)
    nn.init.zeros_(last.weight)
    lr = _lr() * 0.9
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    coarse = g(lr).coarse
    assert coarse is not None
    expected = bicubic.clamp(-0.999, 0.999) if act == "tanh" else bicubic
    torch.testing.assert_close(coarse, expected, atol=1e-5, rtol=1e-5)
    # The refinement is residual too: with a zero refinement output, sr = coarse.
    assert g.refine is not None
    nn.init.zeros_(g.refine[-1].weight)
    nn.init.zeros_(g.refine[-1].bias)
    out = g(lr)
    torch.testing.assert_close(out.sr, out.coarse, atol=1e-5, rtol=1e-5)


def test_generator_output_detach_and_lightning_collection() -> None:
    g = SRGenerator(**TINY)
    out = g(_lr())
    assert out.sr.requires_grad
    detached = out.detach()
    assert not detached.sr.requires_grad and detached.coarse is not None
    assert not detached.coarse.requires_grad
    assert GeneratorOutput(sr=out.sr).detach().coarse is None
    # Lightning moves batches and outputs with apply_to_collection; it rebuilds dataclasses.
    moved = apply_to_collection(detached, torch.Tensor, lambda t: t.double())
    assert isinstance(moved, GeneratorOutput) and moved.sr.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        (dict(scale=3), "3"),
        (dict(scale=1), "1"),
        (dict(channels=0), "channels"),
        (dict(num_res_blocks=-1), "num_res_blocks"),
        (dict(convs_per_block=0), "convs_per_block"),
        (dict(output_activation="relu"), "relu"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        SRGenerator(**kwargs)


def test_bad_input_shape_raises() -> None:
    with pytest.raises(ValueError, match="1, 8, 8"):
        SRGenerator(**TINY)(torch.zeros(1, 8, 8))
