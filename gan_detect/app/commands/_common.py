"""What the commands share: the parser class, the config-file arguments and their help epilog.

Torch-free: ``gan-detect CMD --help`` builds every parser from here and the config dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from gan_detect.config import PRESETS, ExperimentConfig
from gan_detect.config.load import load_config
from gan_detect.config.schema import SCORE_FUSIONS

__all__ = [
    "IntermixedParser",
    "add_command_parser",
    "add_config_args",
    "config_epilog",
    "config_files_and_overrides",
    "global_flags",
    "load_config",
    "resolve_resume",
]


class IntermixedParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options may sit anywhere between its positionals, also as a
    subcommand (``fit a.yaml --debug b=1``).

    The subparsers action calls ``parse_known_args``; this routes it to argparse's own
    ``parse_known_intermixed_args``, which calls ``parse_known_args`` back (the flag tells the two
    apart).
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_command_parser(
    subparsers: Any,
    name: str,
    summary: str,
    description: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """The subparser of command ``name`` (``summary``: its line in ``gan-detect --help``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        prog=f"gan-detect {name}",
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_flags(top=False)],
        allow_abbrev=False,
    )
    return parser


def global_flags(top: bool) -> argparse.ArgumentParser:
    """``--verbose`` and ``--debug``: options of the top parser and of every command, so they
    work before or after the command (``gan-detect --verbose demo``, ``fit a.yaml --debug``).
    A command's copy defaults to "not given", so it never undoes the top parser's."""
    flags = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    flags.add_argument(
        "--verbose",
        action="store_true",
        help="(or GAN_DETECT_VERBOSE=1) also Lightning's tips, hardware lines, summaries",
        **unset,
    )
    flags.add_argument(
        "--debug",
        action="store_true",
        help="(or GAN_DETECT_DEBUG=1) a traceback instead of the one-line error",
        **unset,
    )
    return flags


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``CONFIG.yaml | key=value`` positionals; ``--key=value`` (what sweep agents may pass)
    is taken as an override too (``cli.main`` hands such unknown options to ``args``)."""
    parser.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG.yaml | key=value",
        help="YAML files merged left to right, then key=value overrides",
    )
    parser.set_defaults(takes_overrides=True)


def is_override(arg: str) -> bool:
    """``key=value``; a path with ``=`` in it (``runs/lr=0.1/config.yaml``) is a file."""
    key = arg.split("=", 1)[0]
    return "=" in arg and "/" not in key and os.sep not in key and not Path(arg).is_file()


def config_files_and_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Config files and ``key=value`` overrides, each in their order (:func:`is_override`)."""
    return [a for a in args if not is_override(a)], [a for a in args if is_override(a)]


def resolve_resume(cfg: ExperimentConfig) -> str | None:
    """The checkpoint ``resume`` names (``auto``: the newest of the run, said on stderr)."""
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {cfg.resume}")
    from gan_detect.train.resume import resume_checkpoint

    found = resume_checkpoint(cfg)
    if cfg.resume == "auto":  # say which, so a fresh start is never mistaken for a resume
        what = f"continuing from {found}" if found else "no checkpoint yet: starting at epoch 0"
        print(f"resume=auto in {cfg.output_dir}: {what}", file=sys.stderr)
    return found


# --- help texts (no torch: only the config dataclasses and the presets folder are read) ---

# Keys most runs set; `gan-detect config show FILES --keys` lists all of them.
COMMON_KEYS = [
    ("data.root", "dataset folder (WIDER FACE or COCO layout)"),
    ("output_dir", "run folder: checkpoints, config.yaml, logs, eval/"),
    ("trainer.max_epochs", "epochs"),
    ("trainer.devices / trainer.accelerator", "e.g. devices=4 accelerator=gpu"),
    ("trainer.precision", "32-true, bf16-mixed, 16-mixed"),
    ("data.batch_size", "ROIs (or images for the detector) per batch"),
    ("optim.lr_g / optim.lr_d", "Adam learning rates of G and D"),
    ("data.train_proposals / data.val_proposals", "proposal files (COCO JSON or WIDER tree)"),
    ("logger.kind", "csv, wandb, tensorboard or none"),
    ("resume", "auto or a checkpoint path"),
    ("ckpt", "checkpoint for validate / evaluate / propose"),
    ("evaluate.split / evaluate.score_fusion", "split to evaluate; {fusions}"),
    ("plugins", "your own files/modules that register a variant, fusion, ..."),
]


def _experiment_files() -> list[tuple[str, str]]:
    """``(preset name, first comment line)`` of each preset shipped in ``config/presets/``."""
    out = []
    for p in sorted(PRESETS.glob("*.yaml")):
        first = next((ln for ln in p.read_text().splitlines() if ln.startswith("#")), "# ")
        # The first sentence of the file's header comment, without its parenthesis.
        desc = first.lstrip("# ").strip().split(". ")[0].split(" (")[0].rstrip(":.")
        if len(desc) > 56:
            desc = desc[:53].rsplit(" ", 1)[0] + " ..."
        out.append((p.stem, desc))
    return out


def _groups() -> list[tuple[str, str]]:
    """Top-level config groups with the first line of their dataclass docstring."""
    from gan_detect import config as c

    docs = {
        "variant": "the GAN variant (variant.name: tiny_face, sod_mtgan or bicubic) and its networks",
        "data": "the DataModule (data.name: wider_face or coco), ROI mining and loaders",
        "detector": "the baseline proposal detector (task=detector)",
    }
    cls = {
        "optim": c.OptimConfig,
        "trainer": c.TrainerConfig,
        "logger": c.LoggerConfig,
        "evaluate": c.EvalConfig,
    }
    rows = []
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in docs:
            rows.append((f.name, docs[f.name]))
        elif f.name in cls:
            rows.append((f.name, (cls[f.name].__doc__ or "").strip().splitlines()[0]))
    return rows


@lru_cache(maxsize=1)
def config_epilog() -> str:
    """The shared part of the config-driven commands' help: files, groups, keys, how to list."""
    lines = [
        "config files: a YAML path, or a preset shipped with gan-detect by name (stack them left",
        "to right; later files and key=value win). Presets:",
    ]
    lines += [f"  {p:39s} {d}" for p, d in _experiment_files()] or ["  (no presets found)"]
    lines += ["", "config groups (set any key as group.key=value):"]
    lines += [f"  {g:10s} {d}" for g, d in _groups()]
    lines += ["", "common keys:"]
    # Every registered fusion (built-ins and plugins'), not a copy of the names that can go stale.
    fusions = " | ".join(SCORE_FUSIONS)
    lines += [f"  {k:42s} {d.format(fusions=fusions)}" for k, d in COMMON_KEYS]
    lines += [
        "",
        "every key with its type and default:  gan-detect config show CONFIG.yaml... --keys",
        "the resolved config (YAML):           gan-detect config show CONFIG.yaml... [key=value]",
    ]
    return "\n".join(lines)
