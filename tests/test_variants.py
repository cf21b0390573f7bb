"""Parametrised over the variant table: a new variant is tested the moment it is listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _synth import roi_batch, tiny_config

import gan_detect.variants as variants_pkg
from gan_detect.models.generator import GeneratorOutput
from gan_detect.schema import to_experiment_config
from gan_detect.variants import VARIANTS, build_variant

NUM_CLASSES = {"tiny_face": 1, "sod_mtgan": 3}
ROOT = Path(__file__).resolve().parents[1]


def _build(name: str):
    cfg = to_experiment_config(tiny_config(name))
    return build_variant(cfg.variant, cfg.data.num_classes), cfg


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_name_file_name_and_table_key_agree(name: str) -> None:
    cls = VARIANTS[name]
    assert cls.name == name == cls.Config().name
    assert (Path(variants_pkg.__file__).parent / f"{name}.py").is_file()
    assert any(
        f"name: {name}" in p.read_text() for p in (ROOT / "experiments").glob(f"{name}_*.yaml")
    )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_generator_is_4x_and_heads_have_documented_shapes(name: str) -> None:
    variant, cfg = _build(name)
    b = roi_batch(4, hr_size=32, num_classes=NUM_CLASSES[name])
    out = variant.generator(b.lr)
    assert out.sr.shape == b.hr.shape == (4, 3, 32, 32)
    assert b.lr.shape[-1] * 4 == out.sr.shape[-1]
    d = variant.discriminator(out.sr)
    k = 1 if name == "tiny_face" else NUM_CLASSES[name] + 1
    assert d.adv_logits.shape == (4,)
    assert d.cls_logits.shape == (4, k)
    if name == "tiny_face":
        assert d.box_deltas is None
    else:
        assert d.box_deltas is not None and d.box_deltas.shape == (4, 4 * k)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_losses_are_finite_weighted_loss_terms_and_reach_both_networks(name: str) -> None:
    variant, _ = _build(name)
    b = roi_batch(6, num_classes=NUM_CLASSES[name])
    fake = variant.generator(b.lr)
    d_terms = variant.discriminator_losses(b, fake.detach())
    g_terms = variant.generator_losses(b, fake)
    for terms in (d_terms, g_terms):
        losses = {k: v for k, v in terms.items() if k.startswith("loss_")}
        assert losses and all(torch.isfinite(v) for v in losses.values())
    assert {"loss_pixel", "loss_adv", "loss_cls"} <= set(g_terms)
    assert {"loss_d_adv", "loss_d_cls"} <= set(d_terms)
    if name == "sod_mtgan":
        assert "loss_box" in g_terms and "loss_d_box" in d_terms
    sum(v for k, v in g_terms.items() if k.startswith("loss_")).backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in variant.generator.parameters()
    )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pixel_only_warmup_has_no_adversarial_term(name: str) -> None:
    variant, _ = _build(name)
    b = roi_batch(4, num_classes=NUM_CLASSES[name])
    terms = variant.generator_losses(b, variant.generator(b.lr), pixel_only=True)
    assert set(terms) == {"loss_pixel", "loss_pixel_coarse"}


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


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_g_step_normalises_d_like_the_d_step(name: str) -> None:
    """g_step_d_norm=batch: the G step's D outputs on SR are the SR half of D(cat(HR, SR)) in
    train mode (the D step's batch statistics), not D(SR) with fake-only statistics;
    running: D(SR) in eval mode."""
    from gan_detect.models.losses import g_adversarial_loss

    variant, _ = _build(name)
    b = roi_batch(6, num_classes=NUM_CLASSES[name])
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
