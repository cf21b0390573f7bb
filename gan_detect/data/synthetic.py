"""Generated datasets in the official WIDER FACE and COCO layouts (the demo's and tests' data).

Everything is seeded: the same arguments give byte-identical files. The files are read back by
the same parsers as real data (:mod:`gan_detect.data.wider_face`, :mod:`gan_detect.data.coco`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from gan_detect.data.synthetic_draw import (
    background,
    draw_distractor,
    draw_face,
    paste,
    shape_polygon,
)

# (event name, faces per image (low, high), probability that a face is small (6-32 px wide)).
# Events differ on purpose, so "train on some events, evaluate on others" means something.
FACE_EVENTS: tuple[tuple[str, tuple[int, int], float], ...] = (
    ("0--Gathering", (4, 14), 0.85),
    ("1--Street", (1, 7), 0.6),
    ("2--Portrait", (1, 4), 0.3),
)
# COCO-style category ids, deliberately not contiguous, to exercise the label map.
SHAPE_CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "circle", (220, 40, 40)),
    (2, "square", (40, 80, 220)),
    (3, "triangle", (40, 180, 60)),
    (5, "cross", (240, 200, 30)),
    (7, "star", (200, 50, 200)),
)
# WIDER FACE evaluation settings by the paper's height rule: valid faces taller than this (px).
SETTING_MIN_HEIGHT = {"easy": 50, "medium": 30, "hard": 10}
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by gan_detect.data.synthetic"
# Written into the root of every generated dataset: a model trained there records it
# (``dataset_origin``), so using it on real photos can be flagged.
GENERATED_MARKER = "GENERATED.json"


def mark_generated(root: str | Path, kind: str, seed: int) -> Path:
    """Write ``root/GENERATED.json`` saying this folder holds generated (not real) images."""
    path = Path(root) / GENERATED_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"generated": True, "kind": kind, "seed": seed, "writer": __name__}
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def dataset_origin(name: str, root: str | Path | None) -> dict[str, Any]:
    """What a model is trained on: ``{"dataset": name, "root": ..., "generated": bool}``.

    ``generated`` is true when ``root`` holds the marker :func:`mark_generated` writes (plus its
    ``kind``, e.g. ``faces``); plain strings and bools, so checkpoints load with weights_only.
    """
    info: dict[str, Any] = {"dataset": name, "root": None if root is None else str(root)}
    marker = None if root is None else Path(root) / GENERATED_MARKER
    info["generated"] = marker is not None and marker.is_file()
    if marker is not None and info["generated"]:
        try:
            info["kind"] = str(json.loads(marker.read_text()).get("kind", ""))
        except (OSError, ValueError):  # an unreadable marker still marks the folder
            info["kind"] = ""
    return info


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent stream per (seed, split, image): a val image does not depend on num_train."""
    return np.random.default_rng([seed, *keys])


