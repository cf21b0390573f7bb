"""WIDER FACE evaluation ground truth (Yang et al., CVPR 2016): the official ``.mat`` files.

Also a mat-free fallback that splits faces by height; its numbers are NOT the official protocol.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan_detect.data.records import xyxy_to_xywh
from gan_detect.utils.errors import InputError

SETTINGS: tuple[str, str, str] = ("easy", "medium", "hard")
# Fallback split by face height in pixels (Bai et al. CVPR 2018 describe the settings this way);
# the official split also uses blur, occlusion and pose, so fallback APs differ from official ones.
FALLBACK_MIN_HEIGHTS: tuple[float, float, float] = (50.0, 30.0, 10.0)


class UnknownImageIds(InputError):
    """Image ids a user listed (``--images``) that the ground truth lacks."""


@dataclass
class WiderGroundTruth:
    """Ground truth of the WIDER FACE evaluation, one entry per image, in ``.mat`` order.

    Attributes:
        image_ids: I ids ``"<event>/<name>"`` (event folder such as ``0--Parade``, no ``.jpg``).
        boxes: I arrays (M_i, 4) float64 ``x, y, w, h`` in pixels, as in ``face_bbx_list``.
        keep: I arrays (M_i, 3) bool: the box counts in the easy / medium / hard setting.
            Boxes not kept in a setting are ignored there (neither positive nor negative).
        official: True when ``keep`` comes from the official ``gt_list``; False for the fallback.
    """

    image_ids: list[str]
    boxes: list[np.ndarray]
    keep: list[np.ndarray]
    official: bool = True

    def __post_init__(self) -> None:
        if not len(self.image_ids) == len(self.boxes) == len(self.keep):
            raise ValueError(
                f"image_ids ({len(self.image_ids)}), boxes ({len(self.boxes)}) and keep "
                f"({len(self.keep)}) must have the same length"
            )
        if len(set(self.image_ids)) != len(self.image_ids):
            raise ValueError("WiderGroundTruth.image_ids contains duplicates")
        self.boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in self.boxes]
        self.keep = [np.asarray(k, dtype=bool).reshape(-1, 3) for k in self.keep]
        for image_id, b, k in zip(self.image_ids, self.boxes, self.keep, strict=True):
            if len(b) != len(k):
                raise ValueError(f"{image_id}: {len(b)} boxes but {len(k)} keep rows")

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, image_ids: Iterable[str]) -> WiderGroundTruth:
        """Restrict to ``image_ids`` (kept in ``.mat`` order); unknown ids raise ``InputError``
        (a list the user gave: ``--images``, a subset annotation file)."""
        wanted = set(image_ids)
        unknown = wanted.difference(self.image_ids)
        if unknown:
            raise UnknownImageIds(
                f"{len(unknown)} of {len(wanted)} image ids are not in the WIDER FACE "
                f"ground truth, e.g. {min(unknown)!r} (ids are 'event/name' without .jpg)"
            )
        idx = [i for i, image_id in enumerate(self.image_ids) if image_id in wanted]
        return WiderGroundTruth(
            [self.image_ids[i] for i in idx],
            [self.boxes[i] for i in idx],
            [self.keep[i] for i in idx],
            self.official,
        )


def _mat_str(cell: np.ndarray) -> str:
    """The string held by a scipy ``loadmat`` cell entry (an array wrapping one str)."""
    return str(np.asarray(cell).reshape(-1)[0])


def _loadmat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE ground truth file not found: {path}")
    # Only the needed variables: the attribute label lists are not used here.
    names = ["event_list", "file_list", "face_bbx_list", "gt_list"]
    return scipy.io.loadmat(str(path), variable_names=names)


def load_wider_ground_truth(gt_dir: str | Path) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``.

    ``gt_dir`` may instead be an annotation ``.txt`` in the official ``bbx_gt`` format (your
    own images): its boxes, with the settings split by face height (:func:`fallback_ground_truth`,
    ``official=False``, not comparable with published numbers).

    Raises:
        FileNotFoundError: naming the first missing file.
        ValueError: when the four files disagree on events or images.
    """
    gt_dir = Path(gt_dir)
    if gt_dir.suffix.lower() == ".txt" and gt_dir.is_file():
        from gan_detect.data.wider_face import read_wider_annotations

        records = read_wider_annotations(gt_dir).records
        return fallback_ground_truth(
            {r.image_id: r.boxes for r in records}, {r.image_id: r.ignore for r in records}
        )
    face = _loadmat(gt_dir / "wider_face_val.mat")
    settings = {s: _loadmat(gt_dir / f"wider_{s}_val.mat") for s in SETTINGS}
    events = face["event_list"].reshape(-1)
    files = face["file_list"].reshape(-1)
    bbx = face["face_bbx_list"].reshape(-1)
    image_ids: list[str] = []
    boxes: list[np.ndarray] = []
    keep: list[np.ndarray] = []
    for e, event_cell in enumerate(events):
        event = _mat_str(event_cell)
        names = [_mat_str(c) for c in files[e].reshape(-1)]
        event_boxes = bbx[e].reshape(-1)
        gt_lists = {s: settings[s]["gt_list"].reshape(-1)[e].reshape(-1) for s in SETTINGS}
        for s in SETTINGS:
            if len(gt_lists[s]) != len(names):
                raise InputError(
                    f"wider_{s}_val.mat: event {event} has {len(gt_lists[s])} images, "
                    f"wider_face_val.mat has {len(names)}"
                )
        for j, name in enumerate(names):
            b = np.asarray(event_boxes[j], dtype=np.float64).reshape(-1, 4)
            k = np.zeros((len(b), 3), dtype=bool)
            for col, s in enumerate(SETTINGS):
                # gt_list holds 1-based indices, stored as uint8/uint16: widen before subtracting.
                idx = np.asarray(gt_lists[s][j], dtype=np.int64).reshape(-1) - 1
                if idx.size and (idx.min() < 0 or idx.max() >= len(b)):
                    raise InputError(
                        f"wider_{s}_val.mat: {event}/{name} gt_list index out of range"
                    )
                k[idx, col] = True
            image_ids.append(f"{event}/{name}")
            boxes.append(b)
            keep.append(k)
    return WiderGroundTruth(image_ids, boxes, keep, official=True)


