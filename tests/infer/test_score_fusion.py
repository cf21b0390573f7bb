"""Fitted score fusion: the combiner learns what it should, and never sees evaluation images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_detect.config import PRESETS
from gan_detect.infer.inference import InferenceOptions
from gan_detect.infer.score_fusion import (
    DEFAULT_EDGES,
    average_precision,
    band_index,
    describe,
    fit_learned,
    fit_size_gated,
    fuse_scores,
)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sample(n: int, seed: int, law) -> tuple[np.ndarray, ...]:  # type: ignore[no-untyped-def]
    """Candidates with sizes over every band; labels drawn from ``law(det, d, size) -> p``."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.uniform(np.log(4), np.log(200), n))
    det = rng.uniform(0.02, 0.98, n)
    d = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < law(det, d, size)).astype(np.int64)
    return det, d, size, y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_learned_fusion_recovers_known_band_weights() -> None:
    # Truth: every band has its own bias and weights on logit(det) and logit(D).
    truth = np.array(
        [[-1.0, 0.2, 1.5], [-0.5, 0.5, 1.0], [0.0, 1.0, 0.5], [0.3, 1.5, 0.2], [0.5, 2.0, 0.0]]
    )
    edges = np.array(DEFAULT_EDGES)

    def law(det: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
        w = truth[np.searchsorted(edges, size, side="right")]
        return _sigmoid(w[:, 0] + w[:, 1] * _logit(det) + w[:, 2] * _logit(d))

    det, d, size, y = _sample(60_000, 0, law)
    fit = fit_learned(det, d, size, y, c=100.0)
    assert np.allclose(np.array(fit["weights"]), truth, atol=0.15), fit["weights"]
    table = describe(fit)
    assert "< 10" in table and ">= 80" in table and "w_D" in table


def test_uninformative_d_keeps_the_detectors_ranking() -> None:
    det, d, size, y = _sample(20_000, 1, lambda det, d, s: det)  # D is noise
    fit = fit_learned(det, d, size, y)
    assert max(abs(w[2]) for w in fit["weights"]) < 0.1  # D gets no weight
    fused = fuse_scores(
        "learned", torch.tensor(det), torch.tensor(d)[:, None], torch.tensor(size), fit
    )[:, 0].numpy()
    assert abs(100 * average_precision(fused, y) - 100 * average_precision(det, y)) < 0.1


def test_d_better_on_small_boxes_gets_the_weight_there() -> None:
    def law(det: np.ndarray, d: np.ndarray, size: np.ndarray) -> np.ndarray:
        return np.where(size < 20, d, det)  # D knows small objects, the detector large ones

    det, d, size, y = _sample(20_000, 2, law)
    fit = fit_learned(det, d, size, y)
    w = np.array(fit["weights"])
    assert (w[:2, 2] > 2 * np.abs(w[:2, 1])).all()  # < 10 and 10-20 px: D dominates
    assert (w[3:, 1] > 2 * np.abs(w[3:, 2])).all()  # >= 40 px: the detector dominates
    gate = fit_size_gated(det, d, size, y)
    assert 10 <= gate["threshold"] <= 30  # the switch sits near the true 20 px
    for fused in (
        fuse_scores(
            "learned", torch.tensor(det), torch.tensor(d)[:, None], torch.tensor(size), fit
        ),
        fuse_scores(
            "size_gated", torch.tensor(det), torch.tensor(d)[:, None], torch.tensor(size), gate
        ),
    ):
        ap = average_precision(fused[:, 0].numpy(), y)
        assert ap > average_precision(det, y) + 0.05 and ap > average_precision(d, y) + 0.05


def test_a_band_without_both_classes_keeps_the_detectors_logit() -> None:
    det = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3])
    d = np.array([0.5, 0.4, 0.6, 0.2, 0.9, 0.1])
    size = np.array([5.0, 6.0, 50.0, 55.0, 60.0, 65.0])
    y = np.array([1, 1, 0, 0, 1, 0])  # < 10 px: positives only
    fit = fit_learned(det, d, size, y)
    assert fit["weights"][0] == [0.0, 1.0, 0.0] and fit["counts"][0] == [2, 0]
    assert band_index(torch.tensor([9.9, 10.0, 80.0]), DEFAULT_EDGES).tolist() == [0, 1, 4]


def test_fitted_fusion_without_params_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="data.fusion_holdout_fraction"):
        InferenceOptions(score_fusion="learned")


@pytest.mark.slow
def test_fusion_is_fit_on_held_out_train_images_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit with a holdout: ROI mining never sees the held-out images, the combiner sees only
    them (no val image, no image D trained on), and evaluate / the pipeline use the result."""
    from gan_detect.config.load import load_config
    from gan_detect.data import build_datamodule
    from gan_detect.data.proposals import write_wider_tree
    from gan_detect.data.roi import gt_jitter_proposals
    from gan_detect.data.synthetic import write_synthetic_faces
    from gan_detect.data.wider_face import read_wider_annotations
    from gan_detect.infer import fusion_fit
    from gan_detect.train.fit import fit

    data = tmp_path / "faces"
    write_synthetic_faces(data, num_train=16, num_val=4, seed=0)
    # Detector-like proposals for the train split (jittered ground truth with IoU scores).
    ann = data / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    recs = read_wider_annotations(ann, data / "WIDER_train" / "images").records
    props = tmp_path / "train_props"
    write_wider_tree(
        {r.image_id: gt_jitter_proposals(r, seed=n) for n, r in enumerate(recs)}, props
    )
    run = tmp_path / "run"
    cfg = load_config(
        [PRESETS / "tiny_face_wider.yaml", PRESETS / "smoke.yaml"],
        [
            f"data.root={data}",
            f"output_dir={run}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.fusion_holdout_fraction=0.25",
            f"data.train_proposals={props}",
            "data.max_train_images=null",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "evaluate.device=cpu",
        ],
    )
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    # Files, not ids: the generated splits reuse image names.
    held = {str(r.path) for r in dm.records("fusion")}
    trained = {str(r.path) for r in dm.records("train")}
    val = {str(r.path) for r in dm.records("val")}
    assert held and trained and not held & trained and not held & val

    seen: list[str] = []
    real = fusion_fit.collect_candidates

    def spy(variant, images, proposals, records, opts, **kw):  # type: ignore[no-untyped-def]
        seen.extend(str(r.path) for r in records)
        return real(variant, images, proposals, records, opts, **kw)

    monkeypatch.setattr(fusion_fit, "collect_candidates", spy)
    fit(cfg)
    assert set(seen) == held  # every held-out image, and nothing else
    params = json.loads((run / "score_fusion.json").read_text())
    assert set(params) >= {"learned", "size_gated"}
    # The mined training ROIs came from the other images only.
    meta = json.loads(next((tmp_path / "cache").glob("*train_rois*/meta.json")).read_text())
    assert meta.get("num_images", len(trained)) == len(trained)
