"""``gan-detect export``: a trained run's re-scorer (G + D) as ONNX, checked on real crops.

The graph, the sidecar and the check are :mod:`gan_detect.infer.onnx_export`; this module finds
the run's checkpoint, its class names and the images the check crops, and prints the result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gan_detect.utils.errors import InputError

# Real photos the check crops when --images is not given: evenly spread over the shared data's
# WIDER FACE val images (every event, not the first one's crowd only).
CHECK_IMAGES = Path("widerface") / "WIDER_val" / "images"
DEFAULT_CHECK_IMAGES = 8
CROPS_PER_IMAGE = 32
EXPORT_DIR = "export"


def resolve_run(run: str | Path) -> tuple[Path, Path]:
    """``(GAN checkpoint, run folder)`` of RUN: a run folder (its ``checkpoints/last.ckpt``, as
    ``evaluate`` takes) or a GAN checkpoint file (its run folder: the one above
    ``checkpoints/``, else its own folder).

    Raises:
        FileNotFoundError: RUN does not exist.
        InputError: RUN is a folder without ``checkpoints/last.ckpt``.
    """
    path = Path(run)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise InputError(
                f"{path}: no checkpoints/last.ckpt, so not a trained run folder (give the "
                "output_dir of `gan-detect fit` or the demo, or a GAN .ckpt file)"
            )
        return ckpt, path
    if path.is_file():
        return path, path.parent.parent if path.parent.name == "checkpoints" else path.parent
    raise FileNotFoundError(f"no such run folder or checkpoint: {path}")


def class_names_of(run_dir: Path, cfg: Any, count: int) -> list[str]:
    """The run's class names: its ``pipeline.pt``'s (the demo writes one), else its
    DataModule's (COCO reads them from the annotation file), else numbered 1..C with a note."""
    from gan_detect.infer.pipeline import PIPELINE_FILE
    from gan_detect.utils.checkpoints import load_checkpoint

    pipe = run_dir / PIPELINE_FILE
    if pipe.is_file():
        names = load_checkpoint(pipe, expect="pipeline").get("class_names")
        if isinstance(names, list) and len(names) == count:
            return [str(n) for n in names]
    try:
        from gan_detect.data import build_datamodule

        names = build_datamodule(cfg.data, scale=int(cfg.variant.scale)).class_names()
        if len(names) == count:
            return [str(n) for n in names]
    except (InputError, OSError) as err:
        print(f"export: class names not readable ({err}); numbered 1..{count}", file=sys.stderr)
    return ["face"] if count == 1 else [str(i) for i in range(1, count + 1)]


def check_images(images: Sequence[str] | None, n: int = DEFAULT_CHECK_IMAGES) -> list[Path]:
    """The images the check crops: ``n`` spread evenly over ``images`` (files, folders,
    globs), else over the shared data's real WIDER FACE val photos.

    Raises:
        InputError: no images given and no shared data folder; or none found.
    """
    from gan_detect.app.image_inputs import expand_inputs
    from gan_detect.data.paths import shared_data_dir

    if images:
        found = expand_inputs(images)
    else:
        root = shared_data_dir()
        folder = None if root is None else root / CHECK_IMAGES
        if folder is None or not folder.is_dir():
            raise InputError(
                "no real images to check the export on: give --images PATH... (or set "
                "GAN_DETECT_DATA to the shared data folder, which holds WIDER FACE val photos)"
            )
        found = sorted(folder.rglob("*.jpg"))
    if not found:
        raise InputError(f"no images found in {' '.join(images or [])} to check the export on")
    step = max(1, len(found) // n)
    return found[::step][:n]


def run_export(
    run: str | Path,
    out: str | Path | None = None,
    opset: int | None = None,
    exporter: str = "dynamo",
    images: Sequence[str] | None = None,
    tolerance: float | None = None,
) -> Any:
    """Export RUN's re-scorer; returns :class:`~gan_detect.infer.onnx_export.OnnxExport`.

    Raises:
        OnnxMismatchError: onnxruntime and PyTorch differ by more than ``tolerance``.
    """
    ckpt, run_dir = resolve_run(run)  # first: a wrong RUN is said before torch loads
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise InputError(
            f"export needs onnx and onnxruntime ({err}): pip install onnx onnxruntime"
        ) from None
    from gan_detect.infer.inference import inference_options
    from gan_detect.infer.onnx_export import (
        DEFAULT_OPSET,
        DEFAULT_TOLERANCE,
        check_export_options,
        export_rescorer,
        num_classes,
        real_crops,
    )
    from gan_detect.variants import GANVariant

    opset = DEFAULT_OPSET if opset is None else opset
    check_export_options(opset, exporter)
    paths = check_images(images)  # before loading: a missing image folder fails fast
    variant = GANVariant.from_checkpoint(ckpt)
    cfg = variant.run_config
    assert cfg is not None  # from_checkpoint sets it
    opts = inference_options(cfg)  # LR size and context of G's training ROIs, as predict
    names = class_names_of(run_dir, cfg, num_classes(variant))
    crops = real_crops(paths, opts.lr_size, variant.scale, opts.context, CROPS_PER_IMAGE)
    source = {
        "images": [str(p) for p in paths],
        "crops_per_image": CROPS_PER_IMAGE,
        "boxes": "random, seed 0, sides log-uniform 8 px to half the shorter image side",
        "checkpoint": str(ckpt),
    }
    return export_rescorer(
        variant,
        Path(out) if out is not None else run_dir / EXPORT_DIR,
        crops,
        names,
        opset=opset,
        exporter=exporter,
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
        context=opts.context,
        source=source,
    )


def run_cli(args: argparse.Namespace) -> int:
    """``gan-detect export``: 0 when written, 1 when onnxruntime disagrees (one line)."""
    try:
        res = run_export(
            args.run_dir, args.out, args.opset, args.exporter, args.images, args.tolerance
        )
    except Exception as err:
        # Looked up, not imported: a wrong RUN fails before onnx_export (and torch) load, and
        # then cannot be a mismatch.
        module = sys.modules.get("gan_detect.infer.onnx_export")
        if module is None or not isinstance(err, module.OnnxMismatchError):
            raise
        print(f"gan-detect export: error: {err}", file=sys.stderr)
        return 1
    info = res.info
    print(
        f"{info['variant']} re-scorer ({info['exporter']}, opset {info['opset']}, input "
        f"N x 3 x {info['input']['lr_size']} x {info['input']['lr_size']}): {res.onnx}"
    )
    print(f"sidecar: {res.sidecar}")
    print(
        f"onnxruntime vs PyTorch on {res.crops} real crops: max abs diff {res.max_abs_diff:.3g} "
        f"(tolerance {info['check']['tolerance']:g})"
    )
    return 0
