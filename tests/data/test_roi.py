from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_detect.data.records import ImageRecord, Proposals
from gan_detect.data.roi import (
    MiningParams,
    crop_hr,
    crop_lr_for_inference,
    decode_boxes,
    decode_roi_deltas,
    encode_boxes,
    encode_roi_targets,
    gt_jitter_proposals,
    label_proposals,
    make_lr,
    mine_rois,
    sample_rois,
)


def _t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def test_label_proposals_matches_hand_computed_ious() -> None:
    gt = _t([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    gt_labels = torch.tensor([1, 2, 1])
    gt_ignore = torch.tensor([False, False, True])
    props = _t(
        [
            [0, 0, 10, 10],  # IoU 1 with gt0 -> class 1
            [0, 0, 10, 5],  # IoU exactly 0.5 with gt0 -> foreground (inclusive)
            [0, 0, 10, 4.9],  # IoU 0.49 -> background
            [20, 0, 30, 8],  # IoU 0.8 with gt1 -> class 2
            [40, 0, 50, 10],  # IoU 1 with the ignored gt2 -> -1
            [40, 0, 50, 4],  # IoU 0.4 with ignored gt2 only -> -1 (>= ignore_neg_iou 0.3)
            [100, 100, 110, 110],  # no overlap -> background with bg_iou_low 0
        ]
    )
    labels, matched, targets = label_proposals(props, gt, gt_labels, gt_ignore)
    assert labels.tolist() == [1, 1, 0, 2, -1, -1, 0]
    assert matched.tolist() == [0, 0, -1, 1, -1, -1, -1]
    assert torch.allclose(targets[0], torch.zeros(4))
    # Against the crop window, the 10x10 square around (25, 4): dy = 10 * (5 - 4) / 10, dh = 0.
    assert torch.allclose(targets[3], _t([0, 1.0, 0, 0]), atol=1e-5)
    assert (targets[[2, 4, 5, 6]] == 0).all()


def test_label_proposals_bg_iou_low_and_ties() -> None:
    gt = _t([[0, 0, 10, 10], [0, 0, 10, 10], [30, 0, 40, 10]])
    props = _t([[0, 0, 10, 10], [5, 0, 15, 10], [100, 0, 110, 10]])
    labels, matched, _ = label_proposals(
        props, gt, torch.tensor([1, 2, 3]), torch.zeros(3, dtype=torch.bool), bg_iou_low=0.1
    )
    # Tie between gt0 and gt1 (identical boxes): the lowest index wins.
    assert matched[0].item() == 0 and labels[0].item() == 1
    # IoU 1/3 in [0.1, 0.5) -> background; IoU 0 < bg_iou_low -> ignored.
    assert labels[1:].tolist() == [0, -1]


def test_label_proposals_ignored_vs_valid_tie_prefers_valid() -> None:
    gt = _t([[0, 0, 10, 10], [0, 0, 10, 10]])
    labels, _, _ = label_proposals(
        _t([[0, 0, 10, 10]]), gt, torch.tensor([1, 1]), torch.tensor([True, False])
    )
    assert labels.tolist() == [1]


def test_label_proposals_empty_gt_all_background() -> None:
    labels, matched, targets = label_proposals(
        _t([[0, 0, 5, 5]]), torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    )
    assert labels.tolist() == [0] and matched.tolist() == [-1] and targets.abs().sum() == 0


def test_encode_decode_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    props = torch.rand(50, 2, generator=g) * 100
    props = torch.cat([props, props + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    gt = props + torch.randn(50, 4, generator=g) * 3
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
    deltas = encode_boxes(gt, props)
    assert torch.allclose(decode_boxes(deltas, props), gt, atol=1e-3)
    # Weights (10, 10, 5, 5): a shift of one box width is dx = 10.
    shifted = props.clone()
    w = props[:, 2] - props[:, 0]
    shifted[:, 0] += w
    shifted[:, 2] += w
    assert torch.allclose(encode_boxes(shifted, props)[:, 0], torch.full((50,), 10.0), atol=1e-4)


def test_sample_rois_positive_fraction_and_fill() -> None:
    labels = torch.tensor([1] * 40 + [0] * 100 + [-1] * 20)
    idx = sample_rois(labels, 64, 0.25, torch.Generator().manual_seed(0))
    assert len(idx) == 64 and (labels[idx] > 0).sum() == 16 and (labels[idx] >= 0).all()
    assert len(set(idx.tolist())) == 64
    few = torch.tensor([1] * 3 + [0] * 100)
    idx = sample_rois(few, 32, 0.25, torch.Generator().manual_seed(0))
    assert len(idx) == 32 and (few[idx] > 0).sum() == 3  # filled with negatives


def test_crop_hr_is_exact_at_unit_scale_and_matches_antialiased_resize() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 120, 160, generator=g)
    crop = crop_hr(img, _t([[10, 20, 42, 52]]), 32, context=1.0)
    assert crop.shape == (1, 3, 32, 32) and crop.dtype == torch.float32
    assert torch.allclose(crop[0], img[:, 20:52, 10:42] * 2 - 1, atol=1e-5)
    crop = crop_hr(img, _t([[10, 20, 74, 84]]), 16, context=1.0)  # 4x downscale
    ref = F.interpolate(img[None, :, 20:84, 10:74] * 2 - 1, size=16, mode="bicubic", antialias=True)
    # Interior only: torch renormalises its kernel at the crop edge, we read the real neighbours.
    assert (crop[0] - ref[0])[:, 2:-2, 2:-2].abs().max() < 1e-5


def test_crop_hr_context_square_and_padding() -> None:
    img = torch.ones(3, 50, 50)
    # A 10x20 box at the corner with context 2: a 40x40 square centred on (5, 10).
    crop = crop_hr(img, _t([[0, 0, 10, 20]]), 40, context=2.0)
    assert crop.min() >= -1 and crop.max() <= 1
    assert torch.allclose(crop[0, :, 30, 30], torch.ones(3))  # inside the image: white
    assert torch.allclose(crop[0, :, 2, 2], torch.zeros(3), atol=1e-6)  # outside: 0 (grey)


def test_make_lr_geometry_and_range() -> None:
    hr = torch.rand(5, 3, 64, 64) * 2 - 1
    lr = make_lr(hr, 4)
    assert lr.shape == (5, 3, 16, 16) and lr.dtype == torch.float32
    assert lr.min() >= -1 and lr.max() <= 1
    assert torch.allclose(
        make_lr(torch.full((1, 3, 64, 64), 0.3), 4), torch.full((1, 3, 16, 16), 0.3)
    )
    ref = F.interpolate(hr, size=(16, 16), mode="bicubic", antialias=True).clamp(-1, 1)
    assert torch.allclose(lr, ref, atol=1e-5)  # the training LR is torch's antialiased bicubic
    assert make_lr(torch.zeros(2, 3, 32, 64), 4).shape == (2, 3, 8, 16)
    with pytest.raises(ValueError, match="divisible"):
        make_lr(torch.zeros(1, 3, 30, 30), 4)


def _smooth_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 30, 40, generator=g)
    sm = F.interpolate(low, size=(240, 320), mode="bicubic", align_corners=False)[0]
    return (sm + 0.1 * torch.rand(3, 240, 320, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def _inference_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 30, 40, generator=g)
    img = F.interpolate(low, size=(240, 320), mode="bicubic", align_corners=False)[0]
    img = (img + 0.1 * torch.rand(3, 240, 320, generator=g)).clamp(0, 1)
    side = torch.exp(torch.empty(100).uniform_(np.log(6), np.log(80), generator=g))
    ctr = torch.rand(100, 2, generator=g) * torch.tensor([320.0, 240.0])
    boxes = torch.cat([ctr - side[:, None] / 2, ctr + side[:, None] / 2], 1)
    return img, boxes, make_lr(crop_hr(img, boxes, 64, 1.0), 4)


@pytest.mark.parametrize(
    ("method", "bound"), [("exact", 1e-5), ("roi_align_hr", 0.0107), ("roi_align", 0.0165)]
)
def test_inference_crop_matches_training_path(
    _inference_case: tuple[torch.Tensor, torch.Tensor, torch.Tensor], method: str, bound: float
) -> None:
    img, boxes, ref = _inference_case
    out = crop_lr_for_inference(img, boxes, 16, 1.0, scale=4, method=method)
    assert out.shape == (100, 3, 16, 16)
    # Measured mean abs differences (range [-1, 1]) on this image: exact 0, roi_align_hr
    # 0.0071, roi_align 0.0110; see benchmarks/README.md (data rows) for a real WIDER image.
    assert (out - ref).abs().mean() < bound


def test_gt_jitter_proposals_cover_positives_hard_negatives_and_background() -> None:
    rec = ImageRecord(
        "a", "unused.jpg", boxes=[[50, 50, 80, 90], [200, 100, 216, 120], [0, 0, 5, 5]],
        labels=[1, 1, 1], ignore=[False, False, True], width=320, height=240,
    )  # fmt: skip
    props = gt_jitter_proposals(rec, num_per_gt=8, num_random_bg=10, seed=0)
    labels, _, _ = label_proposals(
        torch.from_numpy(props.boxes), torch.from_numpy(rec.boxes),
        torch.from_numpy(rec.labels), torch.from_numpy(rec.ignore),
    )  # fmt: skip
    assert (labels == 1).sum() >= 10 and (labels == 0).sum() >= 10
    assert (props.boxes[:, :2] >= 0).all() and (props.boxes[:, 2] <= 320).all()
    again = gt_jitter_proposals(rec, num_per_gt=8, num_random_bg=10, seed=0)
    assert np.array_equal(props.boxes, again.boxes)  # seeded


def test_mine_rois_outputs_and_gt_centred_positives() -> None:
    img = torch.zeros(3, 240, 320)
    img[:, 100:140, 150:190] = 1.0  # a white 40x40 "object"
    rec = ImageRecord("a", "x.jpg", boxes=[[150, 100, 190, 140]], labels=[1], ignore=[False])
    props = Proposals(
        [[152, 98, 192, 139], [0, 0, 40, 40], [250, 150, 300, 200]], [1, 1, 1], [1] * 3
    )
    out = mine_rois(
        img, rec, props,
        MiningParams(hr_size=32, context=1.0, rois_per_image=8, positive_fraction=0.5),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    # GT + the near proposal are positive, two backgrounds fill the rest: 4 < num_rois.
    assert out["hr"].dtype == np.uint8 and out["hr"].shape == (4, 32, 32, 3)
    assert out["labels"].tolist() == [1, 1, 0, 0] and out["image_index"].tolist() == [0] * 4
    assert out["src_sizes"].dtype == np.float32 and out["box_targets"].shape == (4, 4)
    pos = out["labels"] == 1
    assert np.allclose(out["src_sizes"][pos], 40.0)  # the matched GT's size
    # Positives show the object in their centre; background crops do not.
    assert (out["hr"][pos][:, 14:18, 14:18] > 200).all()
    assert (out["hr"][~pos][:, 14:18, 14:18] < 200).all()


@pytest.mark.parametrize("context", [1.0, 1.5])
def test_identical_crops_get_identical_box_targets(context: float) -> None:
    """Two proposals with the same centre and long side give the same (squared) crop, so D
    cannot tell them apart: their targets towards the same GT must be equal too."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 120, 160, generator=g)
    props = _t([[60, 40, 100, 80], [60, 45, 100, 75]])  # 40x40 and 40x30, same centre
    gt = _t([[61, 44, 99, 78], [61, 44, 99, 78]])  # IoU 0.81 and 0.84: both foreground
    crops = crop_hr(img, props, 32, context)
    assert torch.equal(crops[0], crops[1])
    t = encode_roi_targets(gt, props, context)
    assert torch.allclose(t[0], t[1], atol=1e-6), t
    # Through the labelling used by mining and the ROI store, too.
    _, _, targets = label_proposals(
        props, gt[:1], torch.tensor([1]), torch.tensor([False]), context=context
    )
    assert torch.allclose(targets[0], targets[1], atol=1e-6)
    assert torch.allclose(targets, t, atol=1e-6)


@pytest.mark.parametrize("context", [1.0, 1.3, 2.0])
def test_roi_targets_round_trip_through_the_crop_geometry(context: float) -> None:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(50, 2, generator=g) * 100
    props = torch.cat([xy, xy + 3 + torch.rand(50, 2, generator=g) * 60], 1)  # any aspect ratio
    gt = props + torch.randn(50, 4, generator=g) * 3
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
    deltas = encode_roi_targets(gt, props, context)
    assert torch.allclose(decode_roi_deltas(deltas, props, context), gt, atol=1e-3)
    # Zero deltas decode to the crop window itself (the square D sees), not the proposal.
    win = decode_roi_deltas(torch.zeros(50, 4), props, context)
    side = (props[:, 2:] - props[:, :2]).max(dim=1).values * context
    assert torch.allclose(win[:, 2] - win[:, 0], side, atol=1e-3)
    assert torch.allclose(win[:, 3] - win[:, 1], side, atol=1e-3)
    assert torch.allclose((win[:, :2] + win[:, 2:]) / 2, (props[:, :2] + props[:, 2:]) / 2)


def test_proposals_mostly_on_an_ignore_region_are_never_negatives() -> None:
    """WIDER invalid faces / COCO crowd boxes: overlap in [ignore_neg_iou, 0.5) is not a clean
    negative (the crop shows much of an unlabelled object) -> -1; a lower overlap, or a valid GT
    overlapping more, stays background."""
    gt = _t([[0, 0, 10, 10], [40, 0, 50, 10]])  # gt0 valid, gt1 ignored
    gt_labels, gt_ignore = torch.tensor([1, 1]), torch.tensor([False, True])
    props = _t(
        [
            [40, 0, 50, 3.5],  # IoU 0.35 with the ignored box -> -1
            [40, 0, 50, 2.5],  # IoU 0.25 -> background
            [40, 0, 50, 3.0],  # IoU exactly 0.3 -> -1 (inclusive)
            [0, 0, 10, 4],  # IoU 0.4 with the valid box only -> background
        ]
    )
    labels, matched, targets = label_proposals(props, gt, gt_labels, gt_ignore)
    assert labels.tolist() == [-1, 0, -1, 0]
    assert (matched == -1).all() and (targets == 0).all()
    # The threshold is an option; 1.0 restores "ignored only at IoU >= 0.5".
    labels, _, _ = label_proposals(props, gt, gt_labels, gt_ignore, ignore_neg_iou=1.0)
    assert labels.tolist() == [0, 0, 0, 0]
    labels, _, _ = label_proposals(props, gt, gt_labels, gt_ignore, ignore_neg_iou=0.2)
    assert labels.tolist() == [-1, -1, -1, 0]
    # A valid GT overlapping more than the ignored one (0.48 vs 0.41) keeps it a negative.
    gt2 = _t([[0, 0, 10, 10], [2, 0, 12, 10]])
    labels, _, _ = label_proposals(_t([[0, 0, 11, 5]]), gt2, gt_labels, gt_ignore)
    assert labels.tolist() == [0]


def test_ignore_neg_iou_reaches_mining_and_the_data_config() -> None:
    from gan_detect.data.datamodules import RoiDataConfig

    img = torch.zeros(3, 64, 64)
    rec = ImageRecord("a", "x.jpg", boxes=[[10, 10, 30, 30]], labels=[1], ignore=[True])
    props = Proposals([[10, 10, 30, 18]], [1.0], [1])  # IoU 0.4 with the invalid face
    for thr, want in ((0.3, []), (0.5, [0])):
        out = mine_rois(
            img, rec, props, MiningParams(hr_size=16, rois_per_image=4, ignore_neg_iou=thr),
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert out["labels"].tolist() == want, thr
    assert RoiDataConfig().ignore_neg_iou == 0.3
