"""Evaluate prediction files: ``gan-detect wider-eval`` and ``gan-detect coco-eval``.

``wider-eval PRED_DIR --gt GT_DIR``: a WIDER FACE txt tree against the official ground-truth
``.mat`` files (the ``eval_tools`` protocol). ``coco-eval RESULTS.json --gt INSTANCES.json``: a COCO
results file (pycocotools). With ``--compare`` both print two methods, B - A and its paired
bootstrap interval over images (``gan_detect.metrics.compare``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from gan_detect.metrics.compare import read_wider_predictions
from gan_detect.metrics.wider_face_ap import wider_face_ap
from gan_detect.metrics.wider_gt import SETTINGS, UnknownImageIds, load_wider_ground_truth
from gan_detect.utils.console import plural
from gan_detect.utils.errors import InputError


def evaluate_wider_tree(
    pred_dir: str | Path, gt_dir: str | Path, image_ids: set[str] | None = None
) -> dict[str, Any]:
    """Official easy / medium / hard AP of the ``<event>/<name>.txt`` files under ``pred_dir``.

    Args:
        pred_dir: prediction tree (``x y w h score`` lines, any order).
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``.
        image_ids: evaluate only these ``"event/name"`` images (e.g. the ones present locally);
            None evaluates the whole val set.

    Returns:
        ``ap_easy``, ``ap_medium``, ``ap_hard`` (fractions), ``official`` (1.0 when the settings
        come from the eval-tools ``gt_list`` of the ``.mat`` files, 0.0 otherwise), ``num_images``,
        ``num_predictions``, ``missing`` (images without a prediction file, counted as empty, as
        the MATLAB tool does; a warning names the count), ``extra`` (files for images not in the
        ground truth; ignored) and ``seconds``.
    """
    start = time.perf_counter()
    gt = load_wider_ground_truth(gt_dir)
    if image_ids is not None:
        gt = gt.subset(image_ids)
    kept, info = read_wider_predictions(pred_dir, gt)
    with warnings.catch_warnings():
        # Missing and extra files were reported above, with the folder named.
        warnings.filterwarnings("ignore", message=r".*(have no predictions|not in the ground)")
        result: dict[str, Any] = wider_face_ap(kept, gt)
    result.update(
        num_images=len(gt),
        num_predictions=info["num_predictions"],
        missing=info["missing"],
        extra=info["extra"],
        seconds=time.perf_counter() - start,
    )
    return result


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"json: {path}")


# Each resample holds an index per image (8 bytes): 20,000 x 5,000 COCO images is 0.8 GB,
# and percentile intervals are stable to well under 0.1 AP points long before that.
MAX_BOOTSTRAP = 20_000


def _check_bootstrap(n: int) -> None:
    if n < 0:
        raise InputError(f"--bootstrap must be >= 0, got {n}")
    if n > MAX_BOOTSTRAP:
        raise InputError(
            f"--bootstrap {n} is too many: at most {MAX_BOOTSTRAP} resamples (each holds an "
            "index per image; 1000-10000 give a stable 95 % interval)"
        )


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the (slow) evaluation when ``--json`` cannot be written."""
    path = getattr(args, "json", None)
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputError(f"--json {path}: folder {parent} does not exist")
    if Path(path).is_dir():
        raise InputError(f"--json {path} is a folder, not a file")


def _read_image_list(path: Path) -> set[str]:
    """``--images FILE``: one ``event/name`` per line (a ``.jpg`` suffix is tolerated)."""
    if not path.is_file():
        raise FileNotFoundError(f"--images file not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--images {path}: not a text file of event/name lines") from None
    ids = {s.strip().removesuffix(".jpg") for s in lines if s.strip()}
    if not ids:
        raise InputError(f"--images {path}: no image ids (one event/name per line)")
    return ids


def run_cli(args: argparse.Namespace) -> int:
    """``gan-detect wider-eval`` on parsed arguments (``gan_detect.app.commands.wider_eval``)."""
    ids = None
    _check_outputs(args)
    if args.images is not None:
        ids = _read_image_list(Path(args.images))
    if getattr(args, "compare", None) is not None:
        from gan_detect.metrics.compare import compare_wider, format_comparison_table

        _check_bootstrap(args.bootstrap)
        try:
            res = compare_wider(
                args.pred_dir, args.compare, args.gt, n_boot=args.bootstrap, seed=args.seed,
                image_ids=ids,
            )  # fmt: skip
        except UnknownImageIds as err:
            raise InputError(f"--images {args.images}: {err}") from None
        print(format_comparison_table(res, "A", "B"))
        print(f"A: {args.pred_dir}\nB: {args.compare}")
        _write_json(args.json, res)
        return 0
    try:
        r = evaluate_wider_tree(args.pred_dir, args.gt, ids)
    except UnknownImageIds as err:
        raise InputError(f"--images {args.images}: {err}") from None
    # Three decimals of the percentage: published tables truncate to two (RetinaFace's 90.70 is
    # 90.708 here), so two rounded decimals would look like a disagreement (90.71).
    print(f"{'setting':<8} {'AP %':>8} {'AP':>9}")
    for s in SETTINGS:
        print(f"{s:<8} {100 * r[f'ap_{s}']:>8.3f} {r[f'ap_{s}']:>9.6f}")
    gt_kind = (
        "official eval_tools gt_list (the published protocol)"
        if r["official"]
        else "NOT official: settings from face heights (no gt_list), not comparable"
    )
    print(
        f"{plural(r['num_images'], 'image')}, {plural(r['num_predictions'], 'box')}, "
        f"{plural(r['missing'], 'missing file')}, "
        f"{plural(r['extra'], 'extra file')}, {r['seconds']:.1f} s\nsettings: {gt_kind}"
    )
    if args.json is not None:
        # "official" is a number in the metric's output (it is synchronised like one under DDP);
        # in the file it is a named boolean.
        out = {k: v for k, v in r.items() if k != "official"}
        out["official_gt_list"] = bool(r["official"])
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def run_coco_cli(args: argparse.Namespace) -> int:
    """``gan-detect coco-eval`` on parsed arguments (``gan_detect.app.commands.coco_eval``)."""
    from gan_detect.metrics.compare import compare_coco, format_comparison_table

    _check_bootstrap(args.bootstrap)
    _check_outputs(args)
    for path in (args.results, args.gt, args.compare):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    if args.compare is None:
        # One method: its AP, no interval (B = A, n_boot 0).
        res = compare_coco(args.results, args.results, args.gt, n_boot=0, seed=args.seed)
        print(f"{'metric':<11} {'AP %':>8}")
        for m in res["metrics"]:
            v = res["a"][m]
            print(f"{m:<11} {('n/a' if v is None or v != v else f'{v:8.3f}'):>8}")
        out = {"metrics": {m: res["a"][m] for m in res["metrics"]}, "unit": res["unit"]}
        _write_json(args.json, out)
        return 0
    res = compare_coco(args.results, args.compare, args.gt, n_boot=args.bootstrap, seed=args.seed)
    print(format_comparison_table(res, "A", "B"))
    print(f"A: {args.results}\nB: {args.compare}")
    _write_json(args.json, res)
    return 0
