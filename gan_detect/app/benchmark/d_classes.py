"""``d_classes``: does D learn its classes, and after how many steps? D's top-1 class accuracy on
the test split's ground-truth objects, by size, against training steps, beside the detector's
class for the same objects and the majority-class line.

One row of an experiment file (default ``experiments/real_coco.yaml``, row ``sod``, the first
seed) is trained with the file's budget except ``--epochs``, in ``--run-dir`` (an output folder
of that experiment whose proposal stage is finished: ``gan-detect experiment run`` makes it), and
probed at ``--steps`` (training batches; 0 = before the first). Each probe crops every non-ignored
test object as ROI mining does, runs G then D's class head
(:func:`gan_detect.experiment.diagnostics.d_class_predictions`) and emits one line per size band.
Results: ``benchmarks/results/d_classes.jsonl``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gan_detect.app.benchmark.common import Recorder


def run_d_classes(args: argparse.Namespace, rec: Recorder) -> None:
    import lightning as L

    from gan_detect.config.validate import to_experiment_config
    from gan_detect.data import build_datamodule
    from gan_detect.experiment import diagnostics as dg
    from gan_detect.experiment.datasets import DATASET_HOOKS
    from gan_detect.experiment.spec import load_experiment
    from gan_detect.train.fit import fit
    from gan_detect.utils.errors import InputError

    spec = load_experiment(args.experiment, quick=args.quick, overrides=args.set or [])
    out = Path(args.run_dir or f"runs/{spec.name}{'_quick' if args.quick else ''}").resolve()
    if not (out / "proposals" / "val" / "done.json").is_file():
        raise InputError(
            f"--run-dir {out}: no finished proposal stage; run `gan-detect experiment run "
            f"{args.experiment}` (or pass the folder it wrote)"
        )
    hook = DATASET_HOOKS[spec.dataset["hook"]](spec)
    prep = hook.prepare(out)
    seed = spec.seeds[0]
    raw = spec.row_config(spec.row(args.row), seed, out, prep)
    raw["trainer"]["max_epochs"] = args.epochs
    raw["trainer"]["checkpoint_every_n_batches"] = 0
    raw["output_dir"] = str(out / "bench_d_classes" / f"{args.row}_seed{seed}")
    raw["overwrite"] = True
    cfg = to_experiment_config(raw)
    data: Any = cfg.data  # a ROI DataModule's config (hr_size, context)
    dm = build_datamodule(cfg.data, scale=cfg.variant.scale, seed=seed)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    gt = dg.gt_roi_set(dm.detection_dataset("val"), data.hr_size, data.context, cfg.variant.scale)
    print(f"d_classes: {len(gt['label'])} test objects cropped in {time.perf_counter() - t0:.0f} s")
    steps = sorted(set(args.steps))
    buckets = hook.buckets

    def probe(module: Any, step: int, seconds: float) -> None:
        table = dg.class_accuracy_table(
            gt, dg.d_class_predictions(module.variant, gt["lr"]), buckets
        )
        for band, v in table.items():
            rec.emit(
                {
                    "experiment": spec.name,
                    "row": args.row,
                    "seed": seed,
                    "step": step,
                    "train_s": round(seconds, 1),
                    "band": band,
                    **{k: round(x, 2) if isinstance(x, float) else x for k, x in v.items()},
                }
            )

    class Probe(L.Callback):
        """Probes at the chosen batch counts (0: before training)."""

        def __init__(self) -> None:
            self.batches, self.train_s, self.t = 0, 0.0, 0.0

        def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
            if 0 in steps:
                probe(module, 0, 0.0)
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer: L.Trainer, module: Any, *a: Any) -> None:
            self.batches += 1
            if self.batches in steps:
                self.train_s += time.perf_counter() - self.t
                probe(module, self.batches, self.train_s)
                module.train()
                self.t = time.perf_counter()

    fit(cfg, None, callbacks=[Probe()], enable_checkpointing=False)
