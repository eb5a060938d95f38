"""Turn pictures into model input: MNIST-style digits or a plain resize.

Usage::

    from edgeport.mobile_demo.preprocess import load_image, prepare_input
    x = prepare_input(["photo_of_a_7.jpg"], model.input_desc)   # [1, 784] float32 in [0, 1]

MNIST digits are light strokes on black, cropped to their ink, scaled so the
longer side is 20 px and pasted in a 28x28 frame with the centre of mass in
the middle. :func:`preprocess_digit` puts a photo or drawing through the same
steps, so the model sees what it was trained on. Only numpy and Pillow.

Most camera frames hold no digit. :func:`find_digit` decides whether one does,
with :data:`DIGIT_RULE`, the one rule that edgeport-demo, the app models' graph
(``export/app.py`` imports these constants) and the phone page share: on a grid
of twice the model's side, the paper's own light is divided out (a grey closing
wider than any stroke estimates it), so gradients, shadows and vignettes vanish;
what is left must be ink of a plausible digit: enough of it, tall enough, dense
enough, and clear of the picture's edge. A frame that fails is answered ``none``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeport.errors import ImageError, ModelFileError
from edgeport.fileio import check_input_file

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIGIT_RULE",
    "IMAGE_SUFFIXES",
    "NONE_LABEL",
    "DigitCheck",
    "DigitRule",
    "answers_none",
    "find_digit",
    "labels_with_none",
    "load_image",
    "prepare_digits",
    "prepare_input",
    "preprocess_digit",
    "preprocess_resize",
    "with_none",
]

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: above any phone photo, far below a decompression bomb
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")

_DIGIT_BOX = 20 / 28  # MNIST: the longer side of the ink fills 20 of 28 pixels
_MIN_CONTRAST = 0.08  # ink must differ from the paper by 8% of full scale (20 of 255 levels)
_NOISE_FLOOR = 0.15  # ink weaker than 15% of the strongest stroke counts as background
_NOISE_CEIL = 0.5  # never discard more than the faint half of the ink
_WORK_SCALE = 4  # strokes are measured and thickened at 4x the final size
_MIN_STROKE = 6.0  # px at 4x: MNIST strokes are 2-3 px wide in the 20-px box
_MAX_SIDE = 1024  # larger photos are shrunk first: a digit needs no more detail
_MASS_TRIM = 0.002  # the crop ignores stray specks that hold 0.2% of the ink on each side


NONE_LABEL = "none"  # the answer of a digit model to a frame that holds no digit


@dataclass(frozen=True)
class DigitRule:
    """When a picture holds a digit: the thresholds of :func:`find_digit` (and the graph's).

    Measured on generated frames (``export/frames.py``: blank paper in varied light,
    gradients, textures, specks, soft shadows, ruled lines, a finger at the edge) and
    on MNIST test digits photographed the same ways; each bound sits outside what
    digits show, with a margin (docs/contracts.md has the figures).
    """

    grid: int = 2  # the picture is judged on a grid of grid x the model's side (56 for MNIST)
    window: float = 11 / 56  # closing width / grid side: wider than any stroke (11 px of 56)
    ink: float = 0.3  # a pixel is ink when 30 % darker than the paper's light around it
    min_area: float = 0.004  # ink covers at least 0.4 % of the picture (a speck covers less)
    max_area: float = 0.35  # ... and at most 35 % (digits: 21 % at most)
    min_height: float = 0.2  # the ink spans at least 20 % of the picture's height
    min_density: float = 0.1  # ink / its bounding box (scattered specks: 2-5 %; digits >= 12 %)
    band: float = 1 / 16  # the picture's edge: its outer 1/16 on each side
    max_edge: float = 0.1  # at most 10 % of the ink lies on the edge (lines, fingers, shadows)

    def grid_side(self, size: int) -> int:
        return self.grid * size

    def window_px(self, size: int) -> int:
        """The closing's odd width in grid pixels (11 for MNIST)."""
        return max(3, round(self.window * self.grid_side(size)) | 1)

    def band_px(self, size: int) -> int:
        return max(1, int(self.band * self.grid_side(size)))


DIGIT_RULE = DigitRule()


@dataclass(frozen=True)
class DigitCheck:
    """Whether a picture holds a digit, and the measures that decided it.

    Attributes:
        found: a digit is there (the model's answer counts); otherwise the answer is ``none``.
        reason: why not ("" when found), in words a user understands.
        area: the ink's share of the picture.
        height: the ink's height over the picture's.
        density: the ink's share of its bounding box.
        edge: the ink's share lying on the picture's edge.
    """

    found: bool
    reason: str
    area: float
    height: float
    density: float
    edge: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _box_filter(a: np.ndarray, k: int, reduce: Any, pad: float) -> np.ndarray:
    """A k x k max or min filter (``reduce`` = np.max / np.min), padded with ``pad``."""
    r = k // 2
    padded = np.pad(a, r, constant_values=pad)
    rows = reduce([padded[i : i + a.shape[0], :] for i in range(k)], axis=0)
    return reduce([rows[:, j : j + a.shape[1]] for j in range(k)], axis=0)


def ink_map(gray: np.ndarray, size: int = 28, rule: DigitRule = DIGIT_RULE) -> np.ndarray:
    """Ink strength on the rule's grid, the paper's light divided out.

    Args:
        gray: grayscale ``[H, W]`` in [0, 1].
        size: the model's side (the grid is ``rule.grid * size``).

    Returns:
        float64 ``[G, G]``: 0 on paper, 1 - (pixel / local paper level) on ink.
    """
    g = rule.grid_side(size)
    if gray.shape != (g, g):
        gray = _resize(gray, g, g)
    gray = np.clip(gray, 0.0, 1.0)
    paper = float(np.median(_border(gray)))
    lo, hi = float(gray.min()), float(gray.max())
    # Dark ink on light paper; a light digit on a dark board is turned over first.
    v = gray if paper >= (lo + hi) / 2 else 1.0 - gray
    k = rule.window_px(size)
    light = _box_filter(_box_filter(v, k, np.max, 0.0), k, np.min, 1.0)  # closing
    return np.clip(1.0 - v / np.maximum(light, 1e-3), 0.0, 1.0)


def check_ink(ink: np.ndarray, rule: DigitRule = DIGIT_RULE) -> DigitCheck:
    """Apply the rule's bounds to an :func:`ink_map`."""
    g = ink.shape[0]
    mask = ink > rule.ink
    count = int(mask.sum())
    if count == 0:
        return DigitCheck(False, "blank: no ink darker than the paper around it",
                          0.0, 0.0, 0.0, 0.0)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height = (rows[-1] - rows[0] + 1) / g
    width = (cols[-1] - cols[0] + 1) / g
    area = count / mask.size
    b = max(1, int(rule.band * g))
    edge = 1.0 - int(mask[b:-b, b:-b].sum()) / count
    density = area / (height * width)
    reason = ""
    if area < rule.min_area:
        reason = f"a speck, not a digit (ink on {area:.2%} of the picture, a digit needs "
        reason += f"{rule.min_area:.1%})"
    elif area > rule.max_area:
        reason = f"too much ink to be one digit ({area:.0%} of the picture)"
    elif edge > rule.max_edge:
        reason = f"marks on the picture's edge ({edge:.0%} of the ink): lines, a finger or a shadow"
    elif height < rule.min_height:
        reason = f"ink {height:.0%} of the picture's height, a digit spans {rule.min_height:.0%}"
    elif density < rule.min_density:
        reason = f"scattered marks, not one digit ({density:.0%} of their box is ink)"
    return DigitCheck(not reason, reason, float(area), float(height), float(density), float(edge))


def find_digit(img: Any, *, size: int = 28, rule: DigitRule = DIGIT_RULE) -> DigitCheck:
    """Decide whether a picture holds a digit (the app models decide the same in their graph).

    Args:
        img: a PIL image (any mode), or a numpy array ``[H, W]`` / ``[H, W, C]``.
        size: the model's side (28 for MNIST).
        rule: the thresholds (default :data:`DIGIT_RULE`).

    Returns:
        A :class:`DigitCheck`; ``found`` False means the answer is :data:`NONE_LABEL`.
    """
    return _find_in_gray(_gray(_as_image(img)), size, rule)


def _find_in_gray(gray: np.ndarray, size: int, rule: DigitRule = DIGIT_RULE) -> DigitCheck:
    """:func:`find_digit` from the picture's grayscale (``_gray``)."""
    if gray.size == 0:
        return DigitCheck(False, "the picture has no pixels", 0.0, 0.0, 0.0, 0.0)
    return check_ink(ink_map(gray, size, rule), rule)


def labels_with_none(labels: Sequence[str]) -> list[str]:
    """A digit model's class names with ``none`` after them (unless it has a ``none`` class)."""
    names = [str(label) for label in labels]
    return names if NONE_LABEL in names else [*names, NONE_LABEL]


def with_none(probs: np.ndarray, found: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The answers with ``none`` where no digit was found, as the app models' graph gives them.

    Args:
        probs: the model's probabilities ``[N, K]``.
        found: bool ``[N]``, :attr:`DigitCheck.found` per picture.
        labels: the model's K class names.

    Returns:
        float32 ``[N, K']`` over :func:`labels_with_none`: a found digit keeps its
        probabilities (``none`` 0), a frame with no digit gets ``none`` 1 and 0 elsewhere.
    """
    probs = np.asarray(probs, np.float32)
    keep = np.asarray(found, bool)[:, None].astype(np.float32)
    names = [str(label) for label in labels]
    if NONE_LABEL in names:
        onehot = np.zeros((1, probs.shape[1]), np.float32)
        onehot[0, names.index(NONE_LABEL)] = 1.0
        return probs * keep + onehot * (1.0 - keep)
    return np.concatenate([probs * keep, 1.0 - keep], axis=1)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and decode a picture, with EXIF rotation applied.

    Args:
        path: a file Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF, ...).
        max_pixels: refuse pictures larger than this before decoding them.

    Returns:
        The decoded image (first frame of an animation), detached from the file.

    Raises:
        ImageError: the file is missing, empty, not a picture, truncated, or too large.
    """
    path = Path(path)
    check_input_file(path, ImageError, what="image",
                     expected="a picture such as a .png or .jpg",
                     if_empty="expected a picture such as a .png")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own pixel limit (ours is checked below, before
            # decoding) and about damaged metadata (common in phone EXIF); the
            # picture either decodes or raises.
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(
                        f"{path}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels}; "
                        "shrink the picture or pass a larger max_pixels"
                    )
                im.load()
                # Phone photos are stored sideways with an EXIF rotation tag.
                img = ImageOps.exif_transpose(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{path}: too many pixels ({_one_line(e)}); "
            "shrink the picture or pass a larger max_pixels"
        ) from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; check the file's permissions") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not a picture Pillow can read; expected PNG, JPEG, BMP, GIF, WebP or TIFF"
        ) from None
    except Exception as e:  # Pillow's decoders report corrupt data with many exception types
        raise ImageError(
            f"{path}: cannot decode the picture ({type(e).__name__}: {_one_line(e)}); "
            "re-save or re-copy the file"
        ) from None
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{path}: the picture is {img.width}x{img.height}; expected pixels")
    return img


def _as_image(img: Any) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray):
        arr = img
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype.kind == "f":
            arr = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        try:
            return Image.fromarray(arr)
        except (TypeError, ValueError) as e:
            raise ImageError(
                f"cannot read an array of shape {arr.shape} and dtype {arr.dtype} as a picture "
                f"({_one_line(e)}); expected [H, W] or [H, W, 3|4] pixels"
            ) from None
    raise ImageError(
        f"got a {type(img).__name__}, expected a PIL image, a numpy array or a file path"
    )


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a picture with transparency onto white paper."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if not has_alpha:
        return img
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray(img: Image.Image) -> np.ndarray:
    """Grayscale float64 in [0, 1] (0 = black), whatever the mode and bit depth."""
    img = _flatten_alpha(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            return arr / 65535.0
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            return np.zeros(arr.shape)
        return np.nan_to_num((arr - lo) / (hi - lo))
    if img.mode not in ("L", "1"):
        img = img.convert("RGB")
    img = img.convert("L")
    if max(img.size) > _MAX_SIDE:
        # Bounds memory and time on big photos; area averaging keeps thin strokes.
        scale = _MAX_SIDE / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64) / 255.0


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _mass_range(profile: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index holding the ink, minus stray specks at either end."""
    cum = np.cumsum(profile)
    total = cum[-1]
    lo = int(np.searchsorted(cum, total * _MASS_TRIM, side="right"))
    hi = int(np.searchsorted(cum, total * (1 - _MASS_TRIM), side="left")) + 1
    nz = np.flatnonzero(profile)
    lo = max(lo, int(nz[0]))  # never start on an empty row
    hi = min(max(hi, lo + 1), int(nz[-1]) + 1)
    return lo, hi


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # mode "F"
    shrinking = width < a.shape[1] or height < a.shape[0]
    # BOX averages the covered area (anti-aliasing, as MNIST's normalisation
    # did); BILINEAR interpolates when enlarging a small drawing.
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(im.resize((width, height), resample), dtype=np.float64)


def _stroke_width(a: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink area over its outline length."""
    mask = a > 0.5
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    outline = area - int(inner.sum())
    return 2.0 * area / max(outline, 1)


def _dilate(a: np.ndarray, k: int) -> np.ndarray:
    """Grey dilation with a k x k square (max filter), numpy only."""
    r = k // 2
    padded = np.pad(a, r)
    rows = np.max([padded[i : i + a.shape[0], :] for i in range(k)], axis=0)
    return np.max([rows[:, j : j + a.shape[1]] for j in range(k)], axis=0)


def preprocess_digit(img: Any, *, size: int = 28) -> np.ndarray:
    """Make a picture of one handwritten digit look like an MNIST sample.

    Steps: flatten transparency onto white and convert to grayscale; take the
    paper level from the border pixels and invert when the paper is lighter
    than the ink; stretch the contrast so the strongest stroke is 1 and drop
    the faint background; crop to the ink; scale the longer side to 20/28 of
    ``size`` keeping the aspect ratio (thickening thin pen strokes); paste in
    a ``size`` x ``size`` frame shifted so the centre of mass is in the middle.

    Args:
        img: a PIL image (any mode), or a numpy array ``[H, W]`` / ``[H, W, C]``.
        size: side of the output frame (28 for MNIST).

    Returns:
        float32 ``[size, size]`` in [0, 1], light ink on black.

    Raises:
        ImageError: the picture holds no ink (blank, or one flat colour).
    """
    return _digit_from_gray(_gray(_as_image(img)), size)


def _digit_from_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """:func:`preprocess_digit` from the picture's grayscale (``_gray``)."""
    if size < 4:
        raise ValueError(f"size={size}; expected a frame of at least 4 pixels")
    ink = _ink(gray)
    r0, r1 = _mass_range(ink.sum(axis=1))
    c0, c1 = _mass_range(ink.sum(axis=0))
    small = _fit_box(ink[r0:r1, c0:c1], box=max(1, round(size * _DIGIT_BOX)))
    return _centre(small, size)


def _ink(g: np.ndarray) -> np.ndarray:
    """Grayscale ``[H, W]`` -> ink strength in [0, 1] (1 = strongest stroke, paper 0).

    Raises:
        ImageError: no pixels, or no contrast between ink and paper.
    """
    h0, w0 = g.shape
    if g.size == 0:
        raise ImageError(f"the picture is {w0}x{h0}; expected pixels")
    paper = float(np.median(_border(g)))
    lo, hi = float(g.min()), float(g.max())
    # The paper is whichever end of the range the border sits nearer.
    signed = paper - g if paper >= (lo + hi) / 2 else g - paper
    peak = float(signed.max())
    if peak < _MIN_CONTRAST:
        raise ImageError(
            f"no ink found in the {w0}x{h0} picture (contrast {peak:.3f} < {_MIN_CONTRAST}); "
            "expected one dark digit on light paper or a light digit on dark"
        )
    # Background noise level, two ways: the ink along the border, and the
    # robust spread (median absolute deviation) of the whole picture, which is
    # mostly paper; 5 sigma of sensor noise leaves no stray specks.
    sigma = 1.4826 * float(np.median(np.abs(signed - np.median(signed))))
    ink = np.clip(signed, 0.0, None) / peak
    noise = max(float(np.percentile(_border(ink), 90)), 5.0 * sigma / peak)
    floor = float(np.clip(noise, _NOISE_FLOOR, _NOISE_CEIL))
    return np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)


def _fit_box(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale the cropped ink so its longer side is ``box`` pixels, thickening thin strokes."""
    work = box * _WORK_SCALE
    if max(crop.shape) > work:
        # Large crops are first averaged down to 4x the final size.
        scale = work / max(crop.shape)
        crop = _resize(
            crop,
            max(1, round(crop.shape[1] * scale)),
            max(1, round(crop.shape[0] * scale)),
        )
        crop /= max(float(crop.max()), 1e-12)
    # A thin pen line on a photo fades to grey at 20 px: thicken strokes that
    # are thinner than MNIST's (measured at the crop's own resolution).
    target = _MIN_STROKE * max(crop.shape) / work
    width = _stroke_width(crop)
    k = round(target - width) | 1 if 0 < width < target else 1  # odd: grows evenly
    if k > 1:
        crop = _dilate(crop, k)
    longest = max(crop.shape)
    h = max(1, round(crop.shape[0] * box / longest))
    w = max(1, round(crop.shape[1] * box / longest))
    small = np.clip(_resize(crop, w, h), 0.0, 1.0)
    small /= max(float(small.max()), 1e-12)
    return small


def _centre(small: np.ndarray, size: int) -> np.ndarray:
    """Paste ``small`` in a ``size`` x ``size`` frame with its centre of mass in the middle."""
    h, w = small.shape
    total = float(small.sum())
    ys, xs = np.indices(small.shape)
    cy = float((ys * small).sum() / total) if total > 0 else (h - 1) / 2
    cx = float((xs * small).sum() / total) if total > 0 else (w - 1) / 2
    centre = size / 2  # MNIST puts the centre of mass at pixel (14, 14) of 28
    # Shift so the centre of mass lands in the middle, but keep the whole digit
    # in the frame (an off-balance "7" would otherwise lose its tip).
    top = int(np.clip(round(centre - cy), 0, size - h))
    left = int(np.clip(round(centre - cx), 0, size - w))
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = small
    return out


def preprocess_resize(img: Any, *, height: int, width: int, channels: int) -> np.ndarray:
    """Plain preprocessing for folder datasets: flatten transparency, resize, scale to [0, 1].

    Args:
        img: a PIL image or a numpy array.
        height: output height.
        width: output width.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        float32 ``[height, width, channels]`` in [0, 1].
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}; expected 1 (grayscale) or 3 (RGB)")
    im = _flatten_alpha(_as_image(img))
    if channels == 1:
        arr = _gray(im)
        out = _resize(arr, width, height) if arr.shape != (height, width) else arr
        return np.clip(out, 0.0, 1.0).astype(np.float32)[:, :, None]
    im = im.convert("RGB")
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return (np.asarray(im, dtype=np.float32) / 255.0).reshape(height, width, 3)


def _input_geometry(desc: dict[str, Any]) -> tuple[str, int, int, int, str]:
    fix = "expected the contract's input description (layout, height, width, channels)"
    try:
        layout = str(desc["layout"])
        h, w, c = int(desc["height"]), int(desc["width"]), int(desc["channels"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"the model's input description lacks a valid {e}; {fix}") from None
    mode = str(desc.get("preprocess", "mnist" if c == 1 else "resize"))
    if layout not in ("flat", "nhwc") or min(h, w, c) < 1 or mode not in ("mnist", "resize"):
        raise ModelFileError(
            f"the model's input description is layout={layout!r}, {h}x{w}x{c}, "
            f"preprocess={mode!r}; {fix}, layout flat|nhwc and preprocess mnist|resize"
        )
    return layout, h, w, c, mode


def answers_none(input_desc: dict[str, Any], *, preprocess: bool = True) -> bool:
    """Whether a model's answers include ``none``: a digit model (preprocess ``mnist``)
    fed through the digit pipeline; :func:`prepare_digits` then says which pictures hold one."""
    return preprocess and _input_geometry(input_desc)[4] == "mnist"


def prepare_input(
    paths_or_images: Iterable[Any] | str | os.PathLike[str],
    input_desc: dict[str, Any],
    *,
    preprocess: bool = True,
) -> np.ndarray:
    """Load and preprocess pictures into one batch in the model's input layout.

    Args:
        paths_or_images: file paths, PIL images or numpy arrays (or one path).
        input_desc: the contract's ``input`` dict (``layout``, ``height``,
            ``width``, ``channels``, ``preprocess``), e.g. ``model.input_desc``.
        preprocess: ``False`` skips the digit pipeline (inversion, crop,
            centring) and only converts and resizes: for pictures that are
            already MNIST-like, such as ``--export-samples`` output.

    Returns:
        float32 ``[N, H*W*C]`` (layout ``flat``) or ``[N, H, W, C]`` (``nhwc``) in [0, 1].

    Raises:
        ImageError: a picture is unreadable or, for digits, holds no digit
            (:func:`find_digit`; :func:`prepare_digits` answers ``none`` instead).
        ModelFileError: ``input_desc`` is not a valid input description.
    """
    items = _items(paths_or_images)
    x, reasons = _prepare(items, input_desc, preprocess=preprocess)
    for item, reason in zip(items, reasons, strict=True):
        if reason:
            where = f"{item}: " if isinstance(item, (str, os.PathLike)) else ""
            raise ImageError(f"{where}no digit found ({reason}); expected one dark digit on "
                             "light paper or a light digit on dark")
    return x


def _items(paths_or_images: Iterable[Any] | str | os.PathLike[str]) -> Sequence[Any]:
    if isinstance(paths_or_images, (str, os.PathLike)):
        return [paths_or_images]
    return paths_or_images if isinstance(paths_or_images, list) else list(paths_or_images)


def prepare_digits(
    paths_or_images: Iterable[Any] | str | os.PathLike[str],
    input_desc: dict[str, Any],
    *,
    preprocess: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prepare_input`, with pictures that hold no digit answered instead of refused.

    Returns:
        ``(x, found)``: the batch as :func:`prepare_input` returns it (zeros where no digit
        was found) and bool ``[N]``, :func:`find_digit` per picture (all true for models
        that are not digit models or without ``preprocess``). Feed the model's answers and
        ``found`` to :func:`with_none`.

    Raises:
        ImageError: a picture is unreadable.
        ModelFileError: ``input_desc`` is not a valid input description.
    """
    x, reasons = _prepare(_items(paths_or_images), input_desc, preprocess=preprocess)
    return x, np.array([not reason for reason in reasons], dtype=bool)


def _prepare(
    items: Sequence[Any], input_desc: dict[str, Any], *, preprocess: bool
) -> tuple[np.ndarray, list[str]]:
    """The batch (zeros where no digit was found) and, per picture, why no digit ("" if one)."""
    layout, h, w, c, mode = _input_geometry(input_desc)
    batch = np.zeros((len(items), h, w, c), dtype=np.float32)
    reasons = [""] * len(items)
    for i, item in enumerate(items):
        img = load_image(item) if isinstance(item, (str, os.PathLike)) else item
        if preprocess and mode == "mnist":
            try:
                gray = _gray(_as_image(img))  # once: the rule and the pipeline both read it
                check = _find_in_gray(gray, max(h, w))
                if not check.found:
                    reasons[i] = check.reason
                    continue
                digit = _digit_from_gray(gray, max(h, w))
            except ImageError as e:  # name the picture: a folder may hold thousands
                if isinstance(item, (str, os.PathLike)) and str(item) not in str(e):
                    raise ImageError(f"{item}: {e}") from None
                raise
            if (h, w) != digit.shape:
                digit = _resize(digit, w, h).astype(np.float32)
            batch[i] = np.clip(digit, 0.0, 1.0)[:, :, None]
        else:
            batch[i] = preprocess_resize(img, height=h, width=w, channels=c)
    if layout == "flat":
        return batch.reshape(len(items), h * w * c), reasons
    return batch, reasons
