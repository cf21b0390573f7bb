"""Image in, boxes out: a trained detector + GAN refiner as one callable, and ``gan-detect predict``.

A *pipeline file* (``pipeline.pt``) bundles the detector and GAN weights with their configs,
label names and inference options: it is all ``predict`` needs. It is read with
``torch.load(..., weights_only=True)``, so a pipeline file cannot run code on the user's machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torch import Tensor

from gan_detect.checkpoints import atomic_torch_save, load_checkpoint
from gan_detect.detector.fastestdet import FastestDetDetector
from gan_detect.detector.module import DetectorModule
from gan_detect.detector.retinaface import RetinaFaceDetector
from gan_detect.engine import GANDetectionModule, inference_options
from gan_detect.inference import InferenceOptions, refine_detections_batch
from gan_detect.schema import to_experiment_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
PIPELINE_FILE = "pipeline.pt"
# ``detector_ckpt`` value (and pipeline-file entry) naming the built-in pretrained face detector.
BUILTIN_RETINAFACE = "retinaface"


@dataclass
class Detections:
    """Boxes found in one image (numpy, in the input image's pixels)."""

    boxes: np.ndarray  # (D, 4) float32 xyxy
    scores: np.ndarray  # (D,) float32
    labels: np.ndarray  # (D,) int64, 1..C
    label_names: list[str]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "box_xyxy": [round(float(v), 2) for v in b],
                "score": round(float(s), 5),
                "label": int(lab),
                "label_name": name,
            }
            for b, s, lab, name in zip(
                self.boxes, self.scores, self.labels, self.label_names, strict=True
            )
        ]


def export_pipeline(
    detector_ckpt: str | Path,
    gan_ckpt: str | Path | None,
    path: str | Path,
    class_names: Sequence[str],
    opts: InferenceOptions | None = None,
) -> Path:
    """Bundle a detector checkpoint and (optionally) a GAN checkpoint into one pipeline file.

    ``opts=None`` takes the GAN run's own ``evaluate`` settings (the options ``gan-detect
    evaluate`` uses for that checkpoint, via :func:`gan_detect.engine.inference_options`), so
    ``predict`` and ``evaluate`` agree; without a GAN, :class:`InferenceOptions` defaults.
    ``detector_ckpt="retinaface"`` (:data:`BUILTIN_RETINAFACE`) names the built-in pretrained
    RetinaFace instead of a trained detector: the file then holds no detector weights.
    """
    detector: dict[str, Any]
    if str(detector_ckpt) == BUILTIN_RETINAFACE:
        detector = {"builtin": BUILTIN_RETINAFACE}
    else:
        det = load_checkpoint(detector_ckpt, expect="detector")
        detector = {"config": det["hyper_parameters"]["config"], "state_dict": det["state_dict"]}
    bundle: dict[str, Any] = {
        "format": "gan-detect-pipeline/1",
        "class_names": list(class_names),
        "detector": detector,
        "gan": None,
        "inference": asdict(opts or InferenceOptions()),
    }
    if gan_ckpt is not None:
        gan = load_checkpoint(gan_ckpt, expect="gan")
        bundle["gan"] = {
            "config": gan["hyper_parameters"]["config"],
            "state_dict": gan["state_dict"],
        }
        if opts is None:
            run_cfg = to_experiment_config(gan["hyper_parameters"]["config"])
            bundle["inference"] = asdict(inference_options(run_cfg))
    return atomic_torch_save(bundle, path)


