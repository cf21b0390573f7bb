"""The "no GAN" control: bicubic up-sampling instead of a generator; D alone is trained.

It isolates what super-resolution adds. The LR crop is bicubic up-sampled to the HR size
(``F.interpolate`` bicubic, clamped to [-1, 1]) and D keeps the heads and D-step losses of the
matching paper variant: tiny-face (one class: real/SR + face/non-face logit; Bai et al., CVPR 2018)
or SOD-MTGAN ((C + 1)-way class and box heads; ECCV 2018). Generator terms (pixel, adversarial
and task losses through G) do not exist: there is no G step, no G optimiser, no MSE warm-up.
Stack it on any experiment: ``gan-detect fit tiny_face_wider variant.name=bicubic``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gan_detect.config.sections import BicubicConfig
from gan_detect.data.batch import RoiBatch
from gan_detect.models.discriminator import Discriminator, DiscriminatorOutput
from gan_detect.models.generator import Generator, GeneratorOutput
from gan_detect.utils.errors import InputError
from gan_detect.variants.base import Candidates, GANVariant, GANVariantConfig
from gan_detect.variants.common import (
    box_terms,
    build_discriminator,
    class_box_accuracy,
    class_box_candidates,
    class_terms,
    face_accuracy,
    face_candidates,
)
from gan_detect.variants.registry import register_variant


class BicubicUpsampler(Generator):
    """A parameter-free "generator": (N, 3, h, w) -> (N, 3, s*h, s*w) bicubic in [-1, 1]."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lr: Tensor) -> GeneratorOutput:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return GeneratorOutput(sr=up.clamp(-1, 1))


@register_variant("bicubic")
class BicubicControl(GANVariant):
    """D trained on HR vs bicubic crops with the paper heads; no trainable generator."""

    name = "bicubic"
    Config = BicubicConfig

    def __init__(self, discriminator: Discriminator, cfg: BicubicConfig, num_classes: int):
        super().__init__(BicubicUpsampler(cfg.scale), discriminator, cfg)
        self.num_classes = num_classes

    @classmethod
    def build(cls, cfg: GANVariantConfig, num_classes: int) -> BicubicControl:
        if not isinstance(cfg, BicubicConfig):
            raise TypeError(f"bicubic needs a BicubicConfig, got {type(cfg).__name__}")
        if num_classes < 1:
            raise InputError(f"data.num_classes must be >= 1, got {num_classes}")
        if num_classes == 1:  # tiny-face heads
            disc = build_discriminator(cfg, 1, box_head=False)
        else:  # SOD-MTGAN heads
            disc = build_discriminator(
                cfg, num_classes + 1, box_head=True, class_agnostic_box=cfg.class_agnostic_box
            )
        return cls(disc, cfg, num_classes)

    def task_losses(
        self,
        batch: RoiBatch,
        real_out: DiscriminatorOutput | None,
        fake_out: DiscriminatorOutput,
        prefix: str,
        generator: bool,
    ) -> dict[str, Tensor]:
        """D-step class terms on HR and bicubic (and box terms with several classes)."""
        cfg = self.cfg
        assert isinstance(cfg, BicubicConfig)
        outs = [fake_out] if real_out is None else [real_out, fake_out]
        terms = {f"{prefix}cls": cfg.d_cls_weight * class_terms(outs, batch)}
        if self.num_classes > 1:
            terms[f"{prefix}box"] = cfg.d_box_weight * box_terms(outs, batch)
        return terms

    def generator_losses(
        self, batch: RoiBatch, fake: GeneratorOutput, pixel_only: bool = False
    ) -> dict[str, Tensor]:
        raise RuntimeError("the bicubic control has no generator to train (no G step)")

    def candidates(
        self,
        out: DiscriminatorOutput,
        boxes: Tensor,
        image_size: tuple[int, int],
        refine_boxes: bool,
        context: float = 1.0,
    ) -> Candidates:
        if self.num_classes == 1:
            return face_candidates(out, boxes)
        return class_box_candidates(out, boxes, image_size, refine_boxes, context)

    def validation_stats(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        out = self.discriminator(fake.sr)
        accuracy = face_accuracy if self.num_classes == 1 else class_box_accuracy
        return {"cls_acc": accuracy(out, batch.labels)}
