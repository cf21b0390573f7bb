"""Tiny-face GAN (Bai, Zhang, Ding, Ghanem, CVPR 2018): face vs non-face discriminator, no box head."""

from __future__ import annotations

from torch import Tensor

from gan_detect.config.sections import TinyFaceConfig
from gan_detect.data.batch import RoiBatch
from gan_detect.models.discriminator import DiscriminatorOutput
from gan_detect.models.generator import GeneratorOutput
from gan_detect.utils.errors import InputError
from gan_detect.variants.base import Candidates, GANVariant, GANVariantConfig
from gan_detect.variants.common import (
    build_discriminator,
    build_generator,
    class_terms,
    face_accuracy,
    face_candidates,
)
from gan_detect.variants.registry import register_variant


@register_variant("tiny_face")
class TinyFaceGAN(GANVariant):
    """G = up-sampling + refinement sub-networks; D = VGG19 trunk + fc_GAN + fc_clc (1 logit each).

    Loss recipe (Eqs. 4-9): pixel MSE on coarse and refined SR; adversarial on fc_GAN; binary
    face/non-face cross-entropy on fc_clc for both SR and HR in the D step, on SR in the G step.
    """

    name = "tiny_face"
    Config = TinyFaceConfig

    @classmethod
    def build(cls, cfg: GANVariantConfig, num_classes: int) -> TinyFaceGAN:
        if num_classes != 1:
            raise InputError(
                f"tiny_face is a face/non-face variant: data.num_classes must be 1, got {num_classes}"
            )
        return cls(build_generator(cfg), build_discriminator(cfg, 1, box_head=False), cfg)

    @classmethod
    def accepts_num_classes(cls, num_classes: int) -> bool:
        return num_classes == 1

    def task_losses(
        self,
        batch: RoiBatch,
        real_out: DiscriminatorOutput | None,
        fake_out: DiscriminatorOutput,
        prefix: str,
        generator: bool,
    ) -> dict[str, Tensor]:
        w = self.cfg.cls_weight if generator else self.cfg.d_cls_weight
        outs = [fake_out] if real_out is None else [real_out, fake_out]
        loss = class_terms(outs, batch)
        return {f"{prefix}cls": w * loss}

    def candidates(
        self,
        out: DiscriminatorOutput,
        boxes: Tensor,
        image_size: tuple[int, int],
        refine_boxes: bool,
        context: float = 1.0,
    ) -> Candidates:
        return face_candidates(out, boxes)  # no box head: boxes stay as proposed

    def validation_stats(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        return {"cls_acc": face_accuracy(self.discriminator(fake.sr), batch.labels)}
