"""Image in, boxes out: a trained detector + GAN refiner as one callable, and ``gan-detect predict``.

A *pipeline file* (``pipeline.pt``) bundles the detector and GAN weights with their configs,
label names and inference options: it is all ``predict`` needs. It is read with
``torch.load(..., weights_only=True)``, so a pipeline file cannot run code on the user's machine.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gan_detect.config.sections import BUILTIN_COCO_DETECTORS
from gan_detect.config.validate import to_experiment_config
from gan_detect.data.image_io import to_rgb
from gan_detect.data.synthetic import dataset_origin
from gan_detect.detector.builtin import builtin_detector
from gan_detect.detector.module import DetectorModule
from gan_detect.detector.onnx_common import COCO_CLASS_NAMES, TiledOnnxDetector
from gan_detect.detector.retinaface import RetinaFaceDetector
from gan_detect.infer.fusion_fit import fusion_for_checkpoint
from gan_detect.infer.inference import (
    InferenceOptions,
    inference_options,
    refine_detections_batch,
)
from gan_detect.infer.score_fusion import FITTED_FUSIONS, FUSIONS, check_fitted
from gan_detect.utils.checkpoints import atomic_torch_save, building_from, load_checkpoint
from gan_detect.utils.errors import InputError
from gan_detect.variants import GANVariant

PIPELINE_FILE = "pipeline.pt"
# ``detector_ckpt`` value (and pipeline-file entry) naming the built-in pretrained face detector.
BUILTIN_RETINAFACE = "retinaface"
# The CLI's ``--score-threshold`` default, also ``Pipeline.retinaface``'s: RetinaFace keeps boxes
# down to 0.02 for the WIDER protocol, hundreds per crowd photo, most of them not faces.
DEFAULT_SCORE_THRESHOLD = 0.3


class GeneratedDataWarning(UserWarning):
    """A GAN trained on generated data is about to re-score real photos."""


def trained_on(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """What a GAN was trained on: the checkpoint's ``trained_on`` entry, else (older files)
    its config's ``data.name`` with the marker looked up in ``data.root`` if that still exists."""
    recorded = state.get("trained_on")
    if isinstance(recorded, Mapping):
        return dict(recorded)
    data = config.get("data", {}) if isinstance(config, Mapping) else {}
    return dataset_origin(str(data.get("name", "?")), data.get("root"))


def warn_if_generated(origin: Mapping[str, Any] | None, source: str) -> None:
    """Warn (:class:`GeneratedDataWarning`) when ``origin`` says generated training data."""
    if origin and origin.get("generated"):
        kind = origin.get("kind") or origin.get("dataset", "data")
        warnings.warn(
            f"the GAN in {source} was trained on generated {kind} (the demo's data), not real "
            "photos: its re-scoring can drop faces the detector finds on real images; use a GAN "
            "trained on real data, --fusion geometric_mean, or --no-refine",
            GeneratedDataWarning,
            stacklevel=3,
        )


def with_fusion(
    opts: InferenceOptions, fusion: str | None, fitted: dict[str, Any] | None = None
) -> InferenceOptions:
    """``opts`` with ``score_fusion`` replaced (None keeps the run's own); checks the name.

    ``fitted``: the run's fitted combiners (``score_fusion.json``), which ``learned`` and
    ``size_gated`` need."""
    if fusion is None:
        return opts
    FUSIONS.lookup(fusion)  # an unknown name: one line listing the registered ones
    params = (fitted or {}).get(fusion)
    if fusion in FITTED_FUSIONS and params is None:
        raise InputError(
            f"score fusion {fusion!r} needs the run's fitted combiner (score_fusion.json), and "
            "this run has none: train it with data.fusion_holdout_fraction > 0"
        )
    return replace(opts, score_fusion=fusion, fusion_params=params)


