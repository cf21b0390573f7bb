"""The report's figures: class names in SR captions, separate loss / probability axes, n/a
buckets; and the quick demo's note that its zero APs are expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gan_detect.app import report
from gan_detect.utils.visualize import grid_caption


def test_sr_grid_captions_name_the_classes() -> None:
    names = ["circle", "square", "triangle"]
    assert grid_caption(2, "triangle 0.60", names) == "true: square  D: triangle 0.60"
    assert grid_caption(0, "circle 0.10", names).startswith("true: background")
    assert grid_caption(1, "1 0.25") == "true: 1  D: 1 0.25"


def test_variant_roi_captions_use_class_names() -> None:
    from gan_detect.variants import VARIANTS

    cls = VARIANTS["sod_mtgan"]
    cfg = cls.Config(backbone="test_resnet", g_channels=8, g_res_blocks=1,
                     g_upsample_channels=8, g_refine_channels=8)  # fmt: skip
    variant = cls.build(cfg, 3)
    caps = variant.roi_captions(torch.rand(4, 3, 8, 8) * 2 - 1, ["circle", "square", "triangle"])
    assert len(caps) == 4
    assert all(c.split()[0] in {"circle", "square", "triangle"} for c in caps)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Figures the plot functions would save, kept open for inspection."""
    saved: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, path: saved.append(fig) or path)
    return saved


def _run(metrics: dict[str, dict[str, float]], log: list[dict[str, str]]) -> dict[str, Any]:
    return {"name": "r", "eval": {"metrics": metrics}, "curves": {}, "train_log": log}


def test_training_curves_put_losses_and_probabilities_on_their_own_labelled_axes(
    figures: list[Any], tmp_path: Path
) -> None:
    log = [
        {
            "step": str(s),
            "train/loss_g": "2.5",
            "train/loss_d": "0.7",
            "train/d_real": "0.8",
            "train/d_fake": "0.2",
            "train/loss_pixel": "",
        }
        for s in range(5)
    ]
    report.plot_training_curves([_run({}, log)], tmp_path / "t.png")
    loss_ax, prob_ax = figures[0].axes[:2]
    assert loss_ax.get_ylabel() == "loss (log scale)" and loss_ax.get_yscale() == "symlog"
    assert prob_ax.get_ylabel() == "D's probability of real" and prob_ax.get_yscale() == "linear"
    assert prob_ax.get_ylim() == pytest.approx((-0.02, 1.02))
    assert {ln.get_label() for ln in loss_ax.lines} == {"loss_g", "loss_d"}
    assert {ln.get_label() for ln in prob_ax.lines} == {"D(real HR)", "D(G(LR))"}


def test_empty_size_bucket_is_marked_na(figures: list[Any], tmp_path: Path) -> None:
    m = {"map_tiny": 0.1, "map_small": 0.2, "map_medium": 0.3, "map_large": -1.0}
    report.plot_size_buckets([_run({"baseline": m, "gan": m}, [])], tmp_path / "s.png")
    texts = [t.get_text() for t in figures[0].axes[0].texts]
    assert texts.count("n/a") == 2  # the large bucket, for both methods


def test_quick_demo_says_its_zero_aps_are_expected(demo: Path) -> None:
    out = (demo / "demo_stdout.txt").read_text()
    assert "'not resolved' are expected at this size" in out
    assert out.index("expected at this size") < out.index("report: ")
