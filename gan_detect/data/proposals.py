"""Read and write proposals / detections in the two official layouts.

WIDER FACE: one ``<event>/<name>.txt`` per image (name, count, then ``x y w h score`` lines).
COCO: a results JSON, a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
(what pycocotools ``loadRes``, MMDetection and Detectron2 read and write).
Internally boxes are xyxy with ``x2 = x + w`` (the conversion both official tools use).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.data.records import Proposals, xywh_to_xyxy, xyxy_to_xywh
from gan_detect.utils.errors import InputError


def _fmt(v: float) -> str:
    # 9 significant digits round-trip any float32 exactly, without float64 noise digits.
    return f"{float(v):.9g}"


def _split_wider_id(image_id: str) -> tuple[str, str]:
    parts = image_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"WIDER FACE image id must be '<event>/<name>', got {image_id!r}")
    return parts[0], parts[1]


def write_wider_tree(dets: Mapping[str, Proposals], out_dir: str | Path) -> None:
    """Write one ``<out_dir>/<event>/<name>.txt`` per image id ``"event/name"``.

    Lines: the name (no extension), the count, then ``x y w h score`` (xywh pixels), in
    descending score order (the evaluator sorts anyway; sorted files help other tools).
    """
    out_dir = Path(out_dir)
    for image_id, p in dets.items():
        event, name = _split_wider_id(image_id)
        order = np.argsort(-p.scores, kind="stable")
        xywh = xyxy_to_xywh(p.boxes[order])
        lines = [name, str(len(p))]
        lines += [
            " ".join(_fmt(v) for v in (*b, s)) for b, s in zip(xywh, p.scores[order], strict=True)
        ]
        (out_dir / event).mkdir(parents=True, exist_ok=True)
        (out_dir / event / f"{name}.txt").write_text("\n".join(lines) + "\n")


def read_wider_txt(path: str | Path) -> np.ndarray:
    """One WIDER prediction file -> (K, 5) float64 ``x, y, w, h, score`` in file order.

    Blank lines are skipped. The first line must name the file's image (directories and a
    ``.jpg`` suffix are tolerated), the second the count of box lines that follow.

    Raises:
        ValueError: naming the file and 1-based line number of a malformed line.
    """
    path = Path(path)
    lines = [(n, s.strip()) for n, s in enumerate(path.read_text().splitlines(), 1)]
    lines = [(n, s) for n, s in lines if s]
    if len(lines) < 2:
        raise InputError(f"{path}: expected the image name and a count, got {len(lines)} lines")
    name = lines[0][1].replace("\\", "/").rsplit("/", 1)[-1]
    name = name[:-4] if name.lower().endswith(".jpg") else name
    if name != path.stem:
        raise InputError(f"{path}:{lines[0][0]}: image name {lines[0][1]!r} != file name")
    try:
        count = int(lines[1][1])
    except ValueError:
        raise InputError(
            f"{path}:{lines[1][0]}: expected a box count, got {lines[1][1]!r}"
        ) from None
    rows = lines[2:]
    if count != len(rows):
        raise InputError(f"{path}:{lines[1][0]}: count says {count} boxes, file has {len(rows)}")
    if not rows:
        return np.zeros((0, 5), np.float64)
    try:  # fast path: numpy's C reader (2x faster than splitting in Python); the loop locates errors
        out = np.loadtxt(io.StringIO("\n".join(s for _, s in rows)), np.float64, None, ndmin=2)
        if out.shape == (len(rows), 5) and np.isfinite(out).all():
            return out
    except ValueError:
        pass
    fields = [s.split() for _, s in rows]
    out = np.zeros((len(rows), 5), np.float64)
    for i, (n, s) in enumerate(rows):
        try:
            if len(fields[i]) != 5:
                raise ValueError
            out[i] = [float(f) for f in fields[i]]
        except ValueError:
            raise InputError(f"{path}:{n}: expected 'x y w h score', got {s!r}") from None
        if not np.isfinite(out[i]).all():
            raise InputError(f"{path}:{n}: non-finite value in {s!r}")
    return out


def read_wider_tree_arrays(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """Every ``<event>/<name>.txt`` under ``pred_dir`` -> ``{"event/name": (K, 5) float64}``.

    Float64 and unsorted, exactly as written: what the official evaluation reads.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"WIDER FACE prediction folder not found: {pred_dir}")
    return {
        f"{f.parent.name}/{f.stem}": read_wider_txt(f) for f in sorted(pred_dir.glob("*/*.txt"))
    }


def read_wider_tree(pred_dir: str | Path, top_k: int | None = None) -> dict[str, Proposals]:
    """Read a WIDER prediction tree into ``Proposals`` (xyxy, labels 1, top ``top_k`` by score)."""
    out = {}
    for image_id, a in read_wider_tree_arrays(pred_dir).items():
        p = Proposals(xywh_to_xyxy(a[:, :4]), a[:, 4], np.ones(len(a), np.int64))
        out[image_id] = p.top_k(top_k) if top_k is not None else p
    return out


def _category(lab: int, category_ids: Sequence[int] | None, image_id: str) -> int:
    """COCO category id of a label 1..C (``category_ids[label - 1]``, or the label itself)."""
    if category_ids is not None and not 1 <= lab <= len(category_ids):
        raise InputError(f"image {image_id}: label {lab} outside 1..{len(category_ids)}")
    return int(category_ids[lab - 1]) if category_ids is not None else int(lab)


