"""Dataset hooks: what an experiment needs to know about its dataset that a config cannot say.

A hook prepares the inputs (``${prep.*}`` values for the rows' config), checks the images, and
scores detections under its protocol as per-image tables (for the bootstrap):

* ``wider_face``: the official WIDER FACE protocol (easy / medium / hard, ``gt_list`` of the
  eval-tools ``.mat`` files restricted to the images present) plus AP@0.5 per face-size bucket
  (sqrt(w h) of the ground truth: < 10, 10-16, 16-32, > 32 px);
* ``coco``: COCO AP, AP50, AP75, AP_S/M/L and AP_tiny (area < 16^2) at the budget's detections
  per image; a split JSON ``{"train": [ids], "test": [ids]}`` (or ``every_fourth``) becomes
  ``OUT/annotations/instances_{train,test}.json``, every category kept.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_detect.data.records import Proposals, xyxy_to_xywh
from gan_detect.metrics.coco_eval import side_bands
from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    from gan_detect.experiment.spec import ExperimentSpec

# Face-size buckets of the WIDER tables (sqrt(w h) of the ground truth, px).
WIDER_BUCKETS: list[tuple[str, float, float]] = [
    ("<10", 0.0, 10.0),
    ("10-16", 10.0, 16.0),
    ("16-32", 16.0, 32.0),
    (">32", 32.0, 1e5),
]


class DatasetHook:
    """The base: subclasses set the columns and implement the steps."""

    name = ""
    # Metric columns of the tables, in order, and their display names.
    columns: list[str] = []
    column_names: dict[str, str] = {}
    proposal_format = "coco"  # write_proposals format of the proposals files
    proposal_file = "proposals.json"
    # Size buckets (name, low, high in sqrt(area) px) of the diagnostics by object size.
    buckets: list[tuple[str, float, float]] = WIDER_BUCKETS

    def __init__(self, spec: ExperimentSpec) -> None:
        self.spec = spec
        self.options = spec.dataset

    def prepare(self, out: Path) -> dict[str, Any]:
        """Check the inputs, write what the rows read; returns the ``${prep.*}`` values."""
        return {}

    def check_images(self, split: str, records: Sequence[Any]) -> None:
        absent = [r.path for r in records if not Path(r.path).is_file()]
        if absent:
            raise InputError(
                f"{len(absent)} of the {len(records)} {split} images are missing (e.g. {absent[0]})"
            )

    def scorer(self, records: Sequence[Any], max_dets: int) -> Scorer:
        raise NotImplementedError

    def note(self) -> str:
        """A sentence printed under every table (e.g. an approximation), or ''."""
        return ""


class Scorer:
    """Scores one method's detections as per-image tables (``metrics``, ``ap(weights)``)."""

    # table metric name -> column name
    renames: dict[str, str] = {}

    def tables(self, dets: Mapping[str, Proposals]) -> list[Any]:
        raise NotImplementedError


class WiderScorer(Scorer):
    renames = {"ap_easy": "easy", "ap_medium": "medium", "ap_hard": "hard"}

    def __init__(self, records: Sequence[Any], gt_dir: Path) -> None:
        from gan_detect.metrics import load_wider_ground_truth
        from gan_detect.metrics.compare import records_to_coco_gt

        self.gt = load_wider_ground_truth(gt_dir).subset({r.image_id for r in records})
        # Invalid faces become crowd regions: ignored, as the official protocol ignores them.
        self.coco_gt, self.index = records_to_coco_gt(list(records), 1)

    def tables(self, dets: Mapping[str, Proposals]) -> list[Any]:
        from gan_detect.metrics.bootstrap import coco_results_to_dt, coco_tables, wider_tables

        preds = {
            i: np.concatenate([xyxy_to_xywh(d.boxes), d.scores[:, None]], 1).astype(np.float64)
            for i, d in dets.items()
        }
        results = _coco_results(dets, self.index, one_class=True)
        with contextlib.redirect_stdout(io.StringIO()):
            buckets = coco_tables(
                self.coco_gt,
                coco_results_to_dt(self.coco_gt, results),
                max_dets=750,
                areas=[(name, lo * lo, hi * hi) for name, lo, hi in WIDER_BUCKETS],
                iou_thrs=[0.5],
            )
        return [wider_tables(preds, self.gt), buckets]


