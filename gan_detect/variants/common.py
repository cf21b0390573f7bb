"""Public pieces a variant may reuse: G / D builders and the two papers' head semantics.

Head semantics turn one :class:`DiscriminatorOutput` on N ROIs into detection candidates
``(boxes (N, K', 4), scores (N, K'), labels (N, K') int64 1..C)`` and a validation accuracy:

- face heads (Bai et al., CVPR 2018): one sigmoid logit, K' = 1, the proposal box is kept;
- class + box heads (SOD-MTGAN, ECCV 2018): a (C + 1)-way softmax (0 = background, dropped),
  K' = C, each class moves the proposal by its own (or a shared) Fast R-CNN delta.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from gan_detect.data.batch import RoiBatch
from gan_detect.data.paths import carn_m_weights_path
from gan_detect.data.roi import clip_boxes, decode_roi_deltas
from gan_detect.models.carn import CARNM, load_carn_m_weights
from gan_detect.models.discriminator import DiscriminatorOutput, MultiTaskDiscriminator
from gan_detect.models.generator import Generator, SRGenerator
from gan_detect.models.losses import box_regression_loss, classification_loss
from gan_detect.utils.errors import InputError
from gan_detect.variants.base import Candidates, GANVariantConfig, state_follows

__all__ = [
    "box_terms",
    "build_discriminator",
    "build_generator",
    "class_box_accuracy",
    "class_box_candidates",
    "class_terms",
    "face_accuracy",
    "face_candidates",
]


def build_generator(cfg: GANVariantConfig) -> Generator:
    """The generator ``cfg.generator`` names: Table 1 from the ``g_*`` options, or CARN-M with
    its released weights (unless ``g_pretrained`` is false, or a state dict follows); with
    ``g_frozen`` its parameters do not require grad (the variant then has no G to train)."""
    gen: Generator
    if cfg.generator == "carn_m":
        gen = CARNM(scale=cfg.scale)
        if cfg.g_pretrained and not state_follows():
            path = carn_m_weights_path(cfg.g_weights)
            if not (path.parent / "LICENSE").is_file():
                # Not an error (the weights work without it), but MIT wants the notice along.
                warnings.warn(
                    f"no LICENSE beside {path}: CARN-M's weights are MIT-licensed and the notice "
                    "must travel with them (copy the whole carn_m/ folder)",
                    stacklevel=2,
                )
            try:
                load_carn_m_weights(gen, path)
            except RuntimeError as err:  # a wrong file must not train as a random CARN-M
                raise InputError(f"variant.g_weights: {err}") from None
    else:
        gen = _paper_generator(cfg)
    if cfg.g_frozen:
        gen.requires_grad_(False)
    return gen


def _paper_generator(cfg: GANVariantConfig) -> SRGenerator:
    """The Table 1 generator from the shared ``g_*`` options."""
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


def build_discriminator(
    cfg: GANVariantConfig, num_cls_logits: int, box_head: bool, class_agnostic_box: bool = False
) -> MultiTaskDiscriminator:
    """A timm trunk (``cfg.backbone``) with real/SR, ``num_cls_logits`` class and box heads."""
    return MultiTaskDiscriminator(
        backbone=cfg.backbone,
        num_cls_logits=num_cls_logits,
        box_head=box_head,
        class_agnostic_box=class_agnostic_box,
        pretrained=cfg.pretrained,
        pretrained_path=cfg.pretrained_path,
        remove_last_pool=cfg.remove_last_pool,
    )


def face_candidates(out: DiscriminatorOutput, boxes: Tensor) -> Candidates:
    """One sigmoid face logit: (N, 1, 4) unchanged boxes, (N, 1) p(face), (N, 1) labels = 1."""
    scores = torch.sigmoid(out.cls_logits.float())[:, :1]
    labels = torch.ones_like(scores, dtype=torch.int64)
    return boxes[:, None, :], scores, labels


def class_box_candidates(
    out: DiscriminatorOutput,
    boxes: Tensor,
    image_size: tuple[int, int],
    refine_boxes: bool,
    context: float = 1.0,
) -> Candidates:
    """(C + 1)-way softmax, background dropped: one candidate per class (K' = C).

    Boxes are that class's delta (class-specific (N, 4(C+1)) or shared (N, 4) deltas) decoded
    against the crop window D saw (the squared, ``context``-enlarged proposal, as in ROI mining:
    :func:`~gan_detect.data.roi.decode_roi_deltas`) and clipped to ``image_size`` (H, W);
    the proposals unchanged without ``refine_boxes``.
    """
    scores = torch.softmax(out.cls_logits.float(), dim=1)[:, 1:]  # (N, C)
    n, c = scores.shape
    labels = torch.arange(1, c + 1, device=scores.device).expand(n, c)
    proposals = boxes[:, None, :].expand(n, c, 4)
    if not refine_boxes or out.box_deltas is None:
        return proposals, scores, labels
    deltas = out.box_deltas.float()
    if deltas.shape[1] == 4:  # class-agnostic: the same move for every class
        deltas = deltas[:, None, :].expand(n, c, 4)
    else:
        deltas = deltas.view(n, c + 1, 4)[:, 1:, :]
    decoded = decode_roi_deltas(deltas.reshape(-1, 4), proposals.reshape(-1, 4), context)
    return clip_boxes(decoded, image_size).view(n, c, 4), scores, labels


def face_accuracy(out: DiscriminatorOutput, labels: Tensor) -> Tensor:
    """Scalar: share of ROIs where p(face) > 0.5 agrees with ``labels`` (N,) > 0."""
    pred = out.cls_logits[:, 0] > 0
    return (pred == (labels > 0)).float().mean()


def class_box_accuracy(out: DiscriminatorOutput, labels: Tensor) -> Tensor:
    """Scalar: share of ROIs whose (C + 1)-way argmax equals ``labels`` (N,) (0 = background)."""
    return (out.cls_logits.argmax(dim=1) == labels).float().mean()


def class_terms(outs: list[DiscriminatorOutput], batch: RoiBatch) -> Tensor:
    """Sum over D outputs (HR and/or SR halves) of the classification loss vs ``batch.labels``."""
    return torch.stack([classification_loss(o.cls_logits, batch.labels) for o in outs]).sum()


def box_terms(outs: list[DiscriminatorOutput], batch: RoiBatch) -> Tensor:
    """Sum over D outputs of the smooth-L1 box loss on foreground ROIs (needs a box head)."""
    losses = []
    for o in outs:
        if o.box_deltas is None:
            raise RuntimeError("this discriminator has no box head (box_terms needs one)")
        losses.append(box_regression_loss(o.box_deltas, batch.labels, batch.box_targets))
    return torch.stack(losses).sum()
