"""The package's layers import one way: each subpackage only from the layers declared below it.

``gan_detect/__init__.py``'s docstring and docs/design.md draw the same picture. Lazy imports
inside functions count (the import graph of test_imports walks every node of the tree).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_imports import PKG, import_graph

# Subpackage -> the subpackages it may import (besides itself). The order, low to high:
# utils, config -> data, models, metrics -> variants, detector -> infer -> train -> experiment
# -> app.
ORDER = [
    ["utils", "config"],
    ["data", "models", "metrics"],
    ["variants", "detector"],
    ["infer"],
    ["train"],
    ["experiment"],
    ["app"],
]
# Every layer may import every lower one; within the lowest tiers, only these (no torch in
# config: utils.errors.InputError is the base of ConfigError; metrics may read data's records).
SAME_TIER: dict[str, set[str]] = {
    "utils": set(),
    "config": {"utils"},
    "data": {"utils", "config"},
    "models": {"utils", "config"},
    "metrics": {"utils", "config", "data"},
    "variants": {"utils", "config", "data", "models"},
    "detector": {"utils", "config", "data", "models", "metrics"},
}


def _allowed() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    below: set[str] = set()
    for tier in ORDER:
        for name in tier:
            out[name] = SAME_TIER.get(name, set(below))
        below |= set(tier)
    return out


ALLOWED: dict[str, set[str]] = _allowed()
# Root modules: the package marker, the entry point and one shim for the flat layout's import.
ROOT_MODULES = {"gan_detect", "gan_detect.__main__", "gan_detect.predict"}


def layer(module: str) -> str:
    """``gan_detect.train.fit`` -> ``train``; root modules -> ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "root"


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        src = layer(mod)
        if src == "root":
            continue
        for dep in sorted(deps):
            dst = layer(dep)
            if dst == "root" and dep != "gan_detect":
                bad.append(f"{mod} imports the root module {dep}")
            elif dst not in ("root", src) and dst not in ALLOWED[src]:
                bad.append(f"{mod} ({src}) imports {dep} ({dst}), against the layer order")
    return bad


def test_every_subpackage_has_a_declared_layer() -> None:
    found = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert found == set(ALLOWED)


def test_root_holds_only_the_entry_points() -> None:
    root = {
        f"gan_detect.{p.stem}" if p.stem != "__init__" else "gan_detect" for p in PKG.glob("*.py")
    }
    assert root <= ROOT_MODULES, sorted(root - ROOT_MODULES)
    assert len(list(PKG.glob("*.py"))) <= 4


def test_no_import_points_up_the_layers() -> None:
    assert violations(import_graph()) == []


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("gan_detect.infer.pipeline", "gan_detect.train.gan_module"),
        ("gan_detect.variants.base", "gan_detect.app.cli"),
        ("gan_detect.config.validate", "gan_detect.variants"),
        ("gan_detect.models.backbone", "gan_detect.data.roi"),
    ],
)
def test_a_planted_upward_import_is_caught(src: str, dst: str) -> None:
    g = import_graph()
    g[src] = g[src] | {dst}
    assert any(src in v and dst in v for v in violations(g))


def test_config_layer_imports_no_torch() -> None:
    """``config show`` and ``--help`` stay light: no torch anywhere under config/."""
    for path in (PKG / "config").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
        assert "import lightning" not in text and "from lightning" not in text, path


def test_presets_ship_as_package_data() -> None:
    presets = {p.stem for p in (PKG / "config" / "presets").glob("*.yaml")}
    assert {"demo", "tiny_face_wider", "sod_mtgan_coco", "detector_wider"} <= presets


def test_config_tables_match_the_variant_and_datamodule_tables() -> None:
    from gan_detect.config.sections import DATA_CONFIGS, VARIANT_CONFIGS
    from gan_detect.data import DATAMODULES
    from gan_detect.variants import VARIANTS

    # Variant classes defined elsewhere (tests, users) add their Config when they are defined.
    assert all(VARIANT_CONFIGS[k] is v.Config for k, v in VARIANTS.items())
    assert {k: v.Config for k, v in DATAMODULES.items()} == DATA_CONFIGS
    text = (Path(PKG).parent / "pyproject.toml").read_text()
    assert "presets/*.yaml" in text