def to_image_tensor(image: Any) -> Tensor:
    """PIL image, numpy (H, W[, C]) uint8/float, or tensor (C, H, W) -> (3, H, W) float [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"numpy image must be (H, W), (H, W, 1|3|4); got {arr.shape}")
        arr = arr[..., :3] if arr.shape[2] >= 3 else np.repeat(arr, 3, axis=2)
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # PIL's and memory-mapped arrays: torch warns on those
            arr = arr.copy()
        t = torch.from_numpy(arr).permute(2, 0, 1)
        return t.float().div(255.0) if arr.dtype == np.uint8 else t.float()
    if isinstance(image, Tensor):
        t = image
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise ValueError(f"tensor image must be (C, H, W); got {tuple(t.shape)}")
        t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)
        return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
    raise TypeError(f"unsupported image type {type(image).__name__}")


class Pipeline:
    """Detector proposals re-scored (and re-localised) by a GAN refiner; call it on an image.

    >>> pipe = Pipeline.load("runs/demo/faces")          # doctest: +SKIP
    >>> det = pipe(Image.open("photo.jpg"))              # doctest: +SKIP
    >>> det.boxes, det.scores, det.label_names           # doctest: +SKIP
    """

    def __init__(
        self,
        detector: DetectorModule | RetinaFaceDetector | FastestDetDetector,
        gan: GANDetectionModule | None,
        class_names: Sequence[str],
        opts: InferenceOptions,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.0,
        max_detections: int = 750,
    ) -> None:
        self.device = torch.device(device)
        self.detector = detector.to(self.device).eval()
        self.gan = None if gan is None else gan.to(self.device).eval()
        self.class_names = list(class_names)
        self.opts = opts
        self.score_threshold = score_threshold
        self.max_detections = max_detections

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", refine: bool = True, **kw: Any
    ) -> Pipeline:
        """Load a pipeline file, or a run directory holding ``pipeline.pt``."""
        path = Path(path)
        if path.is_dir():
            path = path / PIPELINE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"pipeline file not found: {path}")
        bundle = load_checkpoint(path, expect="pipeline")
        det: DetectorModule | RetinaFaceDetector
        if bundle["detector"].get("builtin") == BUILTIN_RETINAFACE:
            det = RetinaFaceDetector()
        else:
            det = DetectorModule(bundle["detector"]["config"])
            det.load_state_dict(bundle["detector"]["state_dict"])
        gan = None
        if refine and bundle["gan"] is not None:
            gan = GANDetectionModule(bundle["gan"]["config"])
            gan.load_state_dict(bundle["gan"]["state_dict"])
        return cls(
            det, gan, bundle["class_names"], InferenceOptions(**bundle["inference"]), device, **kw
        )

    @torch.no_grad()
    def predict_batch(self, images: Sequence[Any]) -> list[Detections]:
        """Detect in several images (one detector forward), then re-score their proposals (one
        batched G + D pass over all the images' ROIs)."""
        tensors = [to_image_tensor(im) for im in images]
        proposals = self.detector.predict([t.to(self.device) for t in tensors])
        props_list = [
            {
                "boxes": torch.from_numpy(p.boxes),
                "scores": torch.from_numpy(p.scores),
                "labels": torch.from_numpy(p.labels),
            }
            for p in proposals
        ]
        if self.gan is not None:  # the images' ROIs through G + D together
            dets = refine_detections_batch(self.gan.variant, tensors, props_list, self.opts)
        else:
            dets = []
            for props in props_list:
                order = torch.argsort(props["scores"], descending=True)[: self.opts.top_k]
                dets.append({k: v[order] for k, v in props.items()})
        out = []
        for d in dets:
            keep = d["scores"] >= self.score_threshold
            d = {k: v[keep][: self.max_detections].cpu() for k, v in d.items()}
            labels = d["labels"].long().numpy()
            out.append(
                Detections(
                    d["boxes"].float().numpy(),
                    d["scores"].float().numpy(),
                    labels,
                    [self._name(int(lab)) for lab in labels],
                )
            )
        return out

    @classmethod
    def retinaface(
        cls,
        gan_ckpt: str | Path | None = None,
        device: str = "cpu",
        class_names: Sequence[str] = ("face",),
        **kw: Any,
    ) -> Pipeline:
        """The built-in pretrained RetinaFace, re-scored by a trained GAN when one is given.

        Without ``gan_ckpt`` this needs no training at all: real face boxes from the detector.
        """
        gan = None
        opts = InferenceOptions()
        if gan_ckpt is not None:
            from gan_detect.training import load_module

            gan = load_module(gan_ckpt)
            opts = gan.inference_options()  # LR size and context of G's training ROIs
        return cls(RetinaFaceDetector(), gan, class_names, opts, device, **kw)

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)

    def __call__(self, image: Any) -> Detections:
        return self.predict_batch([image])[0]


_GLOB_CHARS = set("*?[")


