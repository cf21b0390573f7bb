"""Reading and writing checkpoints safely: one loader, atomic saves, clear one-line errors.

Every checkpoint, pipeline or cache file the package reads goes through :func:`read_checkpoint`
(``torch.load(..., weights_only=True)``, passed explicitly so that neither an old torch default
nor ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` lets a crafted file run code). Lightning reads and
writes through :class:`SafeCheckpointIO`, so ``trainer.fit(ckpt_path=...)`` is just as safe and
every save is atomic next to its target. A local ``pretrained_path`` of a trunk is read here
too: torchvision trunks load the result (``models/backbone.py``); for timm trunks (the GAN's
discriminator, the detector's backbone) it is a check that names a bad file before timm's own
loader, weights-only as well, reads the file again to drop the classifier. ImageNet weights
fetched by name come through torch.hub with their hash checked (``models/pretrained.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from gan_detect.utils.errors import InputError

__all__ = [
    "CheckpointError",
    "SafeCheckpointIO",
    "atomic_torch_save",
    "checkpoint_kind",
    "checkpoint_progress",
    "building_from",
    "load_checkpoint",
    "newest_loadable",
    "read_checkpoint",
]

Kind = Literal["gan", "detector", "pipeline"]
_NAMES: dict[str, str] = {
    "gan": "GAN checkpoint (written by `fit` of a GAN config)",
    "detector": "detector checkpoint (written by `fit` of a task=detector config)",
    "pipeline": "pipeline file (written by export_pipeline / the demo)",
}
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format starts with a zip local header


class CheckpointError(InputError):
    """A checkpoint file is unreadable, unsafe, or of the wrong kind (the message names it)."""


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated, not a PyTorch file, or holds objects a safe load refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a valid gan-detect checkpoint")
    with path.open("rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        _check_crc(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):
            # A pickle that needs a global (a class, a function): a crafted or foreign file.
            raise CheckpointError(
                f"{path}: refused: it holds Python objects that a safe (weights_only) load does "
                "not allow, so it is not a gan-detect checkpoint (it was not loaded)"
            ) from None
        raise CheckpointError(_damaged(path, head, size)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError):
        raise CheckpointError(_damaged(path, head, size)) from None


def _check_crc(path: Path) -> None:
    """Every record of a zip checkpoint against its CRC-32 (torch writes them, ``torch.load``
    does not check them): flipped bytes inside a tensor would otherwise load as wrong weights.
    A truncated file is left to ``torch.load``'s own error."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: its record {bad} fails its CRC check (bytes changed on "
            "disk or in a copy); use another copy or checkpoint"
        )


def _damaged(path: Path, head: bytes, size: int) -> str:
    if head == _ZIP_MAGIC:
        return (
            f"{path}: truncated or damaged checkpoint ({size} bytes; the save was probably "
            "interrupted), not a valid gan-detect checkpoint"
        )
    return f"{path}: not a valid gan-detect checkpoint (not a PyTorch checkpoint file)"


def checkpoint_kind(state: Any) -> Kind | None:
    """``gan`` / ``detector`` / ``pipeline`` from a loaded file's contents; None if foreign."""
    if not isinstance(state, dict):
        return None
    if state.get("format") == "gan-detect-pipeline/1":
        return "pipeline"
    hp = state.get("hyper_parameters")
    cfg = hp.get("config") if isinstance(hp, dict) else None
    if isinstance(cfg, dict) and isinstance(state.get("state_dict"), dict):
        if "arch" in cfg:
            return "detector"
        if "variant" in cfg:
            return "gan"
    return None


def load_checkpoint(path: str | Path, expect: Kind | None = None, map_location: Any = "cpu") -> Any:
    """Read a gan-detect file safely and check it is the ``expect``-ed kind.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable (see :func:`read_checkpoint`), foreign, or the wrong kind,
            e.g. "this is a detector checkpoint (...), but a GAN checkpoint (...) is expected".
    """
    state = read_checkpoint(path, map_location)
    kind = checkpoint_kind(state)
    if kind is None:
        raise CheckpointError(
            f"{path}: not a gan-detect checkpoint (a PyTorch file without gan-detect's "
            "hyper_parameters.config and state_dict)"
        )
    if expect is not None and kind != expect:
        raise CheckpointError(
            f"{path}: this is a {_NAMES[kind]}, but a {_NAMES[expect]} is expected here"
        )
    return state


@contextlib.contextmanager
def building_from(path: str | Path) -> Iterator[None]:
    """Name ``path`` in any error raised while a model is built from its contents.

    A checkpoint that loads but does not fit (a config key this version does not know, a missing
    or mis-shaped ``state_dict`` entry) raised a ``ConfigError`` without the file, or torch's
    multi-line ``RuntimeError``; both become one :class:`CheckpointError` naming the file.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (InputError, RuntimeError, KeyError, TypeError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        if len(text) > 400:  # torch lists every missing key
            text = text[:400] + " ..."
        raise CheckpointError(
            f"{path}: does not fit this version of gan-detect or this model: {text}"
        ) from None


def checkpoint_progress(path: str | Path) -> tuple[int, int] | None:
    """``(epoch, global_step)`` of a Lightning checkpoint, or None when it does not load.

    Memory-mapped, so the tensors are not read: cheap enough to compare every checkpoint of a run.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]), int(state["global_step"])
    except Exception:  # noqa: BLE001 - any unreadable file simply has no progress to compare
        return None


def newest_loadable(candidates: Sequence[str | Path], expect: Kind | None) -> Path | None:
    """The newest (by mtime) of ``candidates`` that loads; each one skipped is named in a warning.

    Used by ``resume=auto``: a ``last.ckpt`` truncated by a kill must not stop the run from
    resuming at the previous epoch's checkpoint.
    """
    files = [Path(c) for c in candidates if Path(c).is_file()]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for p in files:
        try:
            load_checkpoint(p, expect)
        except CheckpointError as err:
            warnings.warn(f"resume: skipping {err}", stacklevel=2)
            continue
        return p
    return None


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``<path>.tmp`` in the target's folder, fsync, then rename over ``path``.

    The rename is atomic because the temporary file is on the same file system (Lightning's own
    save goes through ``$TMPDIR`` and becomes a copy across file systems): a kill or a full disk
    leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        # A full disk surfaces as an OSError without the file, or as torch's RuntimeError
        # ("file write failed"): one OSError naming the checkpoint, so the CLI prints one line.
        code = getattr(err, "errno", None) or errno.EIO
        why = getattr(err, "strerror", None) or " ".join(str(err).split())
        if isinstance(err, RuntimeError) and "write failed" in why:
            # torch's "[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed
            # writing file data/0: file write failed": its C++ location says nothing to a user.
            try:
                free = f"; {shutil.disk_usage(path.parent).free / 1e6:.0f} MB free there"
            except OSError:
                free = ""
            why = f"file write failed (is the disk full?{free})"
        raise OSError(
            code, f"cannot save {path} (the previous file is kept): {why}", str(path)
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every file system allows it)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves and ``weights_only=True`` loads, always."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint takes no storage_options")
        atomic_torch_save(checkpoint, path)

    @override
    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights_only is ignored on purpose: a resume must never unpickle code.
        loc = map_location if map_location is not None else "cpu"
        state = read_checkpoint(path, loc)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: not a gan-detect checkpoint")
        return state
