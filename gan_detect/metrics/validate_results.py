"""Checks of the results files the metrics read back (COCO results JSON, WIDER prediction trees).

A results file is user input (or a file another tool wrote): a truncated JSON, an object where
a list belongs, a detection without ``score``, NaN scores, negative boxes or categories the
ground truth lacks would otherwise give a traceback or, worse, an AP with no word of warning.
Each problem is an :class:`InputError` naming the file and the entry. :func:`coverage_notice`
says when the two sides of a comparison cover different images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.utils.errors import InputError

__all__ = [
    "check_coco_gt",
    "check_coco_results",
    "check_wider_predictions",
    "coverage_notice",
    "read_json",
]


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parsed JSON of ``path``.

    Raises:
        FileNotFoundError: naming ``what`` and the path.
        InputError: naming the path: not UTF-8 or not valid JSON (e.g. cut off), with the
            line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a text (UTF-8) JSON file ({err.reason})") from None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_coco_results(
    rows: Any,
    source: str | Path,
    category_ids: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """A COCO results list, checked entry by entry; returns it.

    Each entry: ``image_id`` and ``category_id`` integers, ``bbox`` four finite numbers
    ``[x, y, w, h]`` with ``w, h >= 0``, a finite ``score``; ``category_id`` among
    ``category_ids`` (the ground truth's) when given. Image ids the ground truth lacks are not
    an error here: the caller drops them and says how many (:func:`coverage_notice`).

    Raises:
        InputError: ``"<source>: entry <n>: <problem>"`` (the first bad entry).
    """
    if not isinstance(rows, list):
        raise InputError(
            f"{source}: a COCO results file is a JSON list of detections, got a JSON "
            f"{type(rows).__name__ if not isinstance(rows, dict) else 'object'}"
        )
    cats = set(category_ids) if category_ids is not None else None
    for n, r in enumerate(rows):

        def bad(msg: str, n: int = n) -> InputError:
            return InputError(f"{source}: entry {n}: {msg}")

        if not isinstance(r, dict):
            raise bad(f"expected an object, got {type(r).__name__}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise bad(f"missing {', '.join(missing)} (needs image_id, category_id, bbox, score)")
        for k in ("image_id", "category_id"):
            if not isinstance(r[k], int) or isinstance(r[k], bool):
                raise bad(f"{k} must be an integer, got {r[k]!r}")
        box = r["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise bad(f"bbox must be [x, y, w, h] numbers, got {box!r}")
        if not all(math.isfinite(v) for v in box):
            raise bad(f"bbox has a non-finite number: {box}")
        if box[2] < 0 or box[3] < 0:
            raise bad(f"bbox has a negative width or height: {box} (COCO boxes are x, y, w, h)")
        if not _number(r["score"]) or not math.isfinite(r["score"]):
            raise bad(f"score must be a finite number, got {r['score']!r}")
        if cats is not None and r["category_id"] not in cats:
            raise bad(
                f"category_id {r['category_id']} is not a category of the ground truth "
                f"(it has {len(cats)}: {', '.join(map(str, sorted(cats)[:12]))}"
                f"{', ...' if len(cats) > 12 else ''})"
            )
    return rows


def check_coco_gt(data: Any, source: str | Path) -> dict[str, Any]:
    """A COCO instances (ground-truth) dict, checked: ``images`` with integer ``id``,
    ``annotations`` with ``image_id`` of a listed image, ``category_id`` and a four-number
    ``bbox``, ``categories`` with integer ``id``; returns it.

    Raises:
        InputError: naming ``source``, the list and the entry.
    """
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise InputError(
            f"{source}: expected a COCO instances object with images, annotations and categories"
        )
    for name in ("images", "annotations", "categories"):
        if not isinstance(data.get(name, []), list):
            raise InputError(f"{source}: '{name}' must be a list")
    ids = set()
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            raise InputError(f"{source}: images[{n}] needs an integer id")
        ids.add(im["id"])
    for n, c in enumerate(data.get("categories", [])):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise InputError(f"{source}: categories[{n}] needs an integer id")
    for n, a in enumerate(data["annotations"]):
        box = a.get("bbox") if isinstance(a, dict) else None
        if (
            not isinstance(a, dict)
            or a.get("image_id") not in ids
            or not isinstance(a.get("category_id"), int)
            or not isinstance(box, list)
            or len(box) != 4
            or not all(_number(v) and math.isfinite(v) for v in box)
        ):
            raise InputError(
                f"{source}: annotations[{n}] needs the image_id of a listed image, an integer "
                "category_id and a bbox of four finite numbers"
            )
    return data


def check_wider_predictions(preds: Mapping[str, np.ndarray], source: str | Path) -> None:
    """WIDER prediction arrays ``{image id: (K, 5) x y w h score}``: finite, ``w, h >= 0``.

    Raises:
        InputError: naming ``source``'s file of the first bad image and the row.
    """
    for image_id, a in preds.items():
        a = np.asarray(a, dtype=np.float64).reshape(-1, 5)
        bad = ~np.isfinite(a).all(1) | (a[:, 2] < 0) | (a[:, 3] < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{Path(source) / image_id}.txt: box {i + 1} {a[i].tolist()} has a negative "
                "width or height or a non-finite number (lines are x y w h score)"
            )


def coverage_notice(
    name_a: str,
    covered_a: Collection[Any],
    name_b: str,
    covered_b: Collection[Any],
    total: int,
    tolerance: float = 0.05,
) -> str | None:
    """One line when A and B have detections on clearly different sets of the ``total`` images
    (more than ``tolerance`` of them on one side only), else None: images one side lacks count
    as images without detections, so a verdict may only reflect that one side was run on fewer
    images. A few such images are normal (a method may find nothing on an image)."""
    a, b = set(covered_a), set(covered_b)
    if len(a ^ b) <= tolerance * max(total, 1):
        return None
    return (
        f"the two sides cover different images: {name_a} has detections on {len(a)} of "
        f"{total} images, {name_b} on {len(b)} ({len(a - b)} only in A, {len(b - a)} only in "
        "B); images a side lacks count as images without detections for it"
    )
