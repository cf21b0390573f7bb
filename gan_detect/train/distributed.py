"""Scale-out pieces: per-submodule DDP for the GAN, and a sampler/loader that resume mid-epoch.

Why a custom strategy (docs/design.md, D3 and §3): Lightning's
``DDPStrategy`` wraps the whole LightningModule in one ``DistributedDataParallel``. In the G step
``toggled_optimizer`` freezes D, so D's parameters never receive gradients and the reducer fails
("parameters that were not used in producing the loss"). :class:`GANDDPStrategy` instead wraps
``variant.generator`` and ``variant.discriminator`` in their own DDP (as OpenMMLab's
``MMSeparateDistributedDataParallel`` does) and installs the wrappers only while a training step
runs, so checkpoints, validation and inference see the plain modules (no ``module.`` keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook, _sync_module_states
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

# Children of ``module.variant`` that get their own DDP wrapper when present and trainable.
GAN_SUBMODULES: tuple[str, ...] = ("generator", "discriminator", "detector")


class SubmoduleDDP(DistributedDataParallel):
    """DDP around one GAN network that steps aside when it has nothing to synchronise.

    A forward with autograd off, or with every parameter frozen (D inside the G step, under
    ``toggled_optimizer``), calls the wrapped module directly: the reducer is not armed for a
    backward that would never produce gradients, and no buffer broadcast runs between two
    forwards of one backward (the BatchNorm "modified by an inplace operation" failure).
    Unknown attributes (``generator.scale``...) are read from the wrapped module.
    """

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled() or not any(
            p.requires_grad for p in self.module.parameters()
        ):
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


class GANDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that wraps each GAN network separately (``trainer.strategy=ddp``).

    Args:
        submodules: names of ``module.variant`` children to wrap (those absent or without
            trainable parameters are skipped; their states are broadcast from rank 0 once).
        **kwargs: forwarded to ``DDPStrategy`` and from there to every ``DistributedDataParallel``
            (``find_unused_parameters``, ``broadcast_buffers``, ``static_graph``...).
    """

    strategy_name = "ddp_gan"

    def __init__(self, *args: Any, submodules: tuple[str, ...] = GAN_SUBMODULES, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._submodule_names = tuple(submodules)
        self._wrappers: dict[str, SubmoduleDDP] = {}
        self._swapped = False

    # ---- wrapping ----------------------------------------------------------------------------
    def _variant(self) -> nn.Module:
        lm = self.lightning_module
        variant = getattr(lm, "variant", None)
        if not isinstance(variant, nn.Module):
            raise TypeError(
                f"{type(self).__name__} needs a LightningModule with a `variant` nn.Module holding "
                f"{self._submodule_names}; got {type(lm).__name__}. For a module of one network "
                "use Lightning's own DDP: strategy='ddp' (or DDPStrategy()) passed to "
                "lightning.Trainer directly, or trainer.strategy=ddp_find_unused_parameters_false "
                "in a config (trainer.strategy=ddp names this GAN strategy there)"
            )
        return variant

    def configure_ddp(self) -> None:
        """Wrap each trainable GAN network in its own DDP; ``self.model`` stays unwrapped."""
        variant = self._variant()
        device_ids = self.determine_ddp_device_ids()
        self._wrappers = {}
        rest: list[nn.Module] = []
        for name, child in variant.named_children():
            trainable = any(p.requires_grad for p in child.parameters())
            if name in self._submodule_names and trainable:
                # DDP's constructor broadcasts the module's parameters and buffers from rank 0.
                self._wrappers[name] = SubmoduleDDP(
                    child, device_ids=device_ids, **self._ddp_kwargs
                )
            else:
                rest.append(child)
        if not self._wrappers:
            raise ValueError(f"none of {self._submodule_names} found in the variant to wrap")
        for child in rest:
            _sync_module_states(child)
        if self.root_device.type == "cuda" and self._ddp_comm_hook is not None:
            for w in self._wrappers.values():
                _register_ddp_comm_hook(
                    model=w,
                    ddp_comm_state=self._ddp_comm_state,
                    ddp_comm_hook=self._ddp_comm_hook,
                    ddp_comm_wrapper=self._ddp_comm_wrapper,
                )

    @property
    def wrappers(self) -> dict[str, SubmoduleDDP]:
        """The DDP wrappers by submodule name (empty outside fitting)."""
        return dict(self._wrappers)

    @contextmanager
    def wrapped(self) -> Iterator[None]:
        """Route ``variant.<name>`` through its DDP wrapper inside the block."""
        if not self._wrappers or self._swapped:
            yield
            return
        modules = self._variant()._modules
        originals = {name: modules[name] for name in self._wrappers}
        modules.update(self._wrappers)
        self._swapped = True
        try:
            yield
        finally:
            modules.update(originals)
            self._swapped = False

    @contextmanager
    def _unwrapped(self) -> Iterator[None]:
        if not self._swapped:
            yield
            return
        modules = self._variant()._modules
        for name, w in self._wrappers.items():
            modules[name] = w.module
        try:
            yield
        finally:
            modules.update(self._wrappers)

    # ---- hooks -------------------------------------------------------------------------------
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.wrapped():
            return super().training_step(*args, **kwargs)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        # A checkpoint written from inside a training step must not carry "module." keys.
        with self._unwrapped():
            return super().lightning_module_state_dict()

    def on_validation_start(self) -> None:
        """Give every rank rank 0's BatchNorm statistics, so sharded validation is one model."""
        super().on_validation_start()
        lm = self.lightning_module
        if lm is None or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() > 1:
            for buf in lm.buffers():
                dist.broadcast(buf.data, src=0)

    def on_exception(self, exception: BaseException) -> None:
        msg = str(exception)
        if "finished reduction in the prior iteration" in msg or "not used in producing" in msg:
            exception.args = (
                f"{msg}\n[gan_detect] a GAN network has parameters that got no gradient in a step "
                "(a head unused by the loss?). Set trainer.find_unused_parameters=true as an "
                "escape hatch, or make the loss touch every parameter.",
            )

    def teardown(self) -> None:
        self._wrappers = {}
        self._swapped = False
        super().teardown()


# ---- mid-epoch resumable data ----------------------------------------------------------------
class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after the samples already consumed.

    The order is the parent's (seed + epoch permutation, padded, ``rank::world`` shard); resuming
    only drops the first ``consumed`` indices of this rank's shard, once. ``len()`` stays the full
    shard, so Lightning's batch counting is unchanged.
    """

    def __init__(self, dataset: Dataset[Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.consumed = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0  # the skip applies to one pass only
        return iter(indices[skip:])

    def state_dict(self) -> dict[str, int]:
        """Epoch, seed and samples of this rank's shard consumed in the epoch."""
        return {"epoch": int(self.epoch), "seed": int(self.seed), "consumed": int(self.consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != int(self.seed):
            raise ValueError(
                f"resumed sampler seed {state['seed']} differs from the configured {self.seed}: "
                "the resumed run would not see the interrupted run's order"
            )
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self._skip = min(self.consumed, self.num_samples)


class ResumableDataLoader(DataLoader):  # type: ignore[type-arg]
    """A ``DataLoader`` whose state (the sampler's) Lightning saves in checkpoints.

    Lightning stores ``state_dict()`` of stateful train loaders under ``loops.fit_loop`` and
    restores it before iterating a resumed epoch. It pre-fetches a batch, so the loader cannot
    count consumption itself: :class:`~gan_detect.train.fit.ResumeCallback` sets
    ``sampler.consumed`` from the batch index after each finished batch.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableDistributedSampler):
            return {}
        return {"sampler": sampler.state_dict(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        sampler = self.sampler
        if not isinstance(sampler, ResumableDistributedSampler):
            raise TypeError(
                "checkpoint has sampler state but this loader's sampler is not resumable"
            )
        if state["batch_size"] != self.batch_size:
            raise ValueError(
                f"resuming mid-epoch needs the same per-rank batch size: checkpoint "
                f"{state['batch_size']}, now {self.batch_size}"
            )
        sampler.load_state_dict(state["sampler"])

    def mark_consumed(self, batches: int) -> None:
        """Record that ``batches`` batches of the current epoch have been trained on."""
        if isinstance(self.sampler, ResumableDistributedSampler) and self.batch_size is not None:
            self.sampler.consumed = batches * self.batch_size


def make_resumable(loader: DataLoader[Any]) -> DataLoader[Any]:
    """Rebuild a train loader with a ``DistributedSampler`` as a :class:`ResumableDataLoader`.

    Loaders without a ``DistributedSampler`` (or already resumable) are returned unchanged.
    """
    s = loader.sampler
    if isinstance(loader, ResumableDataLoader) or type(s) is not DistributedSampler:
        return loader
    sampler = ResumableDistributedSampler(
        loader.dataset,
        num_replicas=s.num_replicas,
        rank=s.rank,
        shuffle=s.shuffle,
        seed=s.seed,
        drop_last=s.drop_last,
    )
    sampler.set_epoch(s.epoch)
    return ResumableDataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
    )
