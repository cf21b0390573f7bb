"""The engine: D step then G step, learning, checkpoints and exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _synth import default_num_classes, loader, roi_batch, tiny_config

from gan_detect.config import PRESETS
from gan_detect.config.validate import to_experiment_config
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.trainer import build_trainer
from gan_detect.variants import VARIANTS, build_variant


def _trainer(cfg_raw: dict, tmp_path: Path, **kw) -> L.Trainer:
    cfg = to_experiment_config(cfg_raw)
    base = dict(
        logger=False, callbacks=[], enable_checkpointing=False, default_root_dir=str(tmp_path)
    )
    base.update(kw)
    return build_trainer(cfg, **base)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fit_runs_each_variant_and_validates_sr_quality(name: str, tmp_path: Path) -> None:
    raw = tiny_config(name, output_dir=str(tmp_path))
    module = GANDetectionModule(raw)
    b = roi_batch(32, num_classes=default_num_classes(name))
    trainer = _trainer(raw, tmp_path, max_epochs=1)
    trainer.fit(module, train_dataloaders=loader(b), val_dataloaders=loader(b, shuffle=False))
    m = trainer.callback_metrics
    g_keys = ("train/loss_g", "train/loss_adv") if module.variant.has_trainable_generator else ()
    for key in (
        *g_keys,
        "train/loss_d",
        "train/d_real",
        "train/d_fake",
        "val/psnr_sr",
        "val/mse_bicubic",
        "val/cls_acc",
    ):
        assert key in m, key
    if not module.variant.has_trainable_generator:  # a fixed bicubic "G" is the bicubic baseline
        assert float(m["val/psnr_sr"]) == pytest.approx(float(m["val/psnr_bicubic"]))
    # the LR | bicubic | SR | HR grid is written at each validation
    assert (tmp_path / "val_images" / "epoch_000.png").is_file()
    # The values are the val set's: recompute them with the final weights (validation ran after
    # the only epoch). Equal batches, so the batch-weighted means are whole-set means.
    module.eval()
    with torch.no_grad():
        fake = module.variant.generator(b.lr)
        stats = module.variant.validation_stats(b, fake)
    bic = F.interpolate(b.lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    mse_sr, mse_bic = F.mse_loss(fake.sr, b.hr).item(), F.mse_loss(bic, b.hr).item()
    assert float(m["val/mse_sr"]) == pytest.approx(mse_sr, rel=1e-4)
    assert float(m["val/mse_bicubic"]) == pytest.approx(mse_bic, rel=1e-4)
    # PSNR of [-1, 1] images (peak-to-peak 2) over the whole set: 10 log10(4 / MSE).
    assert float(m["val/psnr_sr"]) == pytest.approx(10 * math.log10(4 / mse_sr), abs=1e-3)
    assert float(m["val/psnr_bicubic"]) == pytest.approx(10 * math.log10(4 / mse_bic), abs=1e-3)
    # The logged accuracy is the variant's own statistic over the whole val set; recompute it
    # from D's heads independently (face: sigmoid > 0.5 vs label > 0; classes: argmax).
    with torch.no_grad():
        logits = module.variant.discriminator(fake.sr).cls_logits
    if logits.shape[1] == 1:
        acc = ((logits[:, 0] > 0).long() == (b.labels > 0).long()).float().mean().item()
    else:
        acc = (logits.argmax(1) == b.labels).float().mean().item()
    assert float(m["val/cls_acc"]) == pytest.approx(acc, abs=1e-6)
    assert float(stats["cls_acc"]) == pytest.approx(acc, abs=1e-6)
    assert 0 < float(m["train/d_real"]) < 1 and 0 < float(m["train/d_fake"]) < 1


class _SpyModule(GANDetectionModule):
    """Records parameter snapshots around each optimiser step."""

    def configure_optimizers(self):
        opts, scheds = super().configure_optimizers()
        self.events: list[tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        # Step hooks, not a replaced opt.step: the LR scheduler wraps step when it is built and
        # warns ("optimizer.step() has been overridden") if it is replaced afterwards.
        for tag, opt in zip(self._roles(), opts, strict=True):
            before: dict[str, dict[str, torch.Tensor]] = {}

            def pre(opt, args, kwargs, _before=before):
                _before["snap"] = self._snap()

            def post(opt, args, kwargs, _before=before, _tag=tag):
                self.events.append((_tag, _before["snap"], self._snap()))

            opt.register_step_pre_hook(pre)
            opt.register_step_post_hook(post)
        return opts, scheds

    def _snap(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            "g": {k: v.detach().clone() for k, v in self.variant.generator.state_dict().items()},
            "d": {k: v.detach().clone() for k, v in self.variant.discriminator.named_parameters()},
        }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_d_step_leaves_g_alone_and_g_step_leaves_d_alone(name: str, tmp_path: Path) -> None:
    raw = tiny_config(name)
    module = _SpyModule(raw)
    b = roi_batch(16, num_classes=default_num_classes(name))
    trainer = _trainer(raw, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader(b))
    tags = [e[0] for e in module.events]
    # D step, then G step, each batch; only D steps without a trainable generator.
    assert tags == (["d", "g"] * 2 if module.variant.has_trainable_generator else ["d", "d"])
    for tag, before, after in module.events:
        other = "g" if tag == "d" else "d"
        assert _same(before[other], after[other]), f"{tag} step changed {other}"
        assert not _same(before[tag], after[tag]), f"{tag} step changed nothing"


def test_warmup_epochs_train_only_the_generator(tmp_path: Path) -> None:
    raw = tiny_config("tiny_face", **{"optim.warmup_epochs": 1})
    module = _SpyModule(raw)
    trainer = _trainer(raw, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader(roi_batch(16)))
    assert [e[0] for e in module.events] == ["g", "g"]


class _HeldOutAccuracy(L.Callback):
    """D's face/non-face accuracy on held-out HR crops at the start and end of the GAN phase."""

    def __init__(self, held) -> None:
        self.held, self.acc = held, {}

    def _acc(self, module: GANDetectionModule) -> float:
        d = module.variant.discriminator
        was = d.training
        d.eval()
        with torch.no_grad():
            logits = d(self.held.hr).cls_logits[:, 0]
        d.train(was)
        return ((logits > 0).long() == self.held.labels).float().mean().item()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == pl_module.cfg.optim.warmup_epochs:
            self.acc["gan_start"] = self._acc(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.acc["end"] = self._acc(pl_module)


def _content_labels(batch):
    """Face = 'red-ish' crop (mean of channel 0 > 0): a label D can learn from HR and SR."""
    batch.labels = (batch.hr[:, 0].mean(dim=(1, 2)) > 0).long()
    return batch


def test_short_fit_beats_bicubic_on_held_out_pairs(tmp_path: Path) -> None:
    """Learning is real, in the GAN phase too (fixed seed): after 4 MSE epochs and 4 GAN epochs
    the held-out SR MSE is below bicubic and D's classification head learned the labels."""
    raw = tiny_config(
        "tiny_face",
        **{
            "variant.g_channels": 16,
            "variant.g_res_blocks": 2,
            "variant.g_upsample_channels": 32,
            "variant.g_refine_channels": 32,
            "variant.g_bicubic_skip": True,
            "optim.lr_g": 2e-3,
            "optim.warmup_epochs": 4,
        },
    )
    module = GANDetectionModule(raw)
    train = _content_labels(roi_batch(128, seed=1, blocks=True))
    held = _content_labels(roi_batch(32, seed=99, blocks=True))
    assert 0.2 < held.labels.float().mean() < 0.8
    acc = _HeldOutAccuracy(held)
    trainer = _trainer(raw, tmp_path, max_epochs=8, limit_val_batches=0, callbacks=[acc])
    trainer.fit(module, train_dataloaders=loader(train, batch_size=16))
    module.eval()
    with torch.no_grad():
        sr = module.variant.generator(held.lr).sr
    bic = F.interpolate(held.lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    mse_sr, mse_bic = F.mse_loss(sr, held.hr).item(), F.mse_loss(bic, held.hr).item()
    print(f"held-out MSE SR {mse_sr:.4f} bicubic {mse_bic:.4f}; D accuracy {acc.acc}")
    assert mse_sr < 0.9 * mse_bic, (mse_sr, mse_bic)
    assert acc.acc["end"] >= 0.8 and acc.acc["end"] > acc.acc["gan_start"] + 0.15, acc.acc


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_interrupted_and_resumed_run_matches_uninterrupted(name: str, tmp_path: Path) -> None:
    raw = tiny_config(name, **{"optim.milestones": [1], "optim.grad_clip_norm": 1.0})
    b = roi_batch(32, num_classes=default_num_classes(name), seed=5)

    def run(max_epochs: int, root: Path, ckpt: str | None = None, module=None):
        L.seed_everything(0)
        module = module or GANDetectionModule(raw)
        from lightning.pytorch.callbacks import ModelCheckpoint

        cb = ModelCheckpoint(dirpath=str(root), save_last=True, save_top_k=-1, every_n_epochs=1)
        t = _trainer(
            raw,
            root,
            max_epochs=max_epochs,
            callbacks=[cb],
            enable_checkpointing=True,
            limit_val_batches=0,
        )
        t.fit(module, train_dataloaders=loader(b), ckpt_path=ckpt)
        return module, t

    full, _ = run(2, tmp_path / "full")
    run(1, tmp_path / "part")  # "interrupted" after one epoch
    L.seed_everything(123)  # a different process state must not matter
    resumed, t = run(
        2,
        tmp_path / "part",
        ckpt=str(tmp_path / "part" / "last.ckpt"),
        module=GANDetectionModule(raw),
    )
    for (k, a), (_, c) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), c.float(), atol=1e-6), k
    # every scheduler stepped once per epoch: lr = 1e-3 * 0.1 after the milestone at epoch 1
    assert len(t.optimizers) == len(resumed._roles())
    assert all(abs(o.param_groups[0]["lr"] - 1e-4) < 1e-12 for o in t.optimizers)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_checkpoint_holds_every_optimiser_and_loads_with_weights_only(
    name: str, tmp_path: Path
) -> None:
    raw = tiny_config(name, output_dir=str(tmp_path))
    module = GANDetectionModule(raw)
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(dirpath=str(tmp_path), save_last=True)
    t = _trainer(
        raw,
        tmp_path,
        max_epochs=1,
        callbacks=[cb],
        enable_checkpointing=True,
        limit_val_batches=0,
        limit_train_batches=2,
    )
    t.fit(module, train_dataloaders=loader(roi_batch(16, num_classes=default_num_classes(name))))
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    n_opt = 2 if module.variant.has_trainable_generator else 1  # G (if trained) and D
    assert len(ckpt["optimizer_states"]) == n_opt and len(ckpt["lr_schedulers"]) == n_opt
    assert ckpt["hyper_parameters"]["config"]["variant"]["name"] == name
    loaded = GANDetectionModule.from_checkpoint(tmp_path / "last.ckpt")
    for (k, a), (_, c) in zip(
        module.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, c), k


