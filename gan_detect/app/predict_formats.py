"""``predict --format json,wider,coco``: predict's boxes also as the evaluation tools' inputs.

``wider``: a WIDER FACE result tree ``OUT/wider_txt/<event>/<name>.txt`` (the layout every WIDER
detector writes, read by ``gan-detect wider-eval``) and ``OUT/wider_images.txt``, the
``event/name`` of every image found (``wider-eval --images``: score exactly these). ``coco``: a
COCO results file ``OUT/coco_results.json`` (read by ``gan-detect coco-eval``); ``--coco-gt
INSTANCES.json`` maps file names to image ids and class names to category ids. The writers are
the ones ``evaluate`` and ``propose`` use (``data.proposals``).

Torch-free at import (``gan-detect predict --help`` imports the argparse type from here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    from gan_detect.data.records import Proposals
    from gan_detect.infer.pipeline import Detections, Pipeline

FORMATS = ("json", "wider", "coco")
WIDER_DIR = "wider_txt"
WIDER_LIST = "wider_images.txt"
COCO_FILE = "coco_results.json"
# Above this, boxes the AP curves need are gone; the WIDER protocol keeps >= 0.02.
_LOW_ENOUGH = 0.05


def parse_formats(text: str) -> tuple[str, ...]:
    """argparse type of ``--format``: a comma list of ``json``, ``wider``, ``coco``."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(FORMATS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(names))


def wider_image_id(path: Path) -> str:
    """``.../<event>/<name>.jpg`` -> ``"<event>/<name>"`` (a flat folder is its own event), the
    ids ``propose --images`` gives and the WIDER FACE annotations use."""
    return f"{path.parent.name}/{path.stem}"


def _input_images(inputs: Sequence[str], out: Path) -> tuple[list[Path], list[Path]]:
    """The images ``run_predict`` will read (its rule: never files under ``out``) and their
    output names (``predict.output_names``)."""
    from gan_detect.app.image_inputs import expand_inputs_with_base, output_names

    paths, base = expand_inputs_with_base(inputs)
    inside = Path(os.path.abspath(out))
    paths = [p for p in paths if inside not in Path(os.path.abspath(p)).parents]
    return paths, output_names(paths, base)


def _coco_ids_from_gt(paths: Sequence[Path], gt_path: Path) -> tuple[dict[Path, int], Any]:
    """Each image's id in the instances JSON, found by ``file_name`` (its base name; the longer
    path when two share one), and the JSON's categories."""
    from gan_detect.metrics.validate_results import check_coco_gt, read_json

    gt = check_coco_gt(read_json(gt_path, "--coco-gt file"), gt_path)
    by_name: dict[str, list[tuple[str, int]]] = {}
    for im in gt["images"]:
        name = str(im.get("file_name", "")).replace("\\", "/")
        by_name.setdefault(name.rsplit("/", 1)[-1], []).append((name, int(im["id"])))
    ids: dict[Path, int] = {}
    missing: list[Path] = []
    for p in paths:
        found = by_name.get(p.name, [])
        if len(found) > 1:  # the same base name in two folders: the longer file_name decides
            found = [f for f in found if Path(os.path.abspath(p)).as_posix().endswith("/" + f[0])]
        if len(found) != 1:
            missing.append(p)
        else:
            ids[p] = found[0][1]
    if missing:
        raise InputError(
            f"--coco-gt {gt_path}: {len(missing)} of {len(paths)} images have no (or no single) "
            f"entry by file_name, e.g. {missing[0].name!r}; predict only its images, or give "
            "the instances JSON they belong to"
        )
    return ids, gt.get("categories", [])


def _coco_ids_from_names(paths: Sequence[Path]) -> dict[Path, int]:
    """Integer file names (COCO's ``000000000009.jpg``) are the image ids."""
    bad = [p for p in paths if not p.stem.isdigit()]
    if bad:
        raise InputError(
            f"--format coco needs COCO image ids: {bad[0].name!r} is not an integer file name "
            "(like 000000000009.jpg); give --coco-gt INSTANCES.json to take the ids from its "
            "file_name entries"
        )
    return {p: int(p.stem) for p in paths}