@dataclass
class Detections:
    """Boxes found in one image (numpy, in the input image's pixels)."""

    boxes: np.ndarray  # (D, 4) float32 xyxy
    scores: np.ndarray  # (D,) float32
    labels: np.ndarray  # (D,) int64, 1..C
    label_names: list[str]
    # Proposals scoring >= the score threshold that were left out because only the best
    # ``opts.top_k`` are re-scored (or kept, without a GAN): boxes the detector alone would keep.
    cut_by_top_k: int = 0

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
    detector_weights: str | Path | None = None,
) -> Path:
    """Bundle a detector checkpoint and (optionally) a GAN checkpoint into one pipeline file.

    ``opts=None`` takes the GAN run's own ``evaluate`` settings (the options ``gan-detect
    evaluate`` uses for that checkpoint, via :func:`gan_detect.infer.inference.inference_options`), so
    ``predict`` and ``evaluate`` agree; without a GAN, :class:`InferenceOptions` defaults.
    ``detector_ckpt="retinaface"`` (:data:`BUILTIN_RETINAFACE`) names the built-in pretrained
    RetinaFace instead of a trained detector: the file then holds no detector weights.
    ``"fastestdet"`` / ``"yolox_nano"`` name a built-in COCO proposer: the file holds its name
    and ``detector_weights`` (its ONNX path, absolute; ``None``: the shared data's copy), not
    the ONNX file, whose licence must travel beside it.
    """
    detector: dict[str, Any]
    if str(detector_ckpt) == BUILTIN_RETINAFACE:
        detector = {"builtin": BUILTIN_RETINAFACE}
    elif str(detector_ckpt) in BUILTIN_COCO_DETECTORS:
        weights = None if detector_weights is None else str(Path(detector_weights).resolve())
        detector = {"builtin": str(detector_ckpt), "weights": weights}
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
            "trained_on": trained_on(gan, gan["hyper_parameters"]["config"]),
        }
        if opts is None:
            run_cfg = to_experiment_config(gan["hyper_parameters"]["config"])
            fitted = fusion_for_checkpoint(gan_ckpt)
            bundle["inference"] = asdict(inference_options(run_cfg, fusion=fitted))
            bundle["score_fusion"] = fitted  # every fitted combiner: --fusion can switch
    return atomic_torch_save(bundle, path)


