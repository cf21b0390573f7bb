"""Trained rows of an experiment: one GAN run per (row, seed), resumable and keyed by its settings.

A row's run folder holds ``config.yaml`` (what it was started with), ``checkpoints/last.ckpt``,
``score_fusion.json`` when fusions were fitted, and ``done.json`` once finished. A rerun loads a
finished row, continues a killed one from its newest checkpoint, and trains a row whose settings
changed again from scratch (naming the keys that changed).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys of a run's config that do not change what is trained (evaluation settings apply to a
# finished row as they are; a moved run folder is the same run).
NOT_SETTINGS = ("overwrite", "resume", "evaluate", "logger", "output_dir")


@dataclass
class Trained:
    """A finished row: G + D for inference, its fitted fusions, how long training took."""

    variant: Any  # gan_detect.variants.GANVariant (eval mode)
    fusion: dict[str, Any] | None
    seconds: float
    run_dir: Path


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


def _settings(cfg: Any) -> dict[str, Any]:
    from gan_detect.config.validate import to_container

    body = to_container(cfg)
    for k in NOT_SETTINGS:
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


def train_row(raw: dict[str, Any], log: Any = print) -> Trained:
    """Fit one row, or continue it from its last checkpoint when an earlier run was killed, or
    load it when it is finished (``done.json`` + ``last.ckpt``). Returns G + D in eval mode.

    A row whose settings changed since its run started (its ``config.yaml`` differs from ``raw``
    outside :data:`NOT_SETTINGS`) is trained again from scratch, never reused."""
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
        log(f"  {run}: settings changed ({', '.join(stale[:6])}); training it again")
        done.unlink(missing_ok=True)
        cfg = dataclasses.replace(cfg, overwrite=True)
    elif run.exists() and any((run / "checkpoints").glob("*.ckpt")):
        # A killed run: continue from its newest loadable checkpoint (a finished schedule only
        # fits the score fusion that was still missing).
        cfg = dataclasses.replace(cfg, resume="auto")
        resume = resume_checkpoint(cfg)
        log(f"  continuing {run} from {resume}")
    elif run.exists():
        cfg = dataclasses.replace(cfg, overwrite=True)
    module, _ = fit(cfg, resume)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"seconds": seconds, "resumed_from": resume}))
    return Trained(module.variant.eval(), load_fusion(run), seconds, run)
