"""Super-resolution fidelity on real crops: HR crop -> bicubic downscale -> restore -> PSNR.

The protocol of the SR papers (CARN, Ahn et al., ECCV 2018): PSNR on RGB in [0, 1] with a border
of ``scale`` pixels shaved, LR made by antialiased bicubic downscaling (the package's
:func:`~gan_detect.data.roi.make_lr`, the same LR the ROI mining gives G).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_detect.data.full_image import load_image
from gan_detect.data.roi import make_lr

__all__ = ["bicubic_up", "psnr_shaved", "random_crops", "restore_psnr"]


def psnr_shaved(sr: Tensor, hr: Tensor, border: int) -> Tensor:
    """(N,) PSNR in dB of (N, 3, H, W) images in [0, 1] (``sr`` clamped), ``border`` px shaved."""
    if sr.shape != hr.shape:
        raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    b = border
    a = sr.clamp(0, 1)[..., b : sr.shape[-2] - b, b : sr.shape[-1] - b]
    h = hr[..., b : hr.shape[-2] - b, b : hr.shape[-1] - b]
    mse = (a.double() - h.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def random_crops(images: Sequence[str | Path], size: int, n: int, seed: int) -> Tensor:
    """(n, 3, size, size) in [0, 1]: ``n`` square crops at random places of random images of
    ``images`` (``torch.Generator`` seeded by ``seed``; images smaller than ``size`` skipped).

    Raises:
        ValueError: no image is at least ``size`` px on both sides.
    """
    g = torch.Generator().manual_seed(seed)
    cache: dict[int, Tensor] = {}
    out: list[Tensor] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n:
            raise ValueError(f"no {size}x{size} crop fits in the {len(images)} images given")
        i = int(torch.randint(len(images), (1,), generator=g))
        if i not in cache:
            cache[i] = load_image(str(images[i]))
        img = cache[i]
        h, w = img.shape[-2:]
        if h < size or w < size:
            continue
        y = int(torch.randint(h - size + 1, (1,), generator=g))
        x = int(torch.randint(w - size + 1, (1,), generator=g))
        out.append(img[:, y : y + size, x : x + size])
    return torch.stack(out)


def bicubic_up(lr: Tensor, scale: int) -> Tensor:
    """(N, 3, h, w) -> (N, 3, s*h, s*w) bicubic up-sampling, in the input's value range."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


@torch.no_grad()
def restore_psnr(
    hr01: Tensor, restore: Callable[[Tensor], Tensor], scale: int = 4, chunk: int = 64
) -> Tensor:
    """(N,) PSNR of ``restore`` on crops ``hr01`` (N, 3, H, W) in [0, 1].

    ``restore`` maps LR (n, 3, H/s, W/s) in [-1, 1] (the package's range) to (n, 3, H, W) in
    [-1, 1]; the LR is :func:`make_lr` of the HR; ``scale`` px are shaved.
    """
    out = []
    for i in range(0, hr01.shape[0], chunk):
        hr = hr01[i : i + chunk]
        lr = make_lr(hr * 2.0 - 1.0, scale)
        sr01 = (restore(lr) + 1.0) * 0.5
        out.append(psnr_shaved(sr01, hr, scale))
    return torch.cat(out)
