"""WIDER FACE (Yang et al., CVPR 2016) annotations in the official ``wider_face_*_bbx_gt.txt`` form.

The file is a sequence of entries: ``<event>/<name>.jpg``, a face count, then one row per face
``x y w h blur expression illumination invalid occlusion pose`` (a trailing space is allowed).
Our own reader (not torchvision's) is used because malformed input must fail with the file and the
1-based line number named.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gan_detect.data.image_io import image_size
from gan_detect.data.paths import is_image_file
from gan_detect.data.records import ImageRecord, xywh_to_xyxy
from gan_detect.utils.errors import InputError

ATTRIBUTE_NAMES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_SPLITS = ("train", "val")


@dataclass
class WiderAnnotations:
    """A parsed annotation file.

    Attributes:
        records: one per image entry, in file order; labels all 1, ``ignore`` = the invalid flag.
        attributes: image_id -> (M, 6) int64, the attribute columns (``ATTRIBUTE_NAMES`` order)
            of the M kept boxes, row-aligned with ``records[i].boxes``.
        num_rows: box rows read, including the all-zero row that marks a zero-face image (both
            conventions); this equals the box count of the official ``.mat`` files.
        num_dropped: rows not turned into boxes (w <= 0 or h <= 0, which includes every all-zero
            zero-face row).
        num_placeholders: the all-zero rows that mark zero-face images (part of ``num_dropped``;
            a convention, not a lost face).
    """

    records: list[ImageRecord]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    num_rows: int = 0
    num_dropped: int = 0
    num_placeholders: int = 0

    @property
    def num_zero_size(self) -> int:
        """Real box rows dropped for w <= 0 or h <= 0 (placeholders excluded)."""
        return self.num_dropped - self.num_placeholders


class _Lines:
    """Non-blank lines of a file with their 1-based line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = path.read_text(encoding="utf-8")
        self.items = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines()) if s.strip()]
        self.pos = 0
        self.last_lineno = len(text.splitlines())

    def error(self, lineno: int, msg: str) -> ValueError:
        return ValueError(f"{self.path}:{lineno}: {msg}")

    def peek(self) -> tuple[int, str] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self, what: str) -> tuple[int, str]:
        item = self.peek()
        if item is None:
            raise self.error(self.last_lineno, f"file ends here, expected {what} (truncated file?)")
        self.pos += 1
        return item


def _split_row(lines: _Lines, lineno: int, text: str) -> list[str]:
    """The 10 fields of a box row; raises naming the line on a wrong field count."""
    fields = text.split()
    if len(fields) != 10:
        hint = (
            " (an image path: the count above is larger than the rows?)" if _is_path(text) else ""
        )
        raise lines.error(
            lineno,
            f"expected 10 fields 'x y w h blur expression illumination invalid occlusion pose', "
            f"got {len(fields)}: {text!r}{hint}",
        )
    return fields


def _to_table(lines: _Lines, rows: list[list[str]], linenos: list[int]) -> np.ndarray:
    """Box rows -> (K, 10) float64, converted at once (fast); on failure, find the bad line."""
    try:
        table = np.array(rows, dtype=np.float64).reshape(-1, 10)
    except ValueError:
        for fields, lineno in zip(rows, linenos, strict=True):
            try:
                [float(f) for f in fields]
            except ValueError:
                msg = f"non-numeric field in box row {' '.join(fields)!r}"
                raise lines.error(lineno, msg) from None
        raise  # unreachable: some row failed above
    bad = ~np.isfinite(table).all(1) | (table[:, 4:] != np.round(table[:, 4:])).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise lines.error(linenos[i], f"attributes must be integers, values finite: {rows[i]}")
    return table


def _is_path(text: str) -> bool:
    return is_image_file(text)


