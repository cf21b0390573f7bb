"""A built-in, pretrained COCO proposer: FastestDet (dog-qiuqiu/FastestDet) through onnxruntime.

FastestDet is a one-scale, anchor-free detector of the 80 COCO classes (ShuffleNetV2, about
0.24 M parameters, 352x352 input). It is weak: about 10 COCO AP on the val2017 person subset of
``shared/data`` (13.0 reported upstream on all of val2017) and close to blind to small objects,
which is the situation SOD-MTGAN re-scores. Its ONNX file is not shipped with the package; give
its path (``detector.weights=PATH``), or keep it at ``<data>/coco/val2017_person/fastestdet/``
(``$GAN_DETECT_DATA`` or ``../shared/data``), where it is found by default.

**Licence.** FastestDet is BSD-3-Clause; its notice must go with every copy of the weights, so
``LICENSE.md`` sits beside ``FastestDet.onnx`` in the same folder. Copy the folder, not the
file; ``weights`` accepts either the folder or the ``.onnx`` file inside it.

Interface (``fastestdet/README.md`` beside the weights gives the check):

* input ``(1, 3, 352, 352)`` float32: the whole image stretched to 352x352 (no letterbox), BGR,
  divided by 255, no mean or std;
* output ``(1, 85, 22, 22)``: per cell of 16x16 input pixels, objectness (sigmoid in the graph),
  ``tx, ty, tw, th``, then 80 class probabilities (softmax in the graph);
* decoding per cell ``(gx, gy)``: ``cx = (tanh(tx) + gx) / 22``, ``cy = (tanh(ty) + gy) / 22``,
  ``w = sigmoid(tw)``, ``h = sigmoid(th)`` as fractions of the original width / height;
  ``score = obj ** 0.6 * max(cls) ** 0.4``, class = argmax; then per-class NMS at IoU 0.45.

:class:`FastestDetDetector` behaves like
:class:`~gan_detect.detector.retinaface.RetinaFaceDetector`: ``forward(list of (3, H, W)
images) -> list of {"boxes", "scores", "labels"}``, ``predict`` -> :class:`Proposals`, and
``score_thresh`` / ``nms_thresh`` / ``detections_per_img`` attributes, so
:func:`~gan_detect.detector.propose.run_proposals` and :class:`~gan_detect.infer.pipeline.Pipeline` take
it as they are. Labels are the contiguous ``1..80`` (the project's ``label = index + 1``);
``category_ids[label - 1]`` (:data:`COCO_CATEGORY_IDS`) is the official COCO category id.

**Sliced inference** (``tile_sizes``): at 352 px a 640-px COCO image shrinks about 1.8x, so a
16-px object covers 9 input pixels and FastestDet barely finds it. With ``tile_sizes=(256,)``
the image is also cut into overlapping square tiles (``sahi.slicing.get_slice_bboxes``, the
``sahi`` package's tile grid), each tile is stretched to 352 and decoded like a whole image, and
the boxes of the tiles and of the whole image are merged by the same per-class NMS. The merge is
plain NMS on tensors rather than sahi's object-by-object postprocess: a proposer keeps hundreds
of low-scored boxes per tile, where sahi's Python-level NMS measured 6-7x slower per image, and
greedy box merging (sahi's default) fuses the candidates into large boxes (small-object recall
10 % instead of 44 %; ``benchmarks/README.md``, ``--bench recall``). The chosen proposal setting
there is ``tile_sizes=(176,)`` with the whole image, 1,000 boxes per image: recall of small
objects 9.5 % -> 55 % on the val2017 person test split, for 17.6 network runs per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gan_detect.detector.onnx_common import (
    COCO_CATEGORY_IDS,
    Decoded,
    TiledOnnxDetector,
    WeightsError,
    onnx_session,
    resolve_onnx,
    warn_without_licence,
)

__all__ = [
    "COCO_CATEGORY_IDS",
    "FastestDetDetector",
    "INPUT_SIZE",
    "WeightsError",
    "decode",
    "default_weights",
    "resolve_weights",
]

INPUT_SIZE = 352
GRID = 22  # output cells per side: INPUT_SIZE / 16
ONNX_NAME = "FastestDet.onnx"


def default_weights() -> Path | None:
    """``<data>/coco/val2017_person/fastestdet`` when the shared data folder has it, else ``None``."""
    from gan_detect.data.paths import shared_data_dir

    data = shared_data_dir()
    folder = None if data is None else data / "coco" / "val2017_person" / "fastestdet"
    return folder if folder is not None and (folder / ONNX_NAME).is_file() else None


def resolve_weights(weights: str | Path | None) -> Path:
    """The ``.onnx`` file of ``weights`` (the file itself, or a folder holding ``FastestDet.onnx``).

    Raises:
        FileNotFoundError: one line naming the path (or where the default was looked for).
    """
    hint = (
        "give detector.weights=PATH (FastestDet.onnx or its folder, with LICENSE.md beside it), "
        "or set GAN_DETECT_DATA to a folder with coco/val2017_person/fastestdet/"
    )
    return resolve_onnx(weights, ONNX_NAME, "FastestDet", default_weights(), hint)


def decode(
    out: np.ndarray | Tensor, width: int, height: int, score_thresh: float = 0.001
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes of one FastestDet output, before NMS.

    Args:
        out: ``(1, 85, 22, 22)`` or ``(85, 22, 22)`` network output.
        width, height: the original image size, px (the boxes are fractions of it).
        score_thresh: keep cells scoring at least this.

    Returns:
        ``boxes`` (N, 4) xyxy px clipped to the image, ``scores`` (N,), ``labels`` (N,) int64
        contiguous 0..79, N <= 484 (one box per cell), all float32 / int64 on the CPU.
    """
    # numpy, not torch: on 484 cells torch's per-op overhead made decoding 10x slower than the
    # network itself, which matters when every tile of sliced inference is decoded.
    t = out.detach().cpu().numpy() if isinstance(out, Tensor) else np.asarray(out)
    t = t.astype(np.float32, copy=False).reshape(85, -1)  # (85, G*G), row-major cells
    g = int(round(t.shape[1] ** 0.5))
    cells = np.arange(t.shape[1])
    labels = t[5:].argmax(0)
    cls_prob = t[5:][labels, cells]
    # The graph applies sigmoid / softmax already; this is the upstream score weighting.
    scores = np.clip(t[0], 0, None) ** 0.6 * np.clip(cls_prob, 0, None) ** 0.4
    keep = np.nonzero(scores >= score_thresh)[0]
    gx, gy = (keep % g).astype(np.float32), (keep // g).astype(np.float32)
    tx, ty, tw, th = t[1:5, keep]
    cx = (np.tanh(tx) + gx) / g * width
    cy = (np.tanh(ty) + gy) / g * height
    w = width / (1.0 + np.exp(-tw))
    h = height / (1.0 + np.exp(-th))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    # Clipped: upstream clips too, and unclipped boxes cost AP (shared/data SOURCES.md §8).
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return (
        torch.from_numpy(boxes),
        torch.from_numpy(scores[keep].astype(np.float32)),
        torch.from_numpy(labels[keep].astype(np.int64)),
    )


class FastestDetDetector(TiledOnnxDetector):
    """Pretrained FastestDet (COCO, 80 classes) on the whole image stretched to 352x352.

    Args:
        weights: ``FastestDet.onnx`` or its folder; ``None`` looks in the shared data folder.
        score_thresh: keep boxes scoring at least this (0.001: upstream's evaluation, and a
            proposer should hand the re-scorer everything).
        nms_thresh: per-class NMS IoU (0.45, as upstream).
        detections_per_img: boxes kept per image after NMS (at most 484 exist).
        num_threads: onnxruntime intra-op threads; ``None`` follows ``torch.get_num_threads()``.
        tile_sizes: side lengths (px of the original image) of square tiles to detect on as
            well; ``()`` is the whole image only. Needs the ``sahi`` package.
        tile_overlap: overlap of neighbouring tiles, as a fraction of the tile side.
        full_image: also detect on the whole image (its boxes find the large objects that
            tiles cut apart); always on when there are no tiles.
        drop_cut: drop tile boxes touching an inner tile edge (parts of objects the tile cuts).

    Raises:
        FileNotFoundError: the weights path does not exist (one line, naming it).
        WeightsError: the file is not an ONNX model with FastestDet's input and output shapes.
        ImportError: naming onnxruntime / opencv when they are not installed.
    """

    model_name = "FastestDet"

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
    ) -> None:
        super().__init__(
            score_thresh, nms_thresh, detections_per_img, tile_sizes, tile_overlap, full_image,
            drop_cut,
        )  # fmt: skip
        self.weights = resolve_weights(weights)
        self._session, self._input_name = onnx_session(
            self.weights, num_threads, "FastestDet", [1, 3, INPUT_SIZE, INPUT_SIZE],
            [1, 85, GRID, GRID],
        )  # fmt: skip
        # After the shape check: a wrong file gets its error, not a licence warning.
        warn_without_licence(self.weights, "LICENSE.md", "FastestDet", "BSD-3-Clause")

    @staticmethod
    def preprocess_bgr(bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (1, 3, 352, 352) float32 in [0, 1], stretched (no letterbox)."""
        import cv2

        resized = cv2.resize(bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return resized.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)

    @classmethod
    def preprocess(cls, image: Tensor) -> np.ndarray:
        """(3, H, W) RGB in [0, 1] -> (1, 3, 352, 352) float32 BGR in [0, 1], stretched."""
        return cls.preprocess_bgr(cls.to_bgr(image))

    def raw_bgr(self, bgr: np.ndarray) -> np.ndarray:
        """The network output (1, 85, 22, 22) for one (H, W, 3) uint8 BGR image."""
        return self._session.run(None, {self._input_name: self.preprocess_bgr(bgr)})[0]

    def raw(self, image: Tensor) -> np.ndarray:
        """The network output (1, 85, 22, 22) for one (3, H, W) [0, 1] image."""
        return self.raw_bgr(self.to_bgr(image))

    def decode_bgr(self, bgr: np.ndarray) -> Decoded:
        """Boxes of one (h, w, 3) uint8 BGR image or tile before NMS, px of it."""
        return decode(self.raw_bgr(bgr), bgr.shape[1], bgr.shape[0], self.score_thresh)
