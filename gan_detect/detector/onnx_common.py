"""What the built-in ONNX proposers share: weights lookup and session checks, the COCO label
table, the torchvision-style list API, sliced inference over sahi's tile grid, and one pixel cap,
so no proposer runs unbounded on a huge photo."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from gan_detect.data.records import Proposals
from gan_detect.utils.checkpoints import CheckpointError

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASS_NAMES",
    "ImageListDetector",
    "TiledOnnxDetector",
    "WeightsError",
    "onnx_session",
    "resolve_onnx",
    "to_bgr",
]

# The 80 official COCO category ids in sorted order: contiguous index k -> COCO_CATEGORY_IDS[k].
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
)
# Their names in the same order (instances_val2017.json "categories").
COCO_CLASS_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class WeightsError(CheckpointError):
    """A detector weights file is unreadable or not what it should be (the message names it)."""


def resolve_onnx(
    weights: str | Path | None, onnx_name: str, model: str, default: Path | None, hint: str
) -> Path:
    """The ``.onnx`` file of ``weights``: the file itself, or a folder holding ``onnx_name``.

    Args:
        weights: a path, or ``None`` for ``default`` (a folder found in the shared data).
        onnx_name: the file name looked for in a folder.
        model: the detector's name, for the messages.
        default: the shared-data folder, or ``None`` when it is absent.
        hint: how to give the weights, appended to the message when nothing is found.

    Raises:
        FileNotFoundError: one line naming the path (or where the default was looked for).
    """
    if weights is None:
        if default is None:
            raise FileNotFoundError(f"{model} weights not found: {hint}")
        weights = default
    path = Path(weights).expanduser()
    if path.is_dir():
        if (path / onnx_name).is_file():
            return path / onnx_name
        onnx = sorted(path.glob("*.onnx"))
        if len(onnx) == 1:
            return onnx[0]
        raise FileNotFoundError(
            f"{model} weights not found: {path} is a folder without {onnx_name}"
            + (f" (it holds {len(onnx)} .onnx files; name one)" if onnx else "")
        )
    if not path.is_file():
        raise FileNotFoundError(f"{model} weights not found: {path}")
    return path


def warn_without_licence(onnx: Path, licence: str, model: str, terms: str) -> None:
    """Warn when the licence file ``licence`` is not beside ``onnx`` (``terms``: e.g. Apache-2.0)."""
    if not (onnx.parent / licence).is_file():
        # Not an error (the weights work without it), but a copy without it breaks the licence.
        warnings.warn(
            f"no {licence} beside {onnx}: {model} is {terms} and its notice must travel with "
            f"the weights (copy the whole {onnx.parent.name}/ folder)",
            stacklevel=3,
        )


def onnx_session(
    path: Path, num_threads: int | None, model: str, shape_in: list[int], shape_out: list[int]
) -> tuple[Any, str]:
    """An onnxruntime CPU session of ``path`` checked to map ``shape_in`` to ``shape_out``.

    Returns:
        The session and its input's name.

    Raises:
        WeightsError: not an ONNX model, or one with other input / output shapes (one line).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # No busy-waiting between runs: ORT's spinning threads starve torch's NMS / decoding on
    # a small CPU (measured 1.5x slower per image with it on a loaded 2-core machine).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # onnxruntime's own multi-line log would bury the one-line error below.
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own types (Fail, InvalidProtobuf, ...)
        size = path.stat().st_size
        text = str(err).strip()
        first = text.splitlines()[0][:160] if text else type(err).__name__
        raise WeightsError(
            f"{path}: not a valid ONNX model ({size} bytes; onnxruntime: {first})"
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    got_in = list(inputs[0].shape) if len(inputs) == 1 else None
    got_out = list(outputs[0].shape) if len(outputs) == 1 else None
    if got_in != shape_in or got_out != shape_out:
        raise WeightsError(
            f"{path}: an ONNX model, but not {model} (input {got_in}, output {got_out}; "
            f"expected {shape_in} -> {shape_out})"
        )
    return session, str(inputs[0].name)


def to_bgr(image: Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> (H, W, 3) uint8 BGR, the array ``cv2.imread`` gives."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    # Back to the 8-bit pixels the JPEG decoded to, so the resize sees what cv2.imread gives.
    rgb = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return np.ascontiguousarray(rgb.cpu().numpy()[:, :, ::-1])


def check_runtime(model: str, tiles: bool) -> None:
    """ImportError naming onnxruntime / opencv (and sahi when ``tiles``) when they are missing."""
    try:
        import cv2  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"the built-in {model} proposer needs onnxruntime and opencv-python: {err}"
        ) from None
    if tiles:
        try:
            import sahi.slicing  # noqa: F401
        except ImportError as err:
            raise ImportError(f"{model} tile_sizes need the sahi package: {err}") from None


class ImageListDetector(nn.Module):
    """A detector with ``detect(image)`` for one (3, H, W) [0, 1] image; this adds the list
    forms every proposer offers (``forward`` like torchvision's detectors, ``predict`` as
    :class:`Proposals`). Images over ``max_pixels`` are detected on a copy scaled down to it,
    the boxes mapped back (an 8000x8000 photo took FastestDet 3.2 GB and 5 minutes of tiles)."""

    # 24 MP is a 6000x4000 photo; every proposer's memory and tile count grow with the pixels.
    max_pixels: int = 24_000_000

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def detect_capped(self, image: Tensor) -> dict[str, Tensor]:
        """:meth:`detect` of ``image``, or of a copy scaled down to ``max_pixels`` (objects
        under ~1/scale px are then missed; a warning gives the scale)."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if h * w <= self.max_pixels:
            return self.detect(image)
        scale = (self.max_pixels / (h * w)) ** 0.5
        warnings.warn(
            f"{type(self).__name__}: a {w}x{h} image ({h * w / 1e6:.0f} MP) is scaled by "
            f"{scale:.2f} to {self.max_pixels / 1e6:.0f} MP (max_pixels) to bound memory and time",
            stacklevel=3,
        )
        small = torch.nn.functional.interpolate(
            image[None].float(), scale_factor=scale, mode="bilinear", antialias=True
        )[0].clamp_(0, 1)
        out = dict(self.detect(small))
        fx, fy = w / small.shape[2], h / small.shape[1]
        out["boxes"] = out["boxes"] * torch.tensor([fx, fy, fx, fy], dtype=out["boxes"].dtype)
        return out

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """torchvision-style detections for a list of (3, H, W) [0, 1] images (any sizes)."""
        return [self.detect_capped(im) for im in images]

    def predict(self, images: list[Tensor]) -> list[Proposals]:
        """Detections as :class:`Proposals` (boxes in input pixels, labels 1..C)."""
        return [
            Proposals(
                *(d[k].numpy() for k in ("boxes", "scores", "labels")),
                *(d[k].numpy() if k in d else None for k in ("class_labels", "class_scores")),
            )
            for d in self.forward(images)
        ]


# A tile box this close (px) to an inner tile edge counts as cut by the tile (boxes are clipped
# to the tile, so a cut object's box usually ends exactly on the edge).
CUT_MARGIN = 2.0
# boxes (N, 4) xyxy px, scores (N,), labels (N,) 0..79; optionally the top classes (N, T) 0..79
# and their scores (N, T) (YOLOX-nano's ``top_classes``).
Decoded = tuple[Tensor, ...]


class TiledOnnxDetector(ImageListDetector):
    """A COCO ONNX proposer on the whole image and, optionally, overlapping square tiles.

    Subclasses give :meth:`decode_bgr` (one BGR image or tile -> its boxes before NMS); this
    runs it on the whole image and on every tile of ``tile_sizes`` (``sahi.slicing``'s grid),
    shifts the tile boxes back into the image and merges everything by one per-class NMS. The
    merge is plain NMS on tensors rather than sahi's object-by-object postprocess: a proposer
    keeps hundreds of low-scored boxes per tile, where sahi's Python-level NMS measured 6-7x
    slower per image (docs/yolox_nano.md). With ``drop_cut`` a tile's boxes
    that touch one of its inner edges (an edge that is not the image's) are dropped before the
    merge: they are parts of objects the tile cuts, which the whole image or a neighbouring tile
    proposes whole, and they outscore the whole boxes of large objects.

    Labels are 1..80 (``category_ids[label - 1]`` is the official COCO id).
    """

    category_ids: tuple[int, ...] = COCO_CATEGORY_IDS
    class_names: tuple[str, ...] = COCO_CLASS_NAMES
    model_name: str = "ONNX"

    def __init__(
        self,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        tile_sizes: Sequence[int] = (),
        tile_overlap: float = 0.2,
        full_image: bool = True,
        drop_cut: bool = False,
    ) -> None:
        super().__init__()
        check_runtime(self.model_name, bool(tile_sizes))
        if any(int(t) < 16 for t in tile_sizes) or not 0 <= tile_overlap < 1:
            raise ValueError(
                f"tile_sizes must be >= 16 px and 0 <= tile_overlap < 1; got {list(tile_sizes)}, "
                f"{tile_overlap}"
            )
        self.tile_sizes = tuple(int(t) for t in tile_sizes)
        self.tile_overlap = float(tile_overlap)
        self.full_image = bool(full_image)
        self.drop_cut = bool(drop_cut)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    to_bgr = staticmethod(to_bgr)

    @abstractmethod
    def decode_bgr(self, bgr: np.ndarray) -> Decoded:
        """Boxes of one (h, w, 3) uint8 BGR image before NMS: xyxy px of it, clipped to it."""

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The ``(x1, y1, x2, y2)`` px tiles of an image, every tile size in turn (sahi's grid).

        A tile that is the whole image is left out when the whole image is detected anyway.
        """
        if not self.tile_sizes:
            return []
        from sahi.slicing import get_slice_bboxes

        out: list[tuple[int, int, int, int]] = []
        for size in self.tile_sizes:
            grid = get_slice_bboxes(
                height, width, size, size, auto_slice_resolution=False,
                overlap_height_ratio=self.tile_overlap, overlap_width_ratio=self.tile_overlap,
            )  # fmt: skip
            for x1, y1, x2, y2 in grid:
                tile = (int(x1), int(y1), min(int(x2), width), min(int(y2), height))
                whole = tile == (0, 0, width, height)
                if tile not in out and not (whole and self.full_image):
                    out.append(tile)
        return out

    def candidates(self, image: Tensor) -> Decoded:
        """Every box scoring >= ``score_thresh`` before NMS, from the whole image and the tiles.

        Returns:
            ``boxes`` (N, 4) xyxy px of the image, ``scores`` (N,), ``labels`` (N,) 0..79.
        """
        return tiled_candidates(
            self.to_bgr(image), self.decode_bgr, self.full_image, self.tiles, self.drop_cut
        )

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """One (3, H, W) [0, 1] image -> ``boxes`` (D, 4) xyxy px, ``scores`` (D,), ``labels`` (D,).

        Labels are 1..80 (``category_ids[label - 1]`` is the COCO id); D <= detections_per_img.
        Whole-image and tile boxes are merged by one per-class NMS.
        """
        boxes, scores, labels, *top = self.candidates(image)
        kept = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        out = {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept] + 1}
        if top:  # the detector's best classes of each box (1..80) and their scores
            out["class_labels"], out["class_scores"] = top[0][kept] + 1, top[1][kept]
        return out


def tiled_candidates(
    bgr: np.ndarray,
    decode_bgr: Callable[[np.ndarray], Decoded],
    full_image: bool,
    tiles: Callable[[int, int], list[tuple[int, int, int, int]]],
    drop_cut: bool = False,
) -> Decoded:
    """``decode_bgr`` on the whole (h, w, 3) image (when ``full_image`` or there are no tiles)
    and on each tile of ``tiles(h, w)``, its boxes shifted into image pixels, concatenated.

    ``drop_cut``: leave out tile boxes within :data:`CUT_MARGIN` px of an inner tile edge."""
    h, w = bgr.shape[:2]
    grid = tiles(h, w)
    parts = [decode_bgr(bgr)] if full_image or not grid else []
    for x1, y1, x2, y2 in grid:
        part = decode_bgr(bgr[y1:y2, x1:x2])
        b = part[0]
        if drop_cut:
            inner = torch.tensor([x1 > 0, y1 > 0, x2 < w, y2 < h])
            gap = torch.stack([b[:, 0], b[:, 1], (x2 - x1) - b[:, 2], (y2 - y1) - b[:, 3]], 1)
            keep = ~((gap <= CUT_MARGIN) & inner).any(1)
            part = tuple(t[keep] for t in part)
            b = part[0]
        parts.append((b + torch.tensor([x1, y1, x1, y1], dtype=b.dtype), *part[1:]))
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))
