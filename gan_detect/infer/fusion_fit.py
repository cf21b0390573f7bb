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


@torch.no_grad()
def collect_candidates(
    variant: GANVariant,
    images: Sequence[torch.Tensor],
    proposals: Sequence[dict[str, torch.Tensor]],
    records: Sequence[ImageRecord],
    opts: InferenceOptions,
) -> dict[str, np.ndarray]:
    """Rows ``det``, ``d``, ``size``, ``label`` (N,) of the images' candidates (ignored ones
    dropped), for :func:`fit_fusions`; class-aware (a multi-class D with
    ``opts.class_aware``): one candidate per proposal, of the detector's class, plus ``bg`` and
    ``agree``."""
    plain = replace(opts, score_fusion="d_only", fusion_params=None)
    raw = discriminate_proposals(variant, list(images), list(proposals), plain, with_labels=True)
    cols: dict[str, list[np.ndarray]] = {"det": [], "d": [], "size": [], "label": []}
    for (hw, boxes, det_scores, d_out, det_labels), rec in zip(raw, records, strict=True):
        if d_out is None:
            continue
        cand_boxes, cand_scores, cand_labels = variant.candidates(
            d_out, boxes, hw, opts.refine_boxes, opts.context
        )
        if opts.class_aware and cand_scores.shape[1] > 1:
            b3, s2, l2, extra = class_aware_candidates(cand_boxes, cand_scores, det_labels)
            b, s, lab = b3[:, 0], s2[:, 0].float(), l2[:, 0]
            y = label_candidates(b, lab, rec)
            keep = y >= 0
            cols["det"].append(det_scores.float()[keep].cpu().numpy())
            cols["d"].append(s[keep].cpu().numpy())
            cols["size"].append(proposal_sizes(boxes)[keep].cpu().numpy())
            cols["label"].append(y[keep].numpy())
            for name in ("bg", "agree"):
                cols.setdefault(name, []).append(extra[name][keep].cpu().numpy())
            continue
        k = min(CANDIDATES_PER_PROPOSAL, cand_scores.shape[1])
        top = torch.topk(cand_scores.float(), k, dim=1).indices  # (K, k)
        rows = torch.arange(len(boxes), device=top.device)[:, None].expand_as(top)
        b = cand_boxes[rows, top].reshape(-1, 4)
        s = cand_scores.float()[rows, top].reshape(-1)
        lab = cand_labels[rows, top].reshape(-1)
        y = label_candidates(b, lab, rec)
        keep = y >= 0
        cols["det"].append(
            det_scores.float()[:, None].expand_as(top).reshape(-1)[keep].cpu().numpy()
        )
        cols["d"].append(s[keep].cpu().numpy())
        cols["size"].append(
            proposal_sizes(boxes)[:, None].expand_as(top).reshape(-1)[keep].cpu().numpy()
        )
        cols["label"].append(y[keep].numpy())
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
    variant: GANVariant, dataset: Any, opts: InferenceOptions, batch_images: int = 8
) -> dict[str, Any]:
    """Fit both combiners on a :class:`~gan_detect.data.full_image.FullImageDataset` of the
    held-out images (its records and proposals)."""
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
        parts.append(collect_candidates(variant, images, props, recs, opts))
    # A batch whose images had no proposal has no class-aware columns: it holds no rows either.
    names = dict.fromkeys(k for part in parts for k in part)
    rows = {k: np.concatenate([part.get(k, np.zeros(0)) for part in parts]) for k in names}
    return fit_fusions(rows)


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
