"""The 2,620 COCO val2017 images of ``coco/val2017_person`` from a local copy, md5-checked
(``gan-detect fetch-coco``).

``images.txt`` (``<shared data>/coco/val2017_person/images.txt``) lists ``md5  path-in-repo`` of
every image as stored in GitHub ``minto5z/coco_yolo`` at commit :data:`COMMIT` (its
``train2017/`` and ``val2017/`` folders both hold COCO *val2017* images). Only those paths are
read, from one source:

* a git directory: a clone (or bare mirror) of that repository; the commit is read with ``git
  cat-file``, no checkout needed (:func:`from_git`);
* an archive: a ``.tar``, ``.tar.gz`` or ``.zip`` of the repository at that commit (a leading
  folder such as ``coco_yolo-4715f5c/`` is allowed; :func:`from_archive`);
* a folder holding the files by their COCO names, e.g. the official ``val2017/`` download (the
  files are the original COCO JPEGs, so their md5s must match too; :func:`from_folder`),

and :func:`fetch` writes them flat under their basenames (``000000000139.jpg``, the ``file_name``
of ``instances_val2017_person.json``). Every md5 is checked. There is no network code here: fetch
the repository yourself (``git clone https://github.com/minto5z/coco_yolo``) or skip this and
point the experiments at the official val2017 folder (``--images PATH/val2017``): they look
images up by ``file_name`` and ignore the ones not in the JSON.

The images are data, not code: keep the output outside the repository or in an ignored folder.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gan_detect.utils.errors import InputError

COMMIT = "4715f5ca05a6ffc148d4c4e5b0a131663655f2be"
LIST_IN_SHARED_DATA = Path("coco") / "val2017_person" / "images.txt"

__all__ = [
    "COMMIT",
    "LIST_IN_SHARED_DATA",
    "FetchResult",
    "default_list",
    "fetch",
    "from_archive",
    "from_folder",
    "from_git",
    "read_list",
]


def default_list() -> Path:
    """``images.txt`` of the shared data folder (``$GAN_DETECT_DATA`` or ``../shared/data``).

    Raises:
        InputError: there is no shared data folder (give the list's path instead).
    """
    from gan_detect.data.paths import shared_data_dir

    root = shared_data_dir()
    if root is None:
        raise InputError(
            "no shared data folder ($GAN_DETECT_DATA or ../shared/data) holding "
            f"{LIST_IN_SHARED_DATA}: give --list PATH/images.txt"
        )
    return root / LIST_IN_SHARED_DATA


def read_list(path: Path) -> dict[str, str]:
    """``{path in repo: md5}`` from an ``images.txt`` (``#`` lines skipped).

    Raises:
        ValueError: for a malformed line or two entries with the same basename.
    """
    wanted: dict[str, str] = {}
    names: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        md5, sep, rel = line.partition("  ")
        if not sep or len(md5) != 32:
            raise ValueError(f"{path}:{n}: expected 'md5  path', got {line!r}")
        base = Path(rel).name
        if base in names:
            raise ValueError(f"{path}:{n}: basename {base} listed twice; the output is flat")
        names.add(base)
        wanted[rel] = md5
    return wanted


def from_git(git_dir: Path, commit: str, paths: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """``(path, bytes or None when absent)`` for each path at ``commit``, via one ``cat-file``."""
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for rel in paths:
            proc.stdin.write(f"{commit}:{rel}\n".encode())
            proc.stdin.flush()
            header = proc.stdout.readline().decode().split()
            if len(header) != 3:  # "<spec> missing"
                yield rel, None
                continue
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)  # the newline after each object
            yield rel, data
    finally:
        proc.stdin.close()
        proc.wait()


def _strip_prefix(member: str, wanted: dict[str, str]) -> str | None:
    """The listed path that ``member`` is, allowing one leading archive folder."""
    if member in wanted:
        return member
    _, _, rest = member.partition("/")
    return rest if rest in wanted else None


def from_archive(archive: Path, wanted: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    """``(path, bytes)`` for the listed paths found in a tar or zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = _strip_prefix(info.filename, wanted)
                if rel is not None:
                    yield rel, zf.read(info)
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            rel = _strip_prefix(member.name, wanted) if member.isfile() else None
            if rel is not None:
                f = tf.extractfile(member)
                assert f is not None
                yield rel, f.read()


def from_folder(folder: Path, paths: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """``(path, bytes or None)`` looking each file up by its basename in a flat folder."""
    for rel in paths:
        p = folder / Path(rel).name
        yield rel, p.read_bytes() if p.is_file() else None


@dataclass
class FetchResult:
    """What :func:`fetch` did: ``listed`` paths, ``written`` (md5 matched), ``bad`` lines
    (``path: md5 got != wanted``) and ``missing`` paths (not in the source)."""

    listed: int
    written: int = 0
    bad: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing


def fetch(
    out: Path,
    listing: Path,
    *,
    git_dir: Path | None = None,
    archive: Path | None = None,
    folder: Path | None = None,
    commit: str = COMMIT,
) -> FetchResult:
    """The images of ``listing`` from one source (``git_dir`` at ``commit``, ``archive`` or
    ``folder``), md5-checked, written flat into ``out``; a file failing its md5 is not written.

    Raises:
        ValueError: not exactly one source given, or a malformed ``listing``.
    """
    if sum(x is not None for x in (git_dir, archive, folder)) != 1:
        raise ValueError("give exactly one of git_dir, archive, folder")
    wanted = read_list(listing.resolve())
    paths = sorted(wanted)
    out.mkdir(parents=True, exist_ok=True)
    items: Iterator[tuple[str, bytes | None]]
    if git_dir is not None:
        items = from_git(git_dir, commit, paths)
    elif archive is not None:
        items = iter(from_archive(archive, wanted))
    else:
        assert folder is not None
        items = from_folder(folder, paths)
    result = FetchResult(listed=len(paths))
    seen: set[str] = set()
    for rel, data in items:
        if data is None:
            continue
        seen.add(rel)
        got = hashlib.md5(data).hexdigest()
        if got != wanted[rel]:
            result.bad.append(f"{rel}: md5 {got} != {wanted[rel]}")
            continue
        # Written under a temporary name first so a killed run leaves no half file that looks done.
        dest = out / Path(rel).name
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
        result.written += 1
    result.missing = [p for p in paths if p not in seen]
    return result
