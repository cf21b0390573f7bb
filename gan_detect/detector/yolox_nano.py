"""A built-in COCO proposer: YOLOX-nano (Ge et al., "YOLOX: Exceeding YOLO Series in 2021")
through onnxruntime, with its own letterbox and grid decoding.

YOLOX-nano is an anchor-free detector of the 80 COCO classes (0.91 M parameters, 416x416 input,
published COCO val2017 AP 25.8). On the 655 test images of the val2017 person subset it measured
AP 19.5 / AP_S 3.8 against FastestDet's 10.1 / 1.0 (docs/usage.md). Its ONNX file is not
shipped with the package; give its path (``detector.weights=PATH``: the file or its folder), or
keep it at ``<data>/coco/detectors/yolox_nano/`` (``$GAN_DETECT_DATA`` or ``../shared/data``),
where it is found by default.

**Licence.** YOLOX and the exported weights are Apache-2.0; ``LICENSE`` sits beside
``yolox_nano.onnx`` and must go with every copy: copy the folder, not the file.

Interface (``yolox_nano/README.md`` beside the weights):

* input ``(1, 3, 416, 416)`` float32, BGR, 0-255 (no scaling, no mean or std): the image resized
  by ``r = min(416 / H, 416 / W)`` and pasted at the top-left of a canvas filled with 114;
* output ``(1, 3549, 85)``: the cells of strides 8, 16, 32 (52x52, 26x26, 13x13, row-major, x
  fastest); per cell 4 raw box terms, objectness, 80 class probabilities (sigmoids in the graph);
* decoding of cell ``(gx, gy)`` of stride ``s``: ``cx = (p0 + gx) s``, ``cy = (p1 + gy) s``,
  ``w = exp(p2) s``, ``h = exp(p3) s`` in input pixels, divided by ``r`` for image pixels; the
  score of class ``c`` is ``objectness * p[5 + c]``. As in YOLOX's COCO evaluation every
  (cell, class) pair above the threshold is kept, then per-class NMS (IoU 0.45 here).

**Sliced inference** (``tile_sizes``, shared with FastestDet through
:class:`~gan_detect.detector.onnx_common.TiledOnnxDetector`): each tile is letterboxed to 416
like a whole image. Plain tiles cost large objects (a tile's box of the part of an object it
cuts outscores the whole-image box), so ``drop_cut`` leaves out tile boxes touching an inner
tile edge. **Chosen proposal setting**: ``tile_sizes=(256,)``, ``drop_cut=True``, overlap 0.2,
with the whole image, score >= 0.001, 1,000 boxes per image (``detector.tile_sizes=[256]
detector.tile_drop_cut=true``). On the first 200 test images of the val2017 person subset it
raised AP_S from 6.5 to 15.2 (+8.7, interval [+6.4, +12.2]) and small-object recall at 1,000
proposals from 40 % to 78 %, with AP_L -3.1 [-5.4, +0.6] (not resolved), for 8.2 network runs
per image; ``tile_sizes=(320,)`` with ``drop_cut`` is the cheaper near-equal (6.8 runs, AP_S
+8.2). Numbers: docs/yolox_nano.md. The constructor's
defaults stay the whole image alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gan_detect.detector.onnx_common import (
    Decoded,
    TiledOnnxDetector,
    onnx_session,
    resolve_onnx,
    warn_without_licence,
)

__all__ = [
    "INPUT_SIZE",
    "STRIDES",
    "YoloxNanoDetector",
    "decode",
    "default_weights",
    "grid_cells",
    "letterbox",
    "resolve_weights",
]

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
NUM_CELLS = sum((INPUT_SIZE // s) ** 2 for s in STRIDES)  # 3549
ONNX_NAME = "yolox_nano.onnx"
PAD_VALUE = 114.0  # the canvas grey of YOLOX's preprocessing


def default_weights() -> Path | None:
    """``<data>/coco/detectors/yolox_nano`` when the shared data folder has it, else ``None``."""
    from gan_detect.data.paths import shared_data_dir

    data = shared_data_dir()
    folder = None if data is None else data / "coco" / "detectors" / "yolox_nano"
    return folder if folder is not None and (folder / ONNX_NAME).is_file() else None


def resolve_weights(weights: str | Path | None) -> Path:
    """The ``.onnx`` file of ``weights`` (the file itself, or a folder holding ``yolox_nano.onnx``).

    Raises:
        FileNotFoundError: one line naming the path (or where the default was looked for).
    """
    hint = (
        "give detector.weights=PATH (yolox_nano.onnx or its folder, with LICENSE beside it), or "
        "set GAN_DETECT_DATA to a folder with coco/detectors/yolox_nano/"
    )
    return resolve_onnx(weights, ONNX_NAME, "YOLOX-nano", default_weights(), hint)


def letterbox(bgr: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 BGR -> the network input (1, 3, size, size) float32 0-255, and ``r``.

    The image is resized by ``r = min(size / H, size / W)`` and pasted at the top-left of a
    114-grey canvas, so input pixel ``p`` is image pixel ``p / r`` (no offset to undo).
    """
    import cv2

    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    # int(), not round(): YOLOX's preprocessing truncates, and the pasted size must fit.
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.float32)
    canvas[:nh, :nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), r


