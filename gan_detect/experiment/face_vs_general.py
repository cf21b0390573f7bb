"""Face vs general on real data: each GAN variant's gain over its own detector, by object size.

    gan-detect experiment face-vs-general [--wider runs/real_wider/results.json]
                                          [--coco runs/real_coco/results.json] [--out FILE]

Reads the ``results.json`` of the real WIDER FACE experiment (the tiny-face GAN re-scoring
RetinaFace) and of the real COCO one (SOD-MTGAN re-scoring its COCO detector) and writes one
markdown table per score fusion where the two gains sit side by side, row by object size (sqrt of
the box area). Each gain is "variant − its own detector" in AP points with the 95 % interval its
experiment computed (seeds and images resampled together).

The two sides do not measure the same thing and the table says so: WIDER's buckets are AP@0.5
per face-size bucket (< 10, 10-16, 16-32, > 32 px); COCO's are AP@[.5:.95] for tiny (< 16 px),
small (< 32 px, tiny included), medium (32-96 px) and large (> 96 px), which approximate the
official ones on the shared JSON (integer-truncated boxes, no crowd flags). Compare the sign
and the size trend of the gains, not their values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gan_detect.experiment.report import fmt_diff
from gan_detect.utils.errors import InputError

FUSIONS = ("d_only", "geometric_mean", "learned", "size_gated")
# (size range, WIDER metric and its name, COCO metric and its name); "" when a side has none.
SIZE_ROWS: list[tuple[str, str, str, str, str]] = [
    ("< 10 px", "ap50_<10", "AP50 < 10", "", ""),
    ("10-16 px", "ap50_10-16", "AP50 10-16", "map_tiny", "AP_tiny (< 16)"),
    ("16-32 px", "ap50_16-32", "AP50 16-32", "map_small", "AP_S (< 32, tiny incl.)"),
    ("32-96 px", "ap50_>32", "AP50 > 32", "map_medium", "AP_M (32-96)"),
    ("> 96 px", "", "(in > 32)", "map_large", "AP_L (> 96)"),
    ("all sizes", "hard", "AP hard (official)", "map", "AP"),
]


def _by_keys(res: dict[str, Any], row: str, fusion: str) -> dict[str, Any] | None:
    """The comparison "<row> / <fusion>" minus the detector, found by its method keys."""
    det = res.get("detector", "")
    for title, rows in res.get("comparison_keys", {}).items():
        for name, pair in rows.items():
            if pair == f"{det}|{row} / {fusion}":
                return res["comparisons"][title][name]
    return None


def wider_gains(res: dict[str, Any], fusion: str, row: str = "gan") -> dict[str, Any] | None:
    """metric -> seed-bootstrap result of "tiny-face GAN, <fusion>" minus RetinaFace alone."""
    found = _by_keys(res, row, fusion)
    if found is not None:
        return found
    for rows in res.get("comparisons", {}).values():
        for name, diff in rows.items():
            if name.startswith("RetinaFace → ") and name.endswith(f"tiny-face GAN, {fusion}"):
                return diff
    return None


def coco_gains(res: dict[str, Any], fusion: str, row: str = "sod") -> dict[str, Any] | None:
    """metric -> seed-bootstrap result of "SOD-MTGAN, <fusion>" minus its detector alone (the
    results' ``detector``; results written before it was recorded are FastestDet's)."""
    res = {"detector": "FastestDet alone", **res}
    return _by_keys(res, row, fusion)


def _side(gains: dict[str, Any] | None, metric: str) -> tuple[str, str, str]:
    """(detector AP, variant AP, gain with interval) cells."""
    if not metric or gains is None or metric not in gains:
        return "", "", ""
    g = gains[metric]

    def ap(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    return ap(g.get("mean_a")), ap(g.get("mean_b")), fmt_diff(g["difference"])


def markdown(wider: dict[str, Any], coco: dict[str, Any], fusions: list[str]) -> str:
    """One table per fusion: the two variants' gains over their own detectors by size."""
    # The COCO detector by the name its results carry ("YOLOX-nano alone" -> "YOLOX-nano").
    coco_det = str(coco.get("detector", "FastestDet alone")).removesuffix(" alone")
    lines = [
        "# Face vs general on real data: gains over the own detector by object size",
        "",
        f"Face: tiny-face GAN re-scoring RetinaFace on {wider.get('num_val_images', '?')} WIDER "
        f"FACE val images (seeds {wider.get('seeds')}). General: SOD-MTGAN re-scoring {coco_det} "
        f"on {coco.get('num_val_images', coco.get('num_test_images', '?'))} COCO test images (seeds {coco.get('seeds')}).",
        "Gain = variant − its own detector in AP points, with the 95 % interval of its own "
        "experiment (seeds and images resampled, not machines; * = resolved: it clears 0 by more "
        "than 0.01). WIDER's size columns are AP@0.5 "
        "per face-size bucket; COCO's are AP@[.5:.95] per area range and approximate the official "
        "AP_S/M/L (integer-truncated boxes, crowd not flagged). The two sides measure different "
        "things on different data: read the sign and the trend over sizes, not the values.",
    ]
    for fusion in fusions:
        wg, cg = wider_gains(wider, fusion), coco_gains(coco, fusion)
        if wg is None and cg is None:
            continue
        lines += [
            "",
            f"## Score fusion: {fusion}",
            "",
            "| object size | face metric | RetinaFace | tiny-face GAN | face gain "
            f"| general metric | {coco_det} | SOD-MTGAN | general gain |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size, wm, wname, cm, cname in SIZE_ROWS:
            w = _side(wg, wm)
            c = _side(cg, cm)
            lines.append(
                f"| {size} | {wname if wm or wname else ''} | {' | '.join(w)} | "
                f"{cname} | {' | '.join(c)} |"
            )
        if wg is None:
            lines.append(f"\n(no WIDER result for fusion {fusion})")
        if cg is None:
            lines.append(f"\n(no COCO result for fusion {fusion})")
    return "\n".join(lines) + "\n"


def face_vs_general(
    wider: str | Path, coco: str | Path, fusions: list[str], out: str | Path
) -> str:
    """Read the two results files, write the tables to ``out``; returns the markdown."""
    loaded = []
    for p, name in ((Path(wider), "real_wider"), (Path(coco), "real_coco")):
        if not p.is_file():
            raise InputError(
                f"{p} not found: run `gan-detect experiment run {name}` first "
                "(or pass its results.json)"
            )
        try:
            loaded.append(json.loads(p.read_text()))
        except ValueError as err:
            raise InputError(f"{p}: not a results JSON ({err})") from None
    text = markdown(loaded[0], loaded[1], fusions)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    return text
