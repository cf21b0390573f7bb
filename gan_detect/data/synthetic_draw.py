"""Drawing primitives for the generated datasets: textured backgrounds, face-like heads, non-face
distractors (featureless heads, hands, balls, dials) and coloured shapes. numpy + PIL only.

Small things are drawn on a supersampled patch and reduced with an antialiasing filter, so a
6 px face still has plausible (blurry) eyes and mouth instead of aliased single pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Color = tuple[int, int, int]
SKIN_TONES: tuple[Color, ...] = (
    (255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 90), (161, 102, 64),
    (120, 72, 42), (90, 56, 36),
)  # fmt: skip
HAIR_COLOURS: tuple[Color, ...] = (
    (20, 16, 14), (60, 40, 25), (110, 75, 40), (170, 130, 80), (200, 180, 140), (120, 120, 120),
)  # fmt: skip


def _rgb(rng: np.random.Generator, low: int = 0, high: int = 256) -> Color:
    r, g, b = (int(v) for v in rng.integers(low, high, 3))
    return r, g, b


def _jitter(c: Color, rng: np.random.Generator, amount: int) -> Color:
    r, g, b = (int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)
    return r, g, b


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured background: gradient plus stripes, blotches or a checkerboard (noise-free:
    sensor noise is added once, to the whole image, by the caller).

    Returns:
        (height, width, 3) float32 in [0, 255].
    """
    scale = np.float32(1.0 / max(width, height))
    yy = np.arange(height, dtype=np.float32)[:, None] * scale  # broadcast, not a full grid
    xx = np.arange(width, dtype=np.float32)[None, :] * scale
    c0, c1 = rng.uniform(20, 235, (2, 3)).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    t = xx * np.float32(math.cos(a)) + yy * np.float32(math.sin(a))
    t = (t - t.min()) / (np.ptp(t) + np.float32(1e-6))
    img = c0 + (c1 - c0) * t[..., None]
    kind = int(rng.integers(3))
    if kind == 0:  # stripes at a random angle and period
        b = rng.uniform(0, math.pi)
        period = rng.uniform(0.02, 0.15)
        phase = (xx * np.float32(math.cos(b)) + yy * np.float32(math.sin(b))) / np.float32(period)
        wave = np.sin(np.float32(2 * math.pi) * phase)
        img += wave[..., None] * (rng.uniform(10, 40) * rng.uniform(0.3, 1.0, 3)).astype(np.float32)
    elif kind == 1:  # low-frequency blotches (foliage, crowds out of focus)
        cells = rng.normal(0, 1, (height // 24 + 2, width // 24 + 2, 3)).astype(np.float32)
        small = Image.fromarray(np.uint8(np.clip(128 + 50 * cells, 0, 255)))
        big = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), np.float32) - 128
        img += np.float32(rng.uniform(0.2, 0.6)) * big
    else:  # checkerboard (tiles, windows)
        cell = int(rng.integers(8, 40))
        yi, xi = np.arange(height)[:, None] // cell, np.arange(width)[None, :] // cell
        img += (
            np.float32(rng.uniform(10, 35))
            * (((yi + xi) % 2) * 2 - 1).astype(np.float32)[..., None]
        )
    return np.clip(img, 0, 255, out=img)


def _canvas(w: int, h: int, margin: float, max_ss: int = 8) -> tuple[Image.Image, int, int, int]:
    """Supersampled RGBA canvas for an object of w x h px with ``margin`` (fraction) around it."""
    ss = int(min(max_ss, max(1, math.ceil(64 / max(min(w, h), 1)))))
    mx, my = round(margin * w), round(margin * h)
    im = Image.new("RGBA", ((w + 2 * mx) * ss, (h + 2 * my) * ss), (0, 0, 0, 0))
    return im, ss, mx, my


