"""gan-detect: GAN-based small-object detection (Bai et al. CVPR 2018; Zhang et al. ECCV 2018).

Layers (each imports only those before it; ``tests/integration/test_layers.py`` holds the order):
``utils``, ``config`` -> ``data``, ``models``, ``metrics`` -> ``variants``, ``detector`` ->
``infer`` -> ``train`` -> ``app``. ``Pipeline`` is re-exported lazily (it imports torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """PEP 562: ``from gan_detect import Pipeline`` without importing torch at package import."""
    if name in ("Pipeline", "Detections"):
        from gan_detect.infer import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'gan_detect' has no attribute {name!r}")


__all__ = ["Detections", "Pipeline", "__version__"]
