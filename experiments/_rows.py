"""What the real-data experiments share: rows trained per seed (resumable), evaluation through
the package's fast path under every score fusion, and seeded comparisons with intervals.

Used by ``real_wider.py`` and ``real_coco.py`` (imported as a sibling module).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_detect.utils.device import cpu_model  # noqa: F401  (re-exported for the experiments)

FUSIONS = ("d_only", "geometric_mean", "learned", "size_gated")


@dataclass
class Row:
    """One trained model of a table (its score fusions are evaluated from the same run)."""

    key: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge (``extra`` wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def keep_known_variant_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """Drop variant keys the row's variant does not have (the bicubic control has no G)."""
    from gan_detect.config.sections import VARIANT_CONFIGS

    fields = {f.name for f in dataclasses.fields(VARIANT_CONFIGS[raw["variant"]["name"]])}
    raw["variant"] = {k: v for k, v in raw["variant"].items() if k in fields}
    return raw


@dataclass
class Trained:
    """A finished row: G + D for inference, its fitted fusions, how long training took."""

    variant: Any
    fusion: dict[str, Any] | None
    seconds: float
    run_dir: Path


# Keys of a run's config that do not change what is trained (evaluation settings apply to a
# finished row as they are; a moved run folder is the same run).
_NOT_SETTINGS = ("overwrite", "resume", "evaluate", "logger", "output_dir")


def _settings(cfg: Any) -> dict[str, Any]:
    from gan_detect.config.validate import to_container

    body = to_container(cfg)
    for k in _NOT_SETTINGS:
        body.pop(k, None)
    return body


def changed_settings(cfg: Any, run: Path) -> list[str]:
    """The dotted keys whose values differ between ``cfg`` and the ``config.yaml`` the run in
    ``run`` was started with ([] when they agree; ``["config.yaml"]`` when it is unreadable)."""
    from omegaconf import OmegaConf

    from gan_detect.config.validate import to_experiment_config

    try:
        saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
        old = _settings(to_experiment_config(saved))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - any unreadable or invalid old config means "changed"
        return ["config.yaml"]
    new = _settings(cfg)

    def diff(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [
                d
                for k in sorted(set(a) | set(b))
                for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")
            ]
        return [] if a == b else [prefix.rstrip(".")]

    return diff(old, new, "")


def train_row(raw: dict[str, Any]) -> Trained:
    """Fit one row, or continue it from its last checkpoint when an earlier run was killed, or
    load it when it is finished (``done.json`` + ``last.ckpt``). Returns G + D in eval mode.

    A row whose settings changed since its run started (its ``config.yaml`` differs from ``raw``
    outside ``_NOT_SETTINGS``) is trained again from scratch, never reused."""
    from gan_detect.config.validate import to_experiment_config
    from gan_detect.infer.fusion_fit import load_fusion
    from gan_detect.train.fit import fit
    from gan_detect.train.resume import resume_checkpoint
    from gan_detect.variants import GANVariant

    cfg = to_experiment_config(raw)
    run = Path(cfg.output_dir)
    done, ckpt = run / "done.json", run / "checkpoints" / "last.ckpt"
    holdout = float(getattr(cfg.data, "fusion_holdout_fraction", 0.0))
    stale = changed_settings(cfg, run) if (run / "config.yaml").is_file() else []
    finished = done.is_file() and ckpt.is_file() and not stale
    if finished and (holdout == 0 or (run / "score_fusion.json").is_file()):
        seconds = float(json.loads(done.read_text()).get("seconds", 0.0))
        return Trained(GANVariant.from_checkpoint(ckpt), load_fusion(run), seconds, run)
    start = time.perf_counter()
    resume = None
    if stale:
        print(f"  {run}: settings changed ({', '.join(stale[:6])}); training it again", flush=True)
        done.unlink(missing_ok=True)
        cfg = dataclasses.replace(cfg, overwrite=True)
    elif run.exists() and any((run / "checkpoints").glob("*.ckpt")):
        # A killed run: continue from its newest loadable checkpoint (a finished schedule only
        # fits the score fusion that was still missing).
        cfg = dataclasses.replace(cfg, resume="auto")
        resume = resume_checkpoint(cfg)
        print(f"  continuing {run} from {resume}", flush=True)
    elif run.exists():
        cfg = dataclasses.replace(cfg, overwrite=True)
    module, _ = fit(cfg, resume)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"seconds": seconds, "resumed_from": resume}))
    return Trained(module.variant.eval(), load_fusion(run), seconds, run)


@torch.no_grad()
def evaluate_models(
    models: dict[str, Trained],
    dataset: Any,
    opts_of: Callable[[Trained], Any],
    fusions: Sequence[str] = FUSIONS,
    batch_images: int = 8,
    progress: bool = True,
    also: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Detections of every model under every fusion (and of the proposals alone) on every image.

    G + D run once per model and image batch through the package's fast path (the probe-checked
    BatchNorm-folded inference copy, ROIs batched across images); the fusions only re-score.
    ``also``: extra methods ``name -> (model key, InferenceOptions overrides)`` post-processed
    from that model's same G + D outputs (e.g. ``{"refine_boxes": False}``: no second forward).

    Returns:
        method name (``"<model> / <fusion>"``, and ``"detector"``) -> image id ->
        ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,).
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from gan_detect.infer.inference import discriminate_proposals, postprocess_detections

    dets: dict[str, dict[str, dict[str, np.ndarray]]] = {"detector": {}}
    n = len(dataset)
    bar = tqdm(total=n, desc="evaluate", disable=not progress)
    for start in range(0, n, batch_images):
        items = [dataset[i] for i in range(start, min(start + batch_images, n))]
        images = [it.images[0] for it in items]
        props = [it.proposals[0] for it in items]
        ids = [it.image_ids[0] for it in items]
        for image_id, p in zip(ids, props, strict=True):
            order = torch.argsort(p["scores"], descending=True)
            dets["detector"][image_id] = {k: v[order].numpy() for k, v in p.items()}
        for key, model in models.items():
            base = opts_of(model)
            raw = discriminate_proposals(model.variant, images, props, base)
            ways = [(key, {})] + [(n, o) for n, (k, o) in (also or {}).items() if k == key]
            for name, over in ways:
                for fusion in fusions:
                    params = (model.fusion or {}).get(fusion)
                    if fusion in ("learned", "size_gated") and params is None:
                        continue
                    o = replace(base, **over, score_fusion=fusion, fusion_params=params)
                    out = dets.setdefault(f"{name} / {fusion}", {})
                    for image_id, (hw, boxes, det_scores, d_img) in zip(ids, raw, strict=True):
                        d = postprocess_detections(model.variant, boxes, det_scores, d_img, hw, o)
                        out[image_id] = {k: v.cpu().numpy() for k, v in d.items()}
        bar.update(len(items))
    bar.close()
    return dets


def fmt_diff(d: dict[str, Any]) -> str:
    """``+1.23 [-0.40, +2.90]`` with a ``*`` when the interval excludes 0."""
    if d.get("low") is None or d.get("high") is None:
        return f"{d['point']:+.2f}"
    mark = "*" if (d["low"] > 0 or d["high"] < 0) else ""
    return f"{d['point']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{mark}"
