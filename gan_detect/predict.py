"""Image in, boxes out: a trained detector + GAN refiner as one callable, and ``gan-detect predict``.

A *pipeline file* (``pipeline.pt``) bundles the detector and GAN weights with their configs,
label names and inference options: it is all ``predict`` needs. It is read with
``torch.load(..., weights_only=True)``, so a pipeline file cannot run code on the user's machine.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor

from gan_detect.detector.module import DetectorModule
from gan_detect.detector.retinaface import RetinaFaceDetector
from gan_detect.engine import GANDetectionModule
from gan_detect.inference import InferenceOptions, refine_detections

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

    ``detector_ckpt="retinaface"`` (:data:`BUILTIN_RETINAFACE`) names the built-in pretrained
    RetinaFace instead of a trained detector: the file then holds no detector weights.
    """
    detector: dict[str, Any]
    if str(detector_ckpt) == BUILTIN_RETINAFACE:
        detector = {"builtin": BUILTIN_RETINAFACE}
    else:
        det = torch.load(detector_ckpt, map_location="cpu", weights_only=True)
        detector = {"config": det["hyper_parameters"]["config"], "state_dict": det["state_dict"]}
    bundle: dict[str, Any] = {
        "format": "gan-detect-pipeline/1",
        "class_names": list(class_names),
        "detector": detector,
        "gan": None,
        "inference": asdict(opts or InferenceOptions()),
    }
    if gan_ckpt is not None:
        gan = torch.load(gan_ckpt, map_location="cpu", weights_only=True)
        bundle["gan"] = {
            "config": gan["hyper_parameters"]["config"],
            "state_dict": gan["state_dict"],
        }
        if opts is None:  # LR size and context must match the GAN's ROI mining
            data = gan["hyper_parameters"]["config"]["data"]
            scale = gan["hyper_parameters"]["config"]["variant"]["scale"]
            bundle["inference"].update(
                lr_size=int(data["hr_size"]) // int(scale), context=float(data["context"])
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, path)
    return path


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
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
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
        detector: DetectorModule | RetinaFaceDetector,
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
        bundle = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(bundle, dict) or bundle.get("format") != "gan-detect-pipeline/1":
            raise ValueError(
                f"{path}: not a gan-detect pipeline file (see gan_detect.predict.export_pipeline)"
            )
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
        """Detect in several images (one detector forward), then refine each image's proposals."""
        tensors = [to_image_tensor(im) for im in images]
        proposals = self.detector.predict([t.to(self.device) for t in tensors])
        out = []
        for img, p in zip(tensors, proposals, strict=True):
            props = {
                "boxes": torch.from_numpy(p.boxes),
                "scores": torch.from_numpy(p.scores),
                "labels": torch.from_numpy(p.labels),
            }
            if self.gan is not None:
                d = refine_detections(self.gan.variant, img, props, self.opts)
            else:
                order = torch.argsort(props["scores"], descending=True)[: self.opts.top_k]
                d = {k: v[order] for k, v in props.items()}
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


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, recursively) and globs -> sorted unique image paths."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += [q for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                print(f"warning: no image matches {item!r}", file=sys.stderr)
            paths += [m for m in matches if m.is_file()]
    return list(dict.fromkeys(paths))


def draw_detections(image: Image.Image, det: Detections, path: str | Path) -> Path:
    """Copy of the image with 1-px outlines; boxes under 16 px also get a corner marker."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for b, s, name in zip(det.boxes, det.scores, det.label_names, strict=True):
        x0, y0, x1, y1 = (float(v) for v in b)
        draw.rectangle([x0, y0, x1, y1], outline=(255, 40, 40), width=1)
        if min(x1 - x0, y1 - y0) < 16:  # keep tiny detections visible: a marker beside the box
            draw.line([x1 + 1, y0 - 4, x1 + 5, y0 - 8], fill=(255, 230, 0), width=1)
        draw.text((x0, max(0.0, y0 - 10)), f"{name} {s:.2f}", fill=(255, 40, 40))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def run_predict(
    pipeline: Pipeline,
    inputs: Sequence[str],
    out_dir: str | Path,
    draw: bool = False,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every readable image; unreadable ones are reported and skipped."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = expand_inputs(inputs)
    done, failed = [], []
    bar = tqdm(total=len(paths), desc="predict", disable=not progress)
    for start in range(0, len(paths), batch_size):
        chunk: list[Path] = []
        images: list[Image.Image] = []
        for p in paths[start : start + batch_size]:
            try:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
                chunk.append(p)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                failed.append({"path": str(p), "error": f"{type(err).__name__}: {err}"})
                print(f"warning: skipping unreadable image {p}: {err}", file=sys.stderr)
        dets = pipeline.predict_batch(images) if images else []
        for p, rgb, d in zip(chunk, images, dets, strict=True):
            stem = out / p.stem
            json_path = stem.with_suffix(".json")
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
                entry["drawn"] = str(draw_detections(rgb, d, out / f"{p.stem}_boxes.png"))
            done.append(entry)
        bar.update(len(paths[start : start + batch_size]))
    bar.close()
    summary = {"processed": done, "failed": failed}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str]) -> int:
    """``gan-detect predict --ckpt PIPELINE IMAGES... [--out DIR] [--draw] ...``."""
    import argparse

    ap = argparse.ArgumentParser(prog="gan-detect predict", description="detect objects in images")
    ap.add_argument("inputs", nargs="+", help="image files, folders or globs")
    ap.add_argument(
        "--ckpt",
        default=None,
        help="pipeline.pt, or a run directory holding one; omitted: the built-in pretrained "
        "RetinaFace face detector (no training needed)",
    )
    ap.add_argument(
        "--gan",
        default=None,
        help="with no --ckpt: a trained GAN checkpoint that re-scores the built-in RetinaFace",
    )
    ap.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    ap.add_argument(
        "--draw", action="store_true", help="also write each image with its boxes drawn"
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--score-threshold", type=float, default=0.3)
    ap.add_argument("--max-detections", type=int, default=750)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--no-refine", action="store_true", help="the detector alone (no GAN re-scoring)"
    )
    ns = ap.parse_args(list(argv))
    if ns.ckpt is not None and ns.gan is not None:
        ap.error("--gan goes with the built-in detector: give --ckpt or --gan, not both")
    kw: dict[str, Any] = dict(score_threshold=ns.score_threshold, max_detections=ns.max_detections)
    if ns.ckpt is None:
        gan = None if ns.no_refine else ns.gan
        pipe = Pipeline.retinaface(gan, device=ns.device, **kw)
    else:
        pipe = Pipeline.load(ns.ckpt, device=ns.device, refine=not ns.no_refine, **kw)
    s = run_predict(pipe, ns.inputs, ns.out, draw=ns.draw, batch_size=ns.batch_size)
    print(f"{len(s['processed'])} images processed, {len(s['failed'])} failed; results in {ns.out}")
    return 0 if s["processed"] or not s["failed"] else 1
