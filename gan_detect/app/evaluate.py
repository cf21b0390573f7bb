"""``gan-detect evaluate``: baseline vs GAN re-scoring on a split, written to ``eval/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch.loggers import CSVLogger

from gan_detect.config.validate import ExperimentConfig, check_checkpoint_fits, to_container
from gan_detect.data import build_datamodule
from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    from gan_detect.metrics.wider_gt import WiderGroundTruth


def evaluate(
    cfg: ExperimentConfig,
    ckpt: str | Path | None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Baseline (proposal scores) vs the GAN's re-scoring on ``cfg.evaluate.split``.

    Writes ``<out_dir>/{baseline,gan}/`` detections in both official formats and
    ``<out_dir>/metrics.json``; logs the metrics to the configured logger. ``ckpt=None``
    evaluates the baseline alone.
    """
    from gan_detect.data.proposals import write_coco_results, write_wider_tree
    from gan_detect.infer.evaluation import (
        evaluate_baseline_vs_gan,
        format_comparison,
        save_metrics,
    )
    from gan_detect.infer.fusion_fit import fusion_for_checkpoint
    from gan_detect.infer.inference import InferenceOptions, inference_options
    from gan_detect.train.loggers import build_logger
    from gan_detect.utils.device import resolve_device
    from gan_detect.variants import GANVariant

    out = Path(out_dir or Path(cfg.output_dir) / "eval")
    # A bad checkpoint fails before the (slow) data set-up.
    trained = GANVariant.from_checkpoint(ckpt) if ckpt is not None else None
    if trained is not None and trained.run_config is not None:
        check_checkpoint_fits(ckpt, trained.run_config, cfg)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=cfg.seed)  # type: ignore[arg-type]
    split = cfg.evaluate.split
    ds = dm.detection_dataset(split)
    if ds.proposals is None:
        raise FileNotFoundError(
            f"evaluate needs proposals for the {split} split: set data.{split}_proposals "
            "(a COCO results JSON or a WIDER txt tree, e.g. from `gan-detect propose`)"
        )
    e = cfg.evaluate
    variant = None
    opts = InferenceOptions(top_k=e.top_k)  # the baseline alone needs only top-K
    if trained is not None:
        variant = trained.to(resolve_device(e.device))
        assert trained.run_config is not None
        # LR size and context from the checkpoint (what G was trained on); the rest from cfg.
        opts = inference_options(
            trained.run_config, e, fusion_for_checkpoint(str(ckpt), needed=e.score_fusion)
        )
    kind = "wider" if cfg.data.name == "wider_face" else "coco"
    gt = None
    gt_dir = getattr(cfg.data, "gt_dir", None)
    if kind == "wider" and gt_dir:
        gt = _wider_gt(gt_dir, {r.image_id for r in ds.records})
    metrics, dets, curves = evaluate_baseline_vs_gan(
        variant, ds, kind, opts, gt=gt, progress=progress, coco_max_dets=e.coco_max_dets
    )
    cat_ids = dm.category_ids() if hasattr(dm, "category_ids") else None
    for method, per_image in dets.items():
        # WIDER ids are "event/name" strings: the official txt tree; COCO: a results JSON.
        if kind == "wider":
            write_wider_tree(per_image, out / method / "wider_txt")
        else:
            (out / method).mkdir(parents=True, exist_ok=True)
            write_coco_results(per_image, out / method / "detections.json", category_ids=cat_ids)
    save_metrics(
        metrics,
        out / "metrics.json",
        extra={
            "checkpoint": str(ckpt) if ckpt else None,
            "split": split,
            "num_images": len(ds),
            "official_wider_settings": gt is not None,
            "inference": vars(opts),
            # So that `compare` can name a folder written with output_dir=... (no config.yaml).
            "config": to_container(cfg),
        },
    )
    (out / "pr_curves.json").write_text(json.dumps(curves))
    fusion = opts.score_fusion if variant is not None else None
    print(format_comparison(metrics, fusion))
    if "gan" in dets and e.bootstrap > 0:
        from gan_detect.metrics.compare import compare_detection_sets, format_comparison_table

        cmp = compare_detection_sets(
            ds.records, dets["baseline"], dets["gan"], cfg.data.num_classes, gt,
            n_boot=e.bootstrap, max_dets=e.coco_max_dets,
        )  # fmt: skip
        (out / "comparison.json").write_text(json.dumps(cmp, indent=1))
        for part in ("wider", "coco"):
            if part in cmp:
                print(format_comparison_table(cmp[part], "baseline", "GAN"))
        print(f"intervals: {out / 'comparison.json'}")
    print(f"metrics: {out / 'metrics.json'}")
    # CSV goes next to the eval outputs: the run's training logs must not be overwritten. An
    # earlier evaluation's CSV is replaced like the rest of eval/ (and Lightning then has no
    # old folder to warn about).
    if cfg.logger.kind == "csv":
        shutil.rmtree(out / "logs", ignore_errors=True)
    logger = (
        CSVLogger(save_dir=str(out), name="logs", version="")
        if cfg.logger.kind == "csv"
        else build_logger(cfg)
    )
    if logger:
        flat = {f"eval/{m}/{k}": v for m, vals in metrics.items() for k, v in vals.items()}
        logger.log_metrics(flat)  # type: ignore[union-attr]
        logger.finalize("success")  # type: ignore[union-attr]
    return metrics


_GT_HINT = (
    "data.gt_dir is the folder of the official wider_{face,easy,medium,hard}_val.mat files; "
    "for images outside the WIDER FACE val set give data.gt_dir=null (easy / medium / hard "
    "by face height, not comparable with published numbers)"
)


def _wider_gt(gt_dir: str, image_ids: set[str]) -> WiderGroundTruth:
    """``data.gt_dir``'s ground truth restricted to the evaluated images; a file it lacks, or an
    image it does not hold (your own images), is one error naming the key and the way out."""
    from gan_detect.metrics import load_wider_ground_truth
    from gan_detect.metrics.wider_gt import UnknownImageIds

    try:
        return load_wider_ground_truth(gt_dir).subset(image_ids)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data.gt_dir={gt_dir}: {err}; {_GT_HINT}") from None
    except UnknownImageIds as err:
        raise InputError(f"data.gt_dir={gt_dir}: {err}; {_GT_HINT}") from None
