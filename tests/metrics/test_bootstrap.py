"""Paired image bootstrap of AP differences (issue 24): constructed cases with known intervals,
unit-weight reproduction of the plain APs, determinism, and the seeds x images bootstrap."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gan_detect.data.proposals import read_wider_tree_arrays
from gan_detect.metrics.bootstrap import (
    bootstrap_weights,
    coco_results_to_dt,
    coco_tables,
    load_coco_gt,
    paired_bootstrap,
    seed_bootstrap,
    wider_paired_bootstrap,
    wider_tables,
)
from gan_detect.metrics.compare import (
    compare_coco,
    compare_coco_seeds,
    compare_wider,
    compare_wider_seeds,
    format_comparison_table,
)
from gan_detect.metrics.wider_face_ap import wider_face_ap
from gan_detect.metrics.wider_gt import WiderGroundTruth, load_wider_ground_truth

DATA = Path(
    os.environ.get(
        "GAN_DETECT_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)
WIDER = DATA / "widerface"
FAKE100 = DATA / "coco" / "cocoapi_val2014_fake100"
SETTINGS = ("easy", "medium", "hard")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set GAN_DETECT_DATA)")
    return path


def _plain(preds: dict[str, np.ndarray], gt: WiderGroundTruth) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = wider_face_ap(preds, gt)
    return np.array([r[f"ap_{s}"] for s in SETTINGS])


def _gt(faces: dict[str, list[list[float]]]) -> WiderGroundTruth:
    """Ground truth whose faces count in all three settings."""
    ids = list(faces)
    boxes = [np.asarray(faces[i], np.float64).reshape(-1, 4) for i in ids]
    return WiderGroundTruth(ids, boxes, [np.ones((len(b), 3), bool) for b in boxes])


def _write_tree(root: Path, preds: dict[str, np.ndarray]) -> Path:
    for image_id, rows in preds.items():
        f = root / f"{image_id}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        name = image_id.split("/")[1]
        lines = [name, str(len(rows))] + [" ".join(f"{v:g}" for v in r) for r in rows]
        f.write_text("\n".join(lines) + "\n")
    return root


def _synthetic_wider(seed: int, n: int = 12) -> tuple[WiderGroundTruth, dict[str, np.ndarray]]:
    """Random faces (some ignored in easy / medium), detections near them plus background."""
    rng = np.random.default_rng(seed)
    ids, boxes, keep, preds = [], [], [], {}
    for i in range(n):
        k = int(rng.integers(1, 6))
        xy = rng.uniform(0, 900, (k, 2))
        wh = rng.uniform(4, 80, (k, 2))
        b = np.concatenate([xy, wh], axis=1)
        kp = np.ones((k, 3), bool)
        kp[:, 0] = wh[:, 1] > 30
        kp[:, 1] = wh[:, 1] > 15
        ids.append(f"0--E/img_{i}")
        boxes.append(b)
        keep.append(kp)
        found = b[rng.random(k) < 0.7] + rng.normal(0, 1.0, (1, 4))
        bg = np.concatenate([rng.uniform(0, 900, (3, 2)), rng.uniform(4, 60, (3, 2))], axis=1)
        rows = np.concatenate([found, bg])
        preds[ids[-1]] = np.column_stack([rows, rng.uniform(0, 1, len(rows))])
    return WiderGroundTruth(ids, boxes, keep), preds


# ---------------------------------------------------------------------------------------------
# Resampling


def test_weights_are_multinomial_counts_and_deterministic() -> None:
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all() and (w >= 0).all()
    assert np.array_equal(w, bootstrap_weights(7, 50, seed=3))
    assert not np.array_equal(w, bootstrap_weights(7, 50, seed=4))
    assert bootstrap_weights(7, 0).shape == (0, 7)


# ---------------------------------------------------------------------------------------------
# WIDER FACE: constructed cases

# Two images, one face each (kept in every setting); scores span [0, 1] for both methods, so the
# global min-max normalisation is the identity. Face a = [0, 0, 9, 9], face b = [100, 100, 9, 9].
#   A on a: the face @1.0                      -> alone: AP 1
#   A on b: background @1.0, the face @0.0     -> alone: P = 0 until t = 0, then (1/2, R = 1): 1/2
#   B on a: the face @0.5                      -> alone: AP 1
#   B on b: the face @1.0, background @0.0     -> alone: AP 1
# Both images: A has (P, R) = (1/2, 1/2) for t in (0, .999] and (2/3, 1) at t = 0 -> AP 2/3;
# B has (1, 1/2) for t > .5, (1, 1) down to t > 0, (2/3, 1) at 0 -> AP 1.
# A resample of 2 images is {a, a} (prob 1/4), {a, b} (1/2) or {b, b} (1/4); counting an image
# twice scales every count by 2 and leaves precision and recall unchanged, so B - A is
# 0, 100/3 and 50 AP points: the 95 % percentile interval is [0, 50] and p(B <= A) = 1/4.
HAND_GT = {"e/a": [[0, 0, 9, 9]], "e/b": [[100, 100, 9, 9]]}
HAND_A = {
    "e/a": np.array([[0, 0, 9, 9, 1.0]]),
    "e/b": np.array([[300, 300, 9, 9, 1.0], [100, 100, 9, 9, 0.0]]),
}
HAND_B = {
    "e/a": np.array([[0, 0, 9, 9, 0.5]]),
    "e/b": np.array([[100, 100, 9, 9, 1.0], [300, 300, 9, 9, 0.0]]),
}


def test_two_image_case_matches_the_hand_computed_distribution() -> None:
    gt = _gt(HAND_GT)
    ta, tb = wider_tables(HAND_A, gt), wider_tables(HAND_B, gt)
    every = np.array([[2, 0], [1, 1], [0, 2]])
    diff = 100 * (tb.ap(every) - ta.ap(every))
    np.testing.assert_allclose(diff, [[0.0] * 3, [100 / 3] * 3, [50.0] * 3], atol=1e-9)
    res = paired_bootstrap(ta, tb, n_boot=1000, seed=0)
    for s in SETTINGS:
        c = res.metrics[s]
        assert c.a == pytest.approx(200 / 3) and c.b == pytest.approx(100.0)
        d = c.difference
        assert d.point == pytest.approx(100 / 3)
        assert d.low == pytest.approx(0.0, abs=1e-9) and d.high == pytest.approx(50.0)
        assert d.p_not_better == pytest.approx(0.25, abs=0.05)  # binomial sd 0.014
        assert not d.resolved and d.n_valid == 1000


def test_identical_methods_give_zero_and_a_zero_width_interval() -> None:
    gt, preds = _synthetic_wider(1)
    res = wider_paired_bootstrap(preds, preds, gt, n_boot=200, seed=5)
    for s in SETTINGS:
        d = res.metrics[s].difference
        assert (d.point, d.low, d.high) == (0.0, 0.0, 0.0)
        assert d.p_not_better == 1.0 and not d.resolved


def test_better_on_every_image_gives_an_interval_above_zero() -> None:
    # Every image: A ranks a background box (@1.0) above all its faces (@0.0); B finds its faces
    # @1.0 and ranks a background box last (@0.0). On any resample with F faces over N images:
    # AP_B = 1 and AP_A = F / (F + N) (one operating point, at t = 0): B wins on every resample.
    rng = np.random.default_rng(0)
    faces, pa, pb = {}, {}, {}
    for i in range(15):
        k = int(rng.integers(1, 5))
        f = np.array([[100.0 * j, 50.0, 20.0, 20.0] for j in range(k)])
        faces[f"e/{i}"] = f.tolist()
        bg = np.array([[0.0, 500.0, 20.0, 20.0]])
        pa[f"e/{i}"] = np.vstack([np.c_[bg, [1.0]], np.c_[f, np.zeros(k)]])
        pb[f"e/{i}"] = np.vstack([np.c_[f, np.ones(k)], np.c_[bg, [0.0]]])
    gt = _gt(faces)
    res = wider_paired_bootstrap(pa, pb, gt, n_boot=500, seed=1)
    n_face = np.array([len(faces[i]) for i in gt.image_ids], np.float64)
    w = bootstrap_weights(len(gt), 500, seed=1)
    expect = 100 * (1 - (w @ n_face) / (w @ n_face + w.sum(axis=1)))
    for s in SETTINGS:
        d = res.metrics[s].difference
        assert d.low > 0 and d.p_not_better == 0.0 and d.resolved
        assert d.low == pytest.approx(np.percentile(expect, 2.5))
        assert d.high == pytest.approx(np.percentile(expect, 97.5))
        assert d.point == pytest.approx(100 * (1 - n_face.sum() / (n_face.sum() + len(gt))))


def test_unit_weights_reproduce_plain_ap_synthetic() -> None:
    for seed in range(3):
        gt, preds = _synthetic_wider(seed)
        ap = wider_tables(preds, gt).ap(np.ones((1, len(gt))))[0]
        assert np.abs(100 * (ap - _plain(preds, gt))).max() < 0.01


def test_weighted_sum_equals_evaluating_the_duplicated_set_synthetic() -> None:
    # A resample evaluated the slow way: copies of the images as separate images. The extreme
    # scores stay in the set here, so the once-only normalisation is exact too.
    gt, preds = _synthetic_wider(4)
    preds[gt.image_ids[0]][0, 4], preds[gt.image_ids[0]][1, 4] = 0.0, 1.0
    tables = wider_tables(preds, gt)
    w = bootstrap_weights(len(gt), 3, seed=2)
    w[:, 0] = np.maximum(w[:, 0], 1)
    for row in w:
        ids, boxes, keep, dup = [], [], [], {}
        for i, c in enumerate(row):
            for j in range(c):
                ids.append(f"{gt.image_ids[i]}_{j}")
                boxes.append(gt.boxes[i])
                keep.append(gt.keep[i])
                dup[ids[-1]] = preds[gt.image_ids[i]]
        plain = _plain(dup, WiderGroundTruth(ids, boxes, keep))
        assert np.abs(100 * (tables.ap(row[None])[0] - plain)).max() < 1e-9


@pytest.mark.slow
def test_unit_weights_reproduce_plain_ap_on_published_predictions() -> None:
    gt = load_wider_ground_truth(_need(WIDER / "ground_truth"))
    preds = read_wider_tree_arrays(
        _need(WIDER / "predictions" / "retinaface_mobilenet0.25_biubug6")
    )
    # B: the same boxes, scores squared (a different global threshold cut).
    preds_b = {k: np.column_stack([v[:, :4], v[:, 4] ** 2]) for k, v in preds.items()}
    ta, tb = wider_tables(preds, gt), wider_tables(preds_b, gt)
    ones = np.ones((1, len(gt)))
    plain_a = _plain(preds, gt)
    assert np.abs(100 * (ta.ap(ones)[0] - plain_a)).max() < 0.01
    assert np.abs(100 * (tb.ap(ones)[0] - _plain(preds_b, gt))).max() < 0.01
    # The published numbers (SOURCES.md §3), through the bootstrap path.
    np.testing.assert_allclose(ta.ap(ones)[0], [0.907076, 0.881650, 0.738273], atol=1e-6)
    # One real resample evaluated as a duplicated set with its own min-max normalisation: the
    # normalisation-once approximation moves it by far less than 0.01 AP points.
    w = bootstrap_weights(len(gt), 1, seed=11)[0]
    ids, boxes, keep, dup = [], [], [], {}
    for i in np.flatnonzero(w):
        for j in range(w[i]):
            ids.append(f"{gt.image_ids[i]}#{j}")
            boxes.append(gt.boxes[i])
            keep.append(gt.keep[i])
            if gt.image_ids[i] in preds:
                dup[ids[-1]] = preds[gt.image_ids[i]]
    plain = _plain(dup, WiderGroundTruth(ids, boxes, keep))
    assert np.abs(100 * (ta.ap(w[None])[0] - plain)).max() < 0.01
    # A bootstrap on the full set is deterministic and resolves the hard-setting drop.
    r1 = paired_bootstrap(ta, tb, n_boot=100, seed=0)
    r2 = paired_bootstrap(ta, tb, n_boot=100, seed=0)
    assert r1.to_dict() == r2.to_dict()
    assert r1.metrics["hard"].difference.high < 0


# ---------------------------------------------------------------------------------------------
# Command-level functions (library part) and the table


def test_compare_wider_files_deterministic_and_table(tmp_path: Path) -> None:
    gt, preds = _synthetic_wider(2, n=10)
    _, other = _synthetic_wider(3, n=10)
    other = {i: other[j] for i, j in zip(gt.image_ids, other, strict=True)}
    a = _write_tree(tmp_path / "a", preds)
    b = _write_tree(tmp_path / "b", other)
    import scipy.io

    # A ground-truth folder in the official .mat layout (one event).
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    names = np.empty((len(gt), 1), object)
    bbx = np.empty((len(gt), 1), object)
    for i, (image_id, bx) in enumerate(zip(gt.image_ids, gt.boxes, strict=True)):
        names[i, 0] = image_id.split("/")[1]
        bbx[i, 0] = bx.astype(np.float64)
    ev = np.empty((1, 1), object)
    ev[0, 0] = "0--E"
    fl, fb = np.empty((1, 1), object), np.empty((1, 1), object)
    fl[0, 0], fb[0, 0] = names, bbx
    scipy.io.savemat(
        gt_dir / "wider_face_val.mat", {"event_list": ev, "file_list": fl, "face_bbx_list": fb}
    )
    for k, s in enumerate(SETTINGS):
        gl = np.empty((len(gt), 1), object)
        for i, kp in enumerate(gt.keep):
            gl[i, 0] = (np.flatnonzero(kp[:, k]) + 1).reshape(-1, 1).astype(np.float64)
        g = np.empty((1, 1), object)
        g[0, 0] = gl
        scipy.io.savemat(
            gt_dir / f"wider_{s}_val.mat",
            {"event_list": ev, "file_list": fl, "face_bbx_list": fb, "gt_list": g},
        )

    r1 = compare_wider(a, b, gt_dir, n_boot=300, seed=0)
    r2 = compare_wider(a, b, gt_dir, n_boot=300, seed=0)
    r1.pop("seconds"), r2.pop("seconds")
    assert r1 == r2
    assert json.loads(json.dumps(r1)) == r1  # JSON-ready
    for s in SETTINGS:
        d = r1["difference"][s]
        assert d["low"] <= d["point"] <= d["high"] or not np.isfinite(d["point"])
        assert d["point"] == pytest.approx(r1["b"][s] - r1["a"][s])
    plain = _plain(read_wider_tree_arrays(a), load_wider_ground_truth(gt_dir))
    assert r1["a"]["easy"] == pytest.approx(100 * plain[0], abs=0.01)
    assert compare_wider(a, b, gt_dir, n_boot=300, seed=1)["difference"] != r1["difference"]
    same = compare_wider(a, a, gt_dir, n_boot=100)
    table = format_comparison_table(same)
    assert "95 % interval" in table and "not resolved" in table and "[+0.000, +0.000]" in table
    none = compare_wider(a, b, gt_dir, n_boot=0)
    assert all(none["difference"][s]["low"] is None for s in SETTINGS)
    assert "no bootstrap" in format_comparison_table(none)
    seeds = compare_wider_seeds([a, a], [b, a], gt_dir, n_boot=100)
    assert "sd" in format_comparison_table(seeds)


# ---------------------------------------------------------------------------------------------
# COCO


def _coco_gt(n_img: int = 8, seed: int = 0) -> dict[str, Any]:
    """Small COCO instances dict: 2 categories, boxes from tiny to large."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(n_img)
    ]
    anns = []
    for im in images:
        for _ in range(int(rng.integers(1, 5))):
            side = float(rng.choice([10.0, 24.0, 60.0, 150.0]))
            x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [x, y, side, side],
                    "area": side * side,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _coco_dets(gt: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Noisy detections: most boxes found with jitter, some background."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.8:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.1 * w, 4)
            out.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                    "score": float(rng.uniform(0.2, 1.0)),
                }
            )
    for im in gt["images"]:
        out.append(
            {
                "image_id": im["id"],
                "category_id": int(rng.integers(1, 3)),
                "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), 30.0, 30.0],
                "score": float(rng.uniform(0.0, 0.9)),
            }
        )
    return out


