"""Kept for code written against the flat layout: ``from gan_detect.predict import Pipeline``.

The pipeline lives in :mod:`gan_detect.infer.pipeline`; ``from gan_detect import Pipeline`` is the
short form. Its names load on first use (PEP 562), so importing this module costs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan_detect.infer.pipeline import Detections, Pipeline, export_pipeline

__all__ = ["Detections", "Pipeline", "export_pipeline"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gan_detect.infer import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'gan_detect.predict' has no attribute {name!r}")