def read_wider_annotations(
    txt_path: str | Path, images_dir: str | Path | None = None, check_images: bool = False
) -> WiderAnnotations:
    """Parse an official-format WIDER FACE annotation file, keeping per-box attributes.

    Conventions:
      * zero-face images: ``0`` followed by one all-zero dummy row (train file) or ``1`` with an
        all-zero row (val file) both give an image with no boxes. After a ``0`` count, the dummy
        row is consumed when present and not required (some writers omit it).
      * boxes with w <= 0 or h <= 0 are dropped (counted in ``num_dropped``): they have no area,
        so they can be neither positives nor ignore regions (val has 7 besides the 4 dummy rows).
      * ``invalid = 1`` faces are kept with ``ignore=True`` (never negatives).
      * boxes become xyxy = (x, y, x + w, y + h) in pixels, not clipped here (the file has no
        image sizes): datasets clip them when the image is read (``ImageRecord.clipped_to``;
        a box wholly outside is dropped there with a warning).

    Args:
        txt_path: the ``wider_face_{split}_bbx_gt.txt`` (or a subset in the same format).
        images_dir: the ``WIDER_{split}/images`` folder; ``path`` is ``images_dir/<event>/<name>``
            (or the bare relative name when ``None``).
        check_images: raise ``FileNotFoundError`` naming the first missing image, and fill
            ``width``/``height`` from the image headers (otherwise they stay 0).

    Raises:
        FileNotFoundError: the annotation file or (``check_images``) an image is missing.
        ValueError: a malformed entry, naming the file and its 1-based line number.
    """
    path = Path(txt_path)
    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE annotation file not found: {path}")
    if check_images and images_dir is None:
        raise InputError("check_images=True needs images_dir")
    lines = _Lines(path)
    out = WiderAnnotations(records=[])
    seen: dict[str, int] = {}
    while lines.peek() is not None:
        name_no, name = lines.next("an image path")
        if not _is_path(name):
            raise lines.error(
                name_no, f"expected an image path like 'event/name.jpg', got {name!r}"
            )
        image_id = name.rsplit(".", 1)[0]
        if image_id in seen:
            raise lines.error(name_no, f"{name!r} already listed on line {seen[image_id]}")
        seen[image_id] = name_no
        count_no, count_text = lines.next(f"the face count of {name!r}")
        try:
            count = int(count_text)
        except ValueError:
            msg = f"expected the face count of {name!r}, got {count_text!r}"
            raise lines.error(count_no, msg) from None
        if count < 0:
            raise lines.error(count_no, f"negative face count {count}")
        rows, linenos = [], []
        for k in range(count):
            row_no, row_text = lines.next(f"box row {k + 1} of {count} for {name!r}")
            rows.append(_split_row(lines, row_no, row_text))
            linenos.append(row_no)
        nxt = lines.peek()
        if count == 0 and nxt is not None and not _is_path(nxt[1]):
            # The official train file follows a 0 count with one all-zero placeholder row.
            rows.append(_split_row(lines, *lines.next("a placeholder row")))
            linenos.append(nxt[0])
        table = _to_table(lines, rows, linenos)
        if count == 0 and len(table) and np.any(table != 0):
            msg = f"count is 0 but a non-zero box row follows: {' '.join(rows[0])!r}"
            raise lines.error(linenos[0], msg)
        keep = (table[:, 2] > 0) & (table[:, 3] > 0)
        table_kept = table[keep]
        out.num_rows += len(table)
        out.num_dropped += int((~keep).sum())
        if count <= 1 and len(table) == 1 and not np.any(table):
            out.num_placeholders += 1  # "0" + zero row (train) or "1" + zero row (val)
        xywh = table_kept[:, :4]
        boxes = xywh_to_xyxy(xywh)
        attrs = table_kept[:, 4:].astype(np.int64)
        img_path = Path(images_dir) / name if images_dir is not None else Path(name)
        width = height = 0
        if check_images:
            if not img_path.is_file():
                raise FileNotFoundError(f"image listed on {path}:{name_no} not found: {img_path}")
            height, width = image_size(img_path)  # header only; EXIF orientation applied
        out.records.append(
            ImageRecord(
                image_id=image_id,
                path=str(img_path),
                boxes=boxes,
                labels=np.ones(len(boxes), np.int64),
                ignore=attrs[:, ATTRIBUTE_NAMES.index("invalid")] == 1,
                width=width,
                height=height,
            )
        )
        out.attributes[image_id] = attrs
    return out


def parse_wider_annotations(
    txt_path: str | Path, images_dir: str | Path | None = None, check_images: bool = False
) -> list[ImageRecord]:
    """Records of an official-format annotation file; see :func:`read_wider_annotations`."""
    return read_wider_annotations(txt_path, images_dir, check_images).records


def wider_split_paths(
    root: str | Path, split: str, annotation_file: str | Path | None = None
) -> tuple[Path, Path]:
    """``(txt_path, images_dir)`` of a split in the official layout.

    The layout is ``root/WIDER_{split}/images/<event>/<name>.jpg`` and
    ``root/wider_face_split/wider_face_{split}_bbx_gt.txt``. ``annotation_file`` replaces the
    latter (relative paths are taken from ``root``), e.g.
    ``WIDER_val/wider_face_val_bbx_gt.subset.txt`` for a subset of the images.

    Raises:
        ValueError: ``split`` is not ``train`` or ``val`` (test annotations are not public).
        FileNotFoundError: naming the missing folder or file.
    """
    if annotation_file is not None and not Path(annotation_file).is_absolute():
        annotation_file = Path(root) / annotation_file
    return wider_split_files(root, split, annotation_file)


