"""The engine: D step then G step, learning, checkpoints and exact resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _synth import default_num_classes, loader, roi_batch, tiny_config

from gan_detect.engine import GANDetectionModule
from gan_detect.schema import to_experiment_config
from gan_detect.training import build_trainer, load_module
from gan_detect.variants import VARIANTS


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


class _SpyModule(GANDetectionModule):
    """Records parameter snapshots around each optimiser step."""

    def configure_optimizers(self):
        opts, scheds = super().configure_optimizers()
        self.events: list[tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        for tag, opt in zip(self._roles(), opts, strict=True):
            orig = opt.step

            def step(*a, _orig=orig, _tag=tag, **k):
                before = self._snap()
                out = _orig(*a, **k)
                self.events.append((_tag, before, self._snap()))
                return out

            opt.step = step
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


def test_short_fit_beats_bicubic_on_held_out_pairs(tmp_path: Path) -> None:
    """Learning is real: held-out SR MSE ends below the bicubic MSE (fixed seed)."""
    raw = tiny_config(
        "tiny_face",
        **{
            "variant.g_channels": 16,
            "variant.g_res_blocks": 2,
            "variant.g_upsample_channels": 32,
            "variant.g_refine_channels": 32,
            "variant.g_bicubic_skip": True,
            "optim.lr_g": 2e-3,
            "optim.warmup_epochs": 7,
        },
    )
    module = GANDetectionModule(raw)
    train, held = roi_batch(128, seed=1, blocks=True), roi_batch(32, seed=99, blocks=True)
    trainer = _trainer(raw, tmp_path, max_epochs=8, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader(train, batch_size=16))
    module.eval()
    with torch.no_grad():
        sr = module.variant.generator(held.lr).sr
    bic = F.interpolate(held.lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    mse_sr, mse_bic = F.mse_loss(sr, held.hr).item(), F.mse_loss(bic, held.hr).item()
    assert mse_sr < 0.9 * mse_bic, (mse_sr, mse_bic)


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
    loaded = load_module(tmp_path / "last.ckpt")
    for (k, a), (_, c) in zip(
        module.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, c), k
