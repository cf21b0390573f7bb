"""``gan-detect demo``: the whole chain on generated data, in minutes on a CPU.

generated faces (WIDER layout) and shapes (COCO layout) -> baseline detector -> proposals ->
ROI stores -> tiny-face GAN and SOD-MTGAN -> baseline vs GAN with the official metrics -> report.
Every stage uses the same code (and configs) as a real run; only the sizes are small.
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_detect.config import PRESETS
from gan_detect.config.load import load_config
from gan_detect.data.synthetic import (
    SHAPE_CATEGORIES,
    write_synthetic_faces,
    write_synthetic_objects,
)
from gan_detect.utils.console import process_start_time, show_progress


@dataclass
class DemoSizes:
    """How much data and training the demo uses (``--quick`` for tests)."""

    train_images: int = 32
    val_images: int = 16
    detector_epochs: int = 10
    gan_epochs: int = 4

    @classmethod
    def quick(cls) -> DemoSizes:
        return cls(train_images=8, val_images=4, detector_epochs=1, gan_epochs=2)


def _exp(name: str) -> Path:
    path = PRESETS / name
    if not path.is_file():
        raise FileNotFoundError(
            f"demo config not found: {path} (is the package installed from a checkout?)"
        )
    return path


def run_demo(
    out_dir: str | Path = "runs/demo", quick: bool = False, seed: int = 0, progress: bool = True
) -> Path:
    """Run every stage; returns the report's path. Re-running re-uses the generated data."""
    from gan_detect.app.evaluate import evaluate
    from gan_detect.app.propose import propose
    from gan_detect.app.report import write_report
    from gan_detect.data import build_datamodule
    from gan_detect.infer.pipeline import export_pipeline
    from gan_detect.train.detector import fit_detector
    from gan_detect.train.fit import fit

    sizes = DemoSizes.quick() if quick else DemoSizes()
    progress = show_progress(progress)  # bars only on a terminal, not into a redirected log
    out = Path(out_dir).resolve()
    t0 = time.time()
    stages = [
        ("faces", "tiny_face_wider.yaml", "detector_wider.yaml", []),
        (
            "objects",
            "sod_mtgan_coco.yaml",
            "detector_coco.yaml",
            [
                f"data.num_classes={len(SHAPE_CATEGORIES)}",
                "data.train_split=train",
                "data.val_split=val",
            ],
        ),
    ]
    runs: list[Path] = []
    timings: dict[str, float] = {}
    for kind, gan_yaml, det_yaml, extra in stages:
        root = out / "data" / kind
        print(f"\n=== [{kind}] generating data in {root}")
        if kind == "faces":
            write_synthetic_faces(root, sizes.train_images, sizes.val_images, seed=seed)
            extra = [*extra, f"data.gt_dir={root / 'ground_truth'}"]
        else:
            write_synthetic_objects(root, sizes.train_images, sizes.val_images, seed=seed)
        common = [
            f"data.root={root}",
            f"data.cache_dir={out / 'cache'}",
            f"seed={seed}",
            "logger.kind=csv",
            f"trainer.enable_progress_bar={str(progress).lower()}",
            "overwrite=true",  # re-running the demo into the same --out starts it afresh
            *extra,
        ]
        files = [_exp(det_yaml), _exp("smoke.yaml"), _exp("demo.yaml")]
        det_cfg = load_config(
            files,
            [
                *common,
                f"output_dir={out / f'detector_{kind}'}",
                f"trainer.max_epochs={sizes.detector_epochs}",
                "data.val_rois=false",
                "trainer.check_val_every_n_epoch=1000",
            ],
        )
        t = time.time()
        print(
            f"=== [{kind}] training the baseline detector ({det_cfg.detector.arch}, "
            f"{det_cfg.detector.backbone})"
        )
        with _bars_to_stderr():
            det_ckpt = fit_detector(det_cfg)
        print(f"=== [{kind}] writing proposals")
        props = {s: propose(det_cfg, det_ckpt, s, progress=progress) for s in ("train", "val")}
        timings[f"{kind}_detector_s"] = time.time() - t
        prop_path = {s: next(iter(p.values())) for s, p in props.items()}
        gan_cfg = load_config(
            [_exp(gan_yaml), _exp("smoke.yaml"), _exp("demo.yaml")],
            [
                *common,
                f"output_dir={out / kind}",
                f"trainer.max_epochs={sizes.gan_epochs}",
                f"data.train_proposals={prop_path['train']}",
                f"data.val_proposals={prop_path['val']}",
            ],
        )
        t = time.time()
        print(f"=== [{kind}] training the {gan_cfg.variant.name} GAN on mined ROIs")
        with _bars_to_stderr():
            fit(gan_cfg)
        timings[f"{kind}_gan_s"] = time.time() - t
        t = time.time()
        print(f"=== [{kind}] evaluating baseline vs GAN re-scoring")
        evaluate(gan_cfg, Path(gan_cfg.output_dir) / "checkpoints" / "last.ckpt", progress=progress)
        timings[f"{kind}_eval_s"] = time.time() - t
        run_dir = Path(gan_cfg.output_dir)
        dm = build_datamodule(gan_cfg.data, scale=gan_cfg.variant.scale)  # type: ignore[arg-type]
        pipe = export_pipeline(
            det_ckpt,
            run_dir / "checkpoints" / "last.ckpt",
            run_dir / "pipeline.pt",
            dm.class_names(),
        )
        print(f"=== [{kind}] pipeline for `gan-detect predict --ckpt {pipe}`")
        runs.append(run_dir)
    report = write_report(runs, out / "report")
    timings["stages_s"] = time.time() - t0
    # What a person waited: interpreter start-up and imports included, the report too.
    timings["total_s"] = time.time() - process_start_time()
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    _summary(runs, report, timings, quick)
    return report


