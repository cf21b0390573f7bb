"""``gan-detect compare RUN_DIR...``: a markdown report with PNG plots from finished runs.

Sections: metric table (baseline vs each variant), AP by object-size bucket, PR curves, SR sample
grids (LR | bicubic | SR | HR with D's scores) and training curves. Every number in the table is
read from the runs' ``eval/metrics.json``; nothing is recomputed here.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on clusters and in CI
import matplotlib.pyplot as plt  # noqa: E402

from gan_detect.metrics.bootstrap import COCO_METRICS  # noqa: E402
from gan_detect.metrics.coco_eval import MAX_AREA, area_ranges  # noqa: E402
from gan_detect.metrics.resampling import RESOLUTION, interval_scope, is_resolved  # noqa: E402
from gan_detect.utils.console import plural  # noqa: E402

SIZE_KEYS = ("map_tiny", "map_small", "map_medium", "map_large")
# "tiny\n<16", ...: each bucket's upper side length, from the one definition in coco_eval.
SIZE_TICKS = [
    f"{name}\n<{hi**0.5:g}" if hi < MAX_AREA else name
    for name, _, hi in sorted(area_ranges()[1:], key=lambda r: r[2])
]
WIDER_KEYS = ("ap_easy", "ap_medium", "ap_hard")
COCO_KEYS = COCO_METRICS
# The bars are percent already: the unit is said once, here.
SIZE_AXIS_LABEL = "AP@[.5:.95] (%)"
TRAIN_KEYS = ("train/loss_g", "train/loss_d", "train/loss_pixel", "train/d_real", "train/d_fake")


def headline_key(metrics: dict[str, float]) -> str:
    """The one small-object metric every summary judges a run by: WIDER hard AP, else COCO AP_S."""
    return "ap_hard" if "ap_hard" in metrics else "map_small"


def pct(v: float) -> str:
    """A metric as the reports print it: percent with two decimals, ``n/a`` for -1 (no objects)."""
    return "n/a" if v < 0 else f"{100 * v:.2f}"


def run_fusion(run: dict[str, Any]) -> str | None:
    """The score fusion the run's GAN row used (``metrics.json``'s inference settings)."""
    e = run.get("eval", {})
    if "gan" not in e.get("metrics", {}):
        return None
    fusion = (e.get("inference") or {}).get("score_fusion")
    if fusion is None:
        fusion = run.get("config", {}).get("evaluate", {}).get("score_fusion")
    return None if fusion is None else str(fusion)


def _run_name(run: Path, cfg: dict[str, Any]) -> str:
    v = cfg.get("variant", {}).get("name", "?")
    d = cfg.get("data", {}).get("name", "?")
    return f"{v} ({d}) [{run.name}]"


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Read what a finished run wrote: config, eval metrics, PR curves, logs, SR grids."""
    run = Path(run_dir)
    metrics_path = run / "eval" / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{metrics_path} not found: run `gan-detect evaluate ... ckpt=...` for {run} first"
        )
    from omegaconf import OmegaConf

    from gan_detect.metrics.validate_results import read_json  # a cut-off file: one line

    evaluated = read_json(metrics_path)
    cfg_path = run / "config.yaml"
    # An `evaluate ... output_dir=X` folder has no config.yaml: metrics.json records the config.
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.is_file() else {}
    cfg = cfg or evaluated.get("config") or {}
    curves_path = run / "eval" / "pr_curves.json"
    cmp_path = run / "eval" / "comparison.json"
    grids = sorted((run / "val_images").glob("epoch_*.png"))
    return {
        "dir": run,
        "config": cfg,
        "name": _run_name(run, cfg),  # type: ignore[arg-type]
        "eval": evaluated,
        "curves": read_json(curves_path) if curves_path.is_file() else {},
        # Paired bootstrap intervals of GAN - baseline (evaluate writes them).
        "comparison": read_json(cmp_path) if cmp_path.is_file() else {},
        "train_log": _read_csv(run / "logs" / "metrics.csv"),
        "grid": grids[-1] if grids else None,
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


_fmt = pct


def metric_table(runs: list[dict[str, Any]]) -> str:
    """Markdown table: baseline and GAN row per run, AP in percent, GAN - baseline deltas.

    The ``fusion`` column says how each row scored its boxes: ``detector`` (the proposals' own
    scores) or the GAN row's ``evaluate.score_fusion``.
    """
    lines = []
    for kind, keys in (("WIDER FACE", WIDER_KEYS), ("COCO-style", COCO_KEYS)):
        rows = [r for r in runs if all(k in r["eval"]["metrics"]["baseline"] for k in keys)]
        if not rows:
            continue
        lines += [
            f"**{kind} AP (%)**",
            "",
            "| run | method | fusion | " + " | ".join(keys) + " |",
            "|---|---|---|" + "---|" * len(keys),
        ]
        for r in rows:
            m = r["eval"]["metrics"]
            fusion = run_fusion(r) or "?"
            for method in m:
                vals = " | ".join(_fmt(m[method][k]) for k in keys)
                how = "detector" if method == "baseline" else fusion
                lines.append(f"| {r['name']} | {method} | {how} | {vals} |")
            if "gan" in m:
                deltas = " | ".join(
                    f"{100 * (m['gan'][k] - m['baseline'][k]):+.2f}"
                    if m["gan"][k] >= 0 and m["baseline"][k] >= 0
                    else "n/a"
                    for k in keys
                )
                lines.append(f"| {r['name']} | GAN - baseline | {fusion} | {deltas} |")
                part = "wider" if kind == "WIDER FACE" else "coco"
                diffs = (r.get("comparison") or {}).get(part, {}).get("difference")
                if diffs:
                    cells = " | ".join(_interval(diffs.get(_cmp_key(k))) for k in keys)
                    lines.append(f"| {r['name']} | 95 % interval | {fusion} | {cells} |")
        if any(r.get("comparison") for r in rows):
            sizes = {r["eval"].get("num_images") for r in rows}
            scope = interval_scope(sizes.pop() if len(sizes) == 1 else None)
            lines += [
                "",
                f"95 % interval: paired bootstrap of GAN - baseline {scope}. **Bold** where it "
                f"clears 0 by more than {RESOLUTION:g} (a resolved difference), otherwise not "
                "resolved.",
            ]
        if kind == "WIDER FACE" and any(not r["eval"].get("official_wider_settings") for r in rows):
            lines += [
                "",
                "Runs without the official `gt_list` .mat files use face-height settings "
                "(>50/30/10 px): NOT comparable with published WIDER FACE numbers.",
            ]
        lines.append("")
    return "\n".join(lines)


def _cmp_key(key: str) -> str:
    """Report column -> comparison.json metric (``ap_hard`` -> ``hard``; COCO keys as they are)."""
    return key.removeprefix("ap_")


def _interval(d: dict[str, Any] | None) -> str:
    if not d or d.get("low") is None:
        return "n/a"
    text = f"[{d['low']:+.2f}, {d['high']:+.2f}]"
    return f"**{text}**" if is_resolved(d["low"], d["high"]) else text


def _panels(n: int) -> tuple[Any, list[Any]]:
    """One subplot per run, side by side."""
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.4), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict(
    metrics: dict[str, dict[str, float]],
    comparison: dict[str, Any] | None = None,
    n_images: int | None = None,
) -> str:
    """One sentence: does the GAN beat its baseline on the primary small-object metric? With the
    run's paired bootstrap (``comparison.json``) it says so only when the interval clears 0 by
    more than the printed precision (``is_resolved``), and then for these images only."""
    if "gan" not in metrics:
        return "No GAN evaluated (baseline only)."
    key = headline_key(metrics["baseline"])
    b, g = metrics["baseline"][key], metrics["gan"][key]
    part = "wider" if key.startswith("ap_") else "coco"
    d = ((comparison or {}).get(part) or {}).get("difference", {}).get(_cmp_key(key))
    if d is None or d.get("low") is None:
        return (
            f"GAN re-scoring vs the baseline on {key}: {100 * g:.2f} vs {100 * b:.2f}, "
            "no interval: not resolved."
        )
    span = f"{d['point']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
    where = f"these {n_images} images" if n_images else "these images"
    if not is_resolved(d["low"], d["high"]):
        return (
            f"The GAN re-scoring vs the baseline on {key}: {100 * g:.2f} vs {100 * b:.2f}, "
            f"difference {span}: not resolved on {where}."
        )
    word = "beats" if d["low"] > 0 else "is worse than"
    return (
        f"The GAN re-scoring {word} the baseline on {key} on {where} only: {100 * g:.2f} vs "
        f"{100 * b:.2f}, {span}."
    )


