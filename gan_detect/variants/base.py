"""The GAN-variant interface: a generator, a multi-task discriminator and their loss recipe."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from gan_detect.config import ExperimentConfig
from gan_detect.config.sections import G_STEP_D_NORMS, GANVariantConfig
from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.models.discriminator import Discriminator, DiscriminatorOutput
from gan_detect.models.generator import Generator, GeneratorOutput
from gan_detect.models.losses import d_adversarial_loss, g_adversarial_loss, pixel_mse
from gan_detect.utils.errors import InputError
from gan_detect.utils.visualize import label_name
from gan_detect.variants.registry import get_variant_class

# Detection candidates of N ROIs: boxes (N, K', 4) xyxy px, scores (N, K'), labels (N, K') 1..C.
Candidates = tuple[Tensor, Tensor, Tensor]

# True while :meth:`GANVariant.from_state` builds a variant whose state dict is loaded next: a
# pretrained generator's weights file is then not read (the state dict holds G), so a checkpoint
# of a CARN-M run loads on a machine without the file.
_STATE_FOLLOWS: ContextVar[bool] = ContextVar("gan_detect_state_follows", default=False)


def state_follows() -> bool:
    """Whether the variant being built gets its weights from a state dict right after."""
    return _STATE_FOLLOWS.get()


@contextmanager
def state_dict_follows() -> Iterator[None]:
    """Build variants inside this block without reading pretrained generator weights: the
    caller loads a state dict (a checkpoint's) into them right after."""
    token = _STATE_FOLLOWS.set(True)
    try:
        yield
    finally:
        _STATE_FOLLOWS.reset(token)


@contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as it is (train-mode BatchNorm still normalises with batch statistics) on
    throw-away copies of its buffers, so its running mean / var and ``num_batches_tracked`` keep
    their values. Copies, not save-and-restore: autograd saves the running statistics for the
    backward pass, and writing them back in place would invalidate the graph."""
    saved: list[tuple[nn.Module, str, Tensor]] = []
    for m in module.modules():
        for name, buf in m._buffers.items():
            if buf is not None:
                saved.append((m, name, buf))
                m._buffers[name] = buf.clone()
    try:
        yield
    finally:
        for m, name, buf in saved:
            m._buffers[name] = buf


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` inside the block, each submodule's training flag restored on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class GANVariant(nn.Module, ABC):
    """A generator, a discriminator, the loss recipe that trains them and what D's heads mean.

    Subclasses set ``name`` and ``Config`` and implement :meth:`build` (from the Config),
    :meth:`task_losses` (the paper's class / box terms), :meth:`candidates` (D's heads ->
    scored, labelled boxes) and :meth:`validation_stats`; :meth:`accepts_num_classes` says which
    datasets fit. The engine, inference, evaluation and ``predict`` use only these. Loss dicts
    hold already-weighted ``loss_*`` tensors; the engine only sums and logs them. A generator
    without trainable parameters (``has_trainable_generator`` False) gets no optimiser, no G step
    and no DDP wrapper.
    """

    name: ClassVar[str]
    Config: ClassVar[type[GANVariantConfig]]

    def __init__(self, generator: Generator, discriminator: Discriminator, cfg: GANVariantConfig):
        super().__init__()
        if cfg.adv_form not in ("saturating", "non_saturating"):
            raise InputError(
                f"variant.adv_form must be saturating|non_saturating, got {cfg.adv_form!r}"
            )
        if cfg.g_step_d_norm not in G_STEP_D_NORMS:
            raise InputError(
                f"variant.g_step_d_norm must be one of {G_STEP_D_NORMS}, got {cfg.g_step_d_norm!r}"
            )
        self.generator = generator
        self.discriminator = discriminator
        self.hparams_: dict[str, Any] = dict(vars(cfg))
        self.cfg = cfg
        # The whole run's config when loaded from a checkpoint (from_state); None when built bare.
        self.run_config: ExperimentConfig | None = None
        # Read once at build: Lightning's toggled_optimizer freezes parameters inside a step.
        self._trainable_g = any(p.requires_grad for p in generator.parameters())

    @property
    def scale(self) -> int:
        return int(self.generator.scale)

    @property
    def has_trainable_generator(self) -> bool:
        """False when G has no trainable parameters (then only D is optimised)."""
        return self._trainable_g

    @classmethod
    def accepts_num_classes(cls, num_classes: int) -> bool:
        """Whether :meth:`build` takes data with ``num_classes`` object classes (tests use it)."""
        return num_classes >= 1

    @classmethod
    @abstractmethod
    def build(cls, cfg: GANVariantConfig, num_classes: int) -> GANVariant:
        """The one place that reads this variant's Config; builds G and D from primitives."""

    @staticmethod
    def from_state(config: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> GANVariant:
        """A trained variant from a run config (plain containers) and a state dict.

        ``state_dict`` may be the training module's (keys ``variant.*``; other entries such as
        validation metrics are dropped) or the variant's own. The validated run config is kept as
        :attr:`run_config` (inference needs its ROI-mining settings: LR size, context).
        """
        cfg = to_experiment_config(dict(config))
        vcfg = cfg.variant
        assert isinstance(vcfg, GANVariantConfig)
        with state_dict_follows():
            variant = get_variant_class(vcfg.name).build(vcfg, cfg.data.num_classes)
        if any(k.startswith("variant.") for k in state_dict):
            state_dict = {
                k[len("variant.") :]: v for k, v in state_dict.items() if k.startswith("variant.")
            }
        variant.load_state_dict(state_dict)
        variant.run_config = cfg
        return variant.eval()

    @staticmethod
    def from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> GANVariant:
        """Load G + D of a GAN checkpoint (``weights_only=True``: the file cannot run code)."""
        from gan_detect.utils.checkpoints import building_from, load_checkpoint

        state = load_checkpoint(path, expect="gan", map_location=map_location)
        with building_from(path):
            return GANVariant.from_state(state["hyper_parameters"]["config"], state["state_dict"])

    # ---- shared pieces -------------------------------------------------------------------------
    def pixel_mask(self, batch: RoiBatch) -> Tensor:
        """(N,) bool: ROIs that take the pixel loss (``pixel_loss_min_size``, background option)."""
        mask = batch.src_sizes.min(dim=1).values >= self.cfg.pixel_loss_min_size
        if not self.cfg.pixel_loss_on_background:
            mask = mask & (batch.labels > 0)
        return mask

    def pixel_losses(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        """Eq. 4: MSE of the coarse and the refined output against the HR crop."""
        mask = self.pixel_mask(batch)
        w = self.cfg.pixel_weight
        out = {"loss_pixel": w * pixel_mse(fake.sr, batch.hr, mask)}
        if fake.coarse is not None:
            out["loss_pixel_coarse"] = w * pixel_mse(fake.coarse, batch.hr, mask)
        return out

    def discriminate_real_fake(
        self, batch: RoiBatch, fake: GeneratorOutput
    ) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
        """One D forward on cat(real, fake) (docs/design.md, D2); split back into two."""
        n = batch.hr.shape[0]
        out = self.discriminator(torch.cat([batch.hr, fake.sr], dim=0))
        return _split_output(out, n)

    def discriminate_for_generator(
        self, batch: RoiBatch, fake: GeneratorOutput
    ) -> DiscriminatorOutput:
        """D's outputs (N rows) on ``fake.sr`` for the G step; D's parameters and buffers are left
        as they are (``g_step_d_norm``: "batch" normalises with the D step's cat(HR, SR) batch
        statistics, "running" with D's running statistics)."""
        if self.cfg.g_step_d_norm == "running":
            with eval_mode(self.discriminator):
                return self.discriminator(fake.sr)
        with frozen_buffers(self.discriminator):
            _, sr_out = self.discriminate_real_fake(batch, fake)
        return sr_out

    def discriminator_losses(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        """Eq. 9: real/fake on the adversarial head + class terms on HR and SR; ``fake`` detached."""
        real_out, fake_out = self.discriminate_real_fake(batch, fake)
        losses = {
            "loss_d_adv": self.cfg.d_adv_weight
            * d_adversarial_loss(real_out.adv_logits, fake_out.adv_logits)
        }
        losses.update(
            self.task_losses(batch, real_out, fake_out, prefix="loss_d_", generator=False)
        )
        # Not losses (no loss_ prefix): D's mean real/generated probabilities, for logging.
        losses["d_real"] = torch.sigmoid(real_out.adv_logits).mean().detach()
        losses["d_fake"] = torch.sigmoid(fake_out.adv_logits).mean().detach()
        return losses

    def generator_losses(
        self, batch: RoiBatch, fake: GeneratorOutput, pixel_only: bool = False
    ) -> dict[str, Tensor]:
        """Eq. 8: pixel + adversarial + task terms through D on the SR image.

        ``pixel_only`` is the MSE warm-up (the paper pre-trains G as an MSE SR network).
        """
        losses = self.pixel_losses(batch, fake)
        if pixel_only:
            return losses
        sr_out = self.discriminate_for_generator(batch, fake)
        form: Literal["saturating", "non_saturating"] = (
            "saturating" if self.cfg.adv_form == "saturating" else "non_saturating"
        )
        losses["loss_adv"] = self.cfg.adv_weight * g_adversarial_loss(sr_out.adv_logits, form=form)
        losses.update(self.task_losses(batch, None, sr_out, prefix="loss_", generator=True))
        return losses

    @abstractmethod
    def task_losses(
        self,
        batch: RoiBatch,
        real_out: DiscriminatorOutput | None,
        fake_out: DiscriminatorOutput,
        prefix: str,
        generator: bool,
    ) -> dict[str, Tensor]:
        """The paper-specific terms (classification; box regression) on HR and/or SR outputs."""

    # ---- what the heads mean (inference, validation) -------------------------------------------
    @torch.no_grad()
    def detect(
        self,
        lr_rois: Tensor,
        boxes: Tensor,
        image_size: tuple[int, int],
        refine_boxes: bool,
        context: float = 1.0,
    ) -> Candidates:
        """Super-resolve ROIs, run D, and turn its heads into scored, labelled candidates.

        ``discriminate_sr`` then ``candidates``; full-image inference calls those two directly
        (G + D over crops of several images, candidates per image), so a variant customises
        :meth:`candidates` (what the heads mean) or :meth:`discriminate_sr`, not this method.

        Args:
            lr_rois: (N, 3, h, w) in [-1, 1], the LR crops of ``boxes``.
            boxes: (N, 4) xyxy proposal boxes in image pixels.
            image_size: (H, W) of the image, for clipping refined boxes.
            refine_boxes: apply the box head's deltas when the variant has one.
            context: the ROI-mining crop context; box deltas are relative to the crop window.

        Returns:
            boxes (N, K', 4), scores (N, K') in [0, 1], labels (N, K') int64 in 1..C: every
            candidate before score fusion and NMS (K' = 1 for face heads, C for class heads).
        """
        return self.candidates(
            self.discriminate_sr(lr_rois), boxes, image_size, refine_boxes, context
        )

    @torch.no_grad()
    def discriminate_sr(self, lr_rois: Tensor) -> DiscriminatorOutput:
        """D's raw heads on G's SR output of (N, 3, h, w) LR crops (inference: crops of several
        images go through here together, :meth:`candidates` then runs per image)."""
        return self.discriminator(self.generator(lr_rois).sr)

    @abstractmethod
    def candidates(
        self,
        out: DiscriminatorOutput,
        boxes: Tensor,
        image_size: tuple[int, int],
        refine_boxes: bool,
        context: float = 1.0,
    ) -> Candidates:
        """D's output on N SR crops -> ``(boxes (N,K',4), scores (N,K'), labels (N,K'))``
        (see :mod:`gan_detect.variants.common` for the papers' two layouts)."""

    @abstractmethod
    def validation_stats(self, batch: RoiBatch, fake: GeneratorOutput) -> dict[str, Tensor]:
        """Scalar statistics of D on ``fake.sr`` (N, 3, H, W) vs ``batch.labels`` (N,), logged as
        ``val/<key>`` (``cls_acc`` at least)."""

    @torch.no_grad()
    def roi_captions(self, lr_rois: Tensor, class_names: Sequence[str] | None = None) -> list[str]:
        """One short text per ROI (N, 3, h, w) for the validation image grid: D's top class
        (named from ``class_names``, label i + 1 at index i) and its score."""
        n = lr_rois.shape[0]
        side = float(lr_rois.shape[-1] * self.scale)
        unit = lr_rois.new_tensor([0.0, 0.0, side, side]).expand(n, 4)
        _, scores, labels = self.detect(lr_rois, unit, (int(side), int(side)), False)
        best = scores.argmax(dim=1)
        rows = torch.arange(n, device=scores.device)
        return [
            f"{label_name(int(lab), class_names)} {float(p):.2f}"
            for lab, p in zip(labels[rows, best].tolist(), scores[rows, best].tolist(), strict=True)
        ]


def _split_output(
    out: DiscriminatorOutput, n: int
) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    def part(t: Tensor | None, sl: slice) -> Tensor | None:
        return None if t is None else t[sl]

    a, b = slice(0, n), slice(n, None)
    return (
        DiscriminatorOutput(out.adv_logits[a], out.cls_logits[a], part(out.box_deltas, a)),
        DiscriminatorOutput(out.adv_logits[b], out.cls_logits[b], part(out.box_deltas, b)),
    )
