"""SOD-MTGAN (Zhang, Bai, Ding, Ghanem, ECCV 2018): (C+1)-way classification and box regression.

The ECCV text was not available (PAPERS.md section 2.2): the head layout, loss weights and the
discriminator trunk below are our choices, each a config option.
"""

from __future__ import annotations

from torch import Tensor

from gan_detect.config.sections import SODMTGANConfig
from gan_detect.data.batch import RoiBatch
from gan_detect.models.discriminator import DiscriminatorOutput
from gan_detect.models.generator import GeneratorOutput
from gan_detect.utils.errors import InputError
from gan_detect.variants.base import Candidates, GANVariant, GANVariantConfig
from gan_detect.variants.common import (
    box_terms,
    build_discriminator,
    build_generator,
    class_box_accuracy,
    class_box_candidates,
    class_terms,
)
from gan_detect.variants.registry import register_variant


@register_variant("sod_mtgan")
class SODMTGAN(GANVariant):
    """Multi-task GAN: the classification and regression losses on the SR image reach G."""

    name = "sod_mtgan"
    Config = SODMTGANConfig

    @classmethod
    def build(cls, cfg: GANVariantConfig, num_classes: int) -> SODMTGAN:
        if not isinstance(cfg, SODMTGANConfig):
            raise TypeError(f"sod_mtgan needs an SODMTGANConfig, got {type(cfg).__name__}")
        if num_classes < 1:
            raise InputError(f"data.num_classes must be >= 1, got {num_classes}")
        disc = build_discriminator(
            cfg, num_classes + 1, box_head=True, class_agnostic_box=cfg.class_agnostic_box
        )
        return cls(build_generator(cfg), disc, cfg)

    def task_losses(
        self,
        batch: RoiBatch,
        real_out: DiscriminatorOutput | None,
        fake_out: DiscriminatorOutput,
        prefix: str,
        generator: bool,
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        assert isinstance(cfg, SODMTGANConfig)
        w_cls = cfg.cls_weight if generator else cfg.d_cls_weight
        w_box = cfg.box_weight if generator else cfg.d_box_weight
        outs = [fake_out] if real_out is None else [real_out, fake_out]
        return {
            f"{prefix}cls": w_cls * class_terms(outs, batch),
            f"{prefix}box": w_box * box_terms(outs, batch),
        }

    def candidates(
        self,
        out: DiscriminatorOutput,
        boxes: Tensor,
        image_size: tuple[int, int],
        refine_boxes: bool,
        context: float = 1.0,
    ) -> Candidates:
        return class_box_candidates(out, boxes, image_size, refine_boxes, context)

    def validation_stats(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        return {"cls_acc": class_box_accuracy(self.discriminator(fake.sr), batch.labels)}