def _finish(im: Image.Image, ss: int, blur: float) -> Image.Image:
    """Reduce a supersampled canvas and blur it (radius in output pixels)."""
    out = im.resize((im.width // ss, im.height // ss), Image.Resampling.LANCZOS) if ss > 1 else im
    return out.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else out


def draw_face(
    rng: np.random.Generator,
    w: int,
    h: int,
    blur: int = 0,
    expression: int = 0,
    illumination: int = 0,
    occlusion: int = 0,
    pose: int = 0,
    features: bool = True,
) -> tuple[Image.Image, int, int]:
    """A face-like head whose face ellipse fills a w x h box; attributes follow WIDER's legend.

    Args:
        blur: 0 clear, 1 normal, 2 heavy. expression: 1 = open mouth. illumination: 1 = extreme.
        occlusion: 0 none, 1 partial, 2 heavy. pose: 1 = turned (features shifted sideways).
        features: False draws a featureless head (a non-face distractor).

    Returns:
        (RGBA patch, x offset, y offset) of the face box inside the patch.
    """
    im, ss, mx, my = _canvas(w, h, 0.3)
    d = ImageDraw.Draw(im)
    W, H = w * ss, h * ss
    x0, y0 = mx * ss, my * ss
    x1, y1 = x0 + W, y0 + H
    skin = _jitter(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], rng, 12)
    hair = _jitter(HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))], rng, 10)
    shade = tuple(int(c * 0.75) for c in skin) + (255,)
    if rng.random() < 0.4:  # long hair behind the head
        d.rounded_rectangle(
            (x0 - 0.1 * W, y0 - 0.12 * H, x1 + 0.1 * W, y1 + 0.1 * H), 0.3 * W, hair
        )
    d.ellipse((x0 - 0.06 * W, y0 - 0.2 * H, x1 + 0.06 * W, y0 + 0.6 * H), hair)
    for ex in (x0 - 0.07 * W, x1 - 0.05 * W):  # ears
        d.ellipse((ex, y0 + 0.4 * H, ex + 0.12 * W, y0 + 0.62 * H), skin)
    d.ellipse((x0, y0, x1, y1), skin)
    d.chord((x0, y0 - 0.02 * H, x1, y0 + 0.45 * H), 180, 360, hair)  # fringe over the forehead
    if features:
        cx = (x0 + x1) / 2 + (rng.choice([-1, 1]) * 0.16 * W if pose else 0)
        ey = y0 + 0.47 * H
        for sx in (-1, 1):
            ex = cx + sx * 0.2 * W
            d.ellipse((ex - 0.1 * W, ey - 0.05 * H, ex + 0.1 * W, ey + 0.05 * H), (245, 245, 240))
            d.ellipse((ex - 0.05 * W, ey - 0.045 * H, ex + 0.05 * W, ey + 0.045 * H), (30, 25, 20))
            d.line(
                (ex - 0.12 * W, ey - 0.1 * H, ex + 0.11 * W, ey - 0.12 * H),
                hair,
                max(1, round(0.04 * W)),
            )
        d.line((cx, ey + 0.06 * H, cx + 0.03 * W, y0 + 0.68 * H), shade, max(1, round(0.04 * W)))
        my_ = y0 + 0.8 * H
        if expression:
            d.ellipse((cx - 0.14 * W, my_ - 0.07 * H, cx + 0.14 * W, my_ + 0.08 * H), (90, 20, 25))
        else:
            d.chord(
                (cx - 0.17 * W, my_ - 0.05 * H, cx + 0.17 * W, my_ + 0.04 * H),
                0,
                180,
                (170, 60, 60),
            )
    if occlusion:  # an occluder (hand, scarf, another head) over part of the face
        frac = rng.uniform(0.2, 0.4) if occlusion == 1 else rng.uniform(0.5, 0.7)
        col = _rgb(rng, 30, 230)
        if rng.random() < 0.5:
            d.rectangle((x0 - 0.1 * W, y1 - frac * H, x1 + 0.1 * W, y1 + 0.2 * H), col)
        else:
            d.rectangle((x1 - frac * W, y0 - 0.1 * H, x1 + 0.2 * W, y1 + 0.1 * H), col)
    radius = (0.0, max(0.6, 0.05 * w), max(1.2, 0.12 * w))[blur]
    out = _finish(im, ss, radius)
    if illumination:
        gain = rng.choice([rng.uniform(0.25, 0.45), rng.uniform(1.6, 2.2)])
        arr = np.asarray(out, np.float32)
        arr[..., :3] = np.clip(arr[..., :3] * gain, 0, 255)
        out = Image.fromarray(arr.astype(np.uint8), "RGBA")
    return out, mx, my


