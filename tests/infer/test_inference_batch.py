"""ROIs batched across images (refine_detections_batch) and the rescore_min_score budget."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _synth import tiny_config

from gan_detect.config.validate import to_experiment_config
from gan_detect.infer.inference import (
    InferenceOptions,
    inference_variant,
    refine_detections,
    refine_detections_batch,
    select_proposals,
)
from gan_detect.variants import VARIANTS, GANVariant, build_variant


def _variant(name: str) -> GANVariant:
    cfg = to_experiment_config(tiny_config(name))
    torch.manual_seed(0)
    return build_variant(cfg.variant, cfg.data.num_classes).eval()


def _props(k: int, seed: int, wh: tuple[int, int] = (96, 64)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    side = torch.rand(k, 2, generator=g) * 20 + 6
    xy = torch.rand(k, 2, generator=g) * (torch.tensor(wh) - side)
    return {
        "boxes": torch.cat([xy, xy + side], 1),
        "scores": torch.rand(k, generator=g),
        "labels": torch.ones(k, dtype=torch.int64),
    }


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_batch_across_images_equals_one_image_at_a_time(name: str) -> None:
    variant = _variant(name)
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 96, generator=g) for _ in range(3)]
    props = [_props(7, 0), _props(0, 1), _props(12, 2)]  # an image without proposals too
    # chunk_size 5: chunks straddle image boundaries (7 + 12 ROIs -> 5, 5, 5, 4).
    opts = InferenceOptions(lr_size=4, chunk_size=5, min_score=0.0, nms_iou=0.5)
    batched = refine_detections_batch(variant, images, props, opts)
    assert len(batched) == 3 and batched[1]["scores"].numel() == 0
    for img, p, b in zip(images, props, batched, strict=True):
        single = refine_detections(variant, img, p, opts)
        assert set(b) == {"boxes", "scores", "labels"}
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(b[key], single[key], atol=1e-5, rtol=1e-5)
    assert batched[0]["scores"].numel() > 0 and batched[2]["scores"].numel() > 0


def test_rescore_min_score_drops_low_proposals_before_top_k() -> None:
    p = _props(10, 0)
    p["scores"] = torch.linspace(0.05, 0.95, 10)
    boxes, scores = select_proposals(
        p, InferenceOptions(top_k=3, rescore_min_score=0.5), torch.device("cpu")
    )
    torch.testing.assert_close(scores, torch.tensor([0.95, 0.85, 0.75]))
    assert boxes.shape == (3, 4)
    _, scores = select_proposals(
        p, InferenceOptions(top_k=8, rescore_min_score=0.5), torch.device("cpu")
    )
    assert scores.numel() == 5 and float(scores.min()) >= 0.5  # threshold binds, not top_k
    _, scores = select_proposals(p, InferenceOptions(top_k=600), torch.device("cpu"))
    assert scores.numel() == 10  # the default (0) keeps every proposal


def test_no_proposal_above_threshold_gives_empty_detections() -> None:
    variant = _variant("tiny_face")
    p = _props(4, 0)
    p["scores"] = torch.full((4,), 0.1)
    opts = InferenceOptions(lr_size=4, rescore_min_score=0.2)
    out = refine_detections_batch(variant, [torch.rand(3, 64, 96)], [p], opts)
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="2 images but 1 proposal sets"):
        refine_detections_batch(variant, [torch.rand(3, 64, 96)] * 2, [p], opts)


def _random_weights(variant: GANVariant) -> None:
    """Random D weights (an untrained D answers 0.5 everywhere) and BatchNorm statistics
    gathered on random crops (fresh BN, mean 0 / var 1, would make folding trivially exact)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in variant.discriminator.parameters():
            param.normal_(0, 0.3)
        for m in variant.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average over the batches below
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        variant.train()
        for _ in range(3):
            variant.discriminate_sr(torch.rand(16, 3, 4, 4))
        variant.eval()
    running = [m.running_var for m in variant.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert running and not all(torch.allclose(v, torch.ones_like(v)) for v in running)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_inference_copy_folds_bn_and_goes_channels_last_without_touching_the_model(
    name: str,
) -> None:
    variant = _variant(name)
    _random_weights(variant)
    before = {k: v.clone() for k, v in variant.state_dict().items()}
    image, p = torch.rand(3, 64, 96), _props(9, 3)
    # nms_iou=1: nothing suppressed, so every proposal comes back whatever the rounding.
    plain = InferenceOptions(
        lr_size=4, min_score=0.0, nms_iou=1.0, fold_bn=False, channels_last=False
    )
    ref = refine_detections(variant, image, p, plain)
    assert ref["scores"].numel() >= 9
    fast_opts = dataclasses.replace(plain, fold_bn=True, channels_last=None)  # the defaults
    assert fast_opts == InferenceOptions(lr_size=4, min_score=0.0, nms_iou=1.0)
    fast = refine_detections(variant, image, p, fast_opts)
    torch.testing.assert_close(fast["scores"], ref["scores"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast["boxes"], ref["boxes"], atol=1e-3, rtol=0)  # px
    torch.testing.assert_close(fast["labels"], ref["labels"])
    # The copy ran, not the model: the model's weights, format and BatchNorms are unchanged.
    copy_ = inference_variant(variant, fast_opts)
    assert copy_ is not variant and copy_ is inference_variant(variant, fast_opts)  # cached
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in variant.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in copy_.modules()) == 0 < bns
    conv = next(m for m in copy_.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    own = next(m for m in variant.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert own.weight.is_contiguous()
    for k, v in variant.state_dict().items():
        assert torch.equal(v, before[k]), k
    # New weights (as after more training): the copy is rebuilt, and follows them.
    with torch.no_grad():
        own.weight.mul_(0.5)
    assert inference_variant(variant, fast_opts) is not copy_
    lr = torch.rand(6, 3, 4, 4)
    with torch.no_grad():
        new_ref, new_fast = variant.discriminate_sr(lr), inference_variant(variant, fast_opts)
        torch.testing.assert_close(
            new_fast.discriminate_sr(lr).cls_logits, new_ref.cls_logits, atol=1e-4, rtol=1e-4
        )
        assert not torch.allclose(new_ref.cls_logits, copy_.discriminate_sr(lr).cls_logits)


def test_bf16_runs_and_stays_close() -> None:
    variant = _variant("tiny_face")
    torch.manual_seed(0)
    with torch.no_grad():  # the untrained D answers 0.5 everywhere: give it random weights
        for param in variant.discriminator.parameters():
            param.normal_(0, 0.3)
    image, p = torch.rand(3, 64, 96), _props(9, 3)
    opts = InferenceOptions(lr_size=4, min_score=0.0, nms_iou=1.0)
    ref = refine_detections(variant, image, p, opts)
    bf = refine_detections(variant, image, p, dataclasses.replace(opts, bf16=True))
    assert bf["scores"].dtype == torch.float32 and bf["scores"].numel() == 9
    diff = (bf["scores"].sort().values - ref["scores"].sort().values).abs().max()
    assert 0 < float(diff) < 0.05  # bf16 really ran (scores moved) and stayed close


def test_a_copy_that_changes_the_outputs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe check: a wrong fold (here: every BN weight of the copy zeroed first) must not
    reach the scores; the model runs unchanged and the user is told why."""
    import gan_detect.models.fusion as fusion

    variant = _variant("tiny_face")
    _random_weights(variant)

    def bad_fold(module: torch.nn.Module) -> int:
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.zero_()
        return 0

    monkeypatch.setattr(fusion, "fold_batchnorm", bad_fold)
    image, p = torch.rand(3, 64, 96), _props(9, 3)
    plain = InferenceOptions(
        lr_size=4, min_score=0.0, nms_iou=1.0, fold_bn=False, channels_last=False
    )
    ref = refine_detections(variant, image, p, plain)
    with pytest.warns(UserWarning, match="changed the outputs"):
        out = refine_detections(
            variant, image, p, InferenceOptions(lr_size=4, min_score=0.0, nms_iou=1.0)
        )
    torch.testing.assert_close(out["scores"], ref["scores"])


def test_a_model_compiled_in_place_runs_as_it_is() -> None:
    """trainer.compile compiles G and D in place; their compiled forward is bound to the
    originals, so a copy would not run its own weights: inference uses the model itself."""
    variant = _variant("tiny_face")
    variant.generator._compiled_call_impl = variant.generator._call_impl  # as Module.compile sets
    try:
        assert inference_variant(variant, InferenceOptions(lr_size=4)) is variant
    finally:
        variant.generator._compiled_call_impl = None
    assert inference_variant(variant, InferenceOptions(lr_size=4)) is not variant
