"""Paired bootstrap over evaluation images for AP differences (WIDER FACE and COCO).

Two methods A and B are scored on the same images. A bootstrap replicate draws the images with
replacement (a multinomial count per image, the same counts for A and B: the comparison is
paired) and recomputes both APs on that resample; the spread of B - A over replicates gives a
95 % percentile interval and a one-sided p of "B is not better than A".

Re-running an evaluation protocol 1,000 times would be far too slow, so each protocol is split in
two:

1. per-image contributions, computed once per method (matching predictions to ground truth is
   the expensive part and does not depend on the resample: a resample only repeats or drops
   whole images);
2. a weighted re-accumulation, where an image drawn ``w`` times counts ``w`` times in every sum
   (true positives, predictions, ground truth). For the WIDER FACE protocol this is one matrix
   product of the (R, n_images) count matrix with (n_images, 1000) per-image tables.

Approximations (both tested to move the point estimate by < 0.01 AP points):

* WIDER FACE: the official protocol min-max normalises the scores over the whole prediction
  set. The normalisation is taken once, on the full set; a resample that misses the image
  holding the extreme score would, strictly, be normalised differently (the thresholds would
  cut at slightly different raw scores). With all weights 1 the bootstrap path is the official
  protocol (same numbers up to float summation order).
* COCO: a detection of an image drawn ``w`` times counts with weight ``w`` at its place in the
  global score order. This equals evaluating ``w`` copies of the image except for the order of
  copies inside a tie of equal scores (which COCOeval breaks by image order).

Values inside are fractions in [0, 1]; differences and intervals in the result objects are in
AP points (percent), as the command line prints them.

This module is the one import for all of it: the generic resampling lives in
``gan_detect.metrics.resampling``, the per-protocol tables in ``wider_bootstrap`` (next to
``wider_face_ap``) and ``coco_bootstrap`` (next to the COCO wrapper ``coco_eval``).
"""

from __future__ import annotations

from gan_detect.metrics.coco_bootstrap import (
    COCO_APPROXIMATION,
    CocoTables,
    coco_paired_bootstrap,
    coco_tables,
)
from gan_detect.metrics.coco_eval import (
    COCO_AREAS,
    COCO_METRICS,
    coco_results_to_dt,
    load_coco_gt,
)
from gan_detect.metrics.resampling import (
    LEVEL,
    Difference,
    ImageTables,
    MetricComparison,
    PairedBootstrap,
    SeedBootstrap,
    SeedMetric,
    bootstrap_weights,
    nested_seed_bootstrap,
    paired_bootstrap,
    seed_bootstrap,
)
from gan_detect.metrics.wider_bootstrap import (
    WIDER_APPROXIMATION,
    WIDER_METRICS,
    WiderTables,
    wider_paired_bootstrap,
    wider_tables,
)

__all__ = [
    "COCO_APPROXIMATION",
    "COCO_AREAS",
    "COCO_METRICS",
    "LEVEL",
    "WIDER_APPROXIMATION",
    "WIDER_METRICS",
    "CocoTables",
    "Difference",
    "ImageTables",
    "MetricComparison",
    "PairedBootstrap",
    "SeedBootstrap",
    "SeedMetric",
    "WiderTables",
    "bootstrap_weights",
    "coco_paired_bootstrap",
    "coco_results_to_dt",
    "coco_tables",
    "load_coco_gt",
    "nested_seed_bootstrap",
    "paired_bootstrap",
    "seed_bootstrap",
    "wider_paired_bootstrap",
    "wider_tables",
]
