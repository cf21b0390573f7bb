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
:func:`~gan_detect.detector.propose.run_proposals` and :class:`~gan_detect.predict.Pipeline` take
it as they are. Labels are the contiguous ``1..80`` (the project's ``label = index + 1``);
``category_ids[label - 1]`` (:data:`COCO_CATEGORY_IDS`) is the official COCO category id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from gan_detect.checkpoints import CheckpointError
from gan_detect.data.records import Proposals

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
    t = torch.as_tensor(out).float().reshape(85, -1)  # (85, G*G), row-major cells
    g = int(round(t.shape[1] ** 0.5))
    gy, gx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    cls_prob, labels = t[5:].max(0)
    # The graph applies sigmoid / softmax already; this is the upstream score weighting.
    scores = t[0].clamp_min(0).pow(0.6) * cls_prob.clamp_min(0).pow(0.4)
    cx = (torch.tanh(t[1]) + gx.reshape(-1)) / g * width
    cy = (torch.tanh(t[2]) + gy.reshape(-1)) / g * height
    w = torch.sigmoid(t[3]) * width
    h = torch.sigmoid(t[4]) * height
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    # Clipped: upstream clips too, and unclipped boxes cost AP (shared/data SOURCES.md §8).
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = scores >= score_thresh
    return boxes[keep], scores[keep], labels[keep]


class FastestDetDetector(nn.Module):
    """Pretrained FastestDet (COCO, 80 classes) on the whole image stretched to 352x352.

    Args:
        weights: ``FastestDet.onnx`` or its folder; ``None`` looks in the shared data folder.
        score_thresh: keep boxes scoring at least this (0.001: upstream's evaluation, and a
            proposer should hand the re-scorer everything).
        nms_thresh: per-class NMS IoU (0.45, as upstream).
        detections_per_img: boxes kept per image after NMS (at most 484 exist).
        num_threads: onnxruntime intra-op threads; ``None`` follows ``torch.get_num_threads()``.

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
    ) -> None:
        super().__init__()
        try:
            import cv2  # noqa: F401
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                f"the built-in FastestDet proposer needs onnxruntime and opencv-python: {err}"
            ) from None
        self.weights = resolve_weights(weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # onnxruntime's own multi-line log would bury the one-line error
        try:
            self._session: Any = ort.InferenceSession(
                str(self.weights), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types (Fail, InvalidProtobuf, ...)
            size = self.weights.stat().st_size
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
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
    def preprocess(image: Tensor) -> np.ndarray:
        """(3, H, W) RGB in [0, 1] -> (1, 3, 352, 352) float32 BGR in [0, 1], stretched."""
        import cv2

        # Back to the 8-bit pixels the JPEG decoded to, so the resize sees what cv2.imread gives.
        rgb = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        bgr = np.ascontiguousarray(rgb.cpu().numpy()[:, :, ::-1])
        resized = cv2.resize(bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return (resized.transpose(2, 0, 1)[None].astype(np.float32) / 255.0).astype(np.float32)

    def raw(self, image: Tensor) -> np.ndarray:
        """The network output (1, 85, 22, 22) for one (3, H, W) [0, 1] image."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
        return self._session.run(None, {self._input_name: self.preprocess(image)})[0]

    def detect(self, image: Tensor) -> dict[str, Tensor]:
        """One (3, H, W) [0, 1] image -> ``boxes`` (D, 4) xyxy px, ``scores`` (D,), ``labels`` (D,).

        Labels are 1..80 (``category_ids[label - 1]`` is the COCO id); D <= detections_per_img.
        """
        h, w = int(image.shape[1]), int(image.shape[2])
        boxes, scores, labels = decode(self.raw(image), w, h, self.score_thresh)
        kept = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept] + 1}

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """torchvision-style detections for a list of (3, H, W) [0, 1] images (any sizes)."""
        return [self.detect(im) for im in images]

    def predict(self, images: list[Tensor]) -> list[Proposals]:
        """Detections as :class:`Proposals` (boxes in input pixels, labels 1..80)."""
        out = []
        for d in self.forward(images):
            out.append(Proposals(d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy()))
        return out
