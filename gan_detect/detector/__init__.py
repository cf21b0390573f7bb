"""The baseline proposal detector: torchvision FCOS / RetinaNet / Faster R-CNN on a timm FPN."""

from gan_detect.detector.model import build_detector, set_postprocess, training_targets
from gan_detect.detector.module import DetectorConfig, DetectorModule, proposal_recall
from gan_detect.detector.propose import run_proposals, write_proposals

__all__ = [
    "DetectorConfig",
    "DetectorModule",
    "build_detector",
    "proposal_recall",
    "run_proposals",
    "set_postprocess",
    "training_targets",
    "write_proposals",
]