def _finish_image(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Global lighting change, sensor noise and sometimes a slight defocus."""
    arr = np.asarray(img, np.float32) * np.float32(rng.uniform(0.7, 1.25))
    arr += np.float32(rng.uniform(-15, 15))
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(1, 6))
    out = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8))
    if rng.random() < 0.2:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    return out


def _face_image(
    rng: np.random.Generator, size: tuple[int, int], counts: tuple[int, int], p_small: float,
    no_faces: bool, force_invalid: bool,
) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
    """One image and its rows ``x y w h blur expression illumination invalid occlusion pose``."""
    W, H = size
    img = Image.fromarray(background(rng, W, H).astype(np.uint8))
    for _ in range(int(rng.integers(2, 6))):  # distractors go under the faces
        s = int(np.exp(rng.uniform(np.log(6), np.log(min(W, H) * 0.4))))
        patch = draw_distractor(rng, s)
        paste(img, patch, int(rng.integers(-s // 4, W - s)), int(rng.integers(-s // 4, H - s)))
    rows: list[list[int]] = []
    n = 0 if no_faces else int(rng.integers(counts[0], counts[1] + 1))
    max_w = int(min(200, 0.75 * H / 1.25, 0.75 * W))
    widths = [
        np.exp(rng.uniform(np.log(6), np.log(32)))
        if rng.random() < p_small
        else np.exp(rng.uniform(np.log(32), np.log(max(max_w, 33))))
        for _ in range(n)
    ]
    placed: list[tuple[int, int, int, int]] = []
    for wf in sorted(widths, reverse=True):
        w = int(round(wf))
        h = int(round(w * rng.uniform(1.1, 1.35)))
        for _ in range(30):  # rejection sampling for little overlap with earlier faces
            x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
            if all(_overlap((x, y, w, h), p) < 0.1 for p in placed):
                break
        else:
            continue
        invalid = int((force_invalid and not rows) or rng.random() < 0.06)
        blur = 2 if invalid else int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        occl = 2 if invalid else int(rng.choice(3, p=[0.7, 0.2, 0.1]))
        expr, illum, pose = (int(rng.random() < p) for p in (0.15, 0.1, 0.2))
        patch, ox, oy = draw_face(rng, w, h, blur, expr, illum, occl, pose)
        paste(img, patch, x - ox, y - oy)
        placed.append((x, y, w, h))
        rows.append([x, y, w, h, blur, expr, illum, invalid, occl, pose])
    return _finish_image(rng, img), np.array(rows, np.int64).reshape(-1, 10)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller xywh box (IoU would let a tiny face sit inside a big one)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def write_synthetic_faces(
    root: str | Path,
    num_train: int = 64,
    num_val: int = 32,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    write_mat: bool = True,
    jpeg_quality: int = 90,
) -> Path:
    """Write a WIDER FACE-layout dataset of face-like heads among face-like distractors.

    Layout: ``root/WIDER_{train,val}/images/<event>/<name>.jpg``,
    ``root/wider_face_split/wider_face_{split}_bbx_gt.txt`` (official format, all attribute
    columns) and, with ``write_mat``, ``root/wider_face_split/wider_face_{split}.mat`` plus
    ``root/ground_truth/wider_{face,easy,medium,hard}_val.mat`` as the official eval tools expect.
    Faces are 6 to ~200 px wide, most under 32 px; about 6 % are ``invalid`` (heavily blurred and
    occluded; at least one per split). The last image of each split has no faces and is written
    with the official conventions (train: count 0 + an all-zero row; val: count 1 + all-zero row).

    Args:
        image_size: (width, height) in pixels.
        seed: same seed -> byte-identical files; different seeds -> different data. Image i of a
            split depends only on (seed, split, i), not on the other split's size.

    Files already under ``root`` with the same names are overwritten; others are left alone
    (they are not listed in the new annotations, so they are never read).

    Returns:
        ``root``, ready for :func:`gan_detect.data.wider_face.wider_split_paths`.
    """
    root = Path(root)
    if min(image_size) < 64:
        raise ValueError(f"image_size must be at least 64 x 64, got {image_size}")
    for split, num in (("train", num_train), ("val", num_val)):
        entries: list[tuple[str, np.ndarray]] = []
        for i in range(num):
            ev, counts, p_small = FACE_EVENTS[i % len(FACE_EVENTS)]
            rng = _rng(seed, 0 if split == "train" else 1, i)
            img, rows = _face_image(rng, image_size, counts, p_small, i == num - 1, i == 0)
            num_str = ev.split("--")[0]
            name = f"{ev}/{num_str}_{ev.split('--')[1]}_synthetic_{num_str}_{i}"
            path = root / f"WIDER_{split}" / "images" / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=jpeg_quality)
            entries.append((name, rows))
        split_dir = root / "wider_face_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text(_wider_txt(entries, split))
        if write_mat:
            _write_wider_mats(root, split, entries)
    mark_generated(root, "faces", seed)
    return root


def _wider_txt(entries: Sequence[tuple[str, np.ndarray]], split: str) -> str:
    lines = []
    for name, rows in entries:
        lines.append(f"{name}.jpg")
        if len(rows) == 0:  # the two official zero-face conventions, as in the real files
            lines.append("0" if split == "train" else "1")
            lines.append("0 0 0 0 0 0 0 0 0 0 ")
        else:
            lines.append(str(len(rows)))
            lines.extend(" ".join(str(v) for v in r) + " " for r in rows)
    return "\n".join(lines) + "\n"


def _cell(items: Sequence[Any]) -> np.ndarray:
    """A MATLAB cell column (n, 1) holding ``items`` as they are."""
    out = np.empty((len(items), 1), dtype=object)
    for i, v in enumerate(items):
        out[i, 0] = v
    return out


def _gt_list(rows: np.ndarray, min_height: int) -> np.ndarray:
    """1-based indices (k, 1) of valid faces taller than ``min_height``; (0, 0) for no faces."""
    if len(rows) == 0:
        return np.zeros((0, 0), np.uint8)
    idx = np.flatnonzero((rows[:, 7] == 0) & (rows[:, 3] > min_height)) + 1
    dtype = np.uint8 if len(rows) < 256 else np.uint16
    return idx.astype(dtype).reshape(-1, 1)


def _write_wider_mats(root: Path, split: str, entries: Sequence[tuple[str, np.ndarray]]) -> None:
    """Official-style ``.mat`` ground truth: cells (events, 1) of cells (images, 1)."""
    events = sorted({n.split("/")[0] for n, _ in entries}, key=lambda e: int(e.split("--")[0]))
    per_event = [[(n, r) for n, r in entries if n.split("/")[0] == ev] for ev in events]
    # A zero-face image is one all-zero row in the mats (the txt writes it the same way).
    tables = [
        [r if len(r) else np.zeros((1, 10), np.int64) for _, r in group] for group in per_event
    ]
    mat: dict[str, Any] = {
        "event_list": _cell(events),
        "file_list": _cell([_cell([n.split("/")[1] for n, _ in g]) for g in per_event]),
        "face_bbx_list": _cell([_cell([t[:, :4].astype(np.int32) for t in ts]) for ts in tables]),
    }
    for j, attr in enumerate(
        ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    ):
        cols = [_cell([t[:, 4 + j : 5 + j].astype(np.uint8) for t in ts]) for ts in tables]
        mat[f"{attr}_label_list"] = _cell(cols)
    _savemat(root / "wider_face_split" / f"wider_face_{split}.mat", mat)
    if split != "val":
        return
    _savemat(root / "ground_truth" / "wider_face_val.mat", mat)
    for setting, min_h in SETTING_MIN_HEIGHT.items():
        gt = _cell([_cell([_gt_list(r, min_h) for _, r in g]) for g in per_event])
        _savemat(root / "ground_truth" / f"wider_{setting}_val.mat", {**mat, "gt_list": gt})


def _savemat(path: Path, mdict: dict[str, Any]) -> None:
    """``scipy.io.savemat`` with a fixed header text (scipy stamps the time, breaking hashes)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mdict, do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def write_synthetic_objects(
    root: str | Path,
    num_train: int = 64,
    num_val: int = 32,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    jpeg_quality: int = 90,
) -> Path:
    """Write a COCO-layout dataset of coloured shapes, many small, with a few crowd regions.

    Layout: ``root/annotations/instances_{train,val}.json`` and ``root/{train,val}/*.jpg``.
    Categories are :data:`SHAPE_CATEGORIES` (ids 1, 2, 3, 5, 7). Object sizes: ~40 % 8-16 px,
    ~35 % 16-32 px, the rest 32-96 px. About one image in six (and the first of each split) has
    a crowd region: a cluster of tiny shapes annotated by one ``iscrowd=1`` box. ``area`` is the
    polygon area (crowd: the box area), as COCO uses the mask area.

    Returns:
        ``root``, ready for :func:`gan_detect.data.coco.coco_split_paths`.
    """
    root = Path(root)
    W, H = image_size
    if min(image_size) < 64:
        raise ValueError(f"image_size must be at least 64 x 64, got {image_size}")
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n, _ in SHAPE_CATEGORIES]
    ann_id = 1
    for s, split in enumerate(("train", "val")):
        images, anns = [], []
        num = num_train if split == "train" else num_val
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(num):
            rng = _rng(seed, 2 + s, i)
            image_id = (s * 1_000_000) + i + 1
            img, objs = _shape_image(rng, W, H, crowd=i == 0 or rng.random() < 1 / 6)
            file_name = f"{image_id:012d}.jpg"
            img.save(root / split / file_name, quality=jpeg_quality)
            images.append({"id": image_id, "file_name": file_name, "width": W, "height": H})
            for obj in objs:
                anns.append({"id": ann_id, "image_id": image_id, **obj})
                ann_id += 1
        data = {
            "info": {"description": "gan_detect synthetic shapes", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    mark_generated(root, "shapes", seed)
    return root


def _shape_image(
    rng: np.random.Generator, W: int, H: int, crowd: bool
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image of shapes (drawn at 2x, then reduced) and its COCO annotations (no ids)."""
    ss = 2
    bg = Image.fromarray(background(rng, W, H).astype(np.uint8))
    img = bg.resize(
        (W * ss, H * ss), Image.Resampling.NEAREST
    )  # reduce() below undoes this exactly
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # unannotated clutter: lines and hexagon outlines
        pts = rng.uniform(0, 1, (2, 2)) * [W * ss, H * ss]
        d.line([tuple(p) for p in pts], (int(rng.integers(256)),) * 3, int(rng.integers(1, 4)))
        c, r = rng.uniform(0, 1, 2) * [W * ss, H * ss], rng.uniform(6, 40) * ss
        t = np.arange(6) * np.pi / 3
        hexa = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1)
        d.polygon([tuple(p) for p in hexa], outline=(int(rng.integers(256)),) * 3, width=ss)
    objs: list[dict[str, Any]] = []
    if crowd:  # a cluster of tiny shapes of one class, annotated as a single crowd region
        cid, cname, col = SHAPE_CATEGORIES[int(rng.integers(len(SHAPE_CATEGORIES)))]
        cw, ch = int(rng.integers(30, 70)), int(rng.integers(30, 60))
        x0, y0 = int(rng.integers(0, W - cw)), int(rng.integers(0, H - ch))
        for _ in range(int(rng.integers(8, 20))):
            sz = rng.uniform(4, 7)
            cx, cy = (
                rng.uniform(x0 + sz / 2, x0 + cw - sz / 2),
                rng.uniform(y0 + sz / 2, y0 + ch - sz / 2),
            )
            poly = shape_polygon(rng, cname, cx, cy, sz) * ss
            d.polygon([tuple(p) for p in poly], fill=col)
        mask = np.zeros((H, W), np.uint8, order="F")
        mask[y0 : y0 + ch, x0 : x0 + cw] = 1
        rle = mask_utils.encode(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        objs.append({"category_id": cid, "bbox": [x0, y0, cw, ch], "area": float(cw * ch),
                     "iscrowd": 1, "segmentation": rle})  # fmt: skip
    for _ in range(int(rng.integers(3, 12))):
        cid, cname, col = SHAPE_CATEGORIES[int(rng.integers(len(SHAPE_CATEGORIES)))]
        band = rng.choice(3, p=[0.4, 0.35, 0.25])
        size = rng.uniform(*((8, 16), (16, 32), (32, 96))[band])
        cx, cy = (
            rng.uniform(size / 2 + 1, W - size / 2 - 1),
            rng.uniform(size / 2 + 1, H - size / 2 - 1),
        )
        poly = np.clip(shape_polygon(rng, cname, cx, cy, size), 0, [W, H])
        jit = tuple(int(np.clip(v + rng.integers(-30, 31), 0, 255)) for v in col)
        d.polygon(
            [tuple(p) for p in poly * ss], fill=jit, outline=tuple(v // 2 for v in jit), width=ss
        )
        if cname == "square":  # a light inner frame gives squares a texture of their own
            inner = (poly - [cx, cy]) * 0.5 + [cx, cy]
            d.polygon([tuple(p) for p in inner * ss], fill=(235, 235, 235))
        x_min, y_min = poly.min(0)
        x_max, y_max = poly.max(0)
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        objs.append({
            "category_id": cid,
            "bbox": [round(float(v), 2) for v in (x_min, y_min, x_max - x_min, y_max - y_min)],
            "area": round(area, 2),
            "iscrowd": 0,
            "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
        })  # fmt: skip
    img = img.reduce(ss)  # box filter: antialiased shape edges
    return _finish_image(rng, img), objs
