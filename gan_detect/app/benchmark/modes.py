"""The ways of running the networks that benchmarks compare: precision (bf16 autocast), memory
format (channels-last), BatchNorm folding (inference) and ``torch.compile``, and their grid
from the shared options."""

from __future__ import annotations

import argparse
import copy
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from gan_detect.variants import GANVariant


@dataclass
class Mode:
    """One way of running the networks: precision, memory format, BN folding, torch.compile."""

    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = False  # inference only: BatchNorm folded into the convs

    @property
    def name(self) -> str:
        parts = [self.precision]
        parts += ["fold"] if self.fold_bn else []
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        return "+".join(parts)

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        """bf16 autocast on ``device`` for the bf16 precision, else nothing."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def prepare(self, variant: GANVariant) -> GANVariant:
        """A deep copy of ``variant`` set up for this mode (the caller's copy is untouched)."""
        from gan_detect.models.fusion import fold_batchnorm

        v = copy.deepcopy(variant)
        if self.fold_bn:
            fold_batchnorm(v.eval())
        if self.channels_last:
            v = v.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compile:
            # Compiled modules share the parameters; the loss code calls them as before.
            v.generator = torch.compile(v.generator)  # type: ignore[assignment]
            v.discriminator = torch.compile(v.discriminator)  # type: ignore[assignment]
        return v

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in this mode's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _switch(value: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def modes_from_args(args: argparse.Namespace, fold: bool = False) -> list[Mode]:
    """The grid ``--precision`` x ``--channels-last`` x ``--fold-bn`` (inference) x ``--compile``.

    The first mode is the reference the others' speed-ups and differences are taken against.
    """
    folds = _switch(args.fold_bn) if fold else [False]
    return [
        Mode(p, cl, comp, fb)
        for comp in _switch(args.compile)
        for p in args.precision
        for fb in folds
        for cl in _switch(args.channels_last)
    ]