class WiderFaceHook(DatasetHook):
    name = "wider_face"
    columns = ["easy", "medium", "hard"] + [f"ap50_{b}" for b, _, _ in WIDER_BUCKETS]
    column_names = {
        c: c.replace("ap50_", "AP50 ") + (" px" if "ap50" in c else "") for c in columns
    }
    proposal_format = "wider"
    proposal_file = "proposals_wider"

    def prepare(self, out: Path) -> dict[str, Any]:
        root = Path(self.options.get("root", ""))
        if not (root / "WIDER_train" / "images").is_dir():
            raise InputError(
                f"no WIDER FACE images under {root} (dataset.root; GAN_DETECT_DATA sets the "
                "default ${data:widerface})"
            )
        return {}

    def scorer(self, records: Sequence[Any], max_dets: int) -> Scorer:
        return WiderScorer(records, Path(self.options["root"]) / "ground_truth")


class CocoScorer(Scorer):
    def __init__(self, records: Sequence[Any], num_classes: int, max_dets: int) -> None:
        from gan_detect.metrics.compare import records_to_coco_gt

        self.records = list(records)
        self.num_classes = num_classes
        self.max_dets = max_dets
        self.gt, self.index = records_to_coco_gt(self.records, num_classes)
        self._class_gt: dict[int, Any] = {}

    def tables(self, dets: Mapping[str, Proposals], label: int | None = None) -> list[Any]:
        """COCO tables of every class, or of class ``label`` alone (its boxes as one class)."""
        from gan_detect.metrics.bootstrap import coco_results_to_dt, coco_tables

        gt = self.gt if label is None else self.class_gt(label)
        results = _coco_results(dets, self.index, one_class=False, label=label)
        with contextlib.redirect_stdout(io.StringIO()):
            return [coco_tables(gt, coco_results_to_dt(gt, results), self.max_dets)]

    def class_gt(self, c: int) -> Any:
        from gan_detect.metrics.compare import records_to_coco_gt

        if c not in self._class_gt:
            one = [
                replace(r, boxes=r.boxes[r.labels == c], ignore=r.ignore[r.labels == c],
                        areas=r.areas[r.labels == c],
                        labels=np.ones(int((r.labels == c).sum()), np.int64))
                for r in self.records
            ]  # fmt: skip
            self._class_gt[c] = records_to_coco_gt(one, 1)[0]
        return self._class_gt[c]


APPROX = (
    "AP_S / AP_M / AP_L / AP_tiny approximate the official ones: the ground-truth boxes are "
    "integer-truncated, crowd regions are not flagged and `area` is the box area."
)


