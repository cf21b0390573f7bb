"""Per-submodule GAN DDP on 2 CPU processes (gloo), and mid-epoch resumable training data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from _synth import PairDataset, roi_batch, tiny_config
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from gan_detect.config import PRESETS
from gan_detect.config.validate import to_experiment_config
from gan_detect.data.batch import RoiBatch
from gan_detect.data.synthetic import write_synthetic_faces
from gan_detect.train.distributed import (
    GANDDPStrategy,
    ResumableDataLoader,
    ResumableDistributedSampler,
    SubmoduleDDP,
    make_resumable,
)
from gan_detect.train.gan_module import GANDetectionModule
from gan_detect.train.trainer import build_trainer
from gan_detect.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
EXP = PRESETS

# Runs `gan-detect fit ARGS` through the real CLI on every rank (Lightning re-executes this file
# for rank 1), with a callback that records what each rank saw and holds.
WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    from lightning.pytorch.callbacks import Callback
    import gan_detect.train.fit as T
    from gan_detect.train.callbacks import build_callbacks

    OUT = os.environ["GD_TEST_OUT"]

    def digest(tensors):
        h = hashlib.sha1()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    class Recorder(Callback):
        def __init__(self):
            self.ids = []
            self.wrapped = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.ids += [digest([batch.hr[i]])[:16] for i in range(len(batch))]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.wrapped = {k: type(w).__name__ for k, w in trainer.strategy.wrappers.items()}

        def on_fit_end(self, trainer, pl_module):
            v = pl_module.variant
            rec = {
                "rank": trainer.global_rank,
                "world": trainer.world_size,
                "ids": self.ids,
                "g": digest(v.generator.parameters()),
                "d": digest(v.discriminator.parameters()),
                "config": pl_module.hparams["config"],
                "wrapped": self.wrapped,
                "metrics": {k: float(x) for k, x in trainer.callback_metrics.items()},
            }
            with open(os.path.join(OUT, f"rank{trainer.global_rank}.json"), "w") as f:
                json.dump(rec, f)

    _fit = T.fit

    def fit(cfg, ckpt_path=None, **kw):
        return _fit(cfg, ckpt_path, callbacks=[*build_callbacks(cfg), Recorder()], **kw)

    T.fit = fit
    from gan_detect.app.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def smoke_overrides() -> list[str]:
    """experiments/smoke.yaml as key=value overrides (what a sweep could pin as fixed values)."""
    flat: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            text = json.dumps(node) if isinstance(node, list) else "null" if node is None else node
            flat.append(f"{prefix[:-1]}={text}")

    walk(OmegaConf.to_container(OmegaConf.load(EXP / "smoke.yaml")), "")
    return flat


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_faces(tmp_path_factory.mktemp("faces"), num_train=4, num_val=2, seed=3)


def data_overrides(faces: Path, tmp: Path) -> list[str]:
    return [
        f"data.root={faces}",
        f"data.cache_dir={tmp / 'cache'}",
        "data.gt_dir=null",
        "data.max_train_images=4",
        "data.max_val_images=2",
        "data.rois_per_image=16",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.precision=32-true",
        "logger.kind=csv",
    ]


FACE_VARIANTS = [v for v in sorted(VARIANTS) if VARIANTS[v].accepts_num_classes(1)]


@pytest.mark.slow
@pytest.mark.parametrize("name", FACE_VARIANTS)
def test_two_process_ddp_keeps_ranks_identical_and_shards_data(
    name: str, faces: Path, tmp_path: Path
) -> None:
    """2 gloo ranks via the CLI: same weights, disjoint shards, whole-val-set metrics, same config.

    Every variant that takes one-class data runs on the face experiment (``variant.name=...``
    stacked on it, as a sweep or an ablation would)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"
    sweep = ["optim.lr_g=0.0003", "variant.adv_weight=0.002"]  # as an agent's ${args_no_hyphens}
    args = [
        "fit",
        str(EXP / "tiny_face_wider.yaml"),
        *smoke_overrides(),
        *data_overrides(faces, tmp_path),
        f"variant.name={name}",
        f"output_dir={run}",
        "optim.grad_clip_norm=1.0",
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        *sweep,
        "logger.kind=wandb",
        "logger.mode=offline",
    ]
    env = {**os.environ, "GD_TEST_OUT": str(out), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("RANK", None)
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = GANDetectionModule(ckpt["hyper_parameters"]["config"])
    assert module.variant.name == name
    # Each trainable network had its own DDP wrapper during the training step (a generator
    # without parameters has none: there is nothing to all-reduce).
    trainable = {
        n
        for n, c in module.variant.named_children()
        if any(p.requires_grad for p in c.parameters())
    }
    assert "discriminator" in trainable
    assert r0["wrapped"] == {n: "SubmoduleDDP" for n in sorted(trainable)}
    # Gradients were all-reduced: after the G and D steps both ranks hold the same weights.
    assert r0["g"] == r1["g"] and r0["d"] == r1["d"]
    # Disjoint shards; the effective batch is the sum over ranks (2 x 8 ROIs per step).
    assert len(r0["ids"]) == len(r1["ids"]) == 32
    assert not set(r0["ids"]) & set(r1["ids"])
    # Every rank parsed the same argv: the swept values are in each rank's resolved config.
    for r in (r0, r1):
        assert r["config"]["optim"]["lr_g"] == 0.0003
        assert r["config"]["variant"]["adv_weight"] == 0.002
    assert r0["config"] == r1["config"]
    # W&B: one run for two ranks (WandbLogger creates it on rank 0 only).
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.optim.lr_g == 0.0003 and saved.variant.adv_weight == 0.002
    # The checkpoint has the single-process keys (no DDP "module." prefixes).
    assert not [k for k in ckpt["state_dict"] if ".module." in k or k.startswith("module.")]
    module.load_state_dict(ckpt["state_dict"])  # strict: same keys as a 1-process model
    # Validation SR metrics covered the whole val set: equal to a 1-process validation. (Only
    # per-ROI means compare: val/psnr_* average per-batch PSNRs, and shards batch differently.)
    from gan_detect.app.cli import load_config
    from gan_detect.train.fit import validate

    cfg = load_config(
        [EXP / "tiny_face_wider.yaml"],
        [
            *smoke_overrides(),
            *data_overrides(faces, tmp_path),
            f"variant.name={name}",
            f"output_dir={run}",
            "logger.kind=none",
        ],
    )
    single = validate(
        cfg,
        run / "checkpoints" / "last.ckpt",
        callbacks=[],
        logger=False,
        enable_progress_bar=False,
    )
    for key in ("val/mse_sr", "val/mse_bicubic", "val/cls_acc"):
        assert abs(single[key] - r0["metrics"][key]) < 1e-4, (key, single[key], r0["metrics"][key])


def _world1_trainer(raw: dict, tmp_path: Path, **kw) -> L.Trainer:
    cfg = to_experiment_config(raw)
    base = dict(
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        strategy=GANDDPStrategy(),
        devices=1,
        accelerator="cpu",
        limit_val_batches=0,
    )
    base.update(kw)
    return build_trainer(cfg, **base)


def test_strategy_in_one_process_steps_d_then_g_through_wrappers(tmp_path: Path) -> None:
    """World size 1: G and D run through SubmoduleDDP only inside the step; D frozen in G step."""
    raw = tiny_config("sod_mtgan", **{"optim.grad_clip_norm": 1.0})
    seen: list[tuple[str, bool, bool]] = []

    class Spy(GANDetectionModule):
        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            d = self.variant.discriminator
            orig = type(d.module).forward

            def fwd(mod, x):  # records whether DDP's reducer path or the bypass ran
                frozen = not any(p.requires_grad for p in mod.parameters())
                seen.append(
                    (type(self.variant.discriminator).__name__, frozen, torch.is_grad_enabled())
                )
                return orig(mod, x)

            d.module.forward = fwd.__get__(d.module)
            try:
                return super().training_step(batch, batch_idx)
            finally:
                del d.module.forward

    module = Spy(raw)
    b = roi_batch(32, num_classes=3, seed=2)
    from _synth import loader

    trainer = _world1_trainer(raw, tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(module, train_dataloaders=loader(b))
    # Per batch: D forward on cat(real, fake) with D trainable, then on SR with D frozen.
    assert seen == [("SubmoduleDDP", False, True), ("SubmoduleDDP", True, True)] * 3
    assert type(module.variant.discriminator).__name__ != "SubmoduleDDP"  # unwrapped after
    assert list(module.state_dict()) == list(GANDetectionModule(raw).state_dict())
    torch.distributed.destroy_process_group()  # Lightning's teardown keeps the group


def test_submodule_ddp_reads_attributes_of_the_wrapped_module(tmp_path: Path) -> None:
    own = not torch.distributed.is_initialized()  # Lightning leaves its group from other tests
    if own:
        torch.distributed.init_process_group("gloo", f"file://{tmp_path}/pg", rank=0, world_size=1)
    net = torch.nn.Conv2d(3, 3, 1)
    net.scale = 4  # type: ignore[assignment]
    w = SubmoduleDDP(net)
    assert w.scale == 4 and w.module is net
    with torch.no_grad():  # no autograd: bypasses the reducer, same result
        assert torch.equal(w(torch.ones(1, 3, 2, 2)), net(torch.ones(1, 3, 2, 2)))
    if own:
        torch.distributed.destroy_process_group()


# ---- resumable sampler -------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2])
def test_resumable_sampler_continues_the_interruptedlist(world: int) -> None:
    ds = PairDataset(roi_batch(20, seed=0))
    for rank in range(world):
        ref = DistributedSampler(ds, num_replicas=world, rank=rank, seed=7, drop_last=True)
        ref.set_epoch(3)
        full = list(ref)
        s = ResumableDistributedSampler(ds, num_replicas=world, rank=rank, seed=7, drop_last=True)
        s.set_epoch(3)
        assert list(s) == full  # same order as the parent when not resumed
        s.consumed = 4
        state = s.state_dict()
        fresh = ResumableDistributedSampler(
            ds, num_replicas=world, rank=rank, seed=7, drop_last=True
        )
        fresh.load_state_dict(state)
        fresh.set_epoch(3)  # Lightning sets the (same) epoch again on resume
        assert len(fresh) == len(full)  # batch counting unchanged
        assert list(fresh) == full[4:]
        assert list(fresh) == full  # the skip applies to one pass only
        fresh.set_epoch(4)
        ref.set_epoch(4)
        assert list(fresh) == list(ref)


def test_resumable_sampler_rejects_another_seed() -> None:
    ds = PairDataset(roi_batch(8, seed=0))
    s = ResumableDistributedSampler(ds, num_replicas=1, rank=0, seed=1)
    with pytest.raises(ValueError, match="seed"):
        s.load_state_dict({"epoch": 0, "seed": 2, "consumed": 0})


def test_make_resumable_keeps_loader_settings() -> None:
    ds = PairDataset(roi_batch(16, seed=0))
    dl = torch.utils.data.DataLoader(
        ds,
        batch_size=4,
        sampler=DistributedSampler(ds, 1, 0, shuffle=True, seed=5, drop_last=True),
        collate_fn=RoiBatch.collate,
        drop_last=True,
    )
    r = make_resumable(dl)
    assert isinstance(r, ResumableDataLoader) and isinstance(r.sampler, ResumableDistributedSampler)
    assert (r.batch_size, r.drop_last, r.collate_fn, r.sampler.seed) == (
        4,
        True,
        RoiBatch.collate,
        5,
    )
    assert [b.lr.sum().item() for b in r] == [b.lr.sum().item() for b in dl]
    assert make_resumable(r) is r
    r.mark_consumed(2)
    assert r.state_dict()["sampler"]["consumed"] == 8


# ---- interrupted and resumed runs ----------------------------------------------------------------
class _Order(L.Callback):
    """Fingerprints every trained sample; optionally interrupts before a global batch."""

    def __init__(self, stop_at: int | None = None, how: str = "sigterm") -> None:
        self.seen: list[float] = []
        self.stop_at, self.how = stop_at, how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        n = len(self.seen) // len(batch)
        if n == self.stop_at:
            if self.how == "sigterm":  # as SLURM sends it; Lightning's handler sets a flag
                signal.raise_signal(signal.SIGTERM)
            else:  # a hard crash: only the periodic checkpoint survives
                raise RuntimeError("simulated crash")
        self.seen += [round(float(x), 5) for x in batch.hr.flatten(1).sum(1)]


def _resume_run(raw: dict, root: Path, order: _Order, every_n: int, ckpt: str | None = None):
    from _synth import loader

    from gan_detect.train.callbacks import ResumeCallback

    L.seed_everything(0)
    module = GANDetectionModule(raw)
    dl = make_resumable(loader(roi_batch(32, num_classes=3, seed=5), batch_size=8))
    cbs = [order, ResumeCallback(root, every_n_batches=every_n)]
    t = build_trainer(
        to_experiment_config(raw),
        logger=False,
        callbacks=cbs,
        enable_checkpointing=False,
        default_root_dir=str(root),
        max_epochs=2,
        limit_val_batches=0,
    )
    t.fit(module, train_dataloaders=dl, ckpt_path=ckpt)
    return module


@pytest.mark.parametrize(
    ("how", "every_n", "stop_at", "done"),
    [("sigterm", 0, 5, 6), pytest.param("crash", 3, 7, 7, marks=pytest.mark.slow)],
)
def test_run_interrupted_mid_epoch_resumes_to_the_same_weights(
    how: str, every_n: int, stop_at: int, done: int, tmp_path: Path
) -> None:
    """4 batches per epoch, 2 epochs; interrupted in epoch 2 and resumed from last.ckpt.

    ``done`` global batches are in last.ckpt: SIGTERM before batch 5 (0-based) saves after it
    (the signalled batch finishes); a crash before batch 7 with a checkpoint every 3 batches of
    an epoch keeps the one written after batch 6 (epoch 2, third batch).
    """
    raw = tiny_config("sod_mtgan", **{"optim.milestones": [1], "optim.grad_clip_norm": 1.0})
    ref = _Order()
    full = _resume_run(raw, tmp_path / "full", ref, every_n=0)
    first = _Order(stop_at=stop_at, how=how)
    with pytest.raises((SystemExit, RuntimeError)):
        _resume_run(raw, tmp_path / "part", first, every_n=every_n)
    ckpt = tmp_path / "part" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["sampler"]
    assert state == {"epoch": 1, "seed": 0, "consumed": (done - 4) * 8}
    L.seed_everything(123)  # another process state must not matter
    second = _Order()
    resumed = _resume_run(raw, tmp_path / "part", second, every_n=every_n, ckpt=str(ckpt))
    # Neither re-used nor skipped: the two parts together saw exactly the uninterrupted order.
    assert first.seen[: done * 8] + second.seen == ref.seen
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_plain_module_error_names_strategies_that_exist() -> None:
    """The advice for a module without a ``variant`` names strategies Lightning knows."""
    import re

    from lightning.pytorch.strategies import StrategyRegistry

    strategy = GANDDPStrategy()
    strategy._lightning_module = L.LightningModule()  # what connect() would set
    with pytest.raises(TypeError, match="variant") as err:
        strategy._variant()
    named = re.findall(r"strategy=['\"]?(\w+)", str(err.value))
    assert named and all(n in StrategyRegistry for n in named), named
