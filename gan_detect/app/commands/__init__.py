"""The ``gan-detect`` commands, one module each: ``NAME``, ``SUMMARY``, ``add_parser(subparsers)``
and ``run(args) -> int``. Adding a command = one module here + its name in :data:`COMMAND_MODULES`.

Every module imports only argparse and the torch-free config layer at import time (each ``run``
imports its heavy modules), so ``gan-detect CMD --help`` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol

# In the order `gan-detect --help` lists them.
COMMAND_MODULES = [
    "demo",
    "fit",
    "validate",
    "evaluate",
    "propose",
    "compare",
    "predict",
    "export",
    "wider_eval",
    "coco_eval",
    "fetch_coco",
    "config",
    "experiment",
]


class Command(Protocol):
    """What ``cli.main`` needs of a command module (tests may pass any object like it)."""

    NAME: str
    SUMMARY: str

    def add_parser(self, subparsers: Any) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


def load_commands() -> dict[str, Command]:
    """``{name: module}`` of :data:`COMMAND_MODULES`."""
    out: dict[str, Command] = {}
    for module_name in COMMAND_MODULES:
        module: Any = importlib.import_module(f"{__name__}.{module_name}")
        out[module.NAME] = module
    return out


__all__ = ["COMMAND_MODULES", "Command", "load_commands"]