def draw_distractor(rng: np.random.Generator, size: int) -> Image.Image:
    """A face-like non-face of about ``size`` px: featureless head, hand, ball or dial (RGBA)."""
    kind = int(rng.integers(4))
    if kind == 0:
        patch, _, _ = draw_face(
            rng, size, round(size * 1.2), blur=int(rng.integers(2)), features=False
        )
        return patch
    im, ss, mx, my = _canvas(size, size, 0.1)
    d = ImageDraw.Draw(im)
    S = size * ss
    x0, y0 = mx * ss, my * ss
    if kind == 1:  # hand: palm plus fingers in a skin tone, at a random angle
        skin = _jitter(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], rng, 12)
        d.ellipse((x0 + 0.15 * S, y0 + 0.4 * S, x0 + 0.85 * S, y0 + S), skin)
        for k in range(4):
            fx = x0 + (0.18 + 0.17 * k) * S
            d.rounded_rectangle((fx, y0 + 0.05 * S, fx + 0.13 * S, y0 + 0.6 * S), 0.06 * S, skin)
        d.rounded_rectangle((x0, y0 + 0.45 * S, x0 + 0.35 * S, y0 + 0.6 * S), 0.06 * S, skin)
        im = im.rotate(float(rng.uniform(0, 360)), Image.Resampling.BICUBIC)
    elif kind == 2:  # ball, sometimes skin-coloured, with a highlight and seams
        col = _rgb(rng) if rng.random() < 0.6 else SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        d.ellipse((x0, y0, x0 + S, y0 + S), col)
        d.ellipse(
            (x0 + 0.2 * S, y0 + 0.15 * S, x0 + 0.45 * S, y0 + 0.35 * S), _jitter(col, rng, 60)
        )
        if rng.random() < 0.5:
            d.arc((x0 - 0.3 * S, y0, x0 + 0.7 * S, y0 + S), -60, 60, (20, 20, 20), max(1, ss))
    else:  # dial / clock / plate: ring with two hands
        d.ellipse(
            (x0, y0, x0 + S, y0 + S), _rgb(rng, 150), _rgb(rng, 0, 90), max(1, round(0.08 * S))
        )
        c = (x0 + S / 2, y0 + S / 2)
        d.line((c, (c[0] + 0.3 * S, c[1] - 0.1 * S)), (10, 10, 10), max(1, round(0.05 * S)))
        d.line((c, (c[0] - 0.05 * S, c[1] + 0.35 * S)), (10, 10, 10), max(1, round(0.03 * S)))
    return _finish(im, ss, float(rng.choice([0.0, 0.0, 0.8])))


def shape_polygon(
    rng: np.random.Generator, name: str, cx: float, cy: float, size: float
) -> np.ndarray:
    """Vertices of a shape of about ``size`` px centred at (cx, cy), randomly rotated.

    Returns:
        (V, 2) float64 polygon in pixels (a circle is a 24-gon).
    """
    r = size / 2
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    if name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.8
    elif name == "triangle":
        t = np.array([-90, 30, 150]) * np.pi / 180
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif name == "cross":
        a, b = 1.0, 0.33
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]]) * r  # fmt: skip
    elif name == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1) * r
    else:
        raise ValueError(f"unknown shape {name!r}")
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.array([cx, cy])


def paste(img: Image.Image, patch: Image.Image, x: int, y: int) -> None:
    """Alpha-composite an RGBA patch onto an RGB image at (x, y) (clipped at the borders)."""
    img.paste(patch, (x, y), patch)