class FormatWriter:
    """Writes the ``wider`` and ``coco`` outputs of one ``predict`` run as images finish.

    Built from the parsed arguments before the networks load (``for_args``: every id problem is
    an error before any work), bound to the pipeline (``start``: its class names), fed by
    ``run_predict`` (``add``) and closed (``close``: the COCO file, and the outputs listed in
    ``summary.json`` so ``--overwrite`` can remove them).
    """

    def __init__(
        self,
        out: Path,
        formats: Sequence[str],
        paths: Sequence[Path],
        coco_ids: dict[Path, int] | None = None,
        gt_categories: list[dict[str, Any]] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = out
        self.formats = tuple(formats)
        self.paths = list(paths)
        self.coco_ids = coco_ids
        self.gt_categories = gt_categories
        self.overwrite = overwrite
        self.wider_ids = {p: wider_image_id(p) for p in self.paths}
        self.category_of_label: dict[int, int] = {}
        self.dropped: dict[str, int] = {}
        self.coco_dets: dict[str, Proposals] = {}

    @property
    def json(self) -> bool:
        """Whether ``run_predict`` writes its per-image JSON files."""
        return "json" in self.formats

    @classmethod
    def for_args(cls, ns: argparse.Namespace) -> FormatWriter:
        """The writer ``--format`` / ``--coco-gt`` ask for, checked against the inputs.

        Raises:
            InputError: two images would share a WIDER id or a COCO id, an image has no COCO
                id (not in ``--coco-gt``, or not an integer name), ``--coco-gt`` without
                ``coco``, or ``--out`` holds a result tree of no predict run.
        """
        formats = tuple(getattr(ns, "format", None) or ("json",))
        gt_path = getattr(ns, "coco_gt", None)
        if gt_path is not None and "coco" not in formats:
            raise InputError("--coco-gt maps images to COCO ids: it goes with --format ...,coco")
        out = Path(ns.out)
        paths, names = _input_images(ns.inputs, out)
        if "json" in formats:  # an image's own JSON must not land in our tree or on our file
            for p, n in zip(paths, names, strict=True):
                clash = ("wider" in formats and Path(WIDER_DIR) in n.parents) or (
                    "coco" in formats and n == Path(COCO_FILE).with_suffix("")
                )
                if clash:
                    raise InputError(
                        f"{p}: its output {out / n}.json would sit in this run's "
                        f"{WIDER_DIR}/ or be its {COCO_FILE}; rename it or leave out json"
                    )
        if "wider" in formats:
            seen: dict[str, Path] = {}
            for p in paths:
                other = seen.setdefault(wider_image_id(p), p)
                if other != p:
                    raise InputError(
                        f"--format wider: {other} and {p} would both be "
                        f"{WIDER_DIR}/{wider_image_id(p)}.txt (the id is folder/name)"
                    )
            tree = out / WIDER_DIR
            previous = (out / "summary.json").is_file()
            if tree.is_dir() and any(tree.iterdir()) and not previous:
                raise InputError(
                    f"--out {out} holds a {WIDER_DIR}/ tree of no predict run: wider-eval would "
                    "read its files too; choose another --out"
                )
        coco_ids = categories = None
        if "coco" in formats:
            if gt_path is not None:
                coco_ids, categories = _coco_ids_from_gt(paths, Path(gt_path))
            else:
                coco_ids = _coco_ids_from_names(paths)
            taken: dict[int, Path] = {}
            for p, i in coco_ids.items():
                if taken.setdefault(i, p) != p:
                    raise InputError(f"--format coco: {taken[i]} and {p} are both image id {i}")
        return cls(out, formats, paths, coco_ids, categories, getattr(ns, "overwrite", False))

    def start(self, pipe: Pipeline, score_threshold: float | None = None) -> None:
        """Bind to the pipeline (its class names and COCO category ids); remove a replaced run's
        outputs of these kinds (``--overwrite``; an earlier run without it is refused later)."""
        if "coco" in self.formats:
            self.category_of_label = self._categories(pipe)
        wanted = [f for f in ("wider", "coco") if f in self.formats]
        if wanted and score_threshold is not None and score_threshold > _LOW_ENOUGH:
            print(
                f"note: --score-threshold {score_threshold:g} leaves out the low-scoring boxes "
                "an AP curve needs; for wider-eval / coco-eval use 0.02 or less",
                file=sys.stderr,
            )
        if self.overwrite:
            self._remove_previous()

    def _categories(self, pipe: Pipeline) -> dict[int, int]:
        """Label -> COCO category id: by class name in ``--coco-gt`` (a one-class pipeline
        against a one-category file: that category), else the built-in detector's own ids,
        else the label itself."""
        names = list(pipe.class_names)
        if self.gt_categories is None:
            own = getattr(pipe.detector, "category_ids", None)
            if own is not None and len(own) >= len(names):
                return {i + 1: int(own[i]) for i in range(len(names))}
            return {i + 1: i + 1 for i in range(len(names))}
        by_name = {str(c.get("name")): int(c["id"]) for c in self.gt_categories}
        if len(names) == 1 and len(by_name) == 1:
            return {1: next(iter(by_name.values()))}
        mapped = {i + 1: by_name[n] for i, n in enumerate(names) if n in by_name}
        if not mapped:
            raise InputError(
                f"--coco-gt: none of the pipeline's classes ({', '.join(names[:5])}, ...) is a "
                f"category name of the file ({', '.join(list(by_name)[:5])}, ...)"
            )
        return mapped

    def _remove_previous(self) -> None:
        """The outputs an earlier run's ``summary.json`` lists under ``formats``, inside ``out``."""
        import shutil

        try:
            old = json.loads((self.out / "summary.json").read_text()).get("formats", {})
        except (OSError, ValueError, AttributeError):
            return
        root = self.out.resolve()
        for path in map(Path, old.values() if isinstance(old, dict) else []):
            if root not in path.resolve().parents:
                continue  # only this run's own folder is ever touched
            if path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()

    def add(self, path: Path, det: Detections) -> None:
        """One finished image: its WIDER file now, its COCO rows at ``close``."""
        import numpy as np

        from gan_detect.data.proposals import write_wider_tree
        from gan_detect.data.records import Proposals

        props = Proposals(det.boxes, det.scores, det.labels)
        if "wider" in self.formats:
            write_wider_tree({self.wider_ids[path]: props}, self.out / WIDER_DIR)
        if "coco" in self.formats and self.coco_ids is not None:
            keep = np.array([int(lab) in self.category_of_label for lab in det.labels], bool)
            for name, k in zip(det.label_names, keep, strict=True):
                if not k:
                    self.dropped[name] = self.dropped.get(name, 0) + 1
            self.coco_dets[str(self.coco_ids[path])] = Proposals(
                det.boxes[keep], det.scores[keep], det.labels[keep]
            )

    def close(self) -> dict[str, str]:
        """Write the COCO file and the WIDER image list, record them in ``summary.json``, and
        say how to evaluate them. Returns ``{kind: path}``."""
        from gan_detect.data.proposals import write_coco_results

        written: dict[str, str] = {}
        if "wider" in self.formats:
            (self.out / WIDER_DIR).mkdir(parents=True, exist_ok=True)
            listed = self.out / WIDER_LIST
            listed.write_text("".join(f"{self.wider_ids[p]}\n" for p in self.paths))
            written.update(wider=str(self.out / WIDER_DIR), wider_images=str(listed))
            print(
                f"WIDER tree: {self.out / WIDER_DIR} (gan-detect wider-eval {self.out / WIDER_DIR}"
                f" --gt GT --images {listed})"
            )
        if "coco" in self.formats:
            labels = max(self.category_of_label, default=0)
            cat_ids = [self.category_of_label.get(k, 0) for k in range(1, labels + 1)]
            path = self.out / COCO_FILE
            write_coco_results(self.coco_dets, path, category_ids=cat_ids)
            written["coco"] = str(path)
            print(f"COCO results: {path} (gan-detect coco-eval {path} --gt INSTANCES.json)")
            if self.dropped:
                left = ", ".join(f"{n} {c}" for n, c in sorted(self.dropped.items()))
                print(
                    f"note: boxes of classes --coco-gt does not name were left out of {path}: "
                    f"{left}",
                    file=sys.stderr,
                )
        summary = self.out / "summary.json"
        if written and summary.is_file():
            body = json.loads(summary.read_text())
            body["formats"] = written
            summary.write_text(json.dumps(body, indent=1))
        return written


__all__ = ["COCO_FILE", "FORMATS", "WIDER_DIR", "WIDER_LIST", "FormatWriter", "parse_formats"]
