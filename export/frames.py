"""Generated camera frames: paper with no digit on it, and digits photographed on paper.

Usage::

    from edgeport.export.frames import digit_photos, empty_frames
    frames, kinds = empty_frames(1000, 112, seed=0)   # uint8 [1000, 112, 112, 3], kind names
    photos = digit_photos(x_test[:1000], 240, seed=1) # MNIST strokes as photos of ink on paper

A camera app classifies every frame, and most frames hold no digit. The parity
gate's ``no digit`` rows feed :func:`empty_frames` to every app model and require
the answer ``none`` (:data:`export.thresholds.APP_NONE_RATE`); the tests feed
:func:`digit_photos` to check that digits are not taken for ``none``. Both are
deterministic for a seed and need only numpy and Pillow.

The kinds of empty frame, in turn: ``blank`` paper (any level from grey to white,
tinted), a lighting ``gradient``, paper ``texture`` (blurred grain), ``speck``\\ s of
dust, a soft ``shadow``, ``ruled`` lines (with a margin line half of the time), a
``finger`` entering from an edge, a ``vignette``; half of the non-gradient frames
are lit by a gradient too, and every frame has sensor noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["EMPTY_KINDS", "digit_photos", "empty_frames"]

EMPTY_KINDS = ("blank", "gradient", "texture", "speck", "shadow", "ruled", "finger", "vignette")


def _light(rng: np.random.Generator, s: int) -> np.ndarray:
    """Illumination in (0.5, 1]: a linear gradient in a random direction, up to 50 % darker."""
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    return 1.0 - rng.uniform(0.0, 0.5) * (t - t.min()) / max(float(np.ptp(t)), 1e-9)


def _blurred(mask: Image.Image, radius: float) -> np.ndarray:
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(radius)), np.float64) / 255.0


def _texture(rng: np.random.Generator, s: int) -> np.ndarray:
    grain = np.clip(128 + 40 * rng.normal(0, 1, (s, s)), 0, 255).astype(np.uint8)
    n = _blurred(Image.fromarray(grain), rng.uniform(0.5, 2.5)) * 255.0 - 128.0
    return n / max(float(n.std()), 1e-9) * rng.uniform(3, 10)


def _specks(rng: np.random.Generator, s: int) -> np.ndarray:
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.5, 0.025 * s)
        x, y = rng.uniform(0.1 * s, 0.9 * s, 2)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(120, 255)))
    return _blurred(mask, 0.6) * 0.8


def _shadow(rng: np.random.Generator, s: int) -> np.ndarray:
    mask = Image.new("L", (s, s), 0)
    x, y = rng.uniform(-0.3 * s, 1.3 * s, 2)
    r = rng.uniform(0.4, 1.0) * s
    ImageDraw.Draw(mask).ellipse([x - r, y - r, x + r, y + r], fill=255)
    return _blurred(mask, rng.uniform(0.08, 0.2) * s) * rng.uniform(0.2, 0.55)


def _vignette(rng: np.random.Generator, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1) - 0.5
    return np.clip((xx**2 + yy**2) * 2, 0, 1) * rng.uniform(0.2, 0.5)


def _ruled(rng: np.random.Generator, s: int) -> np.ndarray:
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    gap = rng.uniform(0.12, 0.25) * s
    tilt = rng.uniform(-0.05, 0.05) * s
    width = max(1, round(rng.uniform(0.006, 0.02) * s))
    y = rng.uniform(0, gap)
    while y < s + abs(tilt):
        draw.line([0, y, s, y + tilt], fill=255, width=width)
        y += gap
    if rng.random() < 0.5:  # a margin line
        x = rng.uniform(0.05, 0.2) * s
        draw.line([x, 0, x, s], fill=255, width=width)
    return _blurred(mask, 0.5) * rng.uniform(0.2, 0.5)


def _finger(rng: np.random.Generator, s: int, img: np.ndarray) -> np.ndarray:
    mask = Image.new("L", (s, s), 0)
    w, length, c = rng.uniform(0.2, 0.35) * s, rng.uniform(0.2, 0.45) * s, rng.uniform(0.2, 0.8) * s
    box = [
        [c - w / 2, -length, c + w / 2, length],
        [c - w / 2, s - length, c + w / 2, s + length],
        [-length, c - w / 2, length, c + w / 2],
        [s - length, c - w / 2, s + length, c + w / 2],
    ][int(rng.integers(0, 4))]
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    m = _blurred(mask, rng.uniform(1, max(1.0, 0.04 * s)))[:, :, None]
    skin = np.array([rng.uniform(150, 230), rng.uniform(100, 170), rng.uniform(80, 140)])
    return img * (1 - m) + skin * m


_SHADES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "speck": _specks, "shadow": _shadow, "vignette": _vignette,
}


def _empty_frame(kind: str, rng: np.random.Generator, s: int) -> np.ndarray:
    paper = rng.uniform(140, 250) * rng.uniform(0.9, 1.0, size=3)
    light = _light(rng, s) if kind == "gradient" or rng.random() < 0.5 else np.ones((s, s))
    img = np.ones((s, s, 3)) * paper
    shade = np.zeros((s, s))  # how much darker than the paper, 0..1
    if kind == "texture":
        img = img + _texture(rng, s)[:, :, None]
    elif kind in _SHADES:
        shade = _SHADES[kind](rng, s)
    elif kind == "ruled":  # blue or grey lines
        tint = np.array([0.6, 0.8, 1.0]) if rng.random() < 0.5 else np.ones(3)
        img = img * (1 - _ruled(rng, s)[:, :, None] * (1 - tint * 0.3))
    elif kind == "finger":
        img = _finger(rng, s, img)
    img = img * light[:, :, None] * (1 - shade[:, :, None])
    img = img + rng.normal(0, rng.uniform(0.5, 3), (s, s, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def empty_frames(n: int, size: int, *, seed: int = 0) -> tuple[np.ndarray, tuple[str, ...]]:
    """``n`` frames of paper with no digit, the kinds of :data:`EMPTY_KINDS` in turn.

    Returns:
        ``(frames, kinds)``: uint8 RGB ``[n, size, size, 3]`` and each frame's kind.
    """
    rng = np.random.default_rng(seed)
    kinds = tuple(EMPTY_KINDS[i % len(EMPTY_KINDS)] for i in range(n))
    frames = np.empty((n, size, size, 3), np.uint8)
    for i, kind in enumerate(kinds):
        frames[i] = _empty_frame(kind, rng, size)
    return frames, kinds


def digit_photos(x: np.ndarray, size: int, *, seed: int = 0, light: bool = True) -> np.ndarray:
    """MNIST strokes as photos of paper: dark tinted ink, random size, offset, rotation, blur.

    Args:
        x: images in [0, 1], ``[N, 784]`` or ``[N, 28, 28]`` (light strokes on black).
        size: the photos' side.
        seed: the random generator's seed.
        light: paper from grey to white lit by a gradient (up to 50 % darker); ``False``:
            evenly lit light paper (levels 200-250).

    Returns:
        uint8 RGB ``[N, size, size, 3]``.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x).reshape(len(x), 28, 28)
    out = np.empty((len(x), size, size, 3), np.uint8)
    for i in range(len(x)):
        stroke = Image.fromarray((x[i] * 255).astype(np.uint8))
        side = int(rng.integers(size // 3, size - 4))
        stroke = stroke.resize((side, side), Image.Resampling.BILINEAR)
        stroke = stroke.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
        canvas = Image.new("L", (size, size), 0)
        left, top = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        canvas.paste(stroke, (left, top))
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
        ink = np.asarray(canvas, np.float32)[:, :, None] / 255.0
        low = 150 if light else 200
        paper = rng.uniform(low, 250, size=3) + rng.normal(0, 3, size=(size, size, 3))
        if light:
            paper = paper * _light(rng, size)[:, :, None]
        pen = rng.uniform(10, 80, size=3)
        out[i] = np.clip(paper * (1 - ink) + pen * ink, 0, 255).astype(np.uint8)
    return out
