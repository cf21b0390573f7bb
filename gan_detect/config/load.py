"""YAML files + ``key=value`` overrides -> a validated :class:`ExperimentConfig`.

Its own module so that the CLI and the demo (which the CLI runs) both import it without importing
each other.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_detect.config.validate import ConfigError, ExperimentConfig, to_experiment_config

__all__ = [
    "MovedDataRootWarning",
    "MovedRunWarning",
    "load_config",
    "load_raw_config",
    "preset_names",
    "resolve_config_path",
]


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``tiny_face_wider``, ``demo``, ...)."""
    from gan_detect.config import PRESETS

    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or a preset: ``tiny_face_wider``, ``tiny_face_wider.yaml`` or the
    checkout's ``experiments/tiny_face_wider.yaml`` all name the shipped preset when no such file
    exists, so the same commands work from a checkout and from an installed wheel.

    Raises:
        FileNotFoundError: neither a file nor a preset (the presets are listed).
    """
    from gan_detect.config import PRESETS

    p = Path(name)
    if p.is_file():
        return p
    stem = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    preset = PRESETS / f"{stem}.yaml"
    if preset.is_file() and (len(p.parts) == 1 or p.parent.name == "experiments"):
        return preset
    raise FileNotFoundError(
        f"config file not found: {p} (nor a preset; presets: {', '.join(preset_names())})"
    )


# A folder holding one of these (besides config.yaml) is a run's folder (train/run_folder.py
# writes them; config/ cannot import it).
_RUN_SIGNS = (".gan-detect-run.json", "checkpoints")


class MovedRunWarning(UserWarning):
    """A run's ``config.yaml`` names another ``output_dir`` than the folder it lives in."""


def _rebase_moved_run(loaded: DictConfig, path: Path) -> None:
    """A run folder is relocatable: a run's own ``config.yaml`` (beside its checkpoints or run
    marker) whose ``output_dir`` names another folder (the run was moved or copied) is read with
    its folder as ``output_dir``, and every path inside the old folder (checkpoint, proposals,
    cache) moved along; a warning says so. An ``output_dir=`` override still wins."""
    old = loaded.get("output_dir") if "output_dir" in loaded else None
    here = path.parent.resolve()
    if path.name != "config.yaml" or not isinstance(old, str) or "${" in old:
        return
    if not any((here / s).exists() for s in _RUN_SIGNS):
        return
    old_abs = Path(old) if Path(old).is_absolute() else Path.cwd() / old
    if old_abs.resolve() == here:
        return
    prefix = str(old_abs)

    def move(node: DictConfig) -> None:
        for key in list(node.keys()):
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                move(child)
                continue
            value = child._value() if child is not None else None  # raw: no interpolation
            if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
                node[key] = str(here) + value[len(prefix) :]

    move(loaded)
    loaded["output_dir"] = str(here)
    warnings.warn(
        f"{path}: its output_dir {old} is not the folder it lives in (the run was moved or "
        f"copied): using {here} and the paths inside it; give output_dir=... to choose another",
        MovedRunWarning,
        stacklevel=3,
    )


class MovedDataRootWarning(UserWarning):
    """A ``data.root=`` override moved the config's other paths under the old root with it."""


