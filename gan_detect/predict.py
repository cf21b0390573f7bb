"""Kept for code written against the flat layout: ``from gan_detect.predict import Pipeline``.

The pipeline lives in :mod:`gan_detect.infer.pipeline`; ``from gan_detect import Pipeline`` is the
short form.
"""

from gan_detect.infer.pipeline import Detections, Pipeline, export_pipeline

__all__ = ["Detections", "Pipeline", "export_pipeline"]
