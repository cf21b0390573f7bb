"""Extract the 2,620 COCO val2017 images of ``coco/val2017_person`` from a local copy, md5-checked.

    python experiments/fetch_coco_val2017_person.py --git-dir PATH/coco_yolo/.git --out DIR
    python experiments/fetch_coco_val2017_person.py --archive coco_yolo-4715f5c.tar.gz --out DIR
    python experiments/fetch_coco_val2017_person.py --folder PATH/val2017 --out DIR

``images.txt`` (``../shared/data/coco/val2017_person/images.txt``) lists ``md5  path-in-repo`` of
every image as stored in GitHub ``minto5z/coco_yolo`` at commit
``4715f5ca05a6ffc148d4c4e5b0a131663655f2be`` (its ``train2017/`` and ``val2017/`` folders both hold
COCO *val2017* images). This script reads only those paths, from

* ``--git-dir``: a clone (or bare mirror) of that repository; the commit is read with ``git
  cat-file``, no checkout needed;
* ``--archive``: a ``.tar``, ``.tar.gz`` or ``.zip`` of the repository at that commit (a leading
  folder such as ``coco_yolo-4715f5c/`` is allowed);
* ``--folder``: any folder holding the files by their COCO names, e.g. the official ``val2017/``
  download (the files are the original COCO JPEGs, so their md5s must match too),

and writes them flat into ``--out`` under their basenames (``000000000139.jpg``), which is the
``file_name`` of ``instances_val2017_person.json``. Every md5 is checked; the script exits non-zero
naming the first few mismatches or missing files. There is no network code here: fetch the
repository yourself (``git clone https://github.com/minto5z/coco_yolo``) or skip this script
altogether and point the experiments at the official val2017 folder (``--images PATH/val2017``):
they look images up by ``file_name`` and ignore the ones not in the JSON.

The images are data, not code: keep ``--out`` outside the repository or in an ignored folder.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

COMMIT = "4715f5ca05a6ffc148d4c4e5b0a131663655f2be"
DEFAULT_LIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco"
DEFAULT_LIST = DEFAULT_LIST / "val2017_person" / "images.txt"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--git-dir", type=Path, help="clone or bare mirror of minto5z/coco_yolo")
    src.add_argument("--archive", type=Path, help=".tar/.tar.gz/.zip of the repo at the commit")
    src.add_argument("--folder", type=Path, help="folder with the JPEGs by COCO name")
    ap.add_argument("--out", type=Path, required=True, help="flat output folder")
    ap.add_argument("--list", type=Path, default=DEFAULT_LIST, help="images.txt (md5  path)")
    ap.add_argument("--commit", default=COMMIT, help="with --git-dir (default: %(default)s)")
    args = ap.parse_args(argv)

    wanted = read_list(args.list.resolve())
    paths = sorted(wanted)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.git_dir is not None:
        items: Iterator[tuple[str, bytes | None]] = from_git(args.git_dir, args.commit, paths)
    elif args.archive is not None:
        items = iter(from_archive(args.archive, wanted))
    else:
        items = from_folder(args.folder, paths)

    seen: set[str] = set()
    bad: list[str] = []
    for rel, data in items:
        if data is None:
            continue
        seen.add(rel)
        got = hashlib.md5(data).hexdigest()
        if got != wanted[rel]:
            bad.append(f"{rel}: md5 {got} != {wanted[rel]}")
            continue
        # Written under a temporary name first so a killed run leaves no half file that looks done.
        dest = args.out / Path(rel).name
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
    missing = [p for p in paths if p not in seen]
    ok = len(seen) - len(bad)
    print(f"{ok}/{len(paths)} images written to {args.out} with matching md5")
    if bad or missing:
        for line in (bad + [f"{p}: missing" for p in missing])[:10]:
            print("  " + line, file=sys.stderr)
        print(f"{len(bad)} md5 mismatches, {len(missing)} missing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
