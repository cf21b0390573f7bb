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

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from gan_detect.detector.onnx_common import ImageListDetector
from gan_detect.utils.checkpoints import CheckpointError

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
# The 80 official COCO category ids in sorted order: contiguous index k -> COCO_CATEGORY_IDS[k].
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
)


class WeightsError(CheckpointError):
    """A detector weights file is unreadable or not what it should be (the message names it)."""


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
    if weights is None:
        found = default_weights()
        if found is None:
            raise FileNotFoundError(
                "FastestDet weights not found: give detector.weights=PATH (FastestDet.onnx or "
                "its folder, with LICENSE.md beside it), or set GAN_DETECT_DATA to a folder with "
                "coco/val2017_person/fastestdet/"
            )
        weights = found
    path = Path(weights).expanduser()
    if path.is_dir():
        onnx = sorted(path.glob("*.onnx"))
        if (path / ONNX_NAME).is_file():
            return path / ONNX_NAME
        if len(onnx) == 1:
            return onnx[0]
        raise FileNotFoundError(
            f"FastestDet weights not found: {path} is a folder without {ONNX_NAME}"
            + (f" (it holds {len(onnx)} .onnx files; name one)" if onnx else "")
        )
    if not path.is_file():
        raise FileNotFoundError(f"FastestDet weights not found: {path}")
    return path


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


class FastestDetDetector(ImageListDetector):
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

    Raises:
        FileNotFoundError: the weights path does not exist (one line, naming it).
        WeightsError: the file is not an ONNX model with FastestDet's input and output shapes.
        ImportError: naming onnxruntime / opencv when they are not installed.
    """

    category_ids: tuple[int, ...] = COCO_CATEGORY_IDS

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
    ) -> None:
        super().__init__()
        try:
            import cv2  # noqa: F401
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                f"the built-in FastestDet proposer needs onnxruntime and opencv-python: {err}"
            ) from None
        if tile_sizes:
            try:
                import sahi.slicing  # noqa: F401
            except ImportError as err:
                raise ImportError(f"FastestDet tile_sizes need the sahi package: {err}") from None
        if any(int(t) < 16 for t in tile_sizes) or not 0 <= tile_overlap < 1:
            raise ValueError(
                f"tile_sizes must be >= 16 px and 0 <= tile_overlap < 1; got {list(tile_sizes)}, "
                f"{tile_overlap}"
            )
        self.tile_sizes = tuple(int(t) for t in tile_sizes)
        self.tile_overlap = float(tile_overlap)
        self.full_image = bool(full_image)
        self.weights = resolve_weights(weights)
        if not (self.weights.parent / "LICENSE.md").is_file():
            # Not an error (the weights work without it), but a copy without it breaks BSD-3.
            warnings.warn(
                f"no LICENSE.md beside {self.weights}: FastestDet is BSD-3-Clause and its notice "
                "must travel with the weights (copy the whole fastestdet/ folder)",
                stacklevel=2,
            )
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        # No busy-waiting between runs: ORT's spinning threads starve torch's NMS / decoding on
        # a small CPU (measured 1.5x slower per image with it on a loaded 2-core machine).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # onnxruntime's own multi-line log would bury the one-line error below.
        opts.log_severity_level = 4
        try:
            self._session: Any = ort.InferenceSession(
                str(self.weights), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types (Fail, InvalidProtobuf, ...)
            size = self.weights.stat().st_size
            text = str(err).strip()
            first = text.splitlines()[0][:160] if text else type(err).__name__
            raise WeightsError(
                f"{self.weights}: not a valid ONNX model ({size} bytes; onnxruntime: {first})"
            ) from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape_in = list(inputs[0].shape) if len(inputs) == 1 else None
        shape_out = list(outputs[0].shape) if len(outputs) == 1 else None
        if shape_in != [1, 3, INPUT_SIZE, INPUT_SIZE] or shape_out != [1, 85, GRID, GRID]:
            raise WeightsError(
                f"{self.weights}: an ONNX model, but not FastestDet (input {shape_in}, output "
                f"{shape_out}; expected [1, 3, {INPUT_SIZE}, {INPUT_SIZE}] -> [1, 85, {GRID}, {GRID}])"
            )
        self._input_name: str = inputs[0].name

    @staticmethod
    def to_bgr(image: Tensor) -> np.ndarray:
        """(3, H, W) RGB in [0, 1] -> (H, W, 3) uint8 BGR, the array ``cv2.imread`` gives."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
        # Back to the 8-bit pixels the JPEG decoded to, so the resize sees what cv2.imread gives.
        rgb = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        return np.ascontiguousarray(rgb.cpu().numpy()[:, :, ::-1])

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

    def candidates(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every box scoring >= ``score_thresh`` before NMS, from the whole image and the tiles.

        Returns:
            ``boxes`` (N, 4) xyxy px of the image, ``scores`` (N,), ``labels`` (N,) 0..79.
        """
        bgr = self.to_bgr(image)
        h, w = bgr.shape[:2]
        parts = []
        if self.full_image or not self.tile_sizes:
            parts.append(decode(self.raw_bgr(bgr), w, h, self.score_thresh))
        for x1, y1, x2, y2 in self.tiles(h, w):
            b, s, lab = decode(self.raw_bgr(bgr[y1:y2, x1:x2]), x2 - x1, y2 - y1, self.score_thresh)
            parts.append((b + torch.tensor([x1, y1, x1, y1], dtype=b.dtype), s, lab))
        boxes, scores, labels = (torch.cat(t) for t in zip(*parts, strict=True))
        return boxes, scores, labels

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """One (3, H, W) [0, 1] image -> ``boxes`` (D, 4) xyxy px, ``scores`` (D,), ``labels`` (D,).

        Labels are 1..80 (``category_ids[label - 1]`` is the COCO id); D <= detections_per_img.
        Whole-image and tile boxes are merged by one per-class NMS.
        """
        boxes, scores, labels = self.candidates(image)
        kept = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept] + 1}
