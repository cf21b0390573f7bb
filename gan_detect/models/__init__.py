"""Reusable networks and pure losses; they know nothing of datasets, configs or Lightning."""

from __future__ import annotations

from gan_detect.models.backbone import FeatureTrunk, build_backbone
from gan_detect.models.carn import CARNM
from gan_detect.models.discriminator import (
    Discriminator,
    DiscriminatorOutput,
    MultiTaskDiscriminator,
)
from gan_detect.models.generator import Generator, GeneratorOutput, SRGenerator
from gan_detect.models.heads import AdversarialHead, BoxRegressionHead, ClassificationHead
from gan_detect.models.losses import (
    box_regression_loss,
    classification_loss,
    d_adversarial_loss,
    g_adversarial_loss,
    pixel_mse,
)

__all__ = [
    "AdversarialHead",
    "BoxRegressionHead",
    "CARNM",
    "ClassificationHead",
    "Discriminator",
    "DiscriminatorOutput",
    "FeatureTrunk",
    "Generator",
    "GeneratorOutput",
    "MultiTaskDiscriminator",
    "SRGenerator",
    "box_regression_loss",
    "build_backbone",
    "classification_loss",
    "d_adversarial_loss",
    "g_adversarial_loss",
    "pixel_mse",
]
