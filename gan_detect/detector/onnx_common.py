"""What the built-in ONNX proposers share: the torchvision-style list API around ``detect``."""

from __future__ import annotations

from torch import Tensor, nn

from gan_detect.data.records import Proposals


class ImageListDetector(nn.Module):
    """A detector with ``detect(image)`` for one (3, H, W) [0, 1] image; this adds the list
    forms every proposer offers (``forward`` like torchvision's detectors, ``predict`` as
    :class:`Proposals`)."""

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """torchvision-style detections for a list of (3, H, W) [0, 1] images (any sizes)."""
        return [self.detect(im) for im in images]

    def predict(self, images: list[Tensor]) -> list[Proposals]:
        """Detections as :class:`Proposals` (boxes in input pixels, labels 1..C)."""
        return [
            Proposals(d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy())
            for d in self.forward(images)
        ]
