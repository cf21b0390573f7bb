"""Fit the ``learned`` and ``size_gated`` score fusions on held-out training proposals.

The held-out images (``data.fusion_holdout_fraction``, the DataModule's ``"fusion"`` split) never
reach ROI mining, so D scores them as it scores unseen images. Each proposal's candidates (one per
class D scores) become rows ``(detector score, D probability, proposal size, true positive?)``;
a candidate is a true positive when its box overlaps a ground-truth object of its class at
IoU >= 0.5. Candidates whose best overlap is an ignore region (WIDER invalid face, COCO crowd)
and that are not true positives are left out, as the evaluation protocols leave them out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from gan_detect.data.records import ImageRecord
from gan_detect.infer.inference import (
    InferenceOptions,
    class_aware_candidates,
    discriminate_proposals,
)
from gan_detect.infer.score_fusion import (
    FITTED_FUSIONS,
    check_fitted,
    fit_learned,
    fit_size_gated,
    proposal_sizes,
)
from gan_detect.utils.errors import InputError
from gan_detect.variants import GANVariant

FUSION_FILE = "score_fusion.json"
# Candidates per proposal kept for fitting (the most probable classes by D): all of them for one
# class; for COCO's 80 the rest are near-certain negatives that would swamp the fit.
CANDIDATES_PER_PROPOSAL = 3


def label_candidates(
    boxes: torch.Tensor, labels: torch.Tensor, record: ImageRecord, iou: float = 0.5
) -> torch.Tensor:
    """(N,) 1 true positive, 0 false positive, -1 left out (on an ignore region).

    Args:
        boxes: (N, 4) xyxy candidate boxes; labels: (N,) their classes 1..C.
    """
    gt = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
    gl = torch.as_tensor(record.labels, dtype=torch.int64).reshape(-1)
    ign = torch.as_tensor(record.ignore, dtype=torch.bool).reshape(-1)
    out = torch.zeros(len(boxes), dtype=torch.int64)
    if len(boxes) == 0 or len(gt) == 0:
        return out
    ov = box_iou(boxes.float().cpu(), gt)  # (N, G)
    same = labels.cpu()[:, None] == gl[None, :]
    tp = ((ov >= iou) & same & ~ign[None, :]).any(1)
    on_ignore = ((ov >= iou) & ign[None, :]).any(1)
    out[tp] = 1
    out[~tp & on_ignore] = -1
    return out


def _image_rows(
    variant: GANVariant,
    hw: tuple[int, int],
    boxes: torch.Tensor,
    det_scores: torch.Tensor,
    d_out: Any,
    det_labels: torch.Tensor | None,
    rec: ImageRecord,
    opts: InferenceOptions,
    refine: bool,
) -> dict[str, np.ndarray]:
    """One image's candidate rows (see :func:`collect_candidates`) with D's boxes applied or not."""
    cand_boxes, cand_scores, cand_labels = variant.candidates(
        d_out, boxes, hw, refine, opts.context
    )
    if opts.class_aware and cand_scores.shape[1] > 1 and det_labels is not None:
        b3, s2, l2, extra = class_aware_candidates(cand_boxes, cand_scores, det_labels)
        b, s, lab = b3[:, 0], s2[:, 0].float(), l2[:, 0]
        y = label_candidates(b, lab, rec)
        keep = y >= 0
        out = {
            "det": det_scores.float()[keep].cpu().numpy(),
            "d": s[keep].cpu().numpy(),
            "size": proposal_sizes(boxes)[keep].cpu().numpy(),
            "label": y[keep].numpy(),
        }
        for name in ("bg", "agree"):
            out[name] = extra[name][keep].cpu().numpy()
        return out
    k = min(CANDIDATES_PER_PROPOSAL, cand_scores.shape[1])
    top = torch.topk(cand_scores.float(), k, dim=1).indices  # (K, k)
    rows = torch.arange(len(boxes), device=top.device)[:, None].expand_as(top)
    b = cand_boxes[rows, top].reshape(-1, 4)
    s = cand_scores.float()[rows, top].reshape(-1)
    lab = cand_labels[rows, top].reshape(-1)
    y = label_candidates(b, lab, rec)
    keep = y >= 0
    return {
        "det": det_scores.float()[:, None].expand_as(top).reshape(-1)[keep].cpu().numpy(),
        "d": s[keep].cpu().numpy(),
        "size": proposal_sizes(boxes)[:, None].expand_as(top).reshape(-1)[keep].cpu().numpy(),
        "label": y[keep].numpy(),
    }


def refinement_ious(
    refined: torch.Tensor,
    kept: torch.Tensor,
    labels: torch.Tensor,
    record: ImageRecord,
    iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """IoU with its ground truth of each proposal's refined box and of the proposal itself.

    A proposal is matched to the non-ignored ground-truth object of its class that its own box
    overlaps most, and counts when that overlap is >= ``iou`` (the box head's training
    positives); both boxes are then measured against that same object.

    Args:
        refined, kept: (K, 4) xyxy; labels: (K,) classes 1..C.

    Returns:
        ``(iou_refined, iou_kept)``, each (M,) for the M matched proposals.
    """
    gt = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
    gl = torch.as_tensor(record.labels, dtype=torch.int64).reshape(-1)
    ign = torch.as_tensor(record.ignore, dtype=torch.bool).reshape(-1)
    gt, gl = gt[~ign], gl[~ign]
    if len(kept) == 0 or len(gt) == 0:
        return np.zeros(0), np.zeros(0)
    ov = box_iou(kept.float().cpu(), gt)
    ov[labels.cpu()[:, None] != gl[None, :]] = -1.0
    best, j = ov.max(1)
    m = best >= iou
    if not bool(m.any()):
        return np.zeros(0), np.zeros(0)
    after = box_iou(refined.float().cpu()[m], gt[j[m]]).diagonal()
    return after.numpy().astype(np.float64), best[m].numpy().astype(np.float64)


# Fewer matched held-out proposals than this: too few to tell, keep the papers' default.
MIN_REFINE_MATCHES = 30


def decide_refinement(iou_refined: np.ndarray, iou_kept: np.ndarray) -> dict[str, Any]:
    """Apply D's box deltas or not, from the held-out proposals' IoU with their objects.

    ``use`` is whether the refined boxes' mean IoU is higher; with fewer than
    :data:`MIN_REFINE_MATCHES` matches it is True (the papers' default) and ``reason`` says so.
    Mean IoU rather than AP@0.5: COCO AP averages IoU 0.5-0.95, so a box head that keeps boxes
    above 0.5 but moves them off the object still costs AP (AP75 first).
    """
    n = int(len(iou_kept))
    out: dict[str, Any] = {"matched": n}
    if n < MIN_REFINE_MATCHES:
        out.update(use=True, reason=f"{n} matched held-out proposals (< {MIN_REFINE_MATCHES})")
        return out
    mr, mk = float(np.mean(iou_refined)), float(np.mean(iou_kept))
    out.update(
        use=mr > mk,
        mean_iou_refined=round(mr, 4),
        mean_iou_detector=round(mk, 4),
        share_improved=round(float(np.mean(iou_refined > iou_kept)), 4),
        reason="mean IoU with the matched object, refined vs the detector's box",
    )
    return out


@torch.no_grad()
def collect_candidates(
    variant: GANVariant,
    images: Sequence[torch.Tensor],
    proposals: Sequence[dict[str, torch.Tensor]],
    records: Sequence[ImageRecord],
    opts: InferenceOptions,
    both_boxes: bool = False,
) -> dict[str, np.ndarray]:
    """Rows ``det``, ``d``, ``size``, ``label`` (N,) of the images' candidates (ignored ones
    dropped), for :func:`fit_fusions`; class-aware (a multi-class D with
    ``opts.class_aware``): one candidate per proposal, of the detector's class, plus ``bg`` and
    ``agree``.

    ``both_boxes`` (for ``evaluate.refine_boxes=auto``; only a D with a box head): the rows with
    D's boxes applied and, prefixed ``kept:``, with the detector's boxes, plus ``iou_refined``
    and ``iou_kept`` (:func:`refinement_ious`, (M,)) from one G + D pass."""
    plain = replace(opts, score_fusion="d_only", fusion_params=None)
    raw = discriminate_proposals(variant, list(images), list(proposals), plain, with_labels=True)
    cols: dict[str, list[np.ndarray]] = {"det": [], "d": [], "size": [], "label": []}
    for (hw, boxes, det_scores, d_out, det_labels), rec in zip(raw, records, strict=True):
        if d_out is None:
            continue
        if not (both_boxes and d_out.box_deltas is not None):
            for k, v in _image_rows(
                variant, hw, boxes, det_scores, d_out, det_labels, rec, opts, opts.refine_boxes
            ).items():
                cols.setdefault(k, []).append(v)
            continue
        for refine, prefix in ((True, ""), (False, "kept:")):
            for k, v in _image_rows(
                variant, hw, boxes, det_scores, d_out, det_labels, rec, opts, refine
            ).items():
                cols.setdefault(prefix + k, []).append(v)
        # The box each proposal would take: of the detector's class (class-aware) or D's top one.
        cb, cs, cl = variant.candidates(d_out, boxes, hw, True, opts.context)
        if opts.class_aware and cs.shape[1] > 1 and det_labels is not None:
            lab = det_labels.long().to(cs.device)
        else:
            lab = cl[torch.arange(len(cs)), cs.argmax(1)]
        refined = cb[torch.arange(len(cb)), (lab - cl[:, 0]).clamp(min=0)]
        after, before = refinement_ious(refined, boxes, lab, rec)
        cols.setdefault("iou_refined", []).append(after)
        cols.setdefault("iou_kept", []).append(before)
    return {
        k: (np.concatenate(v) if v else np.zeros(0)).astype(np.float64) for k, v in cols.items()
    }


def fit_fusions(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """Both fitted combiners from candidate rows: ``{"learned": ..., "size_gated": ...}``."""
    y = rows["label"].astype(np.int64)
    if y.sum() == 0 or (1 - y).sum() == 0:
        raise ValueError(
            f"cannot fit score fusion: the held-out proposals have {int(y.sum())} true and "
            f"{int((1 - y).sum())} false positives (raise data.fusion_holdout_fraction)"
        )
    args = (rows["det"], rows["d"], rows["size"], y)
    extra = {k: rows[k] for k in ("bg", "agree")} if "bg" in rows else None
    return {
        "learned": fit_learned(*args, extra=extra),
        "size_gated": fit_size_gated(*args),
        "num_candidates": int(len(y)),
        "num_positives": int(y.sum()),
    }


def check_holdout_can_fit(dm: Any, fraction: float) -> None:
    """Before training: the held-out images (``dm.records("fusion")``) and their proposals can
    give both classes of candidates, so the fit after training cannot fail on them.

    A positive needs a proposal at IoU >= 0.5 with a non-ignored ground-truth box (any class:
    D chooses the class later), a negative one below. This counts the raw proposals, an
    upper bound of what the fit sees.

    Raises:
        InputError: naming ``data.fusion_holdout_fraction`` and the counts.
    """
    key = f"data.fusion_holdout_fraction={fraction:g}"
    records = dm.records("fusion")
    if not records:
        raise InputError(f"{key}: no train image is held out; raise it or set it to 0")
    proposals = dm.proposals("fusion")
    if proposals is None:
        raise InputError(
            f"{key}: score fusion is fit on the held-out images' detector proposals: set "
            "data.train_proposals (a COCO results JSON or a WIDER txt tree)"
        )
    pos = neg = 0
    for rec in records:
        p = proposals.get(rec.image_id)
        gt = np.asarray(rec.boxes, np.float32).reshape(-1, 4)[~np.asarray(rec.ignore, bool)]
        if p is None or len(p.boxes) == 0:
            continue
        if len(gt) == 0:
            neg += len(p.boxes)
            continue
        best = box_iou(torch.as_tensor(p.boxes, dtype=torch.float32), torch.as_tensor(gt))
        hit = int((best.max(1).values >= 0.5).sum())
        pos, neg = pos + hit, neg + len(p.boxes) - hit
    if pos == 0 or neg == 0:
        raise InputError(
            f"{key}: the {len(records)} held-out train images' proposals have {pos} true and "
            f"{neg} false positives (IoU >= 0.5 with a ground-truth box), so no score fusion "
            "could be fit after training: raise the fraction or check data.train_proposals"
        )


def fit_run_fusion(
    variant: GANVariant,
    dataset: Any,
    opts: InferenceOptions,
    batch_images: int = 8,
    refine: bool | str | None = None,
) -> dict[str, Any]:
    """Fit both combiners on a :class:`~gan_detect.data.full_image.FullImageDataset` of the
    held-out images (its records and proposals).

    ``refine="auto"`` (``evaluate.refine_boxes``) with a D that has a box head: also decide
    whether to apply D's boxes (:func:`decide_refinement`, written as ``refine_boxes``) and fit
    the combiners on the boxes chosen; otherwise ``opts.refine_boxes`` is used as it is."""
    if getattr(dataset, "proposals", None) is None:
        raise ValueError(
            "score fusion is fit on the held-out images' detector proposals: set "
            "data.train_proposals (a COCO results JSON or a WIDER txt tree)"
        )
    if len(dataset) == 0:
        raise ValueError("score fusion: no held-out images (data.fusion_holdout_fraction is 0)")
    parts: list[dict[str, np.ndarray]] = []
    device = next(variant.parameters()).device
    for start in range(0, len(dataset), batch_images):
        items = [dataset[i] for i in range(start, min(start + batch_images, len(dataset)))]
        images = [it.images[0].to(device) for it in items]
        props = [it.proposals[0] for it in items]
        recs = [dataset.records[i] for i in range(start, start + len(items))]
        parts.append(
            collect_candidates(variant, images, props, recs, opts, both_boxes=refine == "auto")
        )
    # A batch whose images had no proposal has no class-aware columns: it holds no rows either.
    names = dict.fromkeys(k for part in parts for k in part)
    rows = {k: np.concatenate([part.get(k, np.zeros(0)) for part in parts]) for k in names}
    if "iou_kept" not in rows:  # no box head (or refine given): the boxes as opts says
        return fit_fusions(rows)
    decision = decide_refinement(rows["iou_refined"], rows["iou_kept"])
    prefix = "" if decision["use"] else "kept:"
    chosen = {k[len(prefix) :]: v for k, v in rows.items() if k.startswith(prefix)}
    if prefix == "":
        chosen = {k: v for k, v in chosen.items() if not k.startswith(("kept:", "iou_"))}
    return {**fit_fusions(chosen), "refine_boxes": decision}


def save_fusion(params: dict[str, Any], run_dir: str | Path) -> Path:
    path = Path(run_dir) / FUSION_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(params, indent=1))
    tmp.replace(path)
    return path


def load_fusion(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's fitted combiners, checked (``score_fusion.check_fitted``), or None when it has
    none.

    Raises:
        InputError: naming the file: not JSON (cut off), not an object, or a combiner of the
            wrong shape or with non-finite numbers.
    """
    path = Path(run_dir) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        fitted = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err}); refit or delete it") from None
    return check_fitted(fitted, str(path))


def fusion_file(ckpt: str | Path) -> Path:
    """``<run>/score_fusion.json`` of a checkpoint's run (``<run>/checkpoints/x.ckpt``; a
    checkpoint elsewhere: the file beside it)."""
    ckpt = Path(ckpt)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / FUSION_FILE


def fusion_for_checkpoint(ckpt: str | Path, needed: str | None = None) -> dict[str, Any] | None:
    """The fitted combiners of the run a checkpoint belongs to (:func:`fusion_file`), or None.

    Args:
        needed: a score fusion about to be used; a fitted one (``learned``, ``size_gated``)
            missing from the file is an ``InputError`` naming it.
    """
    path = fusion_file(ckpt)
    fitted = load_fusion(path.parent)
    if needed is not None and needed in FITTED_FUSIONS and (fitted or {}).get(needed) is None:
        why = "does not exist" if fitted is None else f"has no {needed!r} entry"
        raise InputError(
            f"score fusion {needed!r} needs the run's fitted combiner, and {path} {why}: train "
            "the GAN with data.fusion_holdout_fraction > 0, or use d_only or geometric_mean"
        )
    return fitted
