"""WIDER FACE protocol: hand-computed cases, the Metric, and published numbers on real data."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from gan_detect.app.cli import main
from gan_detect.app.wider_eval import evaluate_wider_tree
from gan_detect.data.proposals import write_wider_tree
from gan_detect.data.records import Proposals
from gan_detect.metrics import WiderFaceAP
from gan_detect.metrics.wider_face_ap import (
    voc_ap,
    wider_face_ap,
    wider_face_pr_curves,
)
from gan_detect.metrics.wider_gt import (
    WiderGroundTruth,
    fallback_ground_truth,
    load_wider_ground_truth,
)

DATA = Path(
    os.environ.get(
        "GAN_DETECT_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
WIDER = DATA / "widerface"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set GAN_DETECT_DATA)")
    return path


# --- A hand-computed case -------------------------------------------------------------------
# Image e/a: faces F1 (all settings), F2 (medium+hard), F3 (all), F5 (hard only, 3 px, unmatched).
# Image e/b: face F4 (all settings), no predictions (an empty image, or a missing file).
# Image e/c: no faces; its prediction is never counted (the official tool skips such images).
# Predictions on e/a: P1 = F1 @1.0, P2 = F1 again @0.75 (duplicate -> false positive), P3 = F2
# @0.75 (a tie; in easy F2 is ignored, so P3 is excluded), P4 = background @0.5, P5 = F3 @0.0.
# Scores span [0, 1], so min-max normalisation is the identity.
# easy (3 faces): (P, R) = (1, 1/3) for t > .75; (1/2, 1/3) at .75; (1/3, 1/3) down to t > 0;
#   (1/2, 2/3) at t = 0 -> envelope -> AP = 1/3 * 1 + 1/3 * 1/2 = 1/2.
# medium (4 faces): (1, 1/4); (2/3, 1/2) at .75; (1/2, 1/2); (3/5, 3/4) at 0
#   -> AP = 1/4 + 1/4 * 2/3 + 1/4 * 3/5 = 17/30.
# hard (5 faces): same counts over 5 faces -> AP = 1/5 + 1/5 * 2/3 + 1/5 * 3/5 = 34/75.
EXPECTED = {"ap_easy": 1 / 2, "ap_medium": 17 / 30, "ap_hard": 34 / 75}
GT_XYWH = {
    "e/a": [[0, 0, 9, 9], [100, 100, 9, 9], [200, 200, 9, 9], [400, 400, 3, 3]],
    "e/b": [[0, 0, 19, 19]],
    "e/c": np.zeros((0, 4)),
}
KEEP = {  # columns easy, medium, hard
    "e/a": [[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]],
    "e/b": [[1, 1, 1]],
    "e/c": np.zeros((0, 3)),
}
PREDS = {
    "e/a": np.array(
        [
            [0, 0, 9, 9, 1.0],
            [0, 0, 9, 9, 0.75],
            [100, 100, 9, 9, 0.75],
            [300, 300, 9, 9, 0.5],
            [200, 200, 9, 9, 0.0],
        ]
    ),
    "e/b": np.zeros((0, 5)),
    "e/c": np.array([[50, 50, 9, 9, 0.6]]),
}


def _gt() -> WiderGroundTruth:
    ids = list(GT_XYWH)
    return WiderGroundTruth(
        ids, [np.asarray(GT_XYWH[i]) for i in ids], [np.asarray(KEEP[i]) for i in ids]
    )


def test_hand_computed_case_matches_expected_ap() -> None:
    assert wider_face_ap(PREDS, _gt()) == pytest.approx({**EXPECTED, "official": 1.0}, abs=1e-12)


def test_pr_curve_rows_at_hand_computed_thresholds() -> None:
    curves = wider_face_pr_curves(PREDS, _gt())
    medium = curves["medium"]
    assert medium.shape == (1000, 2)
    np.testing.assert_allclose(medium[0], [1.0, 0.25])  # t = 0.999
    np.testing.assert_allclose(medium[249], [2 / 3, 0.5])  # t = 0.75 exactly: the tie enters
    np.testing.assert_allclose(medium[500], [0.5, 0.5])  # t = 0.499
    np.testing.assert_allclose(medium[999], [0.6, 0.75])  # t = 0


def test_perfect_predictions_give_ap_one() -> None:
    gt = _gt()
    preds = {
        i: np.c_[b, np.linspace(1, 0.5, len(b))]
        for i, b in zip(gt.image_ids, gt.boxes, strict=True)
    }
    assert wider_face_ap(preds, gt)["ap_hard"] == pytest.approx(1.0)


def test_missing_image_counts_as_empty_with_warning() -> None:
    preds = {k: v for k, v in PREDS.items() if k != "e/b"}
    with pytest.warns(UserWarning, match="no predictions"):
        result = wider_face_ap(preds, _gt())
    assert result == pytest.approx({**EXPECTED, "official": 1.0}, abs=1e-12)


def test_unsorted_input_gives_same_ap_as_sorted() -> None:
    rng = np.random.default_rng(0)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in PREDS.items()}
    assert wider_face_ap(shuffled, _gt()) == pytest.approx(wider_face_ap(PREDS, _gt()), abs=1e-12)


def test_scores_above_one_warn_and_keep_the_ap() -> None:
    scaled = {k: v * np.array([1, 1, 1, 1, 10.0]) for k, v in PREDS.items()}
    with pytest.warns(UserWarning, match="outside"):
        result = wider_face_ap(scaled, _gt())
    assert result == pytest.approx({**EXPECTED, "official": 1.0}, abs=1e-12)


def test_voc_ap_envelope_and_nan_precision() -> None:
    # Envelope lifts the 0.5 to 1.0 for the first recall step: 0.5 * 1 + 0.5 * 1 = 1.
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([0.5, 1.0, 1.0])) == pytest.approx(1.0)
    # NaN precision (no counted prediction at a threshold) is skipped, as MATLAB's max does.
    assert voc_ap(np.array([0.0, 0.5]), np.array([np.nan, 1.0])) == pytest.approx(0.5)


def _targets(ids: list[str]) -> tuple[list[dict], list[dict]]:
    def xyxy(b: np.ndarray) -> torch.Tensor:
        b = np.asarray(b, np.float64).reshape(-1, 4)
        return torch.tensor(np.c_[b[:, :2], b[:, :2] + b[:, 2:]], dtype=torch.float32)

    preds = [{"boxes": xyxy(PREDS[i][:, :4]), "scores": torch.tensor(PREDS[i][:, 4])} for i in ids]
    targets = []
    for i in ids:
        keep = torch.tensor(np.asarray(KEEP[i], bool).reshape(-1, 3))
        targets.append(
            {
                "boxes": xyxy(GT_XYWH[i]),
                "keep_easy": keep[:, 0],
                "keep_medium": keep[:, 1],
                "keep_hard": keep[:, 2],
            }
        )
    return preds, targets


def test_metric_matches_functional_result() -> None:
    metric = WiderFaceAP()
    preds, targets = _targets(list(GT_XYWH))
    metric.update(preds, targets, image_ids=list(GT_XYWH))
    out = metric.compute()
    assert {k: float(v) for k, v in out.items()} == pytest.approx({**EXPECTED, "official": 1.0})


def test_metric_ddp_style_halves_concatenated_equal_one_pass_and_dedupe_repeats() -> None:
    """Two ranks' states concatenated (what the "cat" gather does); e/b is seen on both ranks,
    as DistributedSampler pads the last batch, and must be counted once."""
    ranks = [WiderFaceAP(), WiderFaceAP()]
    for m, ids in zip(ranks, (["e/a", "e/b"], ["e/c", "e/b"]), strict=True):
        m.update(*_targets(ids), image_ids=ids)
    for name in ranks[0]._defaults:
        getattr(ranks[0], name).extend(getattr(ranks[1], name))
    out = ranks[0].compute()
    assert float(out["ap_medium"]) == pytest.approx(EXPECTED["ap_medium"])
    assert float(out["ap_hard"]) == pytest.approx(EXPECTED["ap_hard"])


def test_metric_without_keep_masks_uses_height_fallback_and_says_so() -> None:
    metric = WiderFaceAP()
    # One 60 px face (all settings) and one 20 px face (hard only), both detected.
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [100.0, 100.0, 120.0, 120.0]])
    metric.update([{"boxes": boxes, "scores": torch.tensor([0.9, 0.1])}], [{"boxes": boxes}])
    with pytest.warns(UserWarning, match="NOT the official"):
        out = metric.compute()
    assert float(out["official"]) == 0.0
    assert float(out["ap_easy"]) == pytest.approx(1.0)  # the 20 px detection is ignored there
    assert float(out["ap_hard"]) == pytest.approx(1.0)


def test_fallback_ground_truth_is_flagged_not_official() -> None:
    with pytest.warns(UserWarning, match="not comparable"):
        gt = fallback_ground_truth({"e/a": np.array([[0, 0, 40, 40], [0, 0, 5, 20]])})
    assert not gt.official
    np.testing.assert_array_equal(gt.keep[0], [[False, True, True], [False, False, True]])
    preds = {"e/a": np.array([[0, 0, 40, 40, 0.9]])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert wider_face_ap(preds, gt)["official"] == 0.0


def _write_mats(gt_dir: Path) -> None:
    """The hand case as official-layout .mat files (cell arrays as object arrays)."""
    ids = list(GT_XYWH)

    def cells(items: list) -> np.ndarray:
        out = np.empty((len(items), 1), dtype=object)
        for n, x in enumerate(items):
            out[n, 0] = x
        return out

    names = cells([cells([i.split("/")[1] for i in ids])])
    boxes = cells([cells([np.asarray(GT_XYWH[i], np.float64).reshape(-1, 4) for i in ids])])
    face = {"event_list": cells(["e"]), "file_list": names, "face_bbx_list": boxes}
    scipy.io.savemat(gt_dir / "wider_face_val.mat", face)
    for col, s in enumerate(("easy", "medium", "hard")):
        idx = [np.flatnonzero(np.asarray(KEEP[i]).reshape(-1, 3)[:, col])[:, None] + 1 for i in ids]
        scipy.io.savemat(
            gt_dir / f"wider_{s}_val.mat",
            {**face, "gt_list": cells([cells([x.astype(np.uint8) for x in idx])])},
        )


def write_fixture(tmp_path: Path, skip: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The golden case on disk: ground-truth .mat files in ``gt/`` and the PREDS txt tree in
    ``pred/`` (images in ``skip`` get no prediction file). Returns (gt_dir, pred_dir)."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    _write_mats(gt_dir)
    dets = {
        i: Proposals(np.c_[p[:, :2], p[:, :2] + p[:, 2:4]], p[:, 4], np.ones(len(p)))
        for i, p in PREDS.items()
        if i not in skip
    }
    write_wider_tree(dets, pred_dir)
    return gt_dir, pred_dir


def test_tree_evaluation_with_missing_file_and_cli(tmp_path: Path) -> None:
    gt_dir, pred_dir = write_fixture(tmp_path, skip=("e/b",))  # e/b: no file at all
    with pytest.warns(UserWarning, match="1 of 3 images have no prediction file"):
        result = evaluate_wider_tree(pred_dir, gt_dir)
    assert result["missing"] == 1 and result["num_images"] == 3
    assert {k: result[k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-6)
    with pytest.warns(UserWarning):
        assert (
            main(
                [
                    "wider-eval",
                    str(pred_dir),
                    "--gt",
                    str(gt_dir),
                    "--json",
                    str(tmp_path / "r.json"),
                ]
            )
            == 0
        )
    assert '"ap_hard"' in (tmp_path / "r.json").read_text()


HEAVY = ("torch", "lightning", "torchvision", "torchmetrics")


def test_wider_eval_command_path_imports_no_torch(tmp_path: Path) -> None:
    """Importing the evaluator and the metric functions, and running ``gan-detect wider-eval``
    through the CLI dispatch, must not import torch / Lightning / torchvision / torchmetrics."""
    gt_dir, pred_dir = write_fixture(tmp_path)
    out = tmp_path / "r.json"
    code = (
        "import json, sys\n"
        "import gan_detect.app.wider_eval, gan_detect.metrics, gan_detect.data\n"
        "from gan_detect.metrics import wider_face_ap, load_wider_ground_truth\n"
        "from gan_detect.app.cli import main\n"
        f"rc = main(['wider-eval', {str(pred_dir)!r}, '--gt', {str(gt_dir)!r},"
        f" '--json', {str(out)!r}])\n"
        f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and loaded == []
    result = json.loads(out.read_text())
    assert {k: result[k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-6)


def test_missing_ground_truth_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wider_face_val.mat"):
        load_wider_ground_truth(tmp_path)


@pytest.mark.slow
def test_retinaface_mobilenet_reproduces_published_numbers() -> None:
    gt_dir = _need(WIDER / "ground_truth")
    pred_dir = _need(WIDER / "predictions" / "retinaface_mobilenet0.25_biubug6")
    result = evaluate_wider_tree(pred_dir, gt_dir)
    # README row 90.70 / 88.16 / 73.82; the independent recomputation to 1e-9.
    assert result["ap_easy"] == pytest.approx(0.907076104848709, abs=1e-9)
    assert result["ap_medium"] == pytest.approx(0.8816501731241937, abs=1e-9)
    assert result["ap_hard"] == pytest.approx(0.7382726532319118, abs=1e-9)
    assert result["missing"] == 0 and result["num_predictions"] == 297298


def test_ground_truth_counts_and_subset() -> None:
    gt = load_wider_ground_truth(_need(WIDER / "ground_truth"))
    assert len(gt) == 3226 and sum(len(b) for b in gt.boxes) == 39708
    np.testing.assert_array_equal(np.concatenate(gt.keep).sum(0), [7211, 13319, 31958])
    parade = gt.subset(i for i in gt.image_ids if i.startswith("0--Parade/"))
    assert len(parade) == 115 and parade.image_ids[0].startswith("0--Parade/")


def _pr_curve(path: str) -> np.ndarray:
    try:
        return scipy.io.loadmat(path)["pr_cruve"]
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        import h5py

        with h5py.File(path, "r") as f:
            return np.array(f["pr_cruve"]).T


@pytest.mark.parametrize(
    ("method", "published"),
    [
        ("RetinaFace", (0.969, 0.962, 0.919)),
        ("TinaFace", (0.970, 0.963, 0.935)),
    ],
)
def test_official_baseline_curves_give_published_ap(method: str, published: tuple) -> None:
    folder = _need(WIDER / "official_eval_tools_baselines" / "Val" / "setting_int" / method)
    for setting, expected in zip(("easy", "medium", "hard"), published, strict=True):
        (path,) = glob.glob(str(folder / f"*_{setting}_val.mat"))
        curve = _pr_curve(path)
        assert round(voc_ap(curve[:, 1], curve[:, 0]), 3) == expected
