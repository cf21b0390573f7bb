"""Where the optional real data lives: ``$GAN_DETECT_DATA``, else ``<repo>/../shared/data``.

Tests and experiments use this to find WIDER FACE / COCO copies without hard-coding a path; they
skip (tests) or fail with the path named (experiments) when it returns ``None``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from gan_detect.utils.errors import InputError

ENV_VAR = "GAN_DETECT_DATA"
# Image files every command reads (predict, propose --images, WIDER annotation lines): the formats
# PIL reads that detection data comes in. One set, so every command takes the same files.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` names an image by its suffix (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def repo_root() -> Path:
    """The checkout that holds the ``gan_detect`` package (meaningful for editable installs)."""
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """The real-data folder, or ``None`` when there is none.

    ``$GAN_DETECT_DATA`` wins when set. A set variable that names no folder gives a warning (so a
    typo is not a silent skip) and ``None``. Otherwise ``<repo root>/../shared/data`` is used when
    it exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path.resolve()
        warnings.warn(f"{ENV_VAR}={env!r} is not a directory; no real data", stacklevel=2)
        return None
    default = repo_root().parent / "shared" / "data"
    return default.resolve() if default.is_dir() else None


# Where variant.g_weights=null finds CARN-M, under the shared data folder (its MIT LICENSE beside).
CARN_M_SHARED = Path("sr") / "carn_m" / "carn_m.pth"


def carn_m_weights_path(g_weights: str | None) -> Path:
    """The CARN-M weights file ``variant.g_weights`` names (null: the shared-data copy).

    Raises:
        InputError: the file (or, for null, the shared data folder) does not exist; names the key.
    """
    if g_weights is None:
        root = shared_data_dir()
        if root is None:
            raise InputError(
                "variant.g_weights=null looks for CARN-M in the shared data folder "
                "($GAN_DETECT_DATA or ../shared/data), which is absent: set "
                "variant.g_weights=PATH/carn_m.pth"
            )
        path = root / CARN_M_SHARED
    else:
        path = Path(g_weights).expanduser()
    if not path.is_file():
        raise InputError(f"variant.g_weights: CARN-M weights file not found: {path}")
    return path