def _images(n: Any) -> str:
    """``"16 images"``, ``"1 image"``; ``"? images"`` when the count is unknown."""
    return plural(n, "image") if isinstance(n, int) else "? images"


def _legend(ax: Any) -> None:
    """A legend only where something was drawn (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_size_buckets(runs: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: AP per size bucket (tiny < 16 px, small < 32, medium < 96, large).

    A bucket without ground-truth objects (AP -1 in metrics.json) is marked n/a, not drawn as 0.
    """
    fig, axes = _panels(len(runs))
    for ax, r in zip(axes, runs, strict=True):
        m = r["eval"]["metrics"]
        width = 0.8 / len(m)
        top = max([100 * m[mt].get(k, -1) for mt in m for k in SIZE_KEYS] + [1.0])
        for j, method in enumerate(m):
            raw = [m[method].get(k, -1) for k in SIZE_KEYS]
            xs = [i + j * width for i in range(len(SIZE_KEYS))]
            ax.bar(xs, [max(v, 0) * 100 for v in raw], width, label=method)
            for x, v in zip(xs, raw, strict=True):
                if v < 0:
                    ax.text(x, 0.02 * top, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(SIZE_KEYS))])
        ax.set_xticklabels(SIZE_TICKS)
        ax.set_ylabel(SIZE_AXIS_LABEL)
        ax.set_ylim(0, 1.15 * top)
        ax.set_title(r["name"], fontsize=8)
        _legend(ax)
    return _save(fig, path)


