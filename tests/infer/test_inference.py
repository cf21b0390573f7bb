"""Full-image inference: a briefly trained GAN finds the faces planted in generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan_detect.app.cli import load_config
from gan_detect.config import PRESETS
from gan_detect.data import build_datamodule
from gan_detect.data.records import Proposals
from gan_detect.data.synthetic import write_synthetic_faces
from gan_detect.infer.evaluation import DetectionEvaluator
from gan_detect.infer.inference import InferenceOptions, refine_detections
from gan_detect.train.fit import fit

EXP = PRESETS


def _proposals(rec, rng: np.random.Generator, n_bg: int = 40) -> dict[str, torch.Tensor]:
    """The planted faces (slightly jittered) among random background boxes, all scored 0.5."""
    faces = rec.boxes[~rec.ignore]
    wh = faces[:, 2:] - faces[:, :2]
    jit = faces + rng.normal(0, 0.05, faces.shape) * np.concatenate([wh, wh], 1)
    side = rng.uniform(8, 48, (n_bg, 1))
    xy = rng.uniform(0, [320 - 48, 240 - 48], (n_bg, 2))
    boxes = np.concatenate([jit, np.concatenate([xy, xy + side], 1)]).astype(np.float32)
    p = Proposals(boxes, np.full(len(boxes), 0.5), np.ones(len(boxes)))
    return {
        "boxes": torch.from_numpy(p.boxes),
        "scores": torch.from_numpy(p.scores),
        "labels": torch.from_numpy(p.labels),
    }


@pytest.mark.slow
def test_trained_gan_rescoring_finds_planted_faces(tmp_path: Path) -> None:
    root = write_synthetic_faces(tmp_path / "faces", num_train=24, num_val=6, seed=3)
    cfg = load_config(
        [EXP / "tiny_face_wider.yaml", EXP / "smoke.yaml"],
        [
            f"data.root={root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'run'}",
            "logger.kind=none",
            "trainer.max_epochs=4",
            "trainer.enable_progress_bar=false",
            "data.val_rois=false",
            "data.positive_fraction=0.5",
            "data.gt_dir=null",
        ],
    )
    module, _ = fit(cfg, enable_checkpointing=False, callbacks=[])
    variant = module.variant.eval()
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale)
    opts = InferenceOptions(lr_size=cfg.data.hr_size // 4, nms_iou=0.5, min_score=0.0)
    rng = np.random.default_rng(0)
    gan, chance = DetectionEvaluator("wider"), DetectionEvaluator("wider")
    for rec in dm.records("val"):
        if not (~rec.ignore).any():
            continue
        ds = dm.detection_dataset("val")
        item = ds[[r.image_id for r in ds.records].index(rec.image_id)]
        props = _proposals(rec, rng)
        det = refine_detections(variant, item.images[0], props, opts)
        rand = dict(
            props,
            scores=torch.from_numpy(rng.uniform(0, 1, len(props["scores"])).astype(np.float32)),
        )
        gan.update([det], item.targets, item.image_ids)
        chance.update([rand], item.targets, item.image_ids)
    ap_gan, ap_chance = gan.compute()["ap_hard"], chance.compute()["ap_hard"]
    # D's face head ranks the planted faces above the background boxes.
    assert ap_gan > ap_chance + 0.15, (ap_gan, ap_chance)


def _rect_scene(rng: np.random.Generator, size: int = 96) -> tuple[torch.Tensor, np.ndarray]:
    """(3, size, size) [0, 1] dark noisy image with two bright rectangles of random aspect."""
    img = rng.uniform(0.0, 0.25, (3, size, size)).astype(np.float32)
    boxes = []
    for half in (0, 1):  # one object in each half: they never overlap
        w, h = rng.uniform(14, 36, 2)
        x0 = rng.uniform(half * size / 2 + 2, (half + 1) * size / 2 - w - 2)
        y0 = rng.uniform(4, size - h - 4)
        xi, yi, xe, ye = int(round(x0)), int(round(y0)), int(round(x0 + w)), int(round(y0 + h))
        img[:, yi:ye, xi:xe] = rng.uniform(0.6, 1.0, (3, 1, 1))
        boxes.append([xi, yi, xe, ye])
    return torch.from_numpy(img), np.asarray(boxes, np.float32)


def _jitter(
    rng: np.random.Generator, gt: np.ndarray, n: int, shift: float = 0.1, scale: float = 0.2
) -> np.ndarray:
    """``n`` proposals per box: centre shifts (std ``shift`` of the size), per-side log-scale
    noise (std ``scale``: the aspect ratio changes too)."""
    g = np.repeat(gt, n, 0)
    wh, ctr = g[:, 2:] - g[:, :2], (g[:, 2:] + g[:, :2]) / 2
    ctr = ctr + rng.normal(0, shift, ctr.shape) * wh
    wh = wh * np.exp(rng.normal(0, scale, wh.shape))
    return np.concatenate([ctr - wh / 2, ctr + wh / 2], 1).astype(np.float32)


@pytest.mark.slow
def test_sod_mtgan_box_refinement_moves_proposals_towards_the_ground_truth(tmp_path: Path) -> None:
    """A short SOD-MTGAN run learns the box head: refined boxes overlap their GT more than the
    proposals they came from (targets and inference decode share the crop geometry)."""
    from _synth import loader, tiny_config
    from torchvision.ops import box_iou

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data.batch import RoiBatch
    from gan_detect.data.records import ImageRecord
    from gan_detect.data.roi import (
        MiningParams,
        clip_proposals,
        hr_from_uint8,
        make_lr,
        mine_rois,
    )
    from gan_detect.train.gan_module import GANDetectionModule
    from gan_detect.train.trainer import build_trainer

    context, hr_size = 1.5, 32
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, list[np.ndarray]] = {"hr": [], "labels": [], "box_targets": [], "src": []}
    for i in range(40):
        img, gt = _rect_scene(rng)
        rec = ImageRecord(str(i), "x.jpg", boxes=gt, labels=[1, 1], ignore=[False, False])
        props = _jitter(rng, gt, 8, shift=0.05, scale=0.25)
        got = mine_rois(
            img, rec, Proposals(props, np.ones(len(props)), np.ones(len(props))),
            MiningParams(hr_size=hr_size, context=context, rois_per_image=16,
                         positive_fraction=0.75),
            generator=gen,
        )  # fmt: skip
        for k, src in (("hr", "hr"), ("labels", "labels"), ("box_targets", "box_targets")):
            parts[k].append(got[src])
        parts["src"].append(got["src_sizes"])
    hr = hr_from_uint8(np.concatenate(parts["hr"]))
    rois = RoiBatch(
        make_lr(hr, 4), hr, torch.from_numpy(np.concatenate(parts["labels"])),
        torch.from_numpy(np.concatenate(parts["box_targets"])),
        torch.from_numpy(np.concatenate(parts["src"])),
    )  # fmt: skip
    raw = tiny_config(
        "sod_mtgan",
        # The pooled box head learns slowly at D's default weight: 10x for a short run.
        **{"data.num_classes": 1, "data.hr_size": hr_size, "data.context": context,
           "variant.d_box_weight": 10.0, "output_dir": str(tmp_path)},
    )  # fmt: skip
    module = GANDetectionModule(raw)
    trainer = build_trainer(
        to_experiment_config(raw), max_epochs=8, logger=False, callbacks=[],
        enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader(rois, batch_size=32))

    opts = module.inference_options()
    assert opts.context == context and opts.lr_size == hr_size // 4
    opts.nms_iou, opts.min_score, opts.max_detections = 1.0, 0.0, 10_000  # keep every box
    iou_props, iou_refined, iou_unrefined = [], [], []
    for _ in range(12):
        img, gt = _rect_scene(rng)
        props = torch.from_numpy(_jitter(rng, gt, 6, shift=0.05, scale=0.25))
        p = {
            "boxes": props,
            "scores": torch.full((len(props),), 0.5),
            "labels": torch.ones(len(props)),
        }
        det = refine_detections(module.variant, img, p, opts)
        clipped, _ = clip_proposals(props, (96, 96))  # what inference starts from
        assert det["boxes"].shape == clipped.shape
        gt_t = torch.from_numpy(gt)
        iou_props.append(box_iou(clipped, gt_t).max(1).values)
        iou_refined.append(box_iou(det["boxes"], gt_t).max(1).values)
        opts.refine_boxes = False
        plain = refine_detections(module.variant, img, p, opts)
        opts.refine_boxes = True
        iou_unrefined.append(box_iou(plain["boxes"], gt_t).max(1).values)
    before = torch.cat(iou_props).mean().item()
    after = torch.cat(iou_refined).mean().item()
    # refine_boxes=False returns the (clipped) proposals themselves (re-scored, reordered).
    assert torch.cat(iou_unrefined).sort().values.allclose(torch.cat(iou_props).sort().values)
    print(f"mean IoU with the matched GT: proposals {before:.3f}, refined {after:.3f}")
    assert after > before + 0.03, (before, after)


def test_border_proposals_get_the_same_crops_in_mining_and_inference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Proposals crossing the image edge are clipped (and sub-pixel ones dropped) by the same
    rule in ROI mining and in refine_detections, so D sees the same crop in both."""
    from _synth import tiny_config

    import gan_detect.infer.inference as inference
    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data.records import ImageRecord
    from gan_detect.data.roi import (
        MiningParams,
        crop_lr_for_inference,
        hr_from_uint8,
        make_lr,
        mine_rois,
    )
    from gan_detect.variants import build_variant

    img = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(0))
    boxes = np.array(
        [
            [-10, 5, 20, 30],  # crosses the left edge
            [70, 40, 95, 70],  # crosses the right and bottom edges
            [30, 20, 50, 40],  # inside
            [-5, -5, 0.5, 10],  # 0.5 px wide once clipped: dropped
            [79.5, 10, 90, 20],  # 0.5 px wide once clipped: dropped
        ],
        np.float32,
    )
    rec = ImageRecord("a", "x.jpg", boxes=np.zeros((0, 4)), labels=[], ignore=[])
    props = Proposals(boxes, np.full(5, 0.5), np.ones(5))
    mined = mine_rois(
        img, rec, props, MiningParams(hr_size=32, rois_per_image=16, include_gt=False),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    seen: list[torch.Tensor] = []

    def spy(image, b, *a, **k):
        seen.append(b.clone())
        return crop_lr_for_inference(image, b, *a, **k)

    monkeypatch.setattr(inference, "crop_lr_for_inference", spy)
    cfg = to_experiment_config(tiny_config("tiny_face"))
    variant = build_variant(cfg.variant, 1)
    opts = inference.InferenceOptions(lr_size=8, nms_iou=1.0, min_score=0.0)
    p = {k: torch.from_numpy(np.asarray(v)) for k, v in vars(props).items() if v is not None}
    det = inference.refine_detections(variant, img, p, opts)
    inferred = torch.cat(seen)
    mined_boxes = torch.from_numpy(mined["boxes"])
    assert len(inferred) == len(mined_boxes) == 3
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(inferred) == key(mined_boxes)
    assert (det["boxes"][:, 0::2] <= 80).all() and (det["boxes"][:, 1::2] <= 60).all()
    assert (det["boxes"] >= 0).all()
    # The LR crops match the training ones (the mined HR is uint8: allow its rounding).
    train_lr = make_lr(hr_from_uint8(mined["hr"]), 4)
    idx = [int(torch.nonzero((mined_boxes == b).all(1))[0]) for b in inferred]
    infer_lr = crop_lr_for_inference(img, inferred, 8, 1.0, method="exact")
    assert torch.allclose(infer_lr, train_lr[idx], atol=0.01)


class _StubVariant(torch.nn.Module):
    """D with fixed class probabilities and box deltas in the SOD-MTGAN head layout; ``detect``
    gives them the meaning SOD-MTGAN gives its heads (``class_box_candidates``)."""

    scale = 4

    def __init__(self, probs: torch.Tensor, deltas: torch.Tensor | None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # refine_detections reads the device
        self.probs, self.deltas = probs, deltas

    def discriminate_sr(self, lr):
        from gan_detect.models.discriminator import DiscriminatorOutput

        n = lr.shape[0]
        assert n == len(self.probs)  # one chunk, the proposals in their given (score) order
        # log p as logits: the softmax over them gives back exactly p.
        return DiscriminatorOutput(torch.zeros(n), self.probs.log(), self.deltas)

    def candidates(self, out, boxes, image_size, refine_boxes, context=1.0):
        from gan_detect.variants.common import class_box_candidates

        return class_box_candidates(out, boxes, image_size, refine_boxes, context)


def _sod_case() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    props = {
        "boxes": torch.tensor([[10.0, 10, 30, 40], [50, 20, 70, 30], [5, 50, 25, 70]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),  # already sorted: refine sees this order
        "labels": torch.ones(3),
    }
    # Slot 0 = background. Proposal 2 is background (0.9): it must not become a detection.
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.15, 0.6, 0.25], [0.9, 0.04, 0.06]])
    deltas = torch.zeros(3, 3, 4)
    deltas[:, 0] = 5.0  # the background slot is never used
    deltas[0, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 1: shift right by 0.1 window
    deltas[0, 2] = torch.tensor([0.0, -1.0, 0.0, 0.0])  # class 2: shift up by 0.1 window
    deltas[1, 1] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # class 1: 1.22x wider
    return props, probs, deltas.reshape(3, 12)


def test_sod_mtgan_inference_picks_each_class_slot_and_drops_background() -> None:
    from gan_detect.data.roi import decode_roi_deltas
    from gan_detect.infer.inference import InferenceOptions, refine_detections

    props, probs, deltas = _sod_case()
    img = torch.rand(3, 80, 80)
    # The papers' rule (D's own classes): class-aware re-scoring is tested in test_class_aware.py.
    opts = InferenceOptions(lr_size=8, context=1.2, nms_iou=1.0, min_score=0.1, class_aware=False)
    det = refine_detections(_StubVariant(probs, deltas), img, props, opts)
    # Background slot dropped, labels are slot indices 1..C: 4 scores >= 0.1 remain, sorted.
    got = sorted(zip(det["scores"].tolist(), det["labels"].tolist(), strict=True), reverse=True)
    want = [(0.7, 2), (0.6, 1), (0.25, 2), (0.2, 1)]
    assert [lab for _, lab in got] == [lab for _, lab in want]
    assert np.allclose([s for s, _ in got], [s for s, _ in want])
    assert det["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)
    # Each (proposal, class) box is decoded with that class's deltas, on the crop window.
    d = deltas.view(3, 3, 4)
    for k, c in ((0, 1), (0, 2), (1, 1), (1, 2)):
        want_box = decode_roi_deltas(d[k, c][None], props["boxes"][k][None], 1.2)[0]
        hit = (det["labels"] == c) & torch.isclose(det["scores"], probs[k, c])
        assert hit.sum() == 1, (k, c)
        assert torch.allclose(det["boxes"][hit][0], want_box, atol=1e-4), (k, c)
    # Proposal 0 (centre (20, 25)): its class-2 box moved up, its class-1 box right.
    b2 = det["boxes"][(det["labels"] == 2) & torch.isclose(det["scores"], torch.tensor(0.7))][0]
    b1 = det["boxes"][(det["labels"] == 1) & torch.isclose(det["scores"], torch.tensor(0.2))][0]
    assert (b2[1] + b2[3]) / 2 < 25 and (b2[0] + b2[2]) / 2 == pytest.approx(20)
    assert (b1[0] + b1[2]) / 2 > 20 and (b1[1] + b1[3]) / 2 == pytest.approx(25)


def test_sod_mtgan_inference_geometric_mean_agnostic_deltas_and_no_refinement() -> None:
    from gan_detect.infer.inference import InferenceOptions, refine_detections

    props, probs, deltas = _sod_case()
    img = torch.rand(3, 80, 80)
    opts = InferenceOptions(
        lr_size=8, nms_iou=1.0, min_score=0.0, score_fusion="geometric_mean", class_aware=False
    )
    det = refine_detections(_StubVariant(probs, deltas), img, props, opts)
    # sqrt(D's class probability x the detector score), for each (proposal, class).
    want = torch.sqrt(probs[:, 1:] * props["scores"][:, None]).flatten().sort(descending=True)
    assert torch.allclose(det["scores"], want.values, atol=1e-6)
    # Class-agnostic (N, 4) deltas: the same box for every class of a proposal.
    agnostic = torch.zeros(3, 4)
    agnostic[0] = torch.tensor([1.0, 1.0, 0.0, 0.0])
    det = refine_detections(_StubVariant(probs, agnostic), img, props, opts)
    top = det["boxes"][torch.isclose(det["scores"], torch.sqrt(torch.tensor(0.7 * 0.9)))][0]
    same = det["boxes"][torch.isclose(det["scores"], torch.sqrt(torch.tensor(0.2 * 0.9)))][0]
    assert torch.allclose(top, same) and not torch.allclose(top, props["boxes"][0])
    # refine_boxes=False: every detection is one of the proposals, unmoved.
    opts.refine_boxes = False
    det = refine_detections(_StubVariant(probs, deltas), img, props, opts)
    for b in det["boxes"]:
        assert (props["boxes"] == b).all(1).any()