def to_image_tensor(image: Any) -> Tensor:
    """PIL image, numpy (H, W[, C]) uint8/float, or tensor (C, H, W) -> (3, H, W) float [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))  # as displayed: EXIF orientation, 16-bit, alpha
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
        detector: DetectorModule | RetinaFaceDetector | TiledOnnxDetector,
        gan: GANVariant | None,
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
        # What the GAN of a pipeline file was trained on (``trained_on``), when the file says.
        self.trained_on: dict[str, Any] | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        refine: bool = True,
        fusion: str | None = None,
        **kw: Any,
    ) -> Pipeline:
        """Load a pipeline file, or a run directory holding ``pipeline.pt``.

        ``fusion`` (one of ``SCORE_FUSIONS``) replaces the score fusion the file carries (the
        GAN run's ``evaluate.score_fusion``); ``score_threshold`` and ``max_detections`` go
        through ``kw`` (default 0: every box). A file whose detector is the built-in RetinaFace
        and whose GAN was trained on generated data warns (:class:`GeneratedDataWarning`).
        """
        path = Path(path)
        if path.is_dir():
            path = path / PIPELINE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"pipeline file not found: {path}")
        bundle = load_checkpoint(path, expect="pipeline")
        det: DetectorModule | RetinaFaceDetector | TiledOnnxDetector
        with building_from(path):  # a missing or mis-shaped entry: one line naming the file
            builtin = bundle["detector"].get("builtin")
            if builtin == BUILTIN_RETINAFACE:
                det = RetinaFaceDetector()
            elif builtin in BUILTIN_COCO_DETECTORS:
                det = builtin_detector(builtin, bundle["detector"].get("weights"))  # type: ignore[assignment]
            else:
                det = DetectorModule(bundle["detector"]["config"])
                det.load_state_dict(bundle["detector"]["state_dict"])  # a bundle, not a ckpt
            gan, origin = None, None
            if bundle["gan"] is not None:
                origin = trained_on(bundle["gan"], bundle["gan"]["config"])
            if refine and bundle["gan"] is not None:
                gan = GANVariant.from_state(bundle["gan"]["config"], bundle["gan"]["state_dict"])
                if isinstance(det, RetinaFaceDetector | TiledOnnxDetector):  # real photos ahead
                    warn_if_generated(origin, str(path))
        fitted = bundle.get("score_fusion")
        if fitted is not None:
            check_fitted(fitted, f"{path} (its score_fusion)")
        with building_from(path):
            inference = InferenceOptions(**bundle["inference"])
        opts = with_fusion(inference, fusion, fitted)
        pipe = cls(det, gan, bundle["class_names"], opts, device, **kw)
        pipe.trained_on = origin
        return pipe

    @torch.no_grad()
    def predict_batch(self, images: Sequence[Any]) -> list[Detections]:
        """Detect in several images (one detector forward), then re-score their proposals (one
        batched G + D pass over all the images' ROIs)."""
        tensors = [to_image_tensor(im) for im in images]
        proposals = self.detector.predict([t.to(self.device) for t in tensors])
        cut = [self._cut_by_top_k(p.scores) for p in proposals]
        props_list = [
            {
                "boxes": torch.from_numpy(p.boxes),
                "scores": torch.from_numpy(p.scores),
                "labels": torch.from_numpy(p.labels),
            }
            for p in proposals
        ]
        if self.gan is not None:  # the images' ROIs through G + D together
            dets = refine_detections_batch(self.gan, tensors, props_list, self.opts)
        else:
            dets = []
            for props in props_list:
                order = torch.argsort(props["scores"], descending=True)[: self.opts.top_k]
                dets.append({k: v[order] for k, v in props.items()})
        out = []
        for d, n_cut in zip(dets, cut, strict=True):
            keep = d["scores"] >= self.score_threshold
            d = {k: v[keep][: self.max_detections].cpu() for k, v in d.items()}
            labels = d["labels"].long().numpy()
            out.append(
                Detections(
                    d["boxes"].float().numpy(),
                    d["scores"].float().numpy(),
                    labels,
                    [self._name(int(lab)) for lab in labels],
                    n_cut,
                )
            )
        return out

    def _cut_by_top_k(self, scores: np.ndarray) -> int:
        """Proposals past the best ``opts.top_k`` that pass the score threshold on their own."""
        if len(scores) <= self.opts.top_k:
            return 0
        rest = np.sort(np.asarray(scores))[::-1][self.opts.top_k :]
        return int((rest >= self.score_threshold).sum())

    @classmethod
    def retinaface(
        cls,
        gan_ckpt: str | Path | None = None,
        device: str = "cpu",
        class_names: Sequence[str] = ("face",),
        fusion: str | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        **kw: Any,
    ) -> Pipeline:
        """The built-in pretrained RetinaFace, re-scored by a trained GAN when one is given.

        Without ``gan_ckpt`` this needs no training at all: real face boxes from the detector.
        ``fusion`` replaces the GAN run's ``evaluate.score_fusion``; ``score_threshold`` is
        ``gan-detect predict``'s default (0.3; 0 keeps every box down to RetinaFace's 0.02). A
        GAN trained on generated data warns (:class:`GeneratedDataWarning`): real photos are
        what this detector is for.
        """
        gan, opts = _gan_for_builtin(gan_ckpt, fusion)
        return cls(
            RetinaFaceDetector(),
            gan,
            class_names,
            opts,
            device,
            score_threshold=score_threshold,
            **kw,
        )

    @classmethod
    def coco(
        cls,
        arch: str = "yolox_nano",
        weights: str | Path | None = None,
        gan_ckpt: str | Path | None = None,
        device: str = "cpu",
        fusion: str | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        tile_sizes: Sequence[int] = (),
        tile_drop_cut: bool = False,
        **kw: Any,
    ) -> Pipeline:
        """A built-in pretrained COCO proposer (``yolox_nano`` or ``fastestdet``), re-scored by a
        trained GAN when one is given; labels 1..80 named by :data:`COCO_CLASS_NAMES`.

        ``weights``: the ONNX file or its folder (``None``: the shared data's copy);
        ``tile_sizes`` / ``tile_drop_cut``: sliced inference (see
        :mod:`gan_detect.detector.yolox_nano` for the measured setting).
        """
        if arch not in BUILTIN_COCO_DETECTORS:
            raise InputError(
                f"{arch!r} is not a built-in COCO proposer; built in: "
                + ", ".join(BUILTIN_COCO_DETECTORS)
            )
        det = builtin_detector(arch, weights, tile_sizes=tile_sizes, tile_drop_cut=tile_drop_cut)
        gan, opts = _gan_for_builtin(gan_ckpt, fusion)
        return cls(
            det,  # type: ignore[arg-type]  # builtin_detector is typed nn.Module
            gan,
            COCO_CLASS_NAMES,
            opts,
            device,
            score_threshold=score_threshold,
            **kw,
        )

    @property
    def fusion(self) -> str | None:
        """The score fusion in use (None without a GAN: the detector's own scores)."""
        return None if self.gan is None else self.opts.score_fusion

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 1 <= label <= len(self.class_names) else str(label)

    def __call__(self, image: Any) -> Detections:
        return self.predict_batch([image])[0]


def _gan_for_builtin(
    gan_ckpt: str | Path | None, fusion: str | None
) -> tuple[GANVariant | None, InferenceOptions]:
    """The GAN re-scoring a built-in detector (``None``: none) and its inference options.

    A GAN trained on generated data warns (:class:`GeneratedDataWarning`): the built-in
    detectors are for real photos.
    """
    if gan_ckpt is None:
        return None, with_fusion(InferenceOptions(), fusion)
    state = load_checkpoint(gan_ckpt, expect="gan")
    config = state["hyper_parameters"]["config"]
    with building_from(gan_ckpt):  # a newer or damaged file: one line naming it
        gan = GANVariant.from_state(config, state["state_dict"])
    assert gan.run_config is not None
    # LR size and context of G's training ROIs; the run's fitted fusion when it has one.
    fitted = fusion_for_checkpoint(gan_ckpt)
    opts = inference_options(gan.run_config, fusion=fitted)
    warn_if_generated(trained_on(state, config), str(gan_ckpt))
    return gan, with_fusion(opts, fusion, fitted)
