"""Tiny-face GAN (Bai, Zhang, Ding, Ghanem, CVPR 2018): face vs non-face discriminator, no box head."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gan_detect.data.batch import RoiBatch
from gan_detect.models.discriminator import DiscriminatorOutput, MultiTaskDiscriminator
from gan_detect.models.generator import SRGenerator
from gan_detect.models.losses import classification_loss
from gan_detect.variants.base import GANVariant, GANVariantConfig


@dataclass
class TinyFaceConfig(GANVariantConfig):
    """Tiny-face GAN: VGG19 discriminator with two parallel heads (real/SR and face/non-face)."""

    name: str = "tiny_face"


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
            raise ValueError(
                f"tiny_face is a face/non-face variant: data.num_classes must be 1, got {num_classes}"
            )
        return cls(_build_generator(cfg), _build_discriminator(cfg, 1, box_head=False), cfg)

    def task_losses(
        self,
        batch: RoiBatch,
        real_out: DiscriminatorOutput | None,
        fake_out: DiscriminatorOutput,
        prefix: str,
        generator: bool,
    ) -> dict[str, Tensor]:
        w = self.cfg.cls_weight if generator else self.cfg.d_cls_weight
        loss = classification_loss(fake_out.cls_logits, batch.labels)
        if real_out is not None:
            loss = loss + classification_loss(real_out.cls_logits, batch.labels)
        return {f"{prefix}cls": w * loss}


def _build_generator(cfg: GANVariantConfig) -> SRGenerator:
    return SRGenerator(
        scale=cfg.scale,
        channels=cfg.g_channels,
        num_res_blocks=cfg.g_res_blocks,
        convs_per_block=cfg.g_convs_per_block,
        upsample_channels=cfg.g_upsample_channels,
        refine_channels=cfg.g_refine_channels,
        refinement=cfg.g_refinement,
        output_activation=cfg.g_output_activation,
        bicubic_skip=cfg.g_bicubic_skip,
    )


def _build_discriminator(
    cfg: GANVariantConfig, num_cls_logits: int, box_head: bool, class_agnostic_box: bool = False
) -> MultiTaskDiscriminator:
    return MultiTaskDiscriminator(
        backbone=cfg.backbone,
        num_cls_logits=num_cls_logits,
        box_head=box_head,
        class_agnostic_box=class_agnostic_box,
        pretrained=cfg.pretrained,
        pretrained_path=cfg.pretrained_path,
        remove_last_pool=cfg.remove_last_pool,
    )
