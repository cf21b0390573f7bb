"""Importing the user's own modules that register variants, DataModules, detectors or fusions.

A variant written in its own file registers itself when the file is imported
(``@register_variant("mine")``); the config names such files in ``plugins`` (a dotted module name
or a ``.py`` path), and installed packages may name theirs as ``gan_detect.plugins`` entry points.
Both are imported before a config is validated, so ``variant.name=mine`` validates and a
checkpoint of that variant loads (its saved config carries ``plugins``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from gan_detect.utils.errors import InputError

__all__ = ["ENTRY_POINT_GROUP", "import_entry_points", "import_plugins"]

ENTRY_POINT_GROUP = "gan_detect.plugins"
_entry_points_loaded = False


def import_plugins(names: Sequence[str]) -> None:
    """Import each plugin once: ``pkg.module`` by name, ``path/file.py`` from its file.

    Raises:
        InputError: naming the plugin that cannot be found or imported.
    """
    for name in names:
        name = str(name)
        try:
            if name.endswith(".py") or "/" in name or "\\" in name:
                _import_file(Path(name))
            else:
                importlib.import_module(name)
        except ModuleNotFoundError as err:
            if name.endswith(".py") or err.name is None or not name.startswith(err.name):
                raise  # a module the plugin itself imports is missing: its own traceback
            raise InputError(
                f"config key 'plugins': no module {name!r} (a dotted module name on the Python "
                "path, or a path to a .py file)"
            ) from None


def import_entry_points() -> None:
    """Import every ``gan_detect.plugins`` entry point of the installed packages, once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def _import_file(path: Path) -> None:
    """Import ``path`` as a module named after its resolved path (so twice is once)."""
    if not path.is_file():
        raise InputError(f"config key 'plugins': file not found: {path}")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]  # stable across processes
    key = f"gan_detect_plugin_{resolved.stem}_{digest}"
    if key in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(key, resolved)
    if spec is None or spec.loader is None:
        raise InputError(f"config key 'plugins': cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # before exec: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
