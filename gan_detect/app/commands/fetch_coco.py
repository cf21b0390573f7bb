"""``gan-detect fetch-coco``: the COCO val2017 person images from a local copy, md5-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gan_detect.app.commands._common import add_command_parser

NAME = "fetch-coco"
SUMMARY = (
    "extract the 2,620 COCO val2017 person JPEGs: fetch-coco --git-dir|--archive|--folder SRC "
    "--out DIR"
)
DESCRIPTION = """\
Extract the 2,620 COCO val2017 images of coco/val2017_person (the real COCO experiments' images)
from a local copy, md5-checked against images.txt of the shared data folder (md5 and path of each
image in GitHub minto5z/coco_yolo at commit 4715f5c). No network: clone the repository yourself
(git clone https://github.com/minto5z/coco_yolo), or skip this command and give the official
val2017/ folder as --images (files are looked up by file_name).

inputs:  one source: --git-dir (a clone or bare mirror; read with git cat-file, no checkout),
         --archive (.tar/.tar.gz/.zip of the repository at the commit) or --folder (the JPEGs
         by COCO name, e.g. the official val2017/).
outputs: DIR/<file_name>.jpg, flat (e.g. data/coco_val2017_person/images, which the
         experiments read by default); exit 1 naming the first mismatches or missing files."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from gan_detect.data.coco_fetch import COMMIT

    p = add_command_parser(subparsers, NAME, SUMMARY, DESCRIPTION)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--git-dir", type=Path, help="clone or bare mirror of minto5z/coco_yolo")
    src.add_argument("--archive", type=Path, help=".tar/.tar.gz/.zip of the repo at the commit")
    src.add_argument("--folder", type=Path, help="folder with the JPEGs by COCO name")
    p.add_argument("--out", type=Path, required=True, help="flat output folder")
    p.add_argument(
        "--list",
        type=Path,
        default=None,
        help="images.txt (md5  path); default: the shared data folder's",
    )
    p.add_argument("--commit", default=COMMIT, help="with --git-dir (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    from gan_detect.data.coco_fetch import default_list, fetch

    listing = args.list if args.list is not None else default_list()
    res = fetch(
        args.out, listing, git_dir=args.git_dir, archive=args.archive, folder=args.folder,
        commit=args.commit,
    )  # fmt: skip
    print(f"{res.written}/{res.listed} images written to {args.out} with matching md5")
    if res.ok:
        return 0
    for line in (res.bad + [f"{p}: missing" for p in res.missing])[:10]:
        print("  " + line, file=sys.stderr)
    print(f"{len(res.bad)} md5 mismatches, {len(res.missing)} missing", file=sys.stderr)
    return 1
