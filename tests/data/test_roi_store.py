from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import gan_detect.data.roi_store as roi_store
from gan_detect.data.batch import RoiBatch
from gan_detect.data.records import ImageRecord, Proposals
from gan_detect.data.roi import MiningParams, decode_roi_deltas, hr_from_uint8, make_lr
from gan_detect.data.roi_store import OnTheFlyRoiDataset, RoiStoreDataset, build_roi_store


def _write_images(tmp_path: Path, n: int = 3) -> list[ImageRecord]:
    """Grey noise images with bright squares at known boxes (one ignored box in image 0)."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        arr = rng.integers(40, 90, size=(120, 160, 3), dtype=np.uint8)
        boxes = [[20 + 10 * i, 30, 52 + 10 * i, 62], [100, 60, 124, 84]]
        for x0, y0, x1, y1 in boxes:
            arr[y0:y1, x0:x1] = 250
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        ignore = [False, i == 0]
        recs.append(ImageRecord(f"ev/img{i}", str(path), boxes, [1, 1], ignore, 160, 120))
    return recs


MINING = MiningParams(hr_size=32, rois_per_image=8)
KW = dict(params=MINING, shard_size=10, progress=False)


def test_store_build_layout_and_centred_positives(tmp_path: Path) -> None:
    recs = _write_images(tmp_path)
    store = build_roi_store(recs, None, tmp_path / "store", **KW)
    meta = json.loads((store / "meta.json").read_text())
    assert meta["num_rois"] == 24 and meta["shard_sizes"] == [10, 10, 4]
    # The parameter record the fingerprint hashes keeps its keys, so stores built before
    # MiningParams existed are still reused.
    assert meta["params"] == {
        "hr_size": 32, "scale": 4, "context": 1.0, "rois_per_image": 8,
        "positive_fraction": 0.25, "fg_iou": 0.5, "bg_iou_low": 0.0, "include_gt": True,
        "shard_size": 10, "seed": 0, "jitter_when_missing": True, "ignore_neg_iou": 0.3,
    }  # fmt: skip
    assert sum(meta["label_counts"].values()) == 24 and meta["label_counts"]["1"] >= 6
    ds = RoiStoreDataset(store, scale=4)
    assert len(ds) == 24 and ds.class_counts() == {
        int(k): v for k, v in meta["label_counts"].items()
    }
    boxes, labels = ds.boxes, ds.labels.numpy()
    for i in np.nonzero(labels == 1)[0]:
        item = ds[int(i)]
        assert item.hr.shape == (1, 3, 32, 32) and item.lr.shape == (1, 3, 8, 8)
        assert item.hr.dtype == torch.float32 and item.hr.min() >= -1 and item.hr.max() <= 1
        # The matched GT is where the box target says; its centre is bright in the crop.
        gt = decode_roi_deltas(item.box_targets, torch.from_numpy(boxes[i : i + 1]), 1.0)[0]
        rec = recs[int(ds.image_index[i])]
        assert np.abs(rec.boxes[~rec.ignore] - gt.numpy()).max(axis=1).min() < 0.5
        assert item.hr[0, :, 14:18, 14:18].mean() > 0.8  # white square at the crop centre
        assert torch.allclose(item.lr, make_lr(item.hr, 4))
    # The ignored square (image 0, second box) never appears as a negative's centre box.
    ign = recs[0].boxes[1]
    neg0 = (labels == 0) & (ds.image_index == 0)
    assert not np.any(np.all(np.abs(boxes[neg0] - ign) < 1, axis=1))


def test_store_reused_then_rebuilt_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = _write_images(tmp_path)
    out = tmp_path / "store"
    build_roi_store(recs, None, out, **KW)
    calls = []
    real = roi_store._mine_into

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(roi_store, "_mine_into", spy)
    before = (out / "meta.json").stat().st_mtime_ns
    assert build_roi_store(recs, None, out, **KW) == out
    assert calls == [] and (out / "meta.json").stat().st_mtime_ns == before
    # A non-main rank finds the finished store at once.
    assert build_roi_store(recs, None, out, is_main=False, wait_timeout_s=1, **KW) == out
    # Changed inputs: a parameter, an annotation, proposals -> rebuild each time.
    build_roi_store(recs, None, out, **{**KW, "params": replace(MINING, rois_per_image=4)})
    assert len(calls) == 1 and len(RoiStoreDataset(out, scale=4)) == 12
    recs[1].boxes[0, 0] += 1.0
    build_roi_store(recs, None, out, **KW)
    props = {"ev/img2": Proposals([[0, 0, 20, 20]], [0.9], [1])}
    build_roi_store(recs, props, out, **KW)
    assert len(calls) == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_crash_leaves_no_complete_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _write_images(tmp_path)
    recs[2] = ImageRecord("ev/missing", str(tmp_path / "missing.png"))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        build_roi_store(recs, None, tmp_path / "store", **KW)
    assert not (tmp_path / "store").exists()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        RoiStoreDataset(tmp_path / "store", scale=4)


def test_hflip_mirrors_crop_and_negates_dx(tmp_path: Path) -> None:
    recs = _write_images(tmp_path)
    store = build_roi_store(recs, None, tmp_path / "store", **KW)
    plain, flip = RoiStoreDataset(store, scale=4), RoiStoreDataset(store, scale=4, hflip=True)
    # A positive whose proposal is off-centre: its crop is asymmetric and its dx is not 0.
    off = (plain.labels == 1) & (plain.box_targets[:, 0].abs() > 0.2)
    i = int(torch.nonzero(off)[0])
    assert not torch.equal(plain[i].hr, plain[i].hr.flip(-1))
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        a, b = plain[i], flip[i]
        flipped = not torch.equal(a.hr, b.hr)
        seen.add(flipped)
        if flipped:
            assert torch.equal(b.hr, a.hr.flip(-1))
            assert torch.allclose(b.lr, a.lr.flip(-1), atol=1e-6)
            assert torch.allclose(b.box_targets, a.box_targets * torch.tensor([-1.0, 1, 1, 1]))
        else:
            assert torch.equal(b.box_targets, a.box_targets)
    assert seen == {True, False}


def test_dataloader_with_workers_and_on_the_fly_dataset(tmp_path: Path) -> None:
    recs = _write_images(tmp_path)
    store = build_roi_store(recs, None, tmp_path / "store", **KW)
    ds = RoiStoreDataset(store, scale=4, hflip=True)
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=RoiBatch.collate)
    batches = list(loader)
    assert sum(len(b) for b in batches) == 24
    assert batches[0].lr.shape == (8, 3, 8, 8) and batches[0].hr.shape == (8, 3, 32, 32)
    assert torch.equal(torch.cat([b.labels for b in batches]), ds.labels)
    otf = OnTheFlyRoiDataset(recs, None, MINING)
    item = otf[0]
    assert len(item) == 8 and item.lr.shape == (8, 3, 8, 8) and (item.labels == 1).sum() >= 1
    # Same crop code: an on-the-fly positive equals the stored uint8 round trip of its HR.
    assert torch.allclose(
        item.hr,
        hr_from_uint8((item.hr.permute(0, 2, 3, 1) + 1).mul(127.5).round().to(torch.uint8).numpy()),
    )