class CocoHook(DatasetHook):
    name = "coco"
    columns = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "map_tiny"]
    column_names = {
        "map": "AP",
        "map_50": "AP50",
        "map_75": "AP75",
        "map_small": "AP_S*",
        "map_medium": "AP_M*",
        "map_large": "AP_L*",
        "map_tiny": "AP_tiny*",
    }
    buckets = side_bands()  # COCO's size buckets as sqrt(area) bands: <16, 16-32, 32-96, >96

    def prepare(self, out: Path) -> dict[str, Any]:
        opts = self.options
        instances = Path(str(opts.get("instances", "")))
        if not instances.is_file():
            raise InputError(f"no COCO instances JSON {instances} (dataset.instances)")
        images = Path(str(opts.get("images", ""))).resolve()
        if not images.is_dir():
            raise InputError(
                f"no image folder {images} (dataset.images): extract the val2017 person images "
                "with `gan-detect fetch-coco --out data/coco_val2017_person/images ...` (see "
                "its --help), or pass --set "
                "dataset.images=DIR (e.g. the official val2017/ folder)"
            )
        self.options = {**opts, "images": str(images)}
        self.spec.dataset = self.options
        split_opt = opts.get("split", "every_fourth")
        try:
            data = json.loads(instances.read_text())
            ids = sorted(im["id"] for im in data["images"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{instances}: not a COCO instances JSON ({err})") from None
        if split_opt == "every_fourth":
            # Every fourth image id (sorted) is a test image: coco128 gives 96 train / 32 test.
            split = {"train": [i for n, i in enumerate(ids) if n % 4 != 3], "test": ids[3::4]}
        else:
            split_file = Path(str(split_opt))
            if not split_file.is_file():
                raise InputError(f"no split file {split_file} (dataset.split)")
            try:
                split = json.loads(split_file.read_text())
                split = {k: [int(i) for i in split[k]] for k in ("train", "test")}
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(
                    f'{split_file}: expected {{"train": [image ids], "test": [ids]}} ({err})'
                ) from None
        paths, info = _write_split_instances(
            data, instances, split, out, opts.get("max_train_images")
        )
        self.info = info
        return {
            "train_annotation_file": str(paths["train"]),
            "val_annotation_file": str(paths["test"]),
            "num_classes": info["num_classes"],
        }

    def check_images(self, split: str, records: Sequence[Any]) -> None:
        absent = [r.path for r in records if not Path(r.path).is_file()]
        if absent:
            raise InputError(
                f"{len(absent)} of the {len(records)} {split} images are missing from "
                f"{self.options['images']} (e.g. {absent[0]}); extract them with "
                "`gan-detect fetch-coco`"
            )

    def scorer(self, records: Sequence[Any], max_dets: int) -> Scorer:
        return CocoScorer(records, int(self.info["num_classes"]), max_dets)

    def note(self) -> str:
        return APPROX


def _write_split_instances(
    data: dict[str, Any],
    instances: Path,
    split: dict[str, list[int]],
    out: Path,
    max_train: int | None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """``OUT/annotations/instances_{train,test}.json``: the instances of each split's images (all
    categories kept, so the labels agree); rewritten only when the content changes."""
    known = {im["id"] for im in data["images"]}
    paths: dict[str, Path] = {}
    info: dict[str, Any] = {}
    for name in ("train", "test"):
        ids = sorted(int(i) for i in split[name] if int(i) in known)
        missing = len(split[name]) - len(ids)
        if missing:
            raise InputError(f"{missing} {name} ids of the split are not in {instances}")
        if name == "train" and max_train is not None:
            ids = ids[: int(max_train)]
        keep = set(ids)
        sub = {
            "images": [im for im in data["images"] if im["id"] in keep],
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
            "categories": data["categories"],
        }
        path = out / "annotations" / f"instances_{name}.json"
        text = json.dumps(sub)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        paths[name] = path
        info[name] = {"images": len(ids), "boxes": len(sub["annotations"])}
    info["num_classes"] = len(data["categories"])
    return paths, info


def _coco_results(
    dets: Mapping[str, Proposals],
    index: Mapping[str, int],
    one_class: bool,
    label: int | None = None,
) -> list[dict[str, Any]]:
    """Detections as COCO results rows on the in-memory ground truth's integer image ids."""
    rows = []
    for image_id, d in dets.items():
        if image_id not in index:
            continue
        for (x0, y0, w, h), s, lab in zip(
            xyxy_to_xywh(d.boxes).tolist(), d.scores.tolist(), d.labels.tolist(), strict=True
        ):
            if label is not None and lab != label:
                continue
            cat = 1 if (one_class or label is not None) else int(lab)
            rows.append({"image_id": index[image_id], "category_id": cat,
                         "bbox": [x0, y0, w, h], "score": float(s)})  # fmt: skip
    return rows


DATASET_HOOKS: dict[str, Callable[[ExperimentSpec], DatasetHook]] = {
    "wider_face": WiderFaceHook,
    "coco": CocoHook,
}
