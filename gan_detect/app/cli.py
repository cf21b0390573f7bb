"""Command line: ``gan-detect [--verbose] [--debug] [--threads N] COMMAND ...``.

This module is the entry only: the top parser, the global options and the one-line error
handling. Each command is a module of :mod:`gan_detect.app.commands` (its parser and its ``run``);
config-driven commands read YAML and ``key=value`` overrides (the form W&B sweep agents pass with
``${args_no_hyphens}``) through :func:`gan_detect.config.load.load_config`.

Parsing and ``--help`` happen before torch or Lightning is imported (every command imports its
heavy modules inside ``run``), so ``gan-detect CMD --help`` answers in well under a second.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence

from gan_detect import __version__
from gan_detect.app.commands import Command, load_commands
from gan_detect.app.commands._common import IntermixedParser, global_flags
from gan_detect.config.load import load_config, load_raw_config
from gan_detect.config.validate import ConfigError, to_container
from gan_detect.utils.quiet import VERBOSE_ENV, quiet_lightning

# name -> command module, in the order of `gan-detect --help` (commands/__init__.py lists them).
COMMANDS: dict[str, Command] = load_commands()

TOP_EPILOG = """\
--verbose and --debug may also follow the command.
--threads N: CPU threads for torch (default $GAN_DETECT_THREADS, else torch's own);
  idle OpenMP threads spin briefly, then sleep (GOMP_SPINCOUNT=3000 unless it or
  OMP_WAIT_POLICY is set; OMP_WAIT_POLICY=PASSIVE for a heavily shared node)
start with `gan-detect demo` (a few minutes on a CPU); README.md has the rest."""

# An unknown option a config-driven command takes as an override (sweep agents' --key=value).
_OVERRIDE_OPTION = re.compile(r"^--[A-Za-z_][\w.\[\]-]*=")


def _threads(text: str) -> int:
    """argparse type of ``--threads``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads expects an integer, got {text!r}") from None
    if value < 1:  # here, so it is reported before the command's own arguments are checked
        raise argparse.ArgumentTypeError(f"--threads expects a positive integer, got {text!r}")
    return value


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The top parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="gan-detect",
        description="GAN-based small-object detection: COMMAND --help for details.",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_flags(top=True)],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"gan-detect {__version__}")
    parser.add_argument(
        "--threads", type=_threads, default=None, metavar="N", help="CPU threads for torch"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", parser_class=IntermixedParser
    )
    for command in (COMMANDS if commands is None else commands).values():
        command_parser = command.add_parser(sub)
        command_parser.set_defaults(run=command.run, command_parser=command_parser)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave: one line, exit 2.

    The project's :class:`InputError` (config, checkpoint, run folder and data errors derive
    from it), every ``OSError`` (a missing, unreadable or unwritable path; a full disk) and
    Lightning's config errors. Not a bare ``ValueError``: an internal bug keeps its traceback.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from gan_detect.utils.errors import InputError

    return (InputError, OSError, MisconfigurationException)


def _one_line(err: BaseException) -> str:
    """The error as one line; an ``OSError`` names its path (``strerror: filename``)."""
    if isinstance(err, OSError) and err.filename is not None:
        text = str(err.strerror or err)
        name = str(err.filename)
        if name not in text:
            text = f"{name}: {text}"
        return " ".join(text.split())
    return " ".join(str(err).split()) or type(err).__name__


def torch_mismatch_message(err: BaseException) -> str | None:
    """One line for torch and torchvision builds that do not belong together, else None.

    A torchvision built for another torch (a CUDA wheel next to a CPU-only torch, or other
    versions) fails at import with ``operator torchvision::nms does not exist``.
    """
    if not isinstance(err, RuntimeError) or "torchvision::" not in str(err):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        pair = f"torch {version('torch')} and torchvision {version('torchvision')}"
    except PackageNotFoundError:
        pair = "torch and torchvision"
    return (
        f"{pair} do not match (torchvision was built for another torch: {err}); install both "
        "from one index, e.g. pip install --force-reinstall torch torchvision --index-url "
        "https://download.pytorch.org/whl/cpu (CPU) or without --index-url (CUDA)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gan-detect`` console script.

    Errors in the user's input print one line ``gan-detect CMD: error: ...`` and exit 2; the
    traceback is shown with ``--debug`` or ``GAN_DETECT_DEBUG=1``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # Sweep agents may pass --key=value: a config-driven command takes it as an override.
            if not getattr(args, "takes_overrides", False) or not all(
                _OVERRIDE_OPTION.match(a) for a in unknown
            ):
                where = getattr(args, "command_parser", parser)  # "gan-detect CMD: error: ..."
                where.error(f"unrecognized arguments: {' '.join(unknown)}")
            args.args = [*args.args, *unknown]
    except SystemExit as exc:  # argparse: --help / --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help()
        return 2
    name = args.command
    debug = args.debug or os.environ.get("GAN_DETECT_DEBUG", "") not in ("", "0")
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # inherited by DDP ranks and subprocesses
    quiet_lightning()
    from gan_detect.utils.threads import configure_threads

    try:
        # Before any command imports torch: the OpenMP wait policy is read when torch loads.
        configure_threads(args.threads)
    except ValueError as err:
        print(f"gan-detect: error: {err}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except SystemExit as exc:  # a command's own usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as err:
        mismatch = None if debug else torch_mismatch_message(err)
        if mismatch is not None:
            print(f"gan-detect {name}: error: {mismatch}", file=sys.stderr)
            return 2
        # The cheap classes first: _user_errors() imports Lightning, which a light command
        # (predict on a missing path) has not loaded and should not wait for.
        light = isinstance(err, (ConfigError, FileNotFoundError))
        if debug or not (light or isinstance(err, _user_errors())):
            raise
        print(f"gan-detect {name}: error: {_one_line(err)}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "load_config", "load_raw_config", "main", "to_container"]

if __name__ == "__main__":
    raise SystemExit(main())
