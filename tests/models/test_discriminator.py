"""MultiTaskDiscriminator, its heads and timm trunks: shapes, init, normalisation, weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from gan_detect.models.backbone import build_backbone
from gan_detect.models.discriminator import DiscriminatorOutput, MultiTaskDiscriminator
from gan_detect.models.generator import SRGenerator
from gan_detect.models.heads import AdversarialHead, BoxRegressionHead, ClassificationHead
from gan_detect.models.losses import box_regression_loss, classification_loss

TEST_RESNET_CHANNELS = 96  # timm "test_resnet" layer4 width


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size) * 2 - 1


def test_face_discriminator_shapes_without_box() -> None:
    d = MultiTaskDiscriminator("test_resnet", num_cls_logits=1)
    out = d(_images())
    assert isinstance(out, DiscriminatorOutput)
    assert out.adv_logits.shape == (4,)
    assert out.cls_logits.shape == (4, 1)
    assert out.box_deltas is None
    # Heads are sized from timm's feature_info, not from constants.
    assert d.adv_head.fc.in_features == TEST_RESNET_CHANNELS == d.trunk.out_channels


@pytest.mark.parametrize(("agnostic", "box_width"), [(False, 4 * 6), (True, 4)])
def test_multiclass_discriminator_box_shapes(agnostic: bool, box_width: int) -> None:
    d = MultiTaskDiscriminator(
        "test_resnet", num_cls_logits=6, box_head=True, class_agnostic_box=agnostic
    )
    out = d(_images())
    assert out.cls_logits.shape == (4, 6)
    assert out.box_deltas is not None and out.box_deltas.shape == (4, box_width)
    detached = out.detach()
    assert detached.box_deltas is not None and not detached.box_deltas.requires_grad


def test_one_logit_box_head_is_class_agnostic() -> None:
    head = BoxRegressionHead(16, num_logits=1)
    assert head.class_agnostic and head(torch.zeros(2, 16, 3, 3)).shape == (2, 4)


def test_heads_init_std_as_paper_and_fast_rcnn() -> None:
    torch.manual_seed(0)
    adv, cls = AdversarialHead(4096), ClassificationHead(2048, 4)
    box = BoxRegressionHead(1024, 6)
    for head, std in ((adv, 0.1), (cls, 0.1), (box, 0.001)):
        assert abs(head.fc.weight.std().item() - std) / std < 0.05
        assert torch.all(head.fc.bias == 0)
    assert adv(torch.ones(3, 4096, 2, 2)).shape == (3,)


def test_heads_pool_globally_so_crop_size_is_free() -> None:
    d = MultiTaskDiscriminator("test_resnet", num_cls_logits=3, box_head=True)
    for size in (32, 64, 96):
        assert d(_images(2, size)).cls_logits.shape == (2, 3)


def test_input_mapped_to_01_then_normalised_by_trunk_stats() -> None:
    d = MultiTaskDiscriminator("resnet18", imagenet_norm=True)
    assert d.trunk.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.zeros(1, 3, 2, 2)  # mid-grey in [-1, 1] = 0.5 in [0, 1]
    expected = (0.5 - 0.485) / 0.229
    assert d.normalize(x)[0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-6)
    plain = MultiTaskDiscriminator("resnet18", imagenet_norm=False)
    assert plain.normalize(-torch.ones(1, 3, 2, 2)).abs().max() == 0
    assert "mean" not in d.state_dict()  # derived, not checkpointed


@pytest.mark.slow
def test_vgg_last_pool_removed_gives_4x4_for_64px() -> None:
    x = torch.rand(1, 3, 64, 64)
    kept, _ = build_backbone("vgg11", remove_last_pool=False)
    assert kept(x).shape[-2:] == (2, 2) and kept.reduction == 32
    trunk, channels = build_backbone("vgg11", remove_last_pool=True)
    assert channels == 512
    assert trunk(x).shape == (1, 512, 4, 4) and trunk.reduction == 16
    assert isinstance(list(trunk.body.children())[-1], nn.Identity)


def test_resnet_trunk_has_no_trailing_pool_to_remove() -> None:
    x = torch.rand(1, 3, 64, 64)
    for remove in (True, False):
        trunk, channels = build_backbone("test_resnet", remove_last_pool=remove)
        assert channels == TEST_RESNET_CHANNELS and trunk(x).shape[-2:] == (2, 2)


def test_pretrained_path_loads_local_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    full = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "test_resnet.pth"
    torch.save(full.state_dict(), path)
    trunk, _ = build_backbone("test_resnet", pretrained_path=str(path))
    fresh, _ = build_backbone("test_resnet")
    loaded = dict(trunk.body.named_parameters())
    source = dict(full.named_parameters())
    assert torch.equal(loaded["layer4.0.conv1.weight"], source["layer4.0.conv1.weight"])
    assert not torch.equal(
        dict(fresh.body.named_parameters())["layer4.0.conv1.weight"],
        source["layer4.0.conv1.weight"],
    )


def test_backbone_errors_name_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not_a_model"):
        build_backbone("not_a_model")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("test_resnet", pretrained_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="num_cls_logits"):
        MultiTaskDiscriminator("test_resnet", num_cls_logits=0)


def test_task_losses_through_d_reach_generator() -> None:
    """G -> D -> cls / box loss: both task terms must train G (EESRGAN's detach bug)."""
    g = SRGenerator(channels=8, num_res_blocks=1, upsample_channels=8, refine_channels=8)
    d = MultiTaskDiscriminator("test_resnet", num_cls_logits=3, box_head=True)
    lr = torch.rand(4, 3, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 1])
    targets = torch.randn(4, 4)
    for term in ("cls", "box"):
        g.zero_grad(set_to_none=True)
        d.zero_grad(set_to_none=True)
        out = d(g(lr).sr)
        if term == "cls":
            loss = classification_loss(out.cls_logits, labels)
        else:
            assert out.box_deltas is not None
            loss = box_regression_loss(out.box_deltas, labels, targets)
        loss.backward()
        first = g.upsample[0][0].weight.grad  # G's very first conv
        assert first is not None and first.abs().sum() > 0, term
        assert all(p.grad is not None for p in g.parameters()), term
