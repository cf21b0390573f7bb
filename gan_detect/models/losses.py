"""Pure loss functions of the tiny-face GAN (Bai et al., CVPR 2018, Eqs. 4-9) and SOD-MTGAN
(Zhang et al., ECCV 2018): pixel MSE, adversarial, classification and box regression.

All take logits (never probabilities: sigmoid then log loses precision and saturates) and
average over the N RoIs. Weights (alpha, beta, ...) are applied by the variants, not here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "pixel_mse",
    "d_adversarial_loss",
    "g_adversarial_loss",
    "classification_loss",
    "box_regression_loss",
]


def _check_labels(labels: Tensor, n: int, what: str) -> None:
    if labels.shape != (n,):
        raise ValueError(f"{what}: labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{what}: labels must be int64, got {labels.dtype}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{what}: labels must be >= 0 (0 = background), got {int(labels.min())}")


def pixel_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pixel MSE (Eq. 4), averaged over pixels per RoI, then over the RoIs selected by `mask`.

    Eq. 4 writes a squared L2 norm (a sum over pixels); a per-pixel mean keeps the term's scale
    independent of the crop size, and differs from the sum only by the constant 3*H*W.

    Args:
        pred, target: (N, C, H, W) images, same shape.
        mask: optional bool (N,); only True RoIs count (e.g. sources large enough for a real HR
            target).

    Returns:
        Scalar; 0 (still attached to `pred`'s graph) when the mask selects nothing.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pixel_mse: pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    per_roi = (pred - target).pow(2).flatten(1).mean(dim=1)  # (N,)
    if mask is None:
        return per_roi.mean() if per_roi.numel() else pred.sum() * 0.0
    if mask.dtype != torch.bool or mask.shape != per_roi.shape:
        raise ValueError(
            f"pixel_mse: mask must be bool of shape {tuple(per_roi.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        # Zero that keeps the graph, so backward() and DDP still see every parameter used.
        return pred.sum() * 0.0
    return per_roi[mask].mean()


def d_adversarial_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator real/fake loss (Eq. 9, fc_GAN part): BCE(real, 1) + BCE(fake, 0).

    Equals mean(softplus(-real)) + mean(softplus(fake)) = -mean log D(HR) - mean log(1 - D(SR)).

    Args:
        real_logits: (N_real,) fc_GAN logits of HR crops.
        fake_logits: (N_fake,) fc_GAN logits of SR outputs (detached from G for the D step).
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_adversarial_loss(
    fake_logits: Tensor, form: Literal["saturating", "non_saturating"] = "saturating"
) -> Tensor:
    """Generator adversarial loss on fc_GAN logits of SR outputs (N,), to be minimised.

    Args:
        fake_logits: (N,) logits.
        form: "saturating" = mean log(1 - sigmoid(l)) = -mean softplus(l), the paper's printed
            Eqs. 5 and 8 (unbounded below, its gradient vanishes when D is confident);
            "non_saturating" = BCE(l, 1) = mean softplus(-l) = -mean log D(G(x)), the usual
            GAN practice.
    """
    if form == "saturating":
        return -F.softplus(fake_logits).mean()
    if form == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"form must be 'saturating' or 'non_saturating', got {form!r}")


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Classification loss on fc_clc logits (Eq. 6 read as cross-entropy).

    Args:
        logits: (N, K). K = 1: BCE-with-logits against (labels > 0), face vs non-face.
            K > 1: softmax cross-entropy, index 0 = background.
        labels: (N,) int64, 0 = background / non-face, c in 1..K-1 = class c.
    """
    if logits.ndim != 2:
        raise ValueError(f"classification_loss: logits must be (N, K), got {tuple(logits.shape)}")
    n, k = logits.shape
    _check_labels(labels, n, "classification_loss")
    if k == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (labels > 0).to(logits.dtype))
    if n and int(labels.max()) >= k:
        raise ValueError(f"classification_loss: label {int(labels.max())} >= K = {k} logits")
    return F.cross_entropy(logits, labels)


def box_regression_loss(
    deltas: Tensor, labels: Tensor, targets: Tensor, beta: float = 1.0 / 9.0
) -> Tensor:
    """Smooth-L1 box loss on foreground RoIs, normalised by all N RoIs (Fast R-CNN).

    Args:
        deltas: (N, 4K) class-specific, laid out as (N, K, 4) with K slots including the
            background slot 0 (so a RoI of class c uses slot c; see `BoxRegressionHead`), or
            (N, 4) class-agnostic.
        labels: (N,) int64, 0 = background (no box loss).
        targets: (N, 4) encoded Fast R-CNN deltas (dx, dy, dw, dh), already weighted.
        beta: smooth-L1 transition point; 1/9 as in Detectron's Fast R-CNN head.

    Returns:
        Sum over coordinates and foreground RoIs, divided by N; 0 (attached to `deltas`'s
        graph) without foreground RoIs.
    """
    if deltas.ndim != 2 or deltas.shape[1] % 4 != 0:
        raise ValueError(f"box_regression_loss: deltas must be (N, 4K), got {tuple(deltas.shape)}")
    n = deltas.shape[0]
    _check_labels(labels, n, "box_regression_loss")
    if targets.shape != (n, 4):
        raise ValueError(
            f"box_regression_loss: targets must be ({n}, 4), got {tuple(targets.shape)}"
        )
    fg = torch.nonzero(labels > 0).squeeze(1)
    if fg.numel() == 0:
        return deltas.sum() * 0.0
    if deltas.shape[1] == 4:
        pred = deltas[fg]
    else:
        k = deltas.shape[1] // 4
        if int(labels.max()) >= k:
            raise ValueError(f"box_regression_loss: label {int(labels.max())} >= K = {k} slots")
        pred = deltas.view(n, k, 4)[fg, labels[fg]]
    loss = F.smooth_l1_loss(pred, targets[fg], beta=beta, reduction="sum")
    return loss / n