def _follow_data_root(base: DictConfig, overrides: Sequence[str]) -> None:
    """A ``data.root=NEW`` override moves the ``data.*`` paths written under the old root.

    A run's ``config.yaml`` holds resolved paths (``data.gt_dir``, ``data.val_annotation_file``,
    ``data.val_image_dir``, ...), so without this, ``RUN/config.yaml data.root=OTHER`` would
    silently read the old files. Paths that are themselves overridden, and interpolations
    (``${data.root}/...``, which follow anyway), are left alone; one warning lists what moved.
    """
    given = dict(o.split("=", 1) for o in overrides)
    new = given.get("data.root")
    data = base.get("data") if "data" in base else None
    if new is None or not isinstance(data, DictConfig) or "root" not in data:
        return
    old = data._get_node("root")._value()  # type: ignore[union-attr]  # raw: no interpolation
    new = new.strip("'\"")
    if not isinstance(old, str) or "${" in old or not old or not new:
        return
    old, new = old.rstrip("/") or "/", new.rstrip("/") or "/"
    if os.path.normpath(old) == os.path.normpath(new):
        return
    # A relative root also matches the paths written with its absolute form.
    prefixes = [old] if os.path.isabs(old) else [old, os.path.abspath(old)]
    moved: list[tuple[str, str, str]] = []

    def move(node: DictConfig, dotted: str) -> None:
        for key in list(node.keys()):
            name = f"{dotted}.{key!s}"
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                move(child, name)
                continue
            value = child._value() if child is not None else None  # type: ignore[union-attr]
            if name in given or not isinstance(value, str) or "${" in value:
                continue
            for prefix in prefixes:
                if value == prefix or value.startswith(prefix + "/"):
                    node[key] = new + value[len(prefix) :]
                    moved.append((name, value, str(node[key])))
                    break

    move(data, "data")
    if moved:
        name, was, now = moved[0]
        warnings.warn(
            f"data.root={new} replaces {old}, and the paths under it move too: "
            f"{', '.join(m[0] for m in moved)} (e.g. {name}: {was} -> {now}); give them as "
            "key=value to choose others",
            MovedDataRootWarning,
            stacklevel=3,
        )


def load_raw_config(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> DictConfig:
    """Merge YAML files (left to right) and ``key=value`` overrides, not yet validated; values of
    string-typed keys keep their literal text.

    Raises:
        ConfigError: a file is not YAML or not a mapping, or an override is malformed.
        FileNotFoundError: a config file does not exist.
    """
    parts: list[DictConfig] = []
    for f in files:
        p = resolve_config_path(f)
        try:
            loaded = OmegaConf.load(p)
        except Exception as err:
            raise ConfigError(f"{p}: cannot parse YAML: {err}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{p}: top level must be a mapping")
        _rebase_moved_run(loaded, p)
        parts.append(loaded)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    # Sweep agents may pass --key=value; accept the hyphens as a convenience.
    clean = [o[2:] if o.startswith("--") else o for o in overrides]
    try:
        base = OmegaConf.merge(*parts) if parts else OmegaConf.create()
        _follow_data_root(base, clean)  # type: ignore[arg-type]
        raw = OmegaConf.merge(base, OmegaConf.from_dotlist(clean))
        _keep_string_overrides_literal(raw, clean)  # type: ignore[arg-type]
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {err}") from None
    return raw  # type: ignore[return-value]


def load_config(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Merge YAML files (left to right) and ``key=value`` overrides; validate against the schema.

    Raises:
        ConfigError: unknown key, wrong type or bad value (the key is named, valid keys listed).
        FileNotFoundError: a config file does not exist.
    """
    return to_experiment_config(load_raw_config(files, overrides))


def _keep_string_overrides_literal(raw: DictConfig, overrides: Sequence[str]) -> None:
    """Values of string-typed keys keep their literal text (YAML would read ``runs/a #b`` as
    ``runs/a`` and ``007`` as 7); ``null`` stays null and a quoted value is unquoted."""
    from omegaconf.nodes import StringNode

    from gan_detect.config.validate import build_schema, raw_names

    _, vname, dname = raw_names(raw)  # imports the config's plugins (their Configs register)
    if vname is None or dname is None:
        return  # the schema check names the missing key
    try:
        schema = build_schema(vname, dname)
    except ConfigError:
        return  # an unknown name: reported by the schema check
    for item in overrides:
        key, value = item.split("=", 1)
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = OmegaConf.select(schema, parent_key) if parent_key else schema
            node = parent._get_node(leaf) if isinstance(parent, DictConfig) else None
        except OmegaConfBaseException:
            continue  # an unknown key: the schema check names it and lists the valid ones
        if not isinstance(node, StringNode) or value in ("null", "~"):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # quoted on purpose: the text inside
        OmegaConf.update(raw, key, value, merge=False)
