"""Inference-only rewrites of G and D: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded
into the convolution's weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same
function up to float rounding, one pass over the activations fewer (what that saves is
measured in benchmarks/README.md: ``--bench infer``, ``--bench image``). Training never
sees a folded module: inference folds a copy (``gan_detect.infer.inference.inference_variant``).

Which pairs are folded: adjacent ``(Conv2d | ConvTranspose2d, BatchNorm2d)`` children of an
``nn.Sequential`` (our G, torchvision/timm downsample paths) or of a timm ``features_only`` net
(VGG-BN trunks; children run in order there) and the
``convN``/``bnN`` attribute pairs of residual blocks (timm and torchvision ResNets). The second
rule relies on naming, so callers check the folded network against the original on a probe
input (``checked_inference_copy``, used by inference and ``propose``) rather than trusting it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["checked_inference_copy", "fold_batchnorm", "inference_copy", "is_compiled"]

# Probe check of a rewritten copy: max |output difference| allowed, relative to the outputs' scale.
PROBE_RTOL = 1e-3

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _foldable(conv: object, bn: object) -> bool:
    return (
        isinstance(conv, _CONVS)
        and isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm))  # SyncBN: eval = plain BN
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def _is_timm_feature_net(module: nn.Module) -> bool:
    """timm's ``features_only`` wrappers (a ModuleDict whose children run in order)."""
    try:
        from timm.models import FeatureDictNet
    except ImportError:  # timm is a dependency; stay usable without it
        return False
    return isinstance(module, FeatureDictNet)


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))  # type: ignore[arg-type,type-var]


def fold_batchnorm(module: nn.Module) -> int:
    """Fold eval-mode BatchNorm into the preceding convolutions of ``module``, in place.

    Each folded BatchNorm is replaced by ``nn.Identity``. Call on a copy in eval mode: the
    result no longer trains like the original (its BN statistics are gone).

    Returns:
        The number of BatchNorm layers folded.
    """
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    folded = 0
    for child in module.children():
        folded += fold_batchnorm(child)
    if isinstance(module, nn.Sequential) or _is_timm_feature_net(module):
        keys = list(module._modules)
        # A timm feature net returns some children's outputs: a conv whose output is returned
        # must keep it (folding would return the BN's output instead).
        returned = set(getattr(module, "return_layers", {}) or {})
        for a, b in zip(keys, keys[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if a not in returned and _foldable(conv, bn):
                module._modules[a] = _fold(conv, bn)  # type: ignore[arg-type,type-var]
                module._modules[b] = nn.Identity()
                folded += 1
    for i in range(1, 5):  # conv1/bn1 ... conv4/bn4 of ResNet-style blocks and stems
        owner, name = module, f"conv{i}"
        # A deep stem (timm's ``conv1 = Sequential(conv, bn, act, ..., conv)``): its last conv.
        while isinstance(getattr(owner, name, None), nn.Sequential) and len(getattr(owner, name)):
            owner = getattr(owner, name)
            name = list(owner._modules)[-1]
        conv, bn = getattr(owner, name, None), getattr(module, f"bn{i}", None)
        if _foldable(conv, bn):
            setattr(owner, name, _fold(conv, bn))  # type: ignore[arg-type,type-var]
            setattr(module, f"bn{i}", nn.Identity())
            folded += 1
    return folded


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule was compiled in place (``nn.Module.compile``): its
    compiled forward is bound to the original, so a copy would not run the copy's weights."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())


def inference_copy(
    module: nn.Module, fold_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """An eval-mode deep copy of ``module`` with BatchNorm folded and/or channels-last weights.

    Convolutions follow their weights' memory format, so inputs need no conversion. The original
    is untouched (it may keep training). Raises whatever ``copy.deepcopy`` raises for modules
    that cannot be copied, and refuses a module compiled in place (``is_compiled``); callers
    fall back to the original.
    """
    if is_compiled(module):
        raise ValueError("the model is compiled in place (trainer.compile): already optimised")
    fast = copy.deepcopy(module).eval()
    if fold_bn:
        fold_batchnorm(fast)
    if channels_last:
        fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fast


def checked_inference_copy(
    module: nn.Module,
    outputs_of: Callable[[nn.Module], Sequence[torch.Tensor]] | None,
    what: str,
    fold_bn: bool = True,
    channels_last: bool = True,
) -> nn.Module:
    """``inference_copy(module)``, checked: ``outputs_of(net)`` (a probe forward) must agree for
    the copy and ``module`` within ``PROBE_RTOL`` of their scale.

    The naming rule of ``fold_batchnorm`` is a convention, not a proof, hence the check. When
    the copy cannot be built, fails on the probe or disagrees, ``module`` itself is returned
    with a warning that starts with ``what`` (e.g. "inference") and says why. Without
    ``outputs_of`` the copy is returned unchecked.
    """
    try:
        fast = inference_copy(module, fold_bn, channels_last)
    except Exception as err:
        warnings.warn(
            f"{what} runs the model unchanged (fold_bn/channels_last skipped): it cannot be "
            f"copied ({type(err).__name__}: {err})",
            stacklevel=3,
        )
        return module
    if outputs_of is None:
        return fast
    try:
        with torch.no_grad():
            pairs = list(zip(outputs_of(module), outputs_of(fast), strict=True))
    except Exception as err:
        warnings.warn(
            f"{what} runs the model unchanged: its copy failed on a probe ({err})", stacklevel=3
        )
        return module
    for a, b in pairs:
        diff = float((a - b).abs().max())
        if diff > PROBE_RTOL * (1.0 + float(a.abs().max())):
            warnings.warn(
                f"{what} runs the model unchanged: its BatchNorm-folded/channels-last copy "
                f"changed the outputs by {diff:.3g} on a probe (set evaluate.fold_bn=false to "
                "skip folding)",
                stacklevel=3,
            )
            return module
    return fast