def _tables(gt: dict[str, Any], dets: list[dict[str, Any]]) -> Any:
    coco = load_coco_gt(gt)
    return coco_tables(coco, coco_results_to_dt(coco, dets))


def test_coco_identical_methods_and_better_on_every_image() -> None:
    gt = _coco_gt()
    dets = _coco_dets(gt, 1)
    t = _tables(gt, dets)
    same = paired_bootstrap(t, _tables(gt, dets), n_boot=200, seed=0)
    for m, c in same.metrics.items():
        d = c.difference
        if np.isfinite(d.point):
            assert (d.point, d.low, d.high) == (0.0, 0.0, 0.0), m
            assert d.p_not_better == 1.0 and not d.resolved
    # B: every ground-truth box exactly, score 0.9 (AP 100 on every resample). A: the same
    # boxes @0.5 with a background box of their category @0.9 in every image: below 100
    # wherever the background box comes first.
    exact = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in gt["annotations"]
    ]
    worse = [{**d, "score": 0.5} for d in exact] + [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": [600.0, 440.0, 30.0, 30.0],
            "score": 0.9,
        }
        for a in gt["annotations"]
    ]
    res = paired_bootstrap(_tables(gt, worse), _tables(gt, exact), n_boot=200, seed=0)
    for m in ("map", "map_50", "map_75"):
        d = res.metrics[m].difference
        assert res.metrics[m].b == pytest.approx(100.0)
        assert d.low > 0 and d.p_not_better == 0.0 and d.resolved