class _LrRecorder(L.Callback):
    """Records (G lr, D lr, warm-up flag) at the start of every training epoch."""

    def __init__(self) -> None:
        self.lrs: list[tuple[float, float, bool]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        g, d = (o.param_groups[0]["lr"] for o in trainer.optimizers)
        self.lrs.append((g, d, pl_module.in_warmup()))  # type: ignore[operator]


@pytest.mark.parametrize("config", ["tiny_face_wider.yaml", "sod_mtgan_coco.yaml"])
def test_real_configs_train_one_mse_epoch_then_3_at_1e4_then_3_at_1e5(
    config: str, tmp_path: Path
) -> None:
    """The experiment configs mean what they say: milestones count GAN epochs (after warm-up),
    and the D scheduler never steps before D's optimiser has (no PyTorch order warning)."""
    import warnings

    from gan_detect.app.cli import load_config
    from gan_detect.config.validate import to_container

    root = PRESETS
    tiny = [f"variant.{k}={v}" for k, v in tiny_config()["variant"].items() if k != "name"]
    cfg = load_config(
        [root / config],
        [*tiny, "data.hr_size=32", "trainer.precision=32-true", "trainer.accelerator=cpu",
         "trainer.devices=1", "logger.kind=none", f"output_dir={tmp_path}"],
    )  # fmt: skip
    module = GANDetectionModule(to_container(cfg))
    rec = _LrRecorder()
    b = roi_batch(8, num_classes=cfg.data.num_classes)
    trainer = _trainer(
        to_container(cfg), tmp_path, callbacks=[rec], limit_train_batches=1, limit_val_batches=0
    )
    assert trainer.max_epochs == 7  # from the config
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, train_dataloaders=loader(b))
    expected = [(1e-4, 1e-4, True)] + [(1e-4, 1e-4, False)] * 3 + [(1e-5, 1e-5, False)] * 3
    assert len(rec.lrs) == 7
    for epoch, (got, want) in enumerate(zip(rec.lrs, expected, strict=True)):
        assert got[2] == want[2], f"epoch {epoch}: warm-up flag"
        assert got[0] == pytest.approx(want[0], rel=1e-9), f"epoch {epoch}: G lr {got[0]}"
        assert got[1] == pytest.approx(want[1], rel=1e-9), f"epoch {epoch}: D lr {got[1]}"
    order = [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert not order, order[0].message


class _GStepSpy(GANDetectionModule):
    """Snapshots D's parameters and buffers right after the D step (= before the G step)."""

    def configure_optimizers(self):
        (opt_g, opt_d), scheds = super().configure_optimizers()
        self.before_g: dict[str, torch.Tensor] = {}
        self.changed: list[str] = []

        def after_d_step(opt, args, kwargs):  # a hook: see _SpyModule
            self.before_g = self._d_state()

        opt_d.register_step_post_hook(after_d_step)
        return [opt_g, opt_d], scheds

    def _d_state(self) -> dict[str, torch.Tensor]:
        d = self.variant.discriminator
        state = {f"param:{k}": v.detach().clone() for k, v in d.named_parameters()}
        state.update({f"buffer:{k}": v.detach().clone() for k, v in d.named_buffers()})
        return state

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        after = self._d_state()
        self.changed += [k for k, v in self.before_g.items() if not torch.equal(v, after[k])]


def _has_generator_step(name: str) -> bool:
    cfg = to_experiment_config(tiny_config(name))
    return build_variant(cfg.variant, cfg.data.num_classes).has_trainable_generator


@pytest.mark.parametrize("norm", ["batch", "running"])
@pytest.mark.parametrize("name", [n for n in sorted(VARIANTS) if _has_generator_step(n)])
def test_g_step_leaves_d_parameters_and_batchnorm_buffers_bit_identical(
    name: str, norm: str, tmp_path: Path
) -> None:
    raw = tiny_config(name, **{"variant.g_step_d_norm": norm})
    module = _GStepSpy(raw)
    bn = [m for m in module.variant.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn, "the test needs a BatchNorm trunk (test_resnet)"
    trainer = _trainer(raw, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(
        module, train_dataloaders=loader(roi_batch(16, num_classes=default_num_classes(name)))
    )
    assert module.before_g, "no D step ran"
    assert any(k.startswith("buffer:") for k in module.before_g)
    assert module.changed == [], module.changed[:5]
    assert module.variant.discriminator.training  # eval mode ("running") does not leak out


class _GGradSpy(GANDetectionModule):
    """Records the generator's total |gradient| at each G optimiser step."""

    def configure_optimizers(self):
        (opt_g, opt_d), scheds = super().configure_optimizers()
        self.g_grad: list[float] = []

        def before_g_step(opt, args, kwargs):  # a hook: see _SpyModule
            grads = [p.grad for p in self.variant.generator.parameters() if p.grad is not None]
            self.g_grad.append(float(sum(g.abs().sum() for g in grads)) if grads else 0.0)

        opt_g.register_step_pre_hook(before_g_step)
        return [opt_g, opt_d], scheds


@pytest.mark.parametrize(
    ("name", "term"),
    [("tiny_face", "cls"), ("tiny_face", "none"), ("sod_mtgan", "cls"), ("sod_mtgan", "box"),
     ("sod_mtgan", "none")],
)  # fmt: skip
def test_task_terms_alone_reach_the_generator_through_training_step(
    name: str, term: str, tmp_path: Path
) -> None:
    """Through the engine's training_step (toggled_optimizer, manual_backward): with the pixel
    and adversarial weights at 0, the classification term alone, and the box term alone, give
    the generator non-zero gradients; with every G weight at 0 the gradient is exactly 0."""
    over = {"variant.pixel_weight": 0.0, "variant.adv_weight": 0.0,
            "variant.cls_weight": 1.0 if term == "cls" else 0.0}  # fmt: skip
    if name == "sod_mtgan":
        over["variant.box_weight"] = 1.0 if term == "box" else 0.0
    raw = tiny_config(name, **over)
    module = _GGradSpy(raw)
    b = roi_batch(8, num_classes=default_num_classes(name), seed=3)
    assert (b.labels > 0).any()  # the box term needs positives
    trainer = _trainer(raw, tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader(b))
    assert len(module.g_grad) == 1
    if term == "none":
        assert module.g_grad[0] == 0.0
    else:
        assert module.g_grad[0] > 0.0, term


def test_inference_options_take_lr_size_and_context_from_the_checkpoint(tmp_path: Path) -> None:
    """evaluate with another config: top-K / fusion / NMS from it, the LR size and context from
    the checkpoint's ROI mining (what G was trained on)."""
    from gan_detect.app.cli import load_config
    from gan_detect.config.validate import to_container

    raw = tiny_config("tiny_face", **{"data.hr_size": 32, "data.context": 1.3})
    module = GANDetectionModule(to_container(to_experiment_config(raw)))
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
        tmp_path / "gan.ckpt",
    )
    root = PRESETS
    other = load_config(  # the paper config: hr_size 64, context 1.0
        [root / "tiny_face_wider.yaml"],
        ["evaluate.top_k=17", "evaluate.nms_iou=0.3", "evaluate.score_fusion=geometric_mean"],
    )
    assert (other.data.hr_size, other.data.context) == (64, 1.0)
    opts = GANDetectionModule.from_checkpoint(tmp_path / "gan.ckpt").inference_options(
        other.evaluate
    )
    assert (opts.lr_size, opts.context) == (8, 1.3)
    assert (opts.top_k, opts.nms_iou, opts.score_fusion) == (17, 0.3, "geometric_mean")
