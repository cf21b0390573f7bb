"""In-memory ROI pairs and tiny configs for tests (no files, no downloads)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gan_detect.data.batch import RoiBatch
from gan_detect.data.synthetic import SHAPE_CATEGORIES
from gan_detect.variants import VARIANTS, get_variant_class

TINY_VARIANT: dict[str, Any] = {
    "g_channels": 8,
    "g_res_blocks": 1,
    "g_upsample_channels": 16,
    "g_refine_channels": 16,
    "backbone": "test_resnet",
    "pretrained": False,
}


# The class counts tests try: 1 (faces, WIDER FACE layout) and the generated shapes' categories
# (objects, COCO layout), so in-memory and on-disk tests share one count.
CLASS_COUNTS = (1, len(SHAPE_CATEGORIES))


def class_counts(variant: str) -> list[int]:
    """The counts of ``CLASS_COUNTS`` the variant accepts (``accepts_num_classes``)."""
    cls = get_variant_class(variant)
    counts = [n for n in CLASS_COUNTS if cls.accepts_num_classes(n)]
    if not counts:
        raise ValueError(f"variant {variant!r} accepts none of {CLASS_COUNTS} classes")
    return counts


def default_num_classes(variant: str) -> int:
    """The most classes the variant accepts among ``CLASS_COUNTS`` (multi-class when it can)."""
    return max(class_counts(variant))


def variant_cases() -> list[tuple[str, int]]:
    """Every (registered variant, class count it accepts) pair, for ``parametrize``."""
    return [(v, n) for v in sorted(VARIANTS) for n in class_counts(v)]


def data_name(num_classes: int) -> str:
    """Faces are WIDER FACE (one class); several classes are COCO."""
    return "wider_face" if num_classes == 1 else "coco"


def tiny_config(
    variant: str = "tiny_face", num_classes: int | None = None, **over: Any
) -> dict[str, Any]:
    """Raw config containers for a tiny CPU experiment (no data on disk needed)."""
    n = default_num_classes(variant) if num_classes is None else num_classes
    cfg: dict[str, Any] = {
        "variant": {"name": variant, **TINY_VARIANT},
        "data": {
            "name": data_name(n),
            "root": "unused",
            "num_classes": n,
            "hr_size": 32,
            "batch_size": 8,
        },
        "optim": {"lr_g": 1e-3, "lr_d": 1e-3, "milestones": [100]},
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
        },
        "logger": {"kind": "none"},
        "output_dir": "unused",
    }
    for k, v in over.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return cfg


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: blobs and edges, so SR has structure to recover."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.zeros(n, 3, size, size)
    for i in range(n):
        img = torch.rand(3, 1, 1, generator=g) * 0.6 - 0.3 + torch.zeros(3, size, size)
        for _ in range(4):
            cx, cy, r = torch.rand(3, generator=g)
            col = torch.rand(3, 1, 1, generator=g) * 2 - 1
            blob = (((xx - cx) ** 2 + (yy - cy) ** 2) < (0.05 + 0.2 * r) ** 2).float()
            img = img * (1 - blob) + col * blob
        out[i] = img
    # A light blur so "HR" is a natural-ish image, not aliased hard edges.
    k = torch.tensor([1.0, 2.0, 1.0])
    k2 = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), k2, groups=3).clamp(-1, 1)


def block_images(n: int, size: int, cell: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: rectangles aligned to a ``cell``-pixel grid.

    Their LR versions are exact cell averages, so sharp edges are recoverable: a generator that
    learns this prior beats bicubic up-sampling, which blurs every edge.
    """
    g = torch.Generator().manual_seed(seed)
    cells = size // cell
    out = torch.zeros(n, 3, size, size)
    for i in range(n):
        img = (torch.rand(3, 1, 1, generator=g) * 2 - 1).expand(3, size, size).clone()
        for _ in range(5):
            x0, y0 = torch.randint(0, cells, (2,), generator=g).tolist()
            w, h = torch.randint(1, cells // 2 + 1, (2,), generator=g).tolist()
            img[:, y0 * cell : (y0 + h) * cell, x0 * cell : (x0 + w) * cell] = (
                torch.rand(3, 1, 1, generator=g) * 2 - 1
            )
        out[i] = img
    return out


def roi_batch(
    n: int,
    hr_size: int = 32,
    scale: int = 4,
    num_classes: int = 1,
    seed: int = 0,
    blocks: bool = False,
) -> RoiBatch:
    hr = block_images(n, hr_size, scale, seed) if blocks else smooth_images(n, hr_size, seed)
    lr = F.interpolate(
        hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False
    ).clamp(-1, 1)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, num_classes + 1, (n,), generator=g)
    box_targets = torch.randn(n, 4, generator=g) * (labels > 0).float()[:, None]
    src_sizes = torch.rand(n, 2, generator=g) * 60 + 4
    return RoiBatch(lr, hr, labels, box_targets, src_sizes)


class PairDataset(Dataset[RoiBatch]):
    def __init__(self, batch: RoiBatch) -> None:
        self.b = batch

    def __len__(self) -> int:
        return len(self.b)

    def __getitem__(self, i: int) -> RoiBatch:
        b = self.b
        s = slice(i, i + 1)
        return RoiBatch(b.lr[s], b.hr[s], b.labels[s], b.box_targets[s], b.src_sizes[s])


def loader(batch: RoiBatch, batch_size: int = 8, shuffle: bool = True, seed: int = 0) -> DataLoader:
    ds = PairDataset(batch)
    sampler = DistributedSampler(
        ds, num_replicas=1, rank=0, shuffle=shuffle, seed=seed, drop_last=True
    )
    return DataLoader(
        ds, batch_size=batch_size, sampler=sampler, collate_fn=RoiBatch.collate, drop_last=True
    )


def fake_command(name: str, fn: Any) -> Any:
    """A stand-in command module for ``gan_detect.app.cli.COMMANDS``: ``fn(words) -> int`` gets
    the words after the command name."""
    import types

    from gan_detect.app.commands._common import add_command_parser

    def add_parser(subparsers: Any) -> Any:
        p = add_command_parser(subparsers, name, "test", "a test command")
        p.add_argument("words", nargs="*")
        return p

    return types.SimpleNamespace(
        NAME=name, SUMMARY="test", add_parser=add_parser, run=lambda args: fn(args.words)
    )