def _bars_to_stderr() -> contextlib.AbstractContextManager[object]:
    """Lightning's progress bars write to ``sys.stdout`` as they start; send them where ours
    go, so a redirected stdout holds the stage headers and the summary, not bar redraws."""
    return contextlib.redirect_stdout(sys.stderr)


def quick_note() -> str:
    """What a ``--quick`` run's near-zero numbers mean (printed under its summary)."""
    q = DemoSizes.quick()
    return (
        f"  --quick: {q.detector_epochs} detector epoch(s) and {q.gan_epochs} GAN epochs on "
        f"{q.train_images} images check that every stage runs;\n"
        "  APs near 0 and 'not resolved' are expected at this size. `gan-detect demo` (no --quick)\n"
        "  trains long enough for the numbers to mean something (a few minutes on a CPU)."
    )


def _summary(
    runs: list[Path], report: Path, timings: dict[str, float], quick: bool = False
) -> None:
    from gan_detect.app.report import headline_key, pct
    from gan_detect.metrics.resampling import interval_scope

    print("\n=== summary (generated data; small CPU networks; AP in %)")
    sizes = set()
    for run in runs:
        e = json.loads((run / "eval" / "metrics.json").read_text())
        m = e["metrics"]
        head = headline_key(m["baseline"])
        keys = (
            ["ap_easy", "ap_medium", "ap_hard"]
            if head == "ap_hard"
            else ["map", "map_tiny", "map_small"]  # the headline last, as for the faces
        )
        fusion = (e.get("inference") or {}).get("score_fusion", "?")
        for method in m:
            vals = "  ".join(f"{k}={pct(m[method][k]):>6s}" for k in keys)
            how = "" if method == "baseline" else f" ({fusion})"
            print(f"  {run.name:8s} {method:8s} {vals}{how}")
        n = e.get("num_images")
        sizes.add(n)
        print(f"  {run.name:8s} {verdict_line(run / 'eval', head, m, n)}")
    n_images = sizes.pop() if len(sizes) == 1 else None
    note = f"[..]: 95 % interval {interval_scope(n_images)}"
    print(textwrap.fill(note, 96, initial_indent="  ", subsequent_indent="        "))
    print("        (`--seeds 0 1 2`: three seeds, an interval over seeds and images)")
    print(f"  wall time {timings['total_s']:.0f} s (from process start)")
    if quick:
        print(quick_note())
    print(f"report: {report}")


def verdict_line(
    eval_dir: Path, head: str, metrics: dict[str, dict[str, float]], n_images: int | None = None
) -> str:
    """GAN - baseline on the headline metric with its paired interval (``comparison.json``),
    and what it supports: "GAN better (worse) on these N images only" when the interval clears
    0 by more than the printed precision (``is_resolved``), else "not resolved"."""
    from gan_detect.metrics.resampling import is_resolved

    path = eval_dir / "comparison.json"
    diff = None
    if path.is_file():
        cmp = json.loads(path.read_text())
        part = "wider" if head.startswith("ap_") else "coco"
        key = head.removeprefix("ap_") if part == "wider" else head
        diff = cmp.get(part, {}).get("difference", {}).get(key)
    if diff is None or diff.get("low") is None:
        point = 100 * (metrics["gan"][head] - metrics["baseline"][head])
        return f"GAN - baseline on {head}: {point:+.2f} (no interval: not resolved)"
    span = f"{diff['point']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
    where = f"these {n_images} images" if n_images else "these images"
    if is_resolved(diff["low"], diff["high"]):
        word = "better" if diff["low"] > 0 else "worse"
        return f"GAN - baseline on {head}: {span}: GAN {word} on {where} only"
    return f"GAN - baseline on {head}: {span}: not resolved on {where}"