def plot_pr_curves(runs: list[dict[str, Any]], path: Path) -> Path:
    """PR curves per run: WIDER hard setting when present, else COCO class-mean at IoU 0.5."""
    fig, axes = _panels(len(runs))
    for ax, r in zip(axes, runs, strict=True):
        for method, curves in r["curves"].items():
            key = "wider_hard" if "wider_hard" in curves else "coco_iou50"
            c = curves.get(key) or {}
            if c:
                ax.plot(c["recall"], c["precision"], label=f"{method} ({key})")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(r["name"], fontsize=8)
        _legend(ax)
    return _save(fig, path)


LOSS_KEYS = tuple(k for k in TRAIN_KEYS if "/loss_" in k)
PROB_KEYS = tuple(k for k in TRAIN_KEYS if k not in LOSS_KEYS)


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    pts = [
        (float(row["step"]), float(row[key]))
        for row in rows
        if row.get(key) not in (None, "") and row.get("step") not in (None, "")
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training_curves(runs: list[dict[str, Any]], path: Path) -> Path:
    """Per run: the GAN losses (top, log axis) and D's mean probability of "real" on real and
    generated images (bottom, 0-1), against the training step."""
    fig, axes = plt.subplots(2, len(runs), figsize=(4.5 * len(runs), 5.6), squeeze=False)
    for col, r in enumerate(runs):
        ax_loss, ax_prob = axes[0][col], axes[1][col]
        for key in LOSS_KEYS:
            xs, ys = _series(r["train_log"], key)
            if xs:  # markers: a short run logs only a few points, a lone one has no line
                ax_loss.plot(xs, ys, label=key.split("/")[1], marker="." if len(xs) < 30 else None)
        for key in PROB_KEYS:
            xs, ys = _series(r["train_log"], key)
            if xs:
                label = {"d_real": "D(real HR)", "d_fake": "D(G(LR))"}.get(key.split("/")[1], key)
                ax_prob.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
        ax_loss.set_yscale("symlog", linthresh=1e-3)  # losses span decades; symlog allows 0
        ax_loss.set_ylabel("loss (log scale)")
        ax_loss.set_title(r["name"], fontsize=8)
        ax_prob.set_ylabel("D's probability of real")
        ax_prob.set_ylim(-0.02, 1.02)
        ax_prob.set_xlabel("optimiser step")
        for ax in (ax_loss, ax_prob):
            _legend(ax)
            if not ax.get_legend_handles_labels()[0]:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and its PNGs; returns the report's path."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        "# gan-detect comparison report",
        "",
        "Runs: " + ", ".join(f"`{r['dir']}`" for r in runs),
        "",
        "## Metrics",
        "",
        metric_table(runs),
    ]
    for r in runs:
        e = r["eval"]
        fusion = run_fusion(r)
        how = f", score fusion `{fusion}`" if fusion else ""
        parts.append(
            f"- {r['name']}: {_images(e.get('num_images'))}, split `{e.get('split')}`, "
            f"checkpoint `{e.get('checkpoint')}`{how}. "
            f"{verdict(e['metrics'], r.get('comparison'), e.get('num_images'))}"
        )
    plot_size_buckets(runs, out / "ap_by_size.png")
    plot_pr_curves(runs, out / "pr_curves.png")
    plot_training_curves(runs, out / "training_curves.png")
    parts += [
        "",
        "## AP by object size",
        "",
        "![AP by size](ap_by_size.png)",
        "",
        "## Precision-recall curves",
        "",
        "![PR curves](pr_curves.png)",
        "",
        "## Super-resolved samples (LR | bicubic | SR | HR, D's score on SR)",
        "",
    ]
    for i, r in enumerate(runs):
        if r["grid"] is not None:
            name = f"sr_grid_{i}.png"
            shutil.copyfile(r["grid"], out / name)
            parts += [f"{r['name']}:", "", f"![SR samples]({name})", ""]
        else:
            parts += [f"{r['name']}: no SR grid (the run logged no validation)", ""]
    parts += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
