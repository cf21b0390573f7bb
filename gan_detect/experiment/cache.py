"""One cache for every stage of an experiment: a stage's folder holds ``done.json`` with the key
of everything it depended on, and is reused only when the key is the same.

Keys hash JSON of the stage's settings and the size and modification time of every input file,
so a changed image, detector setting, trained row or budget is never reused. Nothing here is
pickled: detections are NumPy ``.npz`` (``allow_pickle=False``) with a JSON index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gan_detect.data.records import Proposals


def file_stamp(path: str | Path) -> str:
    """``path|size|mtime_ns`` (``path|missing`` when absent)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def digest(settings: Any, files: Iterable[str | Path] = ()) -> str:
    """A 16-hex key of JSON-able ``settings`` and the stamps of ``files``."""
    h = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        h.update((file_stamp(f) + "\n").encode())
    return h.hexdigest()[:16]


class Stage:
    """A cached stage's folder: ``fresh()`` when its ``done.json`` has this ``key``."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key
        self.done_file = self.folder / "done.json"

    def info(self) -> dict[str, Any] | None:
        """The finished stage's ``done.json`` (None: absent, unreadable or another key)."""
        try:
            info = json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and info.get("key") == self.key else None

    def fresh(self) -> bool:
        return self.info() is not None

    def start(self) -> None:
        """Forget an old result before recomputing (a crash then leaves no stale ``done``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done_file.unlink(missing_ok=True)

    def finish(self, **info: Any) -> None:
        tmp = self.done_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, **info}))
        os.replace(tmp, self.done_file)


def save_detections(path: Path, dets: Mapping[str, Mapping[str, Proposals]]) -> None:
    """method -> image id -> Proposals as one ``.npz`` (arrays concatenated, with offsets) and
    ``<path>.json`` (methods, image ids). Written to a temporary name and moved."""
    methods = list(dets)
    images = sorted({i for d in dets.values() for i in d})
    arrays: dict[str, np.ndarray] = {}
    for m_i, m in enumerate(methods):
        per = [dets[m].get(i) for i in images]
        counts = np.array([0 if p is None else len(p) for p in per], np.int64)
        present = np.array([p is not None for p in per], bool)
        ok = [p for p in per if p is not None]
        arrays[f"m{m_i}_counts"] = counts
        arrays[f"m{m_i}_present"] = present
        arrays[f"m{m_i}_boxes"] = (
            np.concatenate([p.boxes for p in ok]) if ok else np.zeros((0, 4), np.float32)
        )
        arrays[f"m{m_i}_scores"] = (
            np.concatenate([p.scores for p in ok]) if ok else np.zeros(0, np.float32)
        )
        arrays[f"m{m_i}_labels"] = (
            np.concatenate([p.labels for p in ok]) if ok else np.zeros(0, np.int64)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"methods": methods, "images": images}))


def load_detections(path: Path) -> dict[str, dict[str, Proposals]] | None:
    """What :func:`save_detections` wrote, or None when it is absent or unreadable."""
    try:
        index = json.loads(path.with_suffix(".json").read_text())
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    out: dict[str, dict[str, Proposals]] = {}
    images = index["images"]
    for m_i, m in enumerate(index["methods"]):
        counts, present = data[f"m{m_i}_counts"], data[f"m{m_i}_present"]
        ends = np.cumsum(counts)
        starts = ends - counts
        boxes, scores, labels = (data[f"m{m_i}_{k}"] for k in ("boxes", "scores", "labels"))
        out[m] = {
            i: Proposals(boxes[a:b], scores[a:b], labels[a:b])
            for i, a, b, ok in zip(images, starts, ends, present, strict=True)
            if ok
        }
    return out