def write_coco_results(
    dets: Mapping[str, Proposals], path: str | Path, category_ids: Sequence[int] | None = None
) -> None:
    """Write a COCO results JSON; ``category_id = category_ids[label - 1]`` (or ``label``).

    Image ids must be integer strings (COCO ids).
    """
    results: list[dict[str, Any]] = []
    for image_id, p in dets.items():
        try:
            coco_id = int(image_id)
        except ValueError:
            raise InputError(f"COCO image ids must be integers, got {image_id!r}") from None
        for i, (b, s, lab) in enumerate(
            zip(xyxy_to_xywh(p.boxes), p.scores, p.labels, strict=True)
        ):
            entry: dict[str, Any] = {
                "image_id": coco_id,
                "category_id": _category(int(lab), category_ids, image_id),
                "bbox": [float(_fmt(v)) for v in b],
                "score": float(_fmt(s)),
            }
            if p.class_labels is not None and p.class_scores is not None:
                # An extra key COCO tools ignore: the detector's best classes, [[cat, score]].
                entry[CLASS_SCORES_KEY] = [
                    [_category(int(c), category_ids, image_id), float(_fmt(v))]
                    for c, v in zip(p.class_labels[i], p.class_scores[i], strict=True)
                ]
            results.append(entry)
    Path(path).write_text(json.dumps(results))


# Key of a results entry holding the detector's best classes and scores, [[category_id, score]].
CLASS_SCORES_KEY = "class_scores"


def _class_scores(
    value: Any, bad: str, category_id_to_label: Mapping[int, int] | None
) -> list[tuple[int, float]]:
    """An entry's ``class_scores`` list, checked, categories mapped to labels."""
    ok = isinstance(value, list) and all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and _number(v[1])
        for v in value
    )
    if not ok:
        raise InputError(f"{bad}: {CLASS_SCORES_KEY} must be [[category_id, score], ...]")
    out = []
    for cat, score in value:
        if category_id_to_label is not None:
            if cat not in category_id_to_label:
                raise InputError(
                    f"{bad}: {CLASS_SCORES_KEY} category_id {cat} not in the label map"
                )
            cat = category_id_to_label[cat]
        out.append((int(cat), float(score)))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_coco_results(
    path: str | Path,
    category_id_to_label: Mapping[int, int] | None = None,
    top_k: int | None = None,
) -> dict[str, Proposals]:
    """Read a COCO results JSON into ``{str(image_id): Proposals}`` (xyxy boxes).

    Args:
        category_id_to_label: COCO category id -> contiguous label 1..C; None keeps the id.
        top_k: keep the ``top_k`` highest-scoring boxes per image.

    Raises:
        ValueError: naming the file and the index of a malformed entry.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise InputError(
            f"{path}: a COCO results file is a JSON list, got {type(entries).__name__}"
        )
    per_image: dict[str, list[tuple[list[float], float, int, list[tuple[int, float]] | None]]] = {}
    for i, entry in enumerate(entries):
        bad = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(
            entry
        ):
            raise InputError(f"{bad} needs image_id, category_id, bbox and score: {entry!r}")
        e = entry
        bbox = e["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise InputError(f"{bad}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if not _number(e["score"]):
            raise InputError(f"{bad}: score must be a finite number, got {e['score']!r}")
        cat = e["category_id"]
        if not isinstance(cat, int):
            raise InputError(f"{bad}: category_id must be an integer, got {cat!r}")
        if category_id_to_label is not None:
            if cat not in category_id_to_label:
                raise InputError(f"{bad}: category_id {cat} not in the label map")
            cat = category_id_to_label[cat]
        top = (
            _class_scores(e[CLASS_SCORES_KEY], bad, category_id_to_label)
            if CLASS_SCORES_KEY in e
            else None
        )
        per_image.setdefault(str(e["image_id"]), []).append((bbox, float(e["score"]), cat, top))
    out = {}
    for image_id, rows in per_image.items():
        tops = [r[3] for r in rows]
        # Kept when every box of the image has the same number of them (one detector wrote it).
        same = tops[0] is not None and all(t is not None and len(t) == len(tops[0]) for t in tops)
        p = Proposals(
            xywh_to_xyxy(np.array([r[0] for r in rows], np.float64)),
            np.array([r[1] for r in rows]),
            np.array([r[2] for r in rows], np.int64),
            np.array([[c for c, _ in t] for t in tops], np.int64) if same else None,  # type: ignore[union-attr]
            np.array([[v for _, v in t] for t in tops], np.float32) if same else None,  # type: ignore[union-attr]
        )
        out[image_id] = p.top_k(top_k) if top_k is not None else p
    return out


def load_proposals(
    path: str | Path,
    top_k: int | None = None,
    category_id_to_label: Mapping[int, int] | None = None,
) -> dict[str, Proposals]:
    """A folder -> WIDER prediction tree; a ``.json`` file -> COCO results."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"proposals not found: {path}")
    if path.is_dir():
        return read_wider_tree(path, top_k=top_k)
    if path.suffix.lower() == ".json":
        return read_coco_results(path, category_id_to_label, top_k=top_k)
    raise InputError(f"{path}: expected a WIDER prediction folder or a COCO results .json")
