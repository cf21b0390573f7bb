"""WIDER FACE AP as a torchmetrics ``Metric`` (the official protocol, accumulated over batches).

The protocol itself is the pure-numpy ``gan_detect.metrics.wider_face_ap``; this module adds the
torch side (tensor states, DDP gather, de-duplication of padded images).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from gan_detect.data.records import xyxy_to_xywh
from gan_detect.metrics.wider_face_ap import wider_face_ap_compute
from gan_detect.metrics.wider_gt import SETTINGS, fallback_keep


def image_key(image_id: str) -> int:
    """A signed 64-bit hash of an image id (tensor states cannot hold strings)."""
    return int.from_bytes(
        hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little", signed=True
    )


def _wider_face_ap_update(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    nonces: Sequence[int],
) -> dict[str, np.ndarray]:
    """Validate one batch and turn it into flat arrays whose image column holds ``nonces``."""
    if not len(preds) == len(targets) == len(nonces):
        raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets")
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("pb", "ps", "pi", "gb", "gk", "gi", "off")}
    for n, (p, t, nonce) in enumerate(zip(preds, targets, nonces, strict=True)):
        pb = p["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
        ps = p["scores"].detach().cpu().double().numpy().reshape(-1)
        gb = t["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
        if len(pb) != len(ps):
            raise ValueError(f"preds[{n}]: {len(pb)} boxes but {len(ps)} scores")
        if not (np.isfinite(pb).all() and np.isfinite(ps).all() and np.isfinite(gb).all()):
            raise ValueError(f"preds[{n}] or targets[{n}]: non-finite boxes or scores")
        ignore = t.get("ignore")
        ign = np.zeros(len(gb), bool) if ignore is None else ignore.cpu().numpy().astype(bool)
        official = all(f"keep_{s}" in t for s in SETTINGS)
        if official:
            keep = np.stack([t[f"keep_{s}"].cpu().numpy().astype(bool) for s in SETTINGS], 1)
            keep &= ~ign[:, None]
        else:
            keep = fallback_keep(xyxy_to_xywh(gb), ign)
        out["pb"].append(pb)
        out["ps"].append(ps)
        out["pi"].append(np.full(len(ps), nonce, np.int64))
        out["gb"].append(gb)
        out["gk"].append(keep.reshape(-1, 3))
        out["gi"].append(np.full(len(gb), nonce, np.int64))
        out["off"].append(np.array([official]))
    return {k: np.concatenate(v) for k, v in out.items()}


class WiderFaceAP(Metric):
    """WIDER FACE easy / medium / hard AP with the official protocol, as a torchmetrics Metric.

    ``update(preds, targets, image_ids=None)``: ``preds[i]`` has ``boxes`` (K, 4) xyxy px and
    ``scores`` (K,); ``targets[i]`` has ``boxes`` (M, 4) xyxy px, optional ``ignore`` (M,) bool and
    optional ``keep_easy`` / ``keep_medium`` / ``keep_hard`` (M,) bool masks from ``gt_list``.
    Without the masks, settings fall back to face height (>50/30/10 px) and ``compute()`` returns
    ``official = 0`` with a warning. Pass ``image_ids`` under DDP: an image that the
    ``DistributedSampler`` repeats to pad the last batch is then counted once.

    ``compute()`` returns float32 tensors ``ap_easy``, ``ap_medium``, ``ap_hard`` (-1 when a
    setting has no face) and ``official``. Score normalisation needs every prediction, so all of
    them are kept (float64, to reproduce the official threshold comparisons) until ``compute()``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    pred_boxes: list[Tensor]
    pred_scores: list[Tensor]
    pred_image: list[Tensor]
    gt_boxes: list[Tensor]
    gt_keep: list[Tensor]
    gt_image: list[Tensor]
    image_table: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in (
            "pred_boxes",
            "pred_scores",
            "pred_image",
            "gt_boxes",
            "gt_keep",
            "gt_image",
            "image_table",
        ):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._rng = random.Random()  # nonces only; never touches the global RNGs

    def update(
        self,
        preds: Sequence[Mapping[str, Tensor]],
        targets: Sequence[Mapping[str, Tensor]],
        image_ids: Sequence[str] | None = None,
    ) -> None:
        """Store one batch (see the class docstring for the dict keys)."""
        if image_ids is not None and len(image_ids) != len(targets):
            raise ValueError(f"got {len(image_ids)} image_ids for {len(targets)} targets")
        # Each image occurrence gets a random 63-bit nonce (unique across DDP ranks); the
        # image-id hash groups repeated occurrences so that compute() keeps one of them.
        nonces = [self._rng.getrandbits(63) for _ in targets]
        hashes = nonces if image_ids is None else [image_key(i) for i in image_ids]
        a = _wider_face_ap_update(preds, targets, nonces)
        dev = self.device
        self.pred_boxes.append(torch.from_numpy(a["pb"]).to(dev))
        self.pred_scores.append(torch.from_numpy(a["ps"]).to(dev))
        self.pred_image.append(torch.from_numpy(a["pi"]).to(dev))
        self.gt_boxes.append(torch.from_numpy(a["gb"]).to(dev))
        self.gt_keep.append(torch.from_numpy(a["gk"].astype(np.uint8)).to(dev))
        self.gt_image.append(torch.from_numpy(a["gi"]).to(dev))
        table = np.stack([np.asarray(hashes), np.asarray(nonces), a["off"].astype(np.int64)], 1)
        self.image_table.append(torch.from_numpy(table).to(dev))

    def compute(self) -> dict[str, Tensor]:
        """Easy / medium / hard AP over everything seen (after the DDP gather)."""

        def cat(state: list[Tensor] | Tensor, cols: int, dtype: type) -> np.ndarray:
            if isinstance(state, list) and not state:
                return np.zeros((0, cols) if cols else (0,), dtype)
            return dim_zero_cat(state).cpu().numpy().astype(dtype)

        table = cat(self.image_table, 3, np.int64)
        # Keep the occurrence with the smallest nonce of each image id.
        order = np.lexsort((table[:, 1], table[:, 0]))
        first = np.ones(len(order), bool)
        first[1:] = table[order[1:], 0] != table[order[:-1], 0]
        kept = table[order[first], 1]
        p_img, g_img = cat(self.pred_image, 0, np.int64), cat(self.gt_image, 0, np.int64)
        pm, gm = np.isin(p_img, kept), np.isin(g_img, kept)
        official = bool(len(table)) and bool(table[:, 2].all())
        if not official:
            warnings.warn(
                "WiderFaceAP: targets without keep_easy/medium/hard masks; settings by "
                "face height, NOT the official protocol",
                stacklevel=2,
            )
        aps, _ = wider_face_ap_compute(
            cat(self.pred_boxes, 4, np.float64)[pm],
            cat(self.pred_scores, 0, np.float64)[pm],
            p_img[pm],
            cat(self.gt_boxes, 4, np.float64)[gm],
            cat(self.gt_keep, 3, bool)[gm],
            g_img[gm],
        )
        out = {
            f"ap_{s}": torch.tensor(a, dtype=torch.float32)
            for s, a in zip(SETTINGS, aps, strict=True)
        }
        out["official"] = torch.tensor(float(official), dtype=torch.float32)
        return out
