"""gan-detect: GAN-based small-object detection (Bai et al. CVPR 2018; Zhang et al. ECCV 2018)."""

__version__ = "0.1.0"
