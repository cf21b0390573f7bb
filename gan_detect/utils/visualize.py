"""Image grids for people: LR | bicubic | SR | HR rows with the discriminator's scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor


def _to_uint8(x: Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return (
        ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(1, 2, 0)
        .numpy()
    )


def label_name(label: int, class_names: Sequence[str] | None) -> str:
    """``background`` for 0, the class name of ``label`` (1..C) where known, else the number."""
    if label == 0:
        return "background"
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return str(label)


def grid_caption(label: int, verdict: str, class_names: Sequence[str] | None = None) -> str:
    """Text under one grid row: the true label and D's verdict on the SR crop (the variant's
    ``roi_captions``, e.g. ``"triangle 0.60"``)."""
    return f"true: {label_name(label, class_names)}  D: {verdict}"


def save_sr_grid(
    lr: Tensor,
    sr: Tensor,
    hr: Tensor,
    captions: Sequence[str],
    labels: Tensor,
    scale: int,
    path: str | Path,
    max_rows: int = 8,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a PNG: one row per ROI, columns LR (nearest) | bicubic | SR | HR, scores underneath.

    Args:
        lr: (N, 3, h, w) in [-1, 1]; sr, hr: (N, 3, s*h, s*w) in [-1, 1].
        captions: N texts on D's verdict on SR (the variant's ``roi_captions``).
        labels: (N,) ground-truth labels (0 = background).
        class_names: name of label i + 1 at index i; without them labels print as numbers.
    """

    n = min(max_rows, lr.shape[0])
    size = hr.shape[-1]
    lr_up = F.interpolate(lr[:n].float(), scale_factor=scale, mode="nearest")
    bic = F.interpolate(lr[:n].float(), scale_factor=scale, mode="bicubic", align_corners=False)
    cell = max(size, 64)
    pad, text_h = 4, 14
    canvas = Image.new(
        "RGB", (4 * (cell + pad) + pad, n * (cell + text_h + pad) + pad + text_h), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(["LR", "bicubic", "SR", "HR"]):
        draw.text((pad + c * (cell + pad), 1), title, fill="black")
    for i in range(n):
        y = text_h + pad + i * (cell + text_h + pad)
        for c, img in enumerate([lr_up[i], bic[i], sr[i], hr[i]]):
            tile = Image.fromarray(_to_uint8(img)).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + c * (cell + pad), y))
        caption = grid_caption(int(labels[i]), captions[i], class_names)
        draw.text((pad, y + cell + 1), caption, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """(N, 3, h, w) -> (N, 3, s*h, s*w) bicubic, clamped to [-1, 1] (the SR baseline)."""
    return torch.clamp(
        F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False), -1, 1
    )
