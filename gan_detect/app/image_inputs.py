"""The images ``predict`` reads and the names its outputs take (torch-free; shared by ``predict``,
its ``--format`` writers and ``export --images``)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from gan_detect.data.paths import IMAGE_SUFFIXES

# The run's own summary file: a name no image's output takes.
SUMMARY_FILE = "summary.json"

_GLOB_CHARS = set("*?[")


def _static_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (``a/*/x.jpg`` -> ``a``)."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def expand_inputs_with_base(inputs: Sequence[str]) -> tuple[list[Path], Path]:
    """Files, folders (their images, recursively) and globs -> sorted unique image paths + base.

    The base is the deepest folder holding every input (a folder input itself, a file's folder,
    a glob's folder before its first wildcard): outputs keep each image's path relative to it,
    so ``a/img.jpg`` and ``b/img.jpg`` give ``a/img.json`` and ``b/img.json``.

    Raises:
        FileNotFoundError: an input is neither a file, a folder nor a glob matching a file.
    """
    paths: list[Path] = []
    bases: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += [q for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
            bases.append(p)
        elif p.is_file():
            paths.append(p)
            bases.append(p.parent)
        else:
            files = [
                m for m in sorted(Path(m) for m in glob.glob(item, recursive=True)) if m.is_file()
            ]
            if not files:
                missing.append(item)
            paths += files
            bases.append(_static_prefix(item))
    if missing:
        raise FileNotFoundError(
            "no such file or folder, or no file matches: " + ", ".join(repr(m) for m in missing)
        )
    # Absolute, not resolved: a symlinked image inside an input folder stays inside it.
    base = Path(os.path.commonpath([os.path.abspath(b) for b in bases])) if bases else Path(".")
    return list(dict.fromkeys(paths)), base


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Sorted unique image paths of files, folders and globs (see ``expand_inputs_with_base``)."""
    return expand_inputs_with_base(inputs)[0]


def output_names(paths: Sequence[Path], base: Path) -> list[Path]:
    """Each image's path relative to ``base`` without its suffix (``a/img``); names that would
    collide (``img.jpg`` and ``img.png`` in one folder) keep their suffix (``a/img.png``)."""
    rel = [Path(os.path.abspath(p)).relative_to(base) for p in paths]
    names = [r.with_suffix("") for r in rel]
    # The run's own summary file is a name no image takes: summary.jpg -> summary.jpg.json.
    reserved = Path(SUMMARY_FILE).with_suffix("")
    # A kept suffix can meet another image's stem (x.png kept beside x.jpg, and x.png.jpg's
    # stem): repeat until unique. The relative paths are unique, so this ends.
    while True:
        counts: dict[Path, int] = {reserved: 1}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clash = [i for i, n in enumerate(names) if counts[n] > 1 and names[i] != rel[i]]
        if not clash:
            return names
        for i in clash:
            names[i] = rel[i]