def fallback_keep(boxes_xywh: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Height-based easy/medium/hard masks (M, 3): faces taller than 50 / 30 / 10 px, not ignored.

    Args:
        boxes_xywh: (M, 4) x, y, w, h in pixels.
        ignore: (M,) bool, e.g. WIDER "invalid" faces; these are kept in no setting.
    """
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    heights = boxes_xywh[:, 3:4]
    keep = heights > np.asarray(FALLBACK_MIN_HEIGHTS)[None, :]
    if ignore is not None:
        keep &= ~np.asarray(ignore, dtype=bool).reshape(-1, 1)
    return keep


def fallback_ground_truth(
    boxes_xyxy: Mapping[str, np.ndarray], ignore: Mapping[str, np.ndarray] | None = None
) -> WiderGroundTruth:
    """Ground truth without the ``.mat`` files (e.g. generated data): settings by face height.

    Args:
        boxes_xyxy: image id -> (M, 4) x1, y1, x2, y2 pixels (x2 = x + w, the official convention).
        ignore: image id -> (M,) bool (invalid faces); missing ids mean nothing ignored.

    Returns:
        A ``WiderGroundTruth`` with ``official=False``. A warning says that APs computed from it
        are not comparable with published WIDER FACE numbers.
    """
    warnings.warn(
        "WIDER FACE settings from face heights (>50/30/10 px), not the official gt_list: "
        "the APs are not comparable with published numbers",
        stacklevel=2,
    )
    ids = list(boxes_xyxy)
    xywh = []
    keep = []
    for image_id in ids:
        b = xyxy_to_xywh(boxes_xyxy[image_id])
        xywh.append(b)
        keep.append(fallback_keep(b, None if ignore is None else ignore.get(image_id)))
    return WiderGroundTruth(ids, xywh, keep, official=False)
