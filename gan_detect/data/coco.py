"""COCO (Lin et al., ECCV 2014) instance annotations -> :class:`ImageRecord` s, via pycocotools.

Layout: ``root/annotations/instances_<split>.json`` and ``root/<split>/<file_name>``.
Labels are contiguous 1..C in increasing category-id order (0 is background).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from gan_detect.data.records import ImageRecord, xywh_to_xyxy
from gan_detect.utils.errors import InputError


@dataclass
class CocoRecords:
    """A parsed COCO annotation file.

    Attributes:
        records: one per image (images without annotations included), sorted by image id.
        class_names: name of label i + 1 at index i.
        category_ids: original COCO category id of label i + 1 at index i (sorted ascending).
        category_id_to_label: COCO category id -> contiguous label 1..C.
        num_dropped: annotations with zero width or height, not turned into boxes.
        num_outside: annotations entirely outside their image (no area left after clipping).
        num_clipped: boxes that ran over the image border, clipped to it (kept).
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int]
    category_id_to_label: dict[int, int] = field(default_factory=dict)
    num_dropped: int = 0
    num_outside: int = 0
    num_clipped: int = 0

    @property
    def num_classes(self) -> int:
        """C, the number of object classes (background excluded)."""
        return len(self.class_names)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level must be an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: missing or non-list key {key!r}")
    return data


def _check_entries(path: Path, data: dict[str, Any]) -> None:
    """Required keys per entry, so a bad file fails here with the entry named, not deep inside."""
    required = {
        "images": ("id", "file_name", "width", "height"),
        "annotations": ("id", "image_id", "category_id", "bbox"),
        "categories": ("id", "name"),
    }
    for section, keys in required.items():
        for i, entry in enumerate(data[section]):
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise InputError(f"{path}: {section}[{i}] lacks key(s) {missing}")
    image_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for i, ann in enumerate(data["annotations"]):
        if ann["image_id"] not in image_ids:
            raise InputError(f"{path}: annotations[{i}] has unknown image_id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise InputError(
                f"{path}: annotations[{i}] has unknown category_id {ann['category_id']}"
            )
        if not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
            raise InputError(f"{path}: annotations[{i}] bbox must be [x, y, w, h]")


def load_coco_records(ann_json: str | Path, image_dir: str | Path) -> CocoRecords:
    """Read a COCO instances JSON.

    Crowd annotations (``iscrowd=1``) become ``ignore=True`` boxes. Boxes are converted from
    xywh to xyxy = (x, y, x + w, y + h) pixels; zero-width or zero-height boxes are dropped
    (counted in ``num_dropped``) because no IoU can match them. A box running over the image
    border is clipped to it (``num_clipped``), one wholly outside is dropped (``num_outside``).
    Width and height come from the JSON; the image files are not opened.

    Args:
        ann_json: ``instances_<split>.json``.
        image_dir: folder of the images; ``path = image_dir / file_name``.

    Raises:
        FileNotFoundError: the JSON is missing.
        ValueError: invalid JSON, or a missing key / unknown id, naming the file and the entry.
    """
    path = Path(ann_json)
    data = _load_json(path)
    _check_entries(path, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    category_ids = sorted(coco.getCatIds())
    class_names = [coco.cats[c]["name"] for c in category_ids]
    to_label = {c: i + 1 for i, c in enumerate(category_ids)}
    records, dropped, outside, clipped = [], 0, 0, 0
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None))
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        sized = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        dropped += int((~sized).sum())
        xyxy = xywh_to_xyxy(xywh)
        w, h = float(info["width"]), float(info["height"])
        if w > 0 and h > 0:  # clip what runs over the border; drop what lies wholly outside
            inside = xyxy.copy()
            inside[:, 0::2] = inside[:, 0::2].clip(0, w)
            inside[:, 1::2] = inside[:, 1::2].clip(0, h)
            has_area = (inside[:, 2] > inside[:, 0]) & (inside[:, 3] > inside[:, 1])
            outside += int((sized & ~has_area).sum())
            clipped += int((sized & has_area & np.any(inside != xyxy, axis=1)).sum())
            xyxy, sized = inside, sized & has_area
        keep = sized
        kept = [a for a, k in zip(anns, keep, strict=True) if k]
        records.append(
            ImageRecord(
                image_id=str(img_id),
                path=str(Path(image_dir) / info["file_name"]),
                boxes=xyxy[keep],
                labels=np.array([to_label[a["category_id"]] for a in kept], np.int64),
                ignore=np.array([bool(a.get("iscrowd", 0)) for a in kept], bool),
                width=int(info["width"]),
                height=int(info["height"]),
                areas=np.array([_area(a) for a in kept], np.float32),
            )
        )
    return CocoRecords(records, class_names, category_ids, to_label, dropped, outside, clipped)


def _area(ann: dict[str, Any]) -> float:
    """The annotation's ``area`` (0 when absent or not a number: the box's w * h is used)."""
    v = ann.get("area")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def coco_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(root/annotations/instances_<split>.json, root/<split>/)``, e.g. ``split="val2017"``.

    Raises:
        FileNotFoundError: naming the missing file or folder.
    """
    return coco_split_files(root, split)


def coco_split_files(
    root: str | Path,
    split: str,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    key: str | None = None,
) -> tuple[Path, Path]:
    """``(instances JSON, image folder)`` a split is read from: the given ones as given, the
    official layout under ``root`` (:func:`coco_split_paths`) for what is not given. The file
    and folder actually used are checked; errors name the key that chooses them
    (``data.<key>_annotation_file`` / ``data.<key>_image_dir``, ``key`` defaulting to ``split``).

    Raises:
        FileNotFoundError: naming the missing file or folder and the key to set.
    """
    key = key or split
    root = Path(root)
    layout = f" (the official layout under data.root={root}); give yours with "
    if annotation_file is not None:
        ann = Path(annotation_file)
        if not ann.is_file():
            raise FileNotFoundError(
                f"data.{key}_annotation_file: COCO annotation file not found: {ann}"
            )
    else:
        ann = root / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            raise FileNotFoundError(
                f"COCO annotation file not found: {ann}{layout}data.{key}_annotation_file=PATH"
            )
    if image_dir is not None:
        images = Path(image_dir)
        if not images.is_dir():
            raise FileNotFoundError(f"data.{key}_image_dir: COCO image folder not found: {images}")
    else:
        images = root / split
        if not images.is_dir():
            raise FileNotFoundError(
                f"COCO image folder not found: {images}{layout}data.{key}_image_dir=PATH"
            )
    return ann, images
