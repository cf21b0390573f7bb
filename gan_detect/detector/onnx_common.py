"""What the built-in ONNX proposers share: the torchvision-style list API around ``detect``,
and one pixel cap, so no proposer runs unbounded on a huge photo."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from gan_detect.data.records import Proposals


class ImageListDetector(nn.Module):
    """A detector with ``detect(image)`` for one (3, H, W) [0, 1] image; this adds the list
    forms every proposer offers (``forward`` like torchvision's detectors, ``predict`` as
    :class:`Proposals`). Images over ``max_pixels`` are detected on a copy scaled down to it,
    the boxes mapped back (an 8000x8000 photo took FastestDet 3.2 GB and 5 minutes of tiles)."""

    # 24 MP is a 6000x4000 photo; every proposer's memory and tile count grow with the pixels.
    max_pixels: int = 24_000_000

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def detect_capped(self, image: Tensor) -> dict[str, Tensor]:
        """:meth:`detect` of ``image``, or of a copy scaled down to ``max_pixels`` (objects
        under ~1/scale px are then missed; a warning gives the scale)."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if h * w <= self.max_pixels:
            return self.detect(image)
        scale = (self.max_pixels / (h * w)) ** 0.5
        warnings.warn(
            f"{type(self).__name__}: a {w}x{h} image ({h * w / 1e6:.0f} MP) is scaled by "
            f"{scale:.2f} to {self.max_pixels / 1e6:.0f} MP (max_pixels) to bound memory and time",
            stacklevel=3,
        )
        small = torch.nn.functional.interpolate(
            image[None].float(), scale_factor=scale, mode="bilinear", antialias=True
        )[0].clamp_(0, 1)
        out = dict(self.detect(small))
        fx, fy = w / small.shape[2], h / small.shape[1]
        out["boxes"] = out["boxes"] * torch.tensor([fx, fy, fx, fy], dtype=out["boxes"].dtype)
        return out

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """torchvision-style detections for a list of (3, H, W) [0, 1] images (any sizes)."""
        return [self.detect_capped(im) for im in images]

    def predict(self, images: list[Tensor]) -> list[Proposals]:
        """Detections as :class:`Proposals` (boxes in input pixels, labels 1..C)."""
        return [
            Proposals(d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy())
            for d in self.forward(images)
        ]
