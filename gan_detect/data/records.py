"""Dataset-independent annotation records: what the WIDER FACE and COCO parsers produce."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from gan_detect.utils.errors import InputError


@dataclass
class ImageRecord:
    """One annotated image, as read from an official layout.

    Attributes:
        image_id: stable id; WIDER FACE ``"<event>/<name>"`` (no extension), COCO ``str(image id)``.
        path: absolute or root-relative path of the image file.
        boxes: (M, 4) float32, xyxy in absolute pixels of the original image.
        labels: (M,) int64, contiguous class ids 1..C (0 is reserved for background).
        ignore: (M,) bool, True for boxes that are neither positives nor negatives
            (WIDER FACE "invalid" faces, COCO crowd regions).
        width, height: image size in pixels when the annotation file states it, else 0.
        areas: (M,) float32 annotated object areas in px^2 (COCO's ``area``: the mask's), 0
            where the annotation states none; the size buckets of every AP use it, else the
            box's w * h (``metrics.coco_eval.object_areas``, COCO's rule). Empty: all 0.
    """

    image_id: str
    path: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    width: int = 0
    height: int = 0
    areas: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.ignore = np.asarray(self.ignore, dtype=bool).reshape(-1)
        self.areas = np.asarray(self.areas, dtype=np.float32).reshape(-1)
        if len(self.areas) == 0:
            self.areas = np.zeros(len(self.boxes), np.float32)  # none annotated: w * h
        if not (len(self.boxes) == len(self.labels) == len(self.ignore) == len(self.areas)):
            raise InputError(
                f"{self.image_id}: boxes ({len(self.boxes)}), labels ({len(self.labels)}), "
                f"ignore ({len(self.ignore)}) and areas ({len(self.areas)}) must have the same "
                "length"
            )

    def clipped_to(self, height: int, width: int) -> ImageRecord:
        """This record with its boxes clipped to a (height, width) image.

        WIDER FACE annotation files carry no image size, so their boxes are clipped here, when
        the image is read (COCO boxes are clipped at parse time). A box running over the border
        keeps its inside part; one wholly outside (no area left) is dropped with a warning
        naming the image, as a malformed annotation. Returns ``self`` when nothing changes.
        """
        b = self.boxes
        if len(b) == 0 or (
            b[:, 0].min() >= 0 and b[:, 1].min() >= 0 and b[:, 2].max() <= width
            and b[:, 3].max() <= height
        ):  # fmt: skip
            return self
        clipped = b.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        if not keep.all():
            warnings.warn(
                f"{self.path}: {int((~keep).sum())} annotated box(es) lie wholly outside the "
                f"{width}x{height} image and are dropped",
                stacklevel=2,
            )
        return dataclasses.replace(
            self, boxes=clipped[keep], labels=self.labels[keep], ignore=self.ignore[keep],
            areas=self.areas[keep], width=width, height=height,
        )  # fmt: skip


@dataclass
class Proposals:
    """Detector output for one image (proposals for the GAN, or final detections).

    Attributes:
        boxes: (K, 4) float32 xyxy absolute pixels.
        scores: (K,) float32 detector confidence.
        labels: (K,) int64 contiguous class ids 1..C (1 for faces).
        class_labels, class_scores: optional (K, T) int64 / float32, the detector's T best
            classes of each box (1..C) and their scores, best first, when the detector gives
            them (YOLOX-nano: T = 3); ``None`` otherwise.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_labels: np.ndarray | None = None
    class_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if (self.class_labels is None) != (self.class_scores is None):
            raise ValueError("class_labels and class_scores come together")
        if self.class_labels is not None and self.class_scores is not None:
            k = len(self.scores)
            self.class_labels = np.asarray(self.class_labels, dtype=np.int64).reshape(k, -1)
            self.class_scores = np.asarray(self.class_scores, dtype=np.float32).reshape(k, -1)
            if self.class_labels.shape != self.class_scores.shape:
                raise ValueError(
                    f"class_labels {self.class_labels.shape} and class_scores "
                    f"{self.class_scores.shape} differ"
                )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Proposals:
        """The proposals at ``index`` (indices or a boolean mask), class scores included."""
        cl, cs = self.class_labels, self.class_scores
        return Proposals(
            self.boxes[index],
            self.scores[index],
            self.labels[index],
            None if cl is None else cl[index],
            None if cs is None else cs[index],
        )

    def top_k(self, k: int) -> Proposals:
        """The k highest-scoring proposals, sorted by descending score (stable on ties)."""
        return self.take(np.argsort(-self.scores, kind="stable")[: max(k, 0)])


def xyxy_to_xywh(boxes: np.typing.ArrayLike) -> np.ndarray:
    """(N, 4) corners x1, y1, x2, y2 -> a new float64 (N, 4) array x, y, w = x2 - x1, h = y2 - y1.

    The numpy twin of ``torchvision.ops.box_convert(..., "xyxy", "xywh")``, for code that must
    not import torch (the WIDER FACE protocol, the proposal files).
    """
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    b[:, 2:] -= b[:, :2]
    return b


def xywh_to_xyxy(boxes: np.typing.ArrayLike) -> np.ndarray:
    """(N, 4) x, y, w, h -> a new float64 (N, 4) array of corners x1, y1, x2 = x + w, y2 = y + h."""
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    b[:, 2:] += b[:, :2]
    return b
