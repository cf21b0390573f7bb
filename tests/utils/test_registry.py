"""One registry per kind: lookup, errors, duplicates, the four registries against their config
halves, and a user's variant in its own file registering itself through ``plugins``."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gan_detect.config.load import load_config
from gan_detect.config.schema import SCORE_FUSIONS
from gan_detect.config.sections import DATA_CONFIGS, VARIANT_CONFIGS, DetectorConfig
from gan_detect.config.validate import ConfigError
from gan_detect.utils.errors import InputError
from gan_detect.utils.registry import Registry, UnknownNameError

ROOT = Path(__file__).resolve().parents[2]


def test_register_and_look_up() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("round")
    def round_widget() -> int:
        return 1

    assert reg["round"] is round_widget and reg.lookup("round")() == 1
    assert "round" in reg and list(reg) == ["round"] and reg.get("square") is None


def test_unknown_name_names_the_kind_lists_the_known_and_suggests() -> None:
    reg: Registry[int] = Registry("widget")
    reg["round"], reg["square"] = 1, 2
    with pytest.raises(UnknownNameError) as info:
        reg.lookup("sqaure")
    msg = str(info.value)
    assert msg == "unknown widget 'sqaure'; valid: round, square (did you mean 'square'?)"
    assert isinstance(info.value, KeyError) and isinstance(info.value, InputError)
    with pytest.raises(KeyError, match="valid: round, square$"):
        reg["zzz"]


def test_duplicates_are_refused_unless_identical() -> None:
    reg: Registry[object] = Registry("widget")
    a, b = object(), object()
    reg["a"] = a
    reg["a"] = a  # the same object again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg["a"] = b
    del reg["a"]
    reg["a"] = b
    assert reg["a"] is b


def test_variant_registry_keeps_the_config_registry_in_step() -> None:
    from gan_detect.variants import VARIANTS

    for name, cls in VARIANTS.items():
        assert cls.name == name and cls.Config().name == name
        assert VARIANT_CONFIGS[name] is cls.Config
    assert sorted(VARIANT_CONFIGS) == sorted(VARIANTS)


def test_datamodule_fusion_and_detector_registries_match_the_config() -> None:
    from gan_detect.data import DATAMODULES
    from gan_detect.detector.builtin import BUILTIN_ARCHS, DETECTORS
    from gan_detect.infer.score_fusion import FITTED_FUSIONS, FUSIONS

    assert {k: v.Config for k, v in DATAMODULES.items()} == dict(DATA_CONFIGS)
    assert list(FUSIONS) == list(SCORE_FUSIONS)
    assert sorted(FITTED_FUSIONS) == ["learned", "size_gated"] and "d_only" not in FITTED_FUSIONS
    archs = typing.get_args(typing.get_type_hints(DetectorConfig)["arch"])
    assert set(DETECTORS) <= set(archs) and "retinaface" in BUILTIN_ARCHS


def test_a_registered_fusion_is_used_and_known_to_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from gan_detect.infer.score_fusion import FUSIONS, ScoreFusion, fuse_scores

    def det_only(det, d, sizes, params):  # type: ignore[no-untyped-def]
        """The detector's score alone."""
        return det

    monkeypatch.setitem(FUSIONS, "det_only", ScoreFusion(det_only, fitted=False))
    out = fuse_scores("det_only", torch.tensor([0.25, 0.5]), torch.ones(2, 1), torch.ones(2))
    assert out.flatten().tolist() == [0.25, 0.5]
    assert SCORE_FUSIONS["det_only"] == "The detector's score alone."
    monkeypatch.undo()
    assert "det_only" not in SCORE_FUSIONS and "det_only" not in FUSIONS


_USER_VARIANT = '''
from dataclasses import dataclass

from gan_detect.variants import GANVariantConfig, register_variant
from gan_detect.variants.tiny_face import TinyFaceGAN


@dataclass
class PluginFaceConfig(GANVariantConfig):
    name: str = "plugin_face"
    extra_knob: float = 0.5


@register_variant("plugin_face")
class PluginFace(TinyFaceGAN):
    """The tiny-face recipe under another name, with a key of its own."""

    name = "plugin_face"
    Config = PluginFaceConfig
'''


def test_unknown_variant_says_how_to_register_ones_own() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["tiny_face_wider"], ["variant.name=tiny_fce"])
    msg = str(info.value)
    assert "config key 'variant.name': unknown variant 'tiny_fce'" in msg
    assert "did you mean 'tiny_face'?" in msg and "plugins=[" in msg


def test_a_missing_plugin_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="plugins': file not found: .*nope.py"):
        load_config(["tiny_face_wider"], [f"plugins=[{tmp_path / 'nope.py'}]"])
    with pytest.raises(InputError, match="plugins': no module 'no_such_mod_xyz'"):
        load_config(["tiny_face_wider"], ["plugins=[no_such_mod_xyz]"])


def test_a_users_variant_in_its_own_file_validates_trains_and_reloads(tmp_path: Path) -> None:
    """The user's file is named in ``plugins``: config load validates its keys, fit runs a step
    through the CLI, and the checkpoint loads in a fresh process (the plugin travels in it)."""
    plugin = tmp_path / "my_plugin_variant.py"
    plugin.write_text(_USER_VARIANT)
    from gan_detect.data.synthetic import write_synthetic_faces
    from gan_detect.variants import VARIANTS

    root = write_synthetic_faces(tmp_path / "faces", 2, 1, seed=0)
    run = tmp_path / "run"
    args = [
        "smoke",
        f"plugins=[{plugin}]",
        "variant.name=plugin_face",
        "variant.extra_knob=0.25",
        "data.name=wider_face",
        f"data.root={root}",
        "data.gt_dir=null",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"output_dir={run}",
        "data.rois_per_image=4",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "logger.kind=none",
    ]
    try:
        cfg = load_config([args[0]], args[1:])
        assert cfg.variant.name == "plugin_face" and cfg.variant.extra_knob == 0.25  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="variant.extra_knb"):
            load_config([args[0]], [*args[1:], "variant.extra_knb=1"])
        from gan_detect.app.cli import main

        assert main(["fit", *args]) == 0
    finally:
        VARIANTS.pop("plugin_face", None)  # the registries as they were for the other tests
    assert "plugin_face" not in VARIANT_CONFIGS
    last = run / "checkpoints" / "last.ckpt"
    code = (
        "from gan_detect.variants.base import GANVariant\n"
        f"v = GANVariant.from_checkpoint({str(last)!r})\n"
        "print(type(v).__name__, v.cfg.extra_knob)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-2:] == ["PluginFace", "0.25"]
