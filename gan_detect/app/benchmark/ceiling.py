"""The machine's own ceiling, measured next to a benchmark: a big fp32 matmul, one 3x3 conv of
G's width, and the network's heaviest conv shape, each conv in the better memory format.

A loaded machine then shows up as a low ceiling, not as a slow program, and the fractions
(``achieved_gflops`` / ceiling) stay comparable across machines and loads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gan_detect.app.benchmark.common import best_of


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn()`` (``torch.utils.flop_counter``: convs, matmuls, backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def heaviest_conv(fn: Callable[[], Any]) -> dict[str, Any] | None:
    """The convolution shape that carries the most FLOPs in one call of ``fn()``.

    A global forward hook records each ``nn.Conv2d`` call's (input shape, channels, kernel,
    stride, padding, groups); FLOPs are summed over calls of the same shape (G's nine refinement
    convs count together). Returns a spec for :func:`machine_ceiling`, or None without convs.
    """
    totals: dict[tuple[Any, ...], int] = {}

    def hook(mod: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        if not isinstance(mod, nn.Conv2d):
            return
        key = (
            tuple(inp[0].shape),
            mod.in_channels,
            mod.out_channels,
            mod.kernel_size,
            mod.stride,
            mod.padding,
            mod.groups,
        )
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        totals[key] = totals.get(key, 0) + 2 * k * out.numel()

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
    if not totals:
        return None
    key = max(totals, key=lambda k: totals[k])
    shape, cin, cout, ks, stride, pad, groups = key
    return {
        "input": list(shape),
        "in_channels": cin,
        "out_channels": cout,
        "kernel": list(ks),
        "stride": list(stride),
        "padding": list(pad),
        "groups": groups,
        "share_of_conv_flops": round(totals[key] / sum(totals.values()), 3),
    }


def _conv_gflops(conv: nn.Conv2d, x: torch.Tensor, reps: int) -> dict[str, float]:
    """GFLOP/s of ``conv(x)`` in the contiguous (NCHW) and channels-last (NHWC) formats."""
    flops = count_flops(lambda: conv(x))
    with torch.no_grad():
        nchw = flops / best_of(lambda: conv(x), reps) / 1e9
        conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x_cl = x.contiguous(memory_format=torch.channels_last)
        nhwc = flops / best_of(lambda: conv_cl(x_cl), reps) / 1e9
    return {"contiguous": nchw, "channels_last": nhwc}


def machine_ceiling(
    channels: int,
    spatial: int,
    batch: int = 64,
    matmul_n: int = 2048,
    reps: int = 3,
    heaviest: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """GFLOP/s ceilings measured now: ``matmul_gflops`` (``matmul_n``-square fp32),
    ``conv_gflops`` (3x3, ``channels`` in and out, ``batch`` x ``spatial``^2, no grad) and, with
    ``heaviest`` (from :func:`heaviest_conv`), ``heaviest_conv_gflops``: the speed the whole
    network would reach if every layer ran like its main one."""
    dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(dev)
    x = torch.randn(batch, channels, spatial, spatial, device=dev)
    with torch.no_grad():
        mm_s = best_of(lambda: a @ b, reps)
    lr = _conv_gflops(conv, x, reps)
    out: dict[str, Any] = {
        "matmul_gflops": round(2 * matmul_n**3 / mm_s / 1e9, 1),
        "conv_gflops": round(max(lr.values()), 1),
        "conv_gflops_by_format": {k: round(v, 1) for k, v in lr.items()},
        "conv_shape": [batch, channels, spatial, spatial],
    }
    if heaviest is not None:
        hconv = nn.Conv2d(
            heaviest["in_channels"],
            heaviest["out_channels"],
            tuple(heaviest["kernel"]),
            tuple(heaviest["stride"]),
            tuple(heaviest["padding"]),
            groups=heaviest["groups"],
        ).to(dev)
        hv = _conv_gflops(hconv, torch.randn(*heaviest["input"], device=dev), reps)
        out["heaviest_conv_gflops"] = round(max(hv.values()), 1)
        out["heaviest_conv_gflops_by_format"] = {k: round(v, 1) for k, v in hv.items()}
        out["heaviest_conv"] = heaviest
    return out


def best_ceiling(*ceilings: dict[str, Any]) -> dict[str, Any]:
    """Key-wise best of ceilings measured before and after a run (load changes within seconds)."""
    out = dict(ceilings[0])
    for c in ceilings[1:]:
        for k in ("matmul_gflops", "conv_gflops", "heaviest_conv_gflops"):
            if k in out and k in c:
                out[k] = max(out[k], c[k])
        for k in ("conv_gflops_by_format", "heaviest_conv_gflops_by_format"):
            if k in out and k in c:
                out[k] = {f: max(v, c[k].get(f, v)) for f, v in out[k].items()}
    out["measured"] = len(ceilings)
    return out


def ceiling_fields(
    ceiling: dict[str, Any], flops_per_item: float, items_per_s: float
) -> dict[str, Any]:
    """Achieved GFLOP/s (FLOPs per item x items/s) and its fraction of each measured ceiling."""
    achieved = flops_per_item * items_per_s / 1e9
    out = {
        "gflop_per_item": round(flops_per_item / 1e9, 4),
        "achieved_gflops": round(achieved, 1),
        "fraction_of_conv_ceiling": round(achieved / ceiling["conv_gflops"], 3),
        "fraction_of_matmul_ceiling": round(achieved / ceiling["matmul_gflops"], 3),
        "ceiling": ceiling,
    }
    if "heaviest_conv_gflops" in ceiling:
        out["fraction_of_heaviest_conv"] = round(achieved / ceiling["heaviest_conv_gflops"], 3)
    return out
