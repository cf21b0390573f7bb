"""The one image reader of every entry point (training, propose, predict, evaluate, the API).

A photo is read as a camera or viewer shows it: EXIF orientation applied
(``PIL.ImageOps.exif_transpose``), 16-bit and float images scaled to 8 bits rather than clipped
(a bare ``convert("RGB")`` turns a 16-bit grayscale PNG white), transparency composited on
white (a palette's transparent colour key would otherwise show), CMYK through its ICC profile
when it has one. Annotations (WIDER, COCO) are taken in this displayed frame, as detectron2's
``read_image`` does.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from gan_detect.utils.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["image_size", "load_image", "read_image", "to_rgb"]

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BACKGROUND = (255, 255, 255)  # under transparent pixels: the page a viewer shows them on


def _gray_to_rgb(arr: np.ndarray) -> Image.Image:
    """(H, W) float values in [0, 255] -> RGB (rounded, clipped)."""
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image -> 8-bit RGB as displayed: orientation applied, every mode converted.

    Raises:
        ValueError: a mode with no RGB meaning (e.g. ``LAB`` without a profile); callers that
            read a file turn it into an ``InputError`` naming the file.
    """
    fmt = im.format  # lost by transpose: a PNG "I" image is 16-bit by the PNG spec
    im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT:
        return _gray_to_rgb(np.asarray(im, dtype=np.float64) / 257.0)
    if mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        # 32-bit integer pixels: PNG and most TIFFs store 16-bit samples this way.
        sixteen = fmt == "PNG" or (arr.size > 0 and float(arr.max()) > 255.0)
        return _gray_to_rgb(arr / 257.0 if sixteen else arr)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # Float images hold [0, 1] intensities (or 8-bit values when any exceeds 1).
        unit = arr.size == 0 or float(arr.max()) <= 1.0
        return _gray_to_rgb(arr * 255.0 if unit else arr)
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "CMYK" and im.info.get("icc_profile"):
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        if out is not None:
            return out
    return im.convert("RGB")


def read_image(
    path: str | Path, bomb_is_error: bool = False, raw_errors: bool = False
) -> Image.Image:
    """Decode an image file as displayed (:func:`to_rgb`): 8-bit RGB, EXIF orientation applied.

    Args:
        bomb_is_error: refuse images over PIL's warning limit (~89 MP) instead of warning.
        raw_errors: let PIL's own errors through (``predict`` reports each skipped file with
            its error class) instead of one ``InputError``.

    Raises:
        FileNotFoundError: naming the path when the file does not exist.
        InputError: naming the path when it is empty, not an image, truncated or of a mode
            with no RGB meaning.
    """
    try:
        with warnings.catch_warnings():
            if bomb_is_error:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb(im)
    except FileNotFoundError:
        if raw_errors:
            raise
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        if raw_errors:
            raise
        # PIL's UnidentifiedImageError (empty or text file) and "image file is truncated" are
        # OSErrors without the path; a run must not die in a traceback that hides which file.
        size = os.path.getsize(path) if os.path.exists(path) else 0
        why = " ".join(str(err).split()) or type(err).__name__
        raise InputError(
            f"{path}: not a readable image ({size} bytes; {why}): replace or remove it"
        ) from None


def load_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] of :func:`read_image` (same errors)."""
    import torch  # here: the parsers and ``predict`` import this module without torch

    arr = np.asarray(read_image(path), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) as displayed, from the header only (EXIF orientations 5-8 swap the sides)."""
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
    return h, w
