from __future__ import annotations

from pathlib import Path

import pytest

from gan_detect.app.cli import load_config
from gan_detect.config import PRESETS
from gan_detect.config.validate import ConfigError, to_experiment_config
from gan_detect.variants import SODMTGANConfig, TinyFaceConfig

EXP = PRESETS
# Files stacked after an experiment (deltas without a variant or task of their own).
STACKED = {"smoke.yaml", "demo.yaml"}
# The paper-scale experiments: pretrained weights on.
MAIN = sorted(
    EXP / n
    for n in (
        "tiny_face_wider.yaml",
        "sod_mtgan_coco.yaml",
        "detector_wider.yaml",
        "detector_coco.yaml",
    )
)
ALL = sorted(p for p in EXP.glob("*.yaml") if p.name not in STACKED)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_experiment_file_loads_with_the_stacked_files(path: Path) -> None:
    # real_wider_rescoring.yaml is written to come after smoke.yaml; the others before it.
    order = (
        [EXP / "smoke.yaml", path] if path.name.startswith("real") else [path, EXP / "smoke.yaml"]
    )
    cfg = load_config([*order, EXP / "demo.yaml"])
    assert cfg.variant.backbone == "test_resnet" and cfg.variant.pretrained is False


@pytest.mark.parametrize("path", MAIN, ids=lambda p: p.name)
def test_every_experiment_loads_alone_and_with_smoke(path: Path) -> None:
    cfg = load_config([path])
    if cfg.task == "detector":
        assert path.name.startswith("detector_") and cfg.detector.pretrained is True
        assert cfg.data.name.split("_")[0] in path.name
        return
    assert cfg.variant.name in path.name
    small = load_config([path, EXP / "smoke.yaml"])
    assert small.variant.pretrained is False and small.variant.backbone == "test_resnet"


def test_real_experiment_configs_turn_pretrained_on() -> None:
    for path in MAIN:
        cfg = load_config([path])
        assert cfg.detector.pretrained if cfg.task == "detector" else cfg.variant.pretrained, path


def test_detector_section_is_typed() -> None:
    with pytest.raises(ConfigError, match="detector.archh"):
        load_config([EXP / "detector_wider.yaml"], ["detector.archh=fcos"])
    cfg = load_config([EXP / "detector_wider.yaml"], ["detector.arch=retinanet"])
    assert cfg.detector.arch == "retinanet" and cfg.detector.min_size == [640, 800, 960]


def test_overrides_win_and_pick_the_variant_schema() -> None:
    cfg = load_config([EXP / "sod_mtgan_coco.yaml"], ["variant.box_weight=0.5", "optim.lr_g=0.002"])
    assert isinstance(cfg.variant, SODMTGANConfig)
    assert cfg.variant.box_weight == 0.5 and cfg.optim.lr_g == 0.002
    face = load_config([EXP / "tiny_face_wider.yaml"], ["--seed=7"])
    assert isinstance(face.variant, TinyFaceConfig) and face.seed == 7


def test_unknown_key_names_it_and_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config([EXP / "tiny_face_wider.yaml"], ["variant.adv_wieght=1"])
    msg = str(err.value)
    assert "variant.adv_wieght" in msg and "adv_weight" in msg


def test_box_weight_is_not_a_tiny_face_key() -> None:
    with pytest.raises(ConfigError, match="variant.box_weight"):
        load_config([EXP / "tiny_face_wider.yaml"], ["variant.box_weight=1"])


def test_wrong_type_fails_at_load_time() -> None:
    with pytest.raises(ConfigError, match="optim.lr_g"):
        load_config([EXP / "tiny_face_wider.yaml"], ["optim.lr_g=fast"])


def test_unknown_variant_lists_the_table() -> None:
    with pytest.raises(ConfigError, match="tiny_face"):
        to_experiment_config({"variant": {"name": "nope"}, "data": {"name": "coco"}})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_config([tmp_path / "nothere.yaml"])


@pytest.mark.parametrize(
    ("gan", "det"), [("tiny_face_wider", "detector_wider"), ("sod_mtgan_coco", "detector_coco")]
)
def test_experiment_configs_chain_detector_proposals_into_the_gan(gan: str, det: str) -> None:
    """Stage 1's output paths are stage 2's inputs (detector -> proposals -> ROI store -> GAN)."""
    g = load_config([EXP / f"{gan}.yaml"])
    d = load_config([EXP / f"{det}.yaml"])
    for split in ("train", "val"):
        path = getattr(g.data, f"{split}_proposals")
        assert path.startswith(f"{d.output_dir}/proposals/{split}/"), path
    assert g.data.name == d.data.name and g.data.root == d.data.root
