"""Parametrised over the variant table: a new variant is tested the moment it is listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _synth import default_num_classes, roi_batch, tiny_config, variant_cases

import gan_detect.variants as variants_pkg
from gan_detect.config.validate import to_experiment_config
from gan_detect.data.roi import decode_roi_deltas
from gan_detect.models.discriminator import DiscriminatorOutput
from gan_detect.models.generator import GeneratorOutput
from gan_detect.variants import VARIANTS, GANVariantConfig, build_variant
from gan_detect.variants.common import class_box_candidates, face_accuracy, face_candidates

ROOT = Path(__file__).resolve().parents[2]
CASES = variant_cases()  # every (variant, class count it accepts): no per-variant table here


def _build(name: str, num_classes: int | None = None):
    cfg = to_experiment_config(tiny_config(name, num_classes))
    return build_variant(cfg.variant, cfg.data.num_classes), cfg


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_name_file_name_and_table_key_agree(name: str) -> None:
    cls = VARIANTS[name]
    assert cls.name == name == cls.Config().name
    assert (Path(variants_pkg.__file__).parent / f"{name}.py").is_file()
    assert issubclass(cls.Config, GANVariantConfig)  # the shared options stack on any variant


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_generator_is_4x_and_detect_has_documented_shapes(name: str, num_classes: int) -> None:
    variant, cfg = _build(name, num_classes)
    variant.eval()
    b = roi_batch(5, hr_size=32, num_classes=num_classes)
    out = variant.generator(b.lr)
    assert out.sr.shape == b.hr.shape == (5, 3, 32, 32)
    assert variant.scale == 4 and b.lr.shape[-1] * 4 == out.sr.shape[-1]
    assert variant.discriminator(out.sr).adv_logits.shape == (5,)
    boxes = torch.tensor([[10.0, 10, 30, 40]]).repeat(5, 1) + torch.arange(5.0)[:, None]
    cand_boxes, scores, labels = variant.detect(b.lr, boxes, (60, 50), refine_boxes=True)
    n, k = scores.shape
    assert n == 5 and k >= 1 and cand_boxes.shape == (5, k, 4) and labels.shape == (5, k)
    assert labels.dtype == torch.int64 and 1 <= labels.min() and labels.max() <= num_classes
    assert ((scores >= 0) & (scores <= 1)).all()
    # refined boxes stay inside the (H, W) = (60, 50) image
    assert (cand_boxes[..., 0::2] <= 50).all() and (cand_boxes[..., 1::2] <= 60).all()
    assert (cand_boxes >= 0).all()
    unrefined, _, _ = variant.detect(b.lr, boxes, (60, 50), refine_boxes=False)
    assert torch.equal(unrefined, boxes[:, None, :].expand(5, k, 4))
    stats = variant.validation_stats(b, out)
    assert "cls_acc" in stats and 0.0 <= float(stats["cls_acc"]) <= 1.0
    assert len(variant.roi_captions(b.lr)) == 5


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_losses_are_finite_weighted_loss_terms_and_reach_the_trained_networks(
    name: str, num_classes: int
) -> None:
    variant, _ = _build(name, num_classes)
    b = roi_batch(6, num_classes=num_classes)
    fake = variant.generator(b.lr)
    d_terms = variant.discriminator_losses(b, fake.detach())
    assert {"loss_d_adv", "loss_d_cls"} <= set(d_terms)
    nets = [variant.discriminator]
    terms = [d_terms]
    if variant.has_trainable_generator:
        g_terms = variant.generator_losses(b, fake)
        assert {"loss_pixel", "loss_adv", "loss_cls"} <= set(g_terms)
        nets.append(variant.generator)
        terms.append(g_terms)
    else:
        assert not any(p.requires_grad for p in variant.generator.parameters())
    for t in terms:
        losses = {k: v for k, v in t.items() if k.startswith("loss_")}
        assert losses and all(torch.isfinite(v) for v in losses.values())
    for net, t in zip(nets, terms, strict=True):
        variant.zero_grad(set_to_none=True)
        sum(v for k, v in t.items() if k.startswith("loss_")).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pixel_only_warmup_has_no_adversarial_term(name: str) -> None:
    variant, _ = _build(name)
    if not variant.has_trainable_generator:
        pytest.skip(f"{name} has no generator to warm up")
    b = roi_batch(4, num_classes=default_num_classes(name))
    terms = variant.generator_losses(b, variant.generator(b.lr), pixel_only=True)
    assert set(terms) == {"loss_pixel", "loss_pixel_coarse"}


def test_sod_mtgan_heads_have_the_class_and_box_layout() -> None:
    variant, _ = _build("sod_mtgan", 3)
    d = variant.discriminator(variant.generator(roi_batch(4, num_classes=3).lr).sr)
    assert d.cls_logits.shape == (4, 4)
    assert d.box_deltas is not None and d.box_deltas.shape == (4, 16)


def test_sod_mtgan_task_terms_alone_put_gradients_on_the_generator() -> None:
    variant, _ = _build("sod_mtgan")
    b = roi_batch(8, num_classes=3, seed=3)
    b.labels = torch.tensor([1, 2, 3, 0, 1, 2, 3, 1])
    for term in ("loss_cls", "loss_box"):
        variant.zero_grad(set_to_none=True)
        fake = variant.generator(b.lr)
        terms = variant.task_losses(b, None, variant.discriminator(fake.sr), "loss_", True)
        terms[term].backward()
        g_grad = sum(
            p.grad.abs().sum() for p in variant.generator.parameters() if p.grad is not None
        )
        assert g_grad > 0, term


def test_pixel_loss_min_size_masks_tiny_sources() -> None:
    over = {"variant.pixel_loss_min_size": 20.0}
    cfg = to_experiment_config(tiny_config("tiny_face", **over))
    variant = build_variant(cfg.variant, 1)
    b = roi_batch(4)
    b.src_sizes = torch.tensor([[30.0, 30.0], [10.0, 40.0], [25.0, 21.0], [5.0, 5.0]])
    assert variant.pixel_mask(b).tolist() == [True, False, True, False]
    # All ROIs masked out -> zero pixel loss, still differentiable.
    b.src_sizes[:] = 1.0
    out = variant.pixel_losses(b, GeneratorOutput(sr=variant.generator(b.lr).sr))
    assert float(out["loss_pixel"].detach()) == 0.0


def test_tiny_face_rejects_multiclass_data() -> None:
    cfg = to_experiment_config(tiny_config("tiny_face"))
    with pytest.raises(ValueError, match="num_classes"):
        build_variant(cfg.variant, 5)


@pytest.mark.parametrize("num_classes", [1, 5])
def test_bicubic_control_has_no_generator_and_the_paper_heads(num_classes: int) -> None:
    variant, _ = _build("bicubic", num_classes)
    assert not variant.has_trainable_generator
    assert list(variant.generator.parameters()) == []
    b = roi_batch(4, num_classes=num_classes)
    sr = variant.generator(b.lr).sr
    want = F.interpolate(b.lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.equal(sr, want)
    d = variant.discriminator(sr)
    if num_classes == 1:  # tiny-face heads: one face logit, no box head, no box loss
        assert d.cls_logits.shape == (4, 1) and d.box_deltas is None
    else:  # SOD-MTGAN heads: (C + 1)-way class, class-specific boxes
        assert d.cls_logits.shape == (4, 6) and d.box_deltas is not None
        assert d.box_deltas.shape == (4, 24)
    terms = variant.discriminator_losses(b, variant.generator(b.lr))
    assert ("loss_d_box" in terms) == (num_classes > 1)
    with pytest.raises(RuntimeError, match="no generator"):
        variant.generator_losses(b, variant.generator(b.lr))


def test_class_box_candidates_drop_background_and_use_each_class_slot() -> None:
    boxes = torch.tensor([[10.0, 10, 30, 50], [0, 0, 8, 8]])
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])  # C = 2, column 0 = background
    deltas = torch.zeros(2, 3, 4)
    deltas[:, 0] = 9.0  # background slot: must never be applied
    deltas[:, 1, 0], deltas[:, 2, 1] = 1.0, -2.0  # class 1 moves in x, class 2 in y
    out = DiscriminatorOutput(torch.zeros(2), logits, deltas.view(2, 12))
    got, scores, labels = class_box_candidates(out, boxes, (100, 100), refine_boxes=True)
    assert torch.allclose(scores, torch.softmax(logits, 1)[:, 1:])
    assert labels.tolist() == [[1, 2], [1, 2]]
    for c in (1, 2):
        assert torch.allclose(
            got[:, c - 1], decode_roi_deltas(deltas[:, c], boxes, 1.0).clamp(0, 100)
        )
    # class-agnostic (N, 4) deltas move every class alike; refine_boxes=False keeps proposals
    shared = DiscriminatorOutput(torch.zeros(2), logits, deltas[:, 1])
    got, _, _ = class_box_candidates(shared, boxes, (100, 100), refine_boxes=True)
    assert torch.allclose(got[:, 0], got[:, 1])
    kept, _, _ = class_box_candidates(out, boxes, (100, 100), refine_boxes=False)
    assert torch.equal(kept, boxes[:, None].expand(2, 2, 4))


def test_face_candidates_score_is_the_sigmoid_of_the_one_logit() -> None:
    boxes = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]])
    out = DiscriminatorOutput(torch.zeros(2), torch.tensor([[0.0], [2.0]]))
    got, scores, labels = face_candidates(out, boxes)
    assert torch.equal(got, boxes[:, None]) and labels.tolist() == [[1], [1]]
    assert torch.allclose(scores[:, 0], torch.sigmoid(torch.tensor([0.0, 2.0])))
    assert float(face_accuracy(out, torch.tensor([0, 1]))) == 1.0  # p 0.5 is not a face


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_g_step_normalises_d_like_the_d_step(name: str, num_classes: int) -> None:
    """g_step_d_norm=batch: the G step's D outputs on SR are the SR half of D(cat(HR, SR)) in
    train mode (the D step's batch statistics), not D(SR) with fake-only statistics;
    running: D(SR) in eval mode."""
    from gan_detect.models.losses import g_adversarial_loss

    variant, _ = _build(name, num_classes)
    if not variant.has_trainable_generator:
        pytest.skip(f"{name} has no generator step")
    b = roi_batch(6, num_classes=num_classes)
    fake = variant.generator(b.lr)
    d = variant.discriminator
    with torch.no_grad():
        state = {k: v.clone() for k, v in d.state_dict().items()}
        mixed = d(torch.cat([b.hr, fake.sr]))
        d.load_state_dict(state)
        alone = d(fake.sr)
        d.load_state_dict(state)
        d.eval()
        running = d(fake.sr)
        d.load_state_dict(state)
        d.train()
    got = variant.generator_losses(b, fake)["loss_adv"]
    want = variant.cfg.adv_weight * g_adversarial_loss(mixed.adv_logits[6:], "non_saturating")
    assert torch.allclose(got, want, atol=1e-6)
    solo = variant.cfg.adv_weight * g_adversarial_loss(alone.adv_logits, "non_saturating")
    assert not torch.allclose(got, solo, atol=1e-6)  # the statistics really differ
    variant.cfg.g_step_d_norm = "running"
    got_running = variant.generator_losses(b, fake)["loss_adv"]
    want_running = variant.cfg.adv_weight * g_adversarial_loss(running.adv_logits, "non_saturating")
    assert torch.allclose(got_running, want_running, atol=1e-6)
    assert d.training


def test_saturating_adv_form_is_the_papers_log_one_minus_d() -> None:
    """adv_form=saturating: loss_adv = alpha * mean log(1 - D(G(x))) (Eq. 5 as printed)."""
    variant, _ = _build("tiny_face")
    variant.cfg.g_step_d_norm = "running"  # D(SR) alone, so the logits are easy to recompute
    b = roi_batch(6)
    fake = variant.generator(b.lr)
    with torch.no_grad():
        variant.discriminator.eval()
        logits = variant.discriminator(fake.sr).adv_logits
        variant.discriminator.train()
    variant.cfg.adv_form = "saturating"
    sat = variant.generator_losses(b, fake)["loss_adv"]
    want = variant.cfg.adv_weight * torch.log1p(-torch.sigmoid(logits)).mean()
    assert torch.allclose(sat, want, atol=1e-6)
    variant.cfg.adv_form = "non_saturating"
    non = variant.generator_losses(b, fake)["loss_adv"]
    assert torch.allclose(non, -variant.cfg.adv_weight * torch.log(torch.sigmoid(logits)).mean())
    assert sat < 0 < non


def test_pixel_loss_on_background_false_uses_object_rois_only() -> None:
    cfg = to_experiment_config(
        tiny_config("tiny_face", **{"variant.pixel_loss_on_background": False})
    )
    variant = build_variant(cfg.variant, 1)
    b = roi_batch(6)
    b.labels = torch.tensor([1, 0, 1, 0, 0, 1])
    assert variant.pixel_mask(b).tolist() == [True, False, True, False, False, True]
    sr = variant.generator(b.lr).sr
    got = variant.pixel_losses(b, GeneratorOutput(sr=sr))["loss_pixel"]
    pos = b.labels > 0
    assert torch.allclose(got, torch.nn.functional.mse_loss(sr[pos], b.hr[pos]), atol=1e-6)
    assert not torch.allclose(got, torch.nn.functional.mse_loss(sr, b.hr), atol=1e-6)
