"""``gan-detect predict``: images, folders or globs in; JSON (and drawn images) out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from gan_detect.app.image_inputs import (  # noqa: F401  (re-exported: predict's API)
    SUMMARY_FILE,
    expand_inputs,
    expand_inputs_with_base,
    output_names,
)
from gan_detect.data.image_io import read_image
from gan_detect.utils.console import plural, show_progress
from gan_detect.utils.errors import InputError

if TYPE_CHECKING:  # the pipeline imports torch: loaded in run_cli, after the paths are checked
    from gan_detect.app.predict_formats import FormatWriter
    from gan_detect.infer.pipeline import Detections, Pipeline


def _previous_run(out: Path) -> dict[str, Any] | None:
    """The summary of an earlier predict run in ``out``, or None."""
    try:
        return dict(json.loads((out / SUMMARY_FILE).read_text()))
    except (OSError, ValueError):
        return None


DEFAULT_OUT = "predictions"


def default_out_dir(base: str = DEFAULT_OUT) -> Path:
    """``predictions``, else the first of ``predictions_2``, ``_3``, ... that holds no earlier
    predict run: without ``--out`` a second run (the README's blocks in order) never meets
    the first's ``summary.json`` and is refused."""
    n = 1
    while True:
        out = Path(base if n == 1 else f"{base}_{n}")
        if not out.exists() or (out.is_dir() and _previous_run(out) is None):
            return out
        n += 1


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` holding another predict run (it would be half overwritten, and its
    summary.json lost) unless ``overwrite``, which deletes that run's files first (only those
    its summary.json lists, inside ``out``).

    Raises:
        InputError: ``out`` is a file, or holds another run and ``overwrite`` is not set.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    old = _previous_run(out) if out.is_dir() else None
    if old is None:
        return
    if not overwrite:
        raise InputError(
            f"--out {out} holds another predict run ({SUMMARY_FILE}, "
            f"{plural(len(old.get('processed', [])), 'image')}): choose another --out, or "
            "--overwrite to "
            "replace it"
        )
    root = out.resolve()
    for entry in old.get("processed", []):
        for key in ("json", "drawn"):
            f = Path(str(entry.get(key, "")))
            if entry.get(key) and root in f.resolve().parents and f.is_file():
                f.unlink()
    (out / SUMMARY_FILE).unlink()


BOX_COLOUR = (255, 40, 40)


def draw_style(width: int, height: int) -> tuple[int, int]:
    """``(line width, font size)`` in pixels for an image: readable at 320x240, scaled up."""
    short = min(width, height)
    return max(2, round(short / 240)), max(11, round(short / 22))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_layout(
    det: Detections,
    width: int,
    height: int,
    font: Any,
    max_labels: int = 10,
    avoid: Sequence[tuple[float, float, float, float]] = (),
) -> list[tuple[int, tuple[float, float], str, tuple[float, float, float, float]]]:
    """Labels for the highest-scoring boxes that fit without overlapping an earlier label or a
    rectangle in ``avoid`` (the legend).

    Returns:
        ``(box index, text origin, text, background rectangle)`` per label, best box first.
    """
    placed: list[tuple[int, tuple[float, float], str, tuple[float, float, float, float]]] = []
    pad = 2
    for i in np.argsort(-det.scores, kind="stable"):
        if len(placed) >= max_labels:
            break
        x0, y0, x1, y1 = (float(v) for v in det.boxes[i])
        text = f"{det.label_names[i]} {det.scores[i]:.2f}"
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        # Above the box when there is room, else inside its top edge; kept in the image.
        ty = y0 - th if y0 - th >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, width - tw))
        rect = (tx, ty, tx + tw, ty + th)
        if any(_overlaps(rect, q) for q in [*avoid, *(q[3] for q in placed)]):
            continue
        placed.append((int(i), (tx + pad - left, ty + pad - top), text, rect))
    return placed


def draw_detections(
    image: Image.Image, det: Detections, path: str | Path, max_labels: int | None = None
) -> Path:
    """Copy of the image with its boxes, labels on the top boxes that fit, and a legend.

    Line width and font grow with the image (``draw_style``), so that even boxes of a few pixels
    stay visible; ``max_labels`` defaults to one label per ~20,000 pixels (4 at 320x240, at
    most 20), best scores first, none overlapping.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    lw, size = draw_style(canvas.width, canvas.height)
    font = ImageFont.load_default(size=size)
    if max_labels is None:
        max_labels = int(min(20, max(3, round(canvas.width * canvas.height / 20000))))
    for b in det.boxes:
        draw.rectangle([float(v) for v in b], outline=BOX_COLOUR, width=lw)
    legend = f"{plural(len(det.scores), 'box')}; labels: top {{}} by score"
    left, top, right, bottom = font.getbbox(legend.format(max_labels))
    legend_rect = (
        0.0,
        float(canvas.height - (bottom - top + 6)),
        right - left + 6.0,
        canvas.height,
    )
    labels = label_layout(det, canvas.width, canvas.height, font, max_labels, [legend_rect])
    for _, origin, text, rect in labels:
        draw.rectangle(rect, fill=(0, 0, 0))
        draw.text(origin, text, fill=(255, 255, 255), font=font)
    draw.rectangle(legend_rect, fill=(0, 0, 0))
    draw.text(
        (3 - left, legend_rect[1] + 3 - top), legend.format(len(labels)), fill="white", font=font
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _open_rgb(path: Path) -> Image.Image:
    """Decoded RGB image as displayed (``data.image_io.read_image``: EXIF orientation, 16-bit
    and transparent modes); a decompression bomb (PIL's pixel limit) raises instead of warning."""
    return read_image(path, bomb_is_error=True, raw_errors=True)


def run_predict(
    pipeline: Pipeline,
    inputs: Sequence[str],
    out_dir: str | Path,
    draw: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    overwrite: bool = False,
    write_json: bool = True,
    on_image: Callable[[Path, Detections], None] | None = None,
) -> dict[str, Any]:
    """Predict every readable image; unreadable ones are reported and skipped.

    Writes ``OUT/<relative path>.json`` per image (``output_names``), with ``draw`` also
    ``OUT/<relative path>_boxes.png``, and ``OUT/summary.json`` (processed and failed images),
    which is written even when a batch fails or Ctrl-C stops the run (then with
    ``"interrupted": true``). Files under ``out_dir`` are never inputs; an ``out_dir`` holding
    another run is refused unless ``overwrite`` (``check_out_dir``). ``write_json=False`` leaves
    out the per-image JSON; ``on_image(path, detections)`` sees each predicted image (the other
    formats of ``predict --format``: ``app.predict_formats``).

    Raises:
        FileNotFoundError: an input does not exist (``expand_inputs_with_base``).
        InputError: ``out_dir`` is a file or holds another run (``check_out_dir``).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    paths, base = expand_inputs_with_base(inputs)
    # --out inside an input folder: its own outputs (drawn images) are never inputs.
    inside = Path(os.path.abspath(out))
    paths = [p for p in paths if inside not in Path(os.path.abspath(p)).parents]
    names = dict(zip(paths, output_names(paths, base), strict=True))
    check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    interrupted = False
    bar = tqdm(total=len(paths), desc="predict", disable=not show_progress(progress))
    try:
        for start in range(0, len(paths), batch_size):
            chunk: list[Path] = []
            images: list[Image.Image] = []
            for p in paths[start : start + batch_size]:
                try:
                    images.append(_open_rgb(p))
                    chunk.append(p)
                except (
                    UnidentifiedImageError,
                    OSError,
                    ValueError,
                    Image.DecompressionBombError,
                    Image.DecompressionBombWarning,
                ) as err:
                    failed.append({"path": str(p), "error": f"{type(err).__name__}: {err}"})
                    print(f"warning: skipping unreadable image {p}: {err}", file=sys.stderr)
            dets = pipeline.predict_batch(images) if images else []
            for p, rgb, d in zip(chunk, images, dets, strict=True):
                entry: dict[str, Any] = {"path": str(p), "num_detections": len(d.scores)}
                if write_json:
                    json_path = out / names[p].with_name(names[p].name + ".json")
                    json_path.parent.mkdir(parents=True, exist_ok=True)
                    json_path.write_text(
                        json.dumps(
                            {
                                "image": str(p),
                                "width": rgb.width,
                                "height": rgb.height,
                                "detections": d.to_json(),
                            },
                            indent=1,
                        )
                    )
                    entry["json"] = str(json_path)
                if d.cut_by_top_k:
                    entry["cut_by_top_k"] = d.cut_by_top_k
                if on_image is not None:
                    on_image(p, d)
                if draw:
                    drawn = out / names[p].with_name(names[p].name + "_boxes.png")
                    entry["drawn"] = str(draw_detections(rgb, d, drawn))
                done.append(entry)
            bar.update(len(paths[start : start + batch_size]))
    except KeyboardInterrupt:
        interrupted = True  # keep what is done: the summary says how far it got
        raise
    finally:
        bar.close()
        summary = {"processed": done, "failed": failed, "found": len(paths)}
        if interrupted:
            summary["interrupted"] = True
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def _load_pipeline(ns: argparse.Namespace) -> Pipeline:
    """The pipeline ``predict``'s options name; its warnings become one ``warning:`` line each."""
    from gan_detect.infer.pipeline import GeneratedDataWarning, Pipeline

    kw: dict[str, Any] = dict(score_threshold=ns.score_threshold, max_detections=ns.max_detections)
    fusion = getattr(ns, "fusion", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        arch = getattr(ns, "detector", "retinaface")
        weights = getattr(ns, "weights", None)
        if weights is not None and (ns.ckpt is not None or arch == "retinaface"):
            raise InputError("--weights is for --detector yolox_nano|fastestdet without --ckpt")
        if ns.ckpt is None and arch != "retinaface":  # a COCO proposer, re-scored by --gan
            gan = None if ns.no_refine else ns.gan
            pipe = Pipeline.coco(arch, weights, gan, device=ns.device, fusion=fusion, **kw)
        elif ns.ckpt is None:  # the built-in RetinaFace, re-scored by --gan when given
            gan = None if ns.no_refine else ns.gan
            pipe = Pipeline.retinaface(gan, device=ns.device, fusion=fusion, **kw)
        else:
            pipe = Pipeline.load(
                ns.ckpt, device=ns.device, refine=not ns.no_refine, fusion=fusion, **kw
            )
    if getattr(ns, "top_k", None) is not None:
        pipe.opts = replace(pipe.opts, top_k=ns.top_k)
    for w in caught:
        print(f"gan-detect predict: warning: {w.message}", file=sys.stderr)
    origin = pipe.trained_on or {}
    flagged = any(issubclass(w.category, GeneratedDataWarning) for w in caught)
    if ns.ckpt is not None and origin.get("generated") and not flagged:
        # Pipeline.load warns only where a built-in detector meets real photos; a demo pipeline's
        # own detector and GAN both learnt generated data, whatever images come next.
        kind = origin.get("kind") or "data"
        print(
            f"gan-detect predict: warning: {ns.ckpt} was trained on generated {kind} (the demo's "
            "data), not real photos: on real photos its boxes and scores mean little; for real "
            "faces run predict without --ckpt (the built-in RetinaFace)",
            file=sys.stderr,
        )
    if pipe.fusion is not None:
        print(f"re-scoring: score fusion {pipe.fusion}", file=sys.stderr)
    return pipe


def run_cli(ns: argparse.Namespace) -> int:
    """``gan-detect predict`` on parsed arguments (``gan_detect.app.commands.predict``)."""
    if ns.out is None:  # --overwrite means the default folder itself
        ns.out = Path(DEFAULT_OUT) if getattr(ns, "overwrite", False) else default_out_dir()
    if not expand_inputs(ns.inputs):  # before loading the networks; missing paths raise
        print(f"gan-detect predict: error: no image found in {ns.inputs}", file=sys.stderr)
        return 1
    from gan_detect.app.predict_formats import FormatWriter

    writer = FormatWriter.for_args(ns)  # --format / --coco-gt checked before the networks load
    pipe = _load_pipeline(ns)
    writer.start(pipe, ns.score_threshold)
    s = _run_keeping_partial(pipe, ns, writer)
    if s is None:
        return 130
    done = plural(len(s["processed"]), "image")
    print(f"{done} processed, {len(s['failed'])} failed; results in {ns.out}")
    cut = [e["cut_by_top_k"] for e in s["processed"] if e.get("cut_by_top_k")]
    if cut:
        print(
            f"gan-detect predict: {plural(sum(cut), 'box')} scoring >= {ns.score_threshold} in "
            f"{plural(len(cut), 'image')} left out: only the detector's best {pipe.opts.top_k} per "
            "image are kept for re-scoring; --top-k raises it",
            file=sys.stderr,
        )
    if not s["found"]:
        print(f"gan-detect predict: error: no image found in {ns.inputs}", file=sys.stderr)
    # Non-zero when nothing was predicted: no image found, or none could be read.
    return 0 if s["processed"] else 1


def _run_keeping_partial(
    pipe: Pipeline, ns: argparse.Namespace, writer: FormatWriter
) -> dict[str, Any] | None:
    """``run_predict`` for the CLI; on Ctrl-C say what was kept and return None (exit 130)."""
    try:
        s = run_predict(
            pipe, ns.inputs, ns.out, draw=ns.draw, batch_size=ns.batch_size,
            overwrite=getattr(ns, "overwrite", False), write_json=writer.json,
            on_image=writer.add,
        )  # fmt: skip
        writer.close()
        return s
    except KeyboardInterrupt:
        writer.close()  # the finished images' boxes, in every format asked for
        s = _previous_run(Path(ns.out)) or {}
        print(
            f"gan-detect predict: interrupted (Ctrl-C) after {len(s.get('processed', []))} of "
            f"{s.get('found', '?')} images; their results are kept in {ns.out} "
            f'({SUMMARY_FILE} lists them, with "interrupted": true)',
            file=sys.stderr,
        )
        return None
