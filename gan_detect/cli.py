"""Command line: ``gan-detect fit|validate|wider-eval ...``.

Commands read YAML and ``key=value`` overrides (the form W&B sweep agents pass with
``${args_no_hyphens}``) through :func:`gan_detect.configload.load_config`: files are merged left
to right, overrides last, then validated against the structured schema.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gan_detect.configload import load_config
from gan_detect.schema import ConfigError, ExperimentConfig, to_container


def _split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return files, overrides


def _resolve_resume(cfg: ExperimentConfig) -> str | None:
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {cfg.resume}")
    from gan_detect.training import resume_checkpoint

    return resume_checkpoint(cfg)


def cmd_fit(args: Sequence[str]) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from gan_detect.training import fit

    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    try:
        if cfg.task == "detector":
            from gan_detect.detector_tasks import fit_detector

            print(f"detector checkpoint: {fit_detector(cfg, ckpt_path=_resolve_resume(cfg))}")
            return 0
        fit(cfg, ckpt_path=_resolve_resume(cfg))
    except SIGTERMException as err:
        # training.fit re-raises it with code 143 (Lightning's own is exit 0); last.ckpt is saved.
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        print(
            f"gan-detect fit: stopped by SIGTERM before the end of training; {last} holds the "
            "state to continue from with resume=auto",
            file=sys.stderr,
        )
        return int(err.code or 143)
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

    files, overrides = _split_args(args)
    cfg = load_config(files, overrides)
    if cfg.ckpt is None:
        raise ConfigError("propose needs ckpt=PATH (a detector checkpoint)")
    for fmt, path in propose(cfg, cfg.ckpt, cfg.evaluate.split).items():
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
    "propose": (cmd_propose, "write a detector's proposals: propose CONFIG.yaml... ckpt=DET.ckpt"),
    "compare": (cmd_compare, "side-by-side report: compare RUN_DIR... [--out=DIR]"),
    "predict": (cmd_predict, "boxes for your images: predict --ckpt PIPELINE IMAGES... [--draw]"),
    "wider-eval": (cmd_wider_eval, "official WIDER FACE AP of a prediction txt tree"),
}


def _usage() -> str:
    lines = ["usage: gan-detect COMMAND [args]", "", "commands:"]
    lines += [f"  {name:12s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors (and Lightning's config errors): one line, exit 2."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from gan_detect.checkpoints import CheckpointError
    from gan_detect.run_folder import RunFolderError

    return (ConfigError, CheckpointError, RunFolderError, FileNotFoundError, ValueError,
            MisconfigurationException)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gan-detect`` console script.

    Errors in the user's input print one line ``gan-detect CMD: error: ...`` and exit 2; the
    traceback is shown with ``--debug`` (anywhere on the command line) or ``GAN_DETECT_DEBUG=1``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("GAN_DETECT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
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
    except Exception as err:
        if debug or not isinstance(err, _user_errors()):
            raise
        text = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the source
        print(f"gan-detect {name}: error: {text}", file=sys.stderr)
        return 2


__all__ = ["load_config", "main", "to_container"]

if __name__ == "__main__":
    raise SystemExit(main())
