"""Command line: ``gan-detect fit|validate|wider-eval ...``.

The only module that reads YAML and ``key=value`` overrides (the form W&B sweep agents pass with
``${args_no_hyphens}``): files are merged left to right, overrides last, then validated against
the structured schema.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_detect.schema import ConfigError, ExperimentConfig, to_container, to_experiment_config


def load_config(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Merge YAML files (left to right) and ``key=value`` overrides; validate against the schema.

    Raises:
        ConfigError: unknown key, wrong type or bad value (the key is named, valid keys listed).
        FileNotFoundError: a config file does not exist.
    """
    parts: list[DictConfig] = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = OmegaConf.load(p)
        except Exception as err:
            raise ConfigError(f"{p}: cannot parse YAML: {err}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{p}: top level must be a mapping")
        parts.append(loaded)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    # Sweep agents may pass --key=value; accept the hyphens as a convenience.
    clean = [o[2:] if o.startswith("--") else o for o in overrides]
    try:
        parts.append(OmegaConf.from_dotlist(clean))
        raw = OmegaConf.merge(*parts) if parts else OmegaConf.create()
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {err}") from None
    return to_experiment_config(raw)  # type: ignore[arg-type]


def _split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return files, overrides


def _resolve_resume(cfg: ExperimentConfig) -> str | None:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {cfg.resume}")
    return cfg.resume


def cmd_fit(args: Sequence[str]) -> int:
    from gan_detect.training import fit

    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    if cfg.task == "detector":
        from gan_detect.detector_tasks import fit_detector

        print(f"detector checkpoint: {fit_detector(cfg, ckpt_path=_resolve_resume(cfg))}")
        return 0
    fit(cfg, ckpt_path=_resolve_resume(cfg))
    return 0


def cmd_validate(args: Sequence[str]) -> int:
    from gan_detect.training import validate

    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    if cfg.ckpt is None:
        raise ConfigError("validate needs ckpt=PATH (a checkpoint written by fit)")
    metrics = validate(cfg, cfg.ckpt)
    for k, v in sorted(metrics.items()):
        print(f"{k:28s} {v:.4f}")
    return 0


def cmd_evaluate(args: Sequence[str]) -> int:
    from gan_detect.training import evaluate

    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    evaluate(cfg, cfg.ckpt)
    return 0


def cmd_propose(args: Sequence[str]) -> int:
    from gan_detect.detector_tasks import propose

    images = next((a.split("=", 1)[1] for a in args if a.startswith("--images=")), None)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("--out=")), None)
    args = [a for a in args if not a.startswith(("--images=", "--out="))]
    if images is not None:
        # Any folder of images, no config: the built-in RetinaFace (or ckpt=DET.ckpt).
        from gan_detect.detector.propose import propose_folder
        from gan_detect.detector_tasks import load_detector

        bad = [a for a in args if not a.startswith("ckpt=")]
        if bad:
            raise ConfigError(f"propose --images=DIR takes only --out=DIR and ckpt=PATH, got {bad}")
        ckpt = next((a.split("=", 1)[1] for a in args), None)
        model = None if ckpt is None else load_detector(ckpt)
        written = propose_folder(images, out or "proposals", model)
        for fmt, path in written.items():
            print(f"{fmt}: {path}")
        return 0
    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    if cfg.ckpt is None and cfg.detector.arch != "retinaface":
        raise ConfigError(
            "propose needs ckpt=PATH (a detector checkpoint) or detector.arch=retinaface "
            "(the built-in pretrained face detector)"
        )
    for fmt, path in propose(cfg, cfg.ckpt, cfg.evaluate.split, out_dir=out).items():
        print(f"{fmt}: {path}")
    return 0


def cmd_compare(args: Sequence[str]) -> int:
    from gan_detect.report import write_report

    out = "reports/compare"
    runs = []
    for a in args:
        if a.startswith("--out="):
            out = a.split("=", 1)[1]
        else:
            runs.append(a)
    print(f"report: {write_report(runs, out)}")
    return 0


def cmd_demo(args: Sequence[str]) -> int:
    import argparse

    from gan_detect.demo import run_demo

    ap = argparse.ArgumentParser(
        prog="gan-detect demo", description="the whole chain on generated data"
    )
    ap.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (about a minute; for tests)")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(list(args))
    run_demo(ns.out, quick=ns.quick, seed=ns.seed)
    return 0


def cmd_predict(args: Sequence[str]) -> int:
    from gan_detect.predict import main as predict_main

    return int(predict_main(list(args)))


def cmd_wider_eval(args: Sequence[str]) -> int:
    from gan_detect.wider_eval import main as wider_main

    return int(wider_main(list(args)))


COMMANDS: dict[str, tuple[Any, str]] = {
    "demo": (cmd_demo, "the whole chain on generated data: demo [--out DIR] [--quick]"),
    "fit": (cmd_fit, "train a GAN variant: fit CONFIG.yaml... [key=value ...]"),
    "validate": (cmd_validate, "validate a checkpoint: validate CONFIG.yaml... ckpt=PATH"),
    "evaluate": (cmd_evaluate, "baseline vs GAN re-scoring: evaluate CONFIG.yaml... ckpt=PATH"),
    "propose": (
        cmd_propose,
        "write a detector's proposals: propose CONFIG.yaml... ckpt=DET.ckpt "
        "| detector.arch=retinaface; or propose --images=DIR [--out=DIR] [ckpt=DET.ckpt]",
    ),
    "compare": (cmd_compare, "side-by-side report: compare RUN_DIR... [--out=DIR]"),
    "predict": (
        cmd_predict,
        "boxes for your images: predict [--ckpt PIPELINE | --gan GAN.ckpt] IMAGES... [--draw]",
    ),
    "wider-eval": (cmd_wider_eval, "official WIDER FACE AP of a prediction txt tree"),
}


def _usage() -> str:
    lines = ["usage: gan-detect COMMAND [args]", "", "commands:"]
    lines += [f"  {name:12s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gan-detect`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gan-detect: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if rest and rest[0] in ("-h", "--help") and name in ("fit", "validate", "evaluate", "propose"):
        print(COMMANDS[name][1])
        return 0
    try:
        return int(COMMANDS[name][0](rest) or 0)
    except (ConfigError, FileNotFoundError) as err:
        print(f"gan-detect {name}: error: {err}", file=sys.stderr)
        if os.environ.get("GAN_DETECT_DEBUG"):
            raise
        return 2


__all__ = ["load_config", "main", "to_container"]

if __name__ == "__main__":
    raise SystemExit(main())