def wider_split_files(
    root: str | Path,
    split: str,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    key: str | None = None,
) -> tuple[Path, Path]:
    """``(txt_path, images_dir)`` a split is read from: ``annotation_file`` and ``image_dir`` as
    given, the official layout under ``root`` (:func:`wider_split_paths`) for what is not given.

    The file and folder actually used are the ones checked, and each error names the config key
    that chooses it (``data.<key>_annotation_file`` / ``data.<key>_image_dir``; ``key``
    defaults to ``split``), so the hint is something the user can type.

    Raises:
        InputError: ``split`` is needed (something not given) and is not ``train`` or ``val``.
        FileNotFoundError: naming the missing file or folder and the key to set.
    """
    key = key or split
    ann_key, img_key = f"data.{key}_annotation_file", f"data.{key}_image_dir"
    root = Path(root)
    if (annotation_file is None or image_dir is None) and split not in _SPLITS:
        raise InputError(
            f"split must be one of {_SPLITS} (test has no public boxes), got {split!r}; or "
            f"give {ann_key} and {img_key}"
        )
    if annotation_file is not None:
        txt = Path(annotation_file)
        if not txt.is_file():
            raise FileNotFoundError(f"{ann_key}: WIDER FACE annotation file not found: {txt}")
    else:
        txt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        if not txt.is_file():
            subset = root / f"WIDER_{split}" / f"wider_face_{split}_bbx_gt.subset.txt"
            hint = (
                f"; a subset file exists: {ann_key}={subset}"
                if subset.is_file()
                else f"; give yours with {ann_key}=PATH"
            )
            raise FileNotFoundError(
                f"WIDER FACE annotation file not found: {txt} (the official layout under "
                f"data.root={root}){hint}"
            )
    if image_dir is not None:
        images = Path(image_dir)
        if not images.is_dir():
            raise FileNotFoundError(f"{img_key}: WIDER FACE image folder not found: {images}")
    else:
        images = root / f"WIDER_{split}" / "images"
        if not images.is_dir():
            raise FileNotFoundError(
                f"WIDER FACE image folder not found: {images} (the official layout under "
                f"data.root={root}); give yours with {img_key}=PATH"
            )
    return txt, images


def download_wider_face(root: str | Path, split: str) -> Path:
    """Download a split with ``torchvision.datasets.WIDERFace`` (needs internet; not used in tests).

    Returns the folder in the official layout, ``root/widerface``, ready for
    :func:`wider_split_paths`. torchvision is used for the download only: its reader gives no line
    numbers on malformed input, so :func:`parse_wider_annotations` reads the files.
    """
    from torchvision.datasets import WIDERFace

    WIDERFace(root=str(root), split=split, download=True)
    return Path(root) / WIDERFace.BASE_FOLDER


def event_of(image_id: str) -> str:
    """``"0--Parade/0_Parade_marchingband_1_465"`` -> ``"0--Parade"``."""
    return image_id.split("/", 1)[0]


def list_events(records: Iterable[ImageRecord]) -> list[str]:
    """Events present in ``records``, sorted by their leading number then name."""

    def key(event: str) -> tuple[int, str]:
        num = event.split("--")[0]
        return (int(num) if num.isdigit() else 1 << 30, event)  # "10--x" after "2--y"

    return sorted({event_of(r.image_id) for r in records}, key=key)


def filter_events(
    records: Sequence[ImageRecord],
    include: Iterable[str | int] | None = None,
    exclude: Iterable[str | int] | None = None,
) -> list[ImageRecord]:
    """Keep the images of some events (e.g. train on some events, evaluate on others).

    Events are named in full (``"0--Parade"``) or by their number (``0`` or ``"0"``).

    Raises:
        ValueError: an event that matches none in ``records`` (a typo would otherwise give an
            empty or unchanged set), listing the available events.
    """
    available = list_events(records)
    by_key = {e: e for e in available} | {e.split("--")[0]: e for e in available}

    def resolve(names: Iterable[str | int] | None) -> set[str] | None:
        if names is None:
            return None
        out = set()
        for n in names:
            if str(n) not in by_key:
                raise InputError(f"unknown WIDER FACE event {n!r}; available: {available}")
            out.add(by_key[str(n)])
        return out

    inc, exc = resolve(include), resolve(exclude)
    return [
        r
        for r in records
        if (inc is None or event_of(r.image_id) in inc)
        and (exc is None or event_of(r.image_id) not in exc)
    ]