def test_coco_weighted_sum_equals_evaluating_the_duplicated_set() -> None:
    gt = _coco_gt(n_img=6, seed=3)
    dets = _coco_dets(gt, 4)
    t = _tables(gt, dets)
    for row in bootstrap_weights(len(gt["images"]), 3, seed=5):
        ids = sorted(im["id"] for im in gt["images"])
        images, anns, dup = [], [], []
        for i, c in zip(ids, row, strict=True):
            for j in range(c):
                new = 1000 * (j + 1) + i
                images.append({"id": new, "width": 640, "height": 480})
                for a in gt["annotations"]:
                    if a["image_id"] == i:
                        anns.append({**a, "id": len(anns) + 1, "image_id": new})
                dup += [{**d, "image_id": new} for d in dets if d["image_id"] == i]
        plain = _tables({**gt, "images": images, "annotations": anns}, dup)
        got = t.ap(row[None])[0]
        want = plain.ap(np.ones((1, len(images))))[0]
        np.testing.assert_allclose(got, want, atol=1e-4, equal_nan=True)


@pytest.mark.slow
def test_coco_unit_weights_reproduce_the_package_ap(tmp_path: Path) -> None:
    from gan_detect.metrics.coco_map import evaluate_coco_files

    gt_json = _need(FAKE100 / "instances_val2014_100.json")
    res_a = FAKE100 / "instances_val2014_fakebbox100_results.json"
    rows = json.loads(res_a.read_text())
    res_b = tmp_path / "b.json"
    res_b.write_text(json.dumps([r for i, r in enumerate(rows) if i % 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain_a = evaluate_coco_files(gt_json, res_a)
        plain_b = evaluate_coco_files(gt_json, res_b)
    r = compare_coco(res_a, res_b, gt_json, n_boot=50, seed=0)
    for k, v in plain_a.items():
        assert r["a"][k] == pytest.approx(100 * v, abs=0.01), k
        assert r["b"][k] == pytest.approx(100 * plain_b[k], abs=0.01), k
    # pycocotools' own printout of this demo (SOURCES.md §6): AP 0.505, AP50 0.697.
    assert r["a"]["map"] == pytest.approx(50.4581, abs=1e-3)
    assert r["difference"]["map"]["high"] < 0  # dropping a third of the detections is resolved
    table = format_comparison_table(r)
    assert "A better" in table and "map_tiny" in table


def test_compare_coco_files_deterministic(tmp_path: Path) -> None:
    gt = _coco_gt(n_img=10, seed=7)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "a.json").write_text(json.dumps(_coco_dets(gt, 1)))
    (tmp_path / "b.json").write_text(json.dumps(_coco_dets(gt, 2)))
    args = (tmp_path / "a.json", tmp_path / "b.json", tmp_path / "gt.json")
    r1, r2 = compare_coco(*args, n_boot=100), compare_coco(*args, n_boot=100)
    r1.pop("seconds"), r2.pop("seconds")
    assert r1 == r2 and json.loads(json.dumps(r1)) == r1
    same = compare_coco(args[0], args[0], args[2], n_boot=100)
    assert all(
        d["point"] in (0.0, None) and d["low"] in (0.0, None) for d in same["difference"].values()
    )
    seeds = compare_coco_seeds([args[0], args[1]], [args[1], args[0]], args[2], n_boot=50)
    # Swapping A and B between the two seeds: the seed-averaged difference is 0.
    assert seeds["difference"]["map"]["point"] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Seeds as an axis


def test_seed_bootstrap_counts_the_seed_spread() -> None:
    # Seed 0: A = B (difference 0 on every resample). Seed 1: A misses every face, B finds them
    # all (difference 100 on every resample). Images add nothing, so the seeds x images
    # replicates are the mean of 2 seeds drawn with replacement: 0, 50 or 100 with probabilities
    # 1/4, 1/2, 1/4 -> interval [0, 100] around 50, p(B <= A) = 1/4.
    faces = {f"e/{i}": [[0.0, 0.0, 20.0, 20.0]] for i in range(6)}
    gt = _gt(faces)
    bg = [[200.0, 200.0, 20.0, 20.0]]
    miss = {i: np.array([bg[0] + [1.0], [300.0, 300.0, 20.0, 20.0, 0.0]]) for i in faces}
    hit = {i: np.array([f[0] + [1.0], bg[0] + [0.0]]) for i, f in faces.items()}
    t_miss, t_hit = wider_tables(miss, gt), wider_tables(hit, gt)
    res = seed_bootstrap([(t_hit, t_hit), (t_miss, t_hit)], n_boot=1000, seed=0)
    for s in SETTINGS:
        m = res.metrics[s]
        np.testing.assert_allclose(m.diff, [0.0, 100.0])
        assert m.std_diff == pytest.approx(100 / np.sqrt(2))
        assert m.mean_a == pytest.approx(50.0) and m.mean_b == pytest.approx(100.0)
        d = m.difference
        assert d.point == pytest.approx(50.0)
        assert (d.low, d.high) == (pytest.approx(0.0), pytest.approx(100.0))
        assert d.p_not_better == pytest.approx(0.25, abs=0.05) and not d.resolved
    assert res.to_dict() == seed_bootstrap([(t_hit, t_hit), (t_miss, t_hit)], 1000, 0).to_dict()


def test_seed_bootstrap_with_identical_seeds_is_the_image_bootstrap() -> None:
    # Every seed the same: seed resampling changes nothing, and the image draw is the one of
    # paired_bootstrap with the same seed, so the two intervals coincide.
    gt, pa = _synthetic_wider(5)
    _, pb = _synthetic_wider(6)
    pb = {i: pb[j] for i, j in zip(gt.image_ids, pb, strict=True)}
    ta, tb = wider_tables(pa, gt), wider_tables(pb, gt)
    one = paired_bootstrap(ta, tb, n_boot=300, seed=9)
    many = seed_bootstrap([(ta, tb)] * 3, n_boot=300, seed=9)
    for s in SETTINGS:
        assert many.metrics[s].std_diff == 0.0
        d1, d3 = one.metrics[s].difference, many.metrics[s].difference
        assert (d3.point, d3.low, d3.high, d3.p_not_better) == pytest.approx(
            (d1.point, d1.low, d1.high, d1.p_not_better)
        )