def run_demo_seeds(
    out_dir: str | Path, seeds: list[int], quick: bool = False, n_boot: int = 1000
) -> dict[str, Any]:
    """The demo once per seed (``OUT/seed<N>``), then the seed-averaged GAN - baseline per stage.

    Every seed generates its own images, so seeds and images are nested: the interval resamples
    the seeds and, inside each drawn seed, its images
    (:func:`~gan_detect.metrics.bootstrap.nested_seed_bootstrap`).
    """
    out = Path(out_dir)
    unique = list(dict.fromkeys(seeds))  # a seed twice would count its images twice
    if len(unique) != len(seeds):
        print(f"demo: seeds {seeds} repeat a seed; running each once: {unique}", file=sys.stderr)
    seeds = unique
    for s in seeds:
        print(f"\n##### demo seed {s} -> {out / f'seed{s}'}")
        run_demo(out / f"seed{s}", quick=quick, seed=s)
    summary = seeds_summary(out, seeds, n_boot)
    (out / "seeds.json").write_text(json.dumps(summary, indent=1))
    from gan_detect.metrics.resampling import interval_scope

    print(f"\n=== over seeds {seeds}: GAN - baseline in AP points, mean over seeds")
    note = f"[..]: 95 % interval {interval_scope(n_seeds=len(seeds))}"
    print(textwrap.fill(note, 96, initial_indent="  ", subsequent_indent="        "))
    for stage, metrics in summary.items():
        for m, r in metrics.items():
            d = r["difference"]
            span = "" if d["low"] is None else f" [{d['low']:+.2f}, {d['high']:+.2f}]"
            mark = "resolved" if d.get("resolved") else "not resolved"
            per = " ".join(f"{v:+.2f}" for v in r["diff"])
            print(f"  {stage:8s} {m:10s} mean {r['mean']:+.2f}{span} {mark} (per seed: {per})")
    print(f"seeds: {out / 'seeds.json'}")
    return summary


def seeds_summary(out: Path, seeds: list[int], n_boot: int = 1000) -> dict[str, Any]:
    """Per stage (faces, objects) and headline metrics: the nested seed bootstrap of the
    finished per-seed demo runs' GAN - baseline."""
    import warnings

    from gan_detect.metrics.bootstrap import (
        coco_results_to_dt,
        coco_tables,
        load_coco_gt,
        nested_seed_bootstrap,
        wider_tables,
    )
    from gan_detect.metrics.wider_gt import load_wider_ground_truth

    result: dict[str, Any] = {}
    faces, objects = [], []
    for s in seeds:
        root = out / f"seed{s}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gt_dir = root / "data" / "faces" / "ground_truth"
            if (root / "faces" / "eval" / "gan").is_dir() and gt_dir.is_dir():
                from gan_detect.data.proposals import read_wider_tree_arrays

                gt = load_wider_ground_truth(gt_dir)
                ev = root / "faces" / "eval"
                a = read_wider_tree_arrays(ev / "baseline" / "wider_txt")
                b = read_wider_tree_arrays(ev / "gan" / "wider_txt")
                faces.append((wider_tables(a, gt), wider_tables(b, gt)))
            inst = root / "data" / "objects" / "annotations" / "instances_val.json"
            ev = root / "objects" / "eval"
            if (ev / "gan" / "detections.json").is_file() and inst.is_file():
                cgt = load_coco_gt(inst)
                ta = coco_tables(cgt, coco_results_to_dt(cgt, ev / "baseline" / "detections.json"))
                tb = coco_tables(cgt, coco_results_to_dt(cgt, ev / "gan" / "detections.json"))
                objects.append((ta, tb))
    if faces:
        res = nested_seed_bootstrap(faces, n_boot)
        result["faces"] = {k: res[k] for k in ("easy", "medium", "hard")}
    if objects:
        res = nested_seed_bootstrap(objects, n_boot)
        result["objects"] = {k: res[k] for k in ("map", "map_small", "map_tiny")}
    return result