def _static_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (``a/*/x.jpg`` -> ``a``)."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def expand_inputs_with_base(inputs: Sequence[str]) -> tuple[list[Path], Path]:
    """Files, folders (their images, recursively) and globs -> sorted unique image paths + base.

    The base is the deepest folder holding every input (a folder input itself, a file's folder,
    a glob's folder before its first wildcard): outputs keep each image's path relative to it,
    so ``a/img.jpg`` and ``b/img.jpg`` give ``a/img.json`` and ``b/img.json``.

    Raises:
        FileNotFoundError: an input is neither a file, a folder nor a glob matching a file.
    """
    paths: list[Path] = []
    bases: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += [q for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
            bases.append(p)
        elif p.is_file():
            paths.append(p)
            bases.append(p.parent)
        else:
            files = [
                m for m in sorted(Path(m) for m in glob.glob(item, recursive=True)) if m.is_file()
            ]
            if not files:
                missing.append(item)
            paths += files
            bases.append(_static_prefix(item))
    if missing:
        raise FileNotFoundError(
            "no such file or folder, or no file matches: " + ", ".join(repr(m) for m in missing)
        )
    base = Path(os.path.commonpath([str(b.resolve()) for b in bases])) if bases else Path(".")
    return list(dict.fromkeys(paths)), base


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Sorted unique image paths of files, folders and globs (see ``expand_inputs_with_base``)."""
    return expand_inputs_with_base(inputs)[0]


def output_names(paths: Sequence[Path], base: Path) -> list[Path]:
    """Each image's path relative to ``base`` without its suffix (``a/img``); names that would
    collide (``img.jpg`` and ``img.png`` in one folder) keep their suffix (``a/img.png``)."""
    rel = [p.resolve().relative_to(base) for p in paths]
    stems = [r.with_suffix("") for r in rel]
    counts: dict[Path, int] = {}
    for st in stems:
        counts[st] = counts.get(st, 0) + 1
    return [r if counts[st] > 1 else st for r, st in zip(rel, stems, strict=True)]


BOX_COLOUR = (255, 40, 40)


def draw_style(width: int, height: int) -> tuple[int, int]:
    """``(line width, font size)`` in pixels for an image: readable at 320x240, scaled up."""
    short = min(width, height)
    return max(2, round(short / 240)), max(11, round(short / 22))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_layout(
    det: Detections,
    width: int,
    height: int,
    font: Any,
    max_labels: int = 10,
    avoid: Sequence[tuple[float, float, float, float]] = (),
) -> list[tuple[int, tuple[float, float], str, tuple[float, float, float, float]]]:
    """Labels for the highest-scoring boxes that fit without overlapping an earlier label or a
    rectangle in ``avoid`` (the legend).

    Returns:
        ``(box index, text origin, text, background rectangle)`` per label, best box first.
    """
    placed: list[tuple[int, tuple[float, float], str, tuple[float, float, float, float]]] = []
    pad = 2
    for i in np.argsort(-det.scores, kind="stable"):
        if len(placed) >= max_labels:
            break
        x0, y0, x1, y1 = (float(v) for v in det.boxes[i])
        text = f"{det.label_names[i]} {det.scores[i]:.2f}"
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        # Above the box when there is room, else inside its top edge; kept in the image.
        ty = y0 - th if y0 - th >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, width - tw))
        rect = (tx, ty, tx + tw, ty + th)
        if any(_overlaps(rect, q) for q in [*avoid, *(q[3] for q in placed)]):
            continue
        placed.append((int(i), (tx + pad - left, ty + pad - top), text, rect))
    return placed


def draw_detections(
    image: Image.Image, det: Detections, path: str | Path, max_labels: int | None = None
) -> Path:
    """Copy of the image with its boxes, labels on the top boxes that fit, and a legend.

    Line width and font grow with the image (``draw_style``), so that even boxes of a few pixels
    stay visible; ``max_labels`` defaults to one label per ~20,000 pixels (4 at 320x240, at
    most 20), best scores first, none overlapping.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    lw, size = draw_style(canvas.width, canvas.height)
    font = ImageFont.load_default(size=size)
    if max_labels is None:
        max_labels = int(min(20, max(3, round(canvas.width * canvas.height / 20000))))
    for b in det.boxes:
        draw.rectangle([float(v) for v in b], outline=BOX_COLOUR, width=lw)
    legend = f"{len(det.scores)} boxes; labels: top {{}} by score"
    left, top, right, bottom = font.getbbox(legend.format(max_labels))
    legend_rect = (
        0.0,
        float(canvas.height - (bottom - top + 6)),
        right - left + 6.0,
        canvas.height,
    )
    labels = label_layout(det, canvas.width, canvas.height, font, max_labels, [legend_rect])
    for _, origin, text, rect in labels:
        draw.rectangle(rect, fill=(0, 0, 0))
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    draw.rectangle(legend_rect, fill=(0, 0, 0))
    draw.text(
        (3 - left, legend_rect[1] + 3 - top), legend.format(len(labels)), fill="white", font=font
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _open_rgb(path: Path) -> Image.Image:
    """Decoded RGB image; a decompression bomb (PIL's pixel limit) raises instead of warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            return im.convert("RGB")


def run_predict(
    pipeline: Pipeline,
    inputs: Sequence[str],
    out_dir: str | Path,
    draw: bool = False,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every readable image; unreadable ones are reported and skipped.

    Writes ``OUT/<relative path>.json`` per image (``output_names``), with ``draw`` also
    ``OUT/<relative path>_boxes.png``, and ``OUT/summary.json`` (processed and failed images),
    which is written even when a batch fails.

    Raises:
        FileNotFoundError: an input does not exist (``expand_inputs_with_base``).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    paths, base = expand_inputs_with_base(inputs)
    names = dict(zip(paths, output_names(paths, base), strict=True))
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    bar = tqdm(total=len(paths), desc="predict", disable=not progress)
    try:
        for start in range(0, len(paths), batch_size):
            chunk: list[Path] = []
            images: list[Image.Image] = []
            for p in paths[start : start + batch_size]:
                try:
                    images.append(_open_rgb(p))
                    chunk.append(p)
                except (
                    UnidentifiedImageError,
                    OSError,
                    ValueError,
                    Image.DecompressionBombError,
                    Image.DecompressionBombWarning,
                ) as err:
                    failed.append({"path": str(p), "error": f"{type(err).__name__}: {err}"})
                    print(f"warning: skipping unreadable image {p}: {err}", file=sys.stderr)
            dets = pipeline.predict_batch(images) if images else []
            for p, rgb, d in zip(chunk, images, dets, strict=True):
                json_path = out / names[p].with_name(names[p].name + ".json")
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(
                    json.dumps(
                        {
                            "image": str(p),
                            "width": rgb.width,
                            "height": rgb.height,
                            "detections": d.to_json(),
                        },
                        indent=1,
                    )
                )
                entry = {"path": str(p), "json": str(json_path), "num_detections": len(d.scores)}
                if draw:
                    drawn = out / names[p].with_name(names[p].name + "_boxes.png")
                    entry["drawn"] = str(draw_detections(rgb, d, drawn))
                done.append(entry)
            bar.update(len(paths[start : start + batch_size]))
    finally:
        bar.close()
        summary = {"processed": done, "failed": failed, "found": len(paths)}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_cli(ns: argparse.Namespace) -> int:
    """``gan-detect predict`` on parsed arguments (``gan_detect.cli.predict_parser``)."""
    if not expand_inputs(ns.inputs):  # before loading the networks; missing paths raise
        print(f"gan-detect predict: error: no image found in {ns.inputs}", file=sys.stderr)
        return 1
    kw: dict[str, Any] = dict(score_threshold=ns.score_threshold, max_detections=ns.max_detections)
    if ns.ckpt is None:  # the built-in RetinaFace, re-scored by --gan when given
        gan = None if ns.no_refine else ns.gan
        pipe = Pipeline.retinaface(gan, device=ns.device, **kw)
    else:
        pipe = Pipeline.load(ns.ckpt, device=ns.device, refine=not ns.no_refine, **kw)
    s = run_predict(pipe, ns.inputs, ns.out, draw=ns.draw, batch_size=ns.batch_size)
    print(f"{len(s['processed'])} images processed, {len(s['failed'])} failed; results in {ns.out}")
    if not s["found"]:
        print(f"gan-detect predict: error: no image found in {ns.inputs}", file=sys.stderr)
    # Non-zero when nothing was predicted: no image found, or none could be read.
    return 0 if s["processed"] else 1