def grid_cells(size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Each output row's cell: ``xy`` (3549, 2) column / row index, ``stride`` (3549,), float32.

    Rows are strides 8, 16, 32 in turn, each grid row-major with x fastest (the export's order).
    """
    xy, stride = [], []
    for s in STRIDES:
        n = size // s
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        xy.append(np.stack([gx.ravel(), gy.ravel()], 1))
        stride.append(np.full(n * n, s))
    return np.concatenate(xy).astype(np.float32), np.concatenate(stride).astype(np.float32)


_XY, _STRIDE = grid_cells()
# Classes a proposal carries besides its own (the issue asks for at least the top few).
TOP_CLASSES = 3


def decode(
    out: np.ndarray | Tensor,
    ratio: float,
    width: int,
    height: int,
    score_thresh: float = 0.001,
    top_classes: int = 0,
) -> Decoded:
    """Boxes of one YOLOX-nano output, before NMS: every (cell, class) pair above the threshold.

    Args:
        out: ``(1, 3549, 85)`` or ``(3549, 85)`` network output.
        ratio: the letterbox scale ``r`` (input px = image px * r).
        width, height: the image size, px (boxes are clipped to it).
        score_thresh: keep pairs with ``objectness * class probability >= score_thresh``.
        top_classes: T > 0 adds each box's cell's T best classes (N, T) int64 0..79 and their
            scores (N, T) float32, best first (the class scores a proposal carries).

    Returns:
        ``boxes`` (N, 4) xyxy image px, ``scores`` (N,) float32, ``labels`` (N,) int64
        contiguous 0..79 (one cell may give several classes), then the top classes when asked.
    """
    t = out.detach().cpu().numpy() if isinstance(out, Tensor) else np.asarray(out)
    t = t.astype(np.float32, copy=False).reshape(-1, 85)
    if len(t) != NUM_CELLS:
        raise ValueError(f"expected {NUM_CELLS} cells of 85 values, got {t.shape}")
    # numpy, not torch: per-op overhead matters when every tile of sliced inference is decoded.
    scores = t[:, 4:5] * t[:, 5:]  # (3549, 80)
    cells, labels = np.nonzero(scores >= score_thresh)
    p = t[cells]
    s = _STRIDE[cells]
    cx = (p[:, 0] + _XY[cells, 0]) * s
    cy = (p[:, 1] + _XY[cells, 1]) * s
    # exp of a raw term: clipped so a wild value gives a huge box, not inf (NMS breaks on inf).
    w = np.exp(np.minimum(p[:, 2], 20.0)) * s
    h = np.exp(np.minimum(p[:, 3], 20.0)) * s
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) / np.float32(ratio)
    # Clipped to the image: a box reaching into the grey padding is not an image box.
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    res: Decoded = (
        torch.from_numpy(boxes.astype(np.float32)),
        torch.from_numpy(scores[cells, labels].astype(np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
    )
    if top_classes > 0:
        cell_scores = scores[cells]  # (N, 80)
        best = np.argsort(-cell_scores, axis=1, kind="stable")[:, :top_classes]
        res += (
            torch.from_numpy(best.astype(np.int64)),
            torch.from_numpy(np.take_along_axis(cell_scores, best, 1).astype(np.float32)),
        )
    return res


class YoloxNanoDetector(TiledOnnxDetector):
    """Pretrained YOLOX-nano (COCO, 80 classes) on the image letterboxed to 416x416.

    Args:
        weights: ``yolox_nano.onnx`` or its folder; ``None`` looks in the shared data folder.
        score_thresh: keep (box, class) pairs scoring at least this (0.001: YOLOX's COCO
            evaluation; a proposer should hand the re-scorer everything).
        nms_thresh: per-class NMS IoU.
        detections_per_img: boxes kept per image after NMS.
        num_threads: onnxruntime intra-op threads; ``None`` follows ``torch.get_num_threads()``.
        tile_sizes: side lengths (px of the original image) of square tiles to detect on as
            well; ``()`` is the whole image only. Needs the ``sahi`` package.
        tile_overlap: overlap of neighbouring tiles, as a fraction of the tile side.
        full_image: also detect on the whole image; always on when there are no tiles.
        drop_cut: drop tile boxes touching an inner tile edge (parts of objects the tile cuts).
        top_classes: each box also carries its cell's this many best classes and their scores
            (``class_labels`` / ``class_scores``; 0: none).

    Raises:
        FileNotFoundError: the weights path does not exist (one line, naming it).
        WeightsError: the file is not an ONNX model with YOLOX-nano's input and output shapes.
        ImportError: naming onnxruntime / opencv when they are not installed.
    """

    model_name = "YOLOX-nano"

    def __init__(
        self,
        weights: str | Path | None = None,
        score_thresh: float = 0.001,
        nms_thresh: float = 0.45,
        detections_per_img: int = 1000,
        num_threads: int | None = None,
        tile_sizes: Sequence[int] = (),
        tile_overlap: float = 0.2,
        full_image: bool = True,
        drop_cut: bool = False,
        top_classes: int = TOP_CLASSES,
    ) -> None:
        super().__init__(
            score_thresh, nms_thresh, detections_per_img, tile_sizes, tile_overlap, full_image,
            drop_cut,
        )  # fmt: skip
        if top_classes < 0:
            raise ValueError(f"top_classes must be >= 0, got {top_classes}")
        self.top_classes = int(top_classes)
        self.weights = resolve_weights(weights)
        self._session, self._input_name = onnx_session(
            self.weights, num_threads, "YOLOX-nano", [1, 3, INPUT_SIZE, INPUT_SIZE],
            [1, NUM_CELLS, 85],
        )  # fmt: skip
        # After the shape check: a wrong file gets its error, not a licence warning.
        warn_without_licence(self.weights, "LICENSE", "YOLOX-nano", "Apache-2.0")

    def raw_bgr(self, bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """The network output (1, 3549, 85) for one (H, W, 3) uint8 BGR image, and ``r``."""
        x, r = letterbox(bgr)
        return self._session.run(None, {self._input_name: x})[0], r

    def raw(self, image: Tensor) -> tuple[np.ndarray, float]:
        """The network output (1, 3549, 85) for one (3, H, W) [0, 1] image, and ``r``."""
        return self.raw_bgr(self.to_bgr(image))

    def decode_bgr(self, bgr: np.ndarray) -> Decoded:
        """Boxes of one (h, w, 3) uint8 BGR image or tile before NMS, px of it."""
        out, r = self.raw_bgr(bgr)
        return decode(out, r, bgr.shape[1], bgr.shape[0], self.score_thresh, self.top_classes)
