"""Turn pictures into model input: MNIST-style digits or a plain resize.

Usage::

    from edgeport.mobile_demo.preprocess import load_image, prepare_input
    x = prepare_input(["photo_of_a_7.jpg"], model.input_desc)   # [1, 784] float32 in [0, 1]

MNIST digits are light strokes on black, cropped to their ink, scaled so the
longer side is 20 px and pasted in a 28x28 frame with the centre of mass in
the middle. :func:`preprocess_digit` puts a photo or drawing through the same
steps, so the model sees what it was trained on. Only numpy and Pillow.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeport.errors import ImageError, ModelFileError
from edgeport.fileio import check_input_file

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "load_image",
    "prepare_input",
    "preprocess_digit",
    "preprocess_resize",
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
    if size < 4:
        raise ValueError(f"size={size}; expected a frame of at least 4 pixels")
    ink = _ink(_gray(_as_image(img)))
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
        ImageError: a picture is unreadable or, for digits, holds no ink.
        ModelFileError: ``input_desc`` is not a valid input description.
    """
    layout, h, w, c, mode = _input_geometry(input_desc)
    items: Sequence[Any]
    if isinstance(paths_or_images, (str, os.PathLike)):
        items = [paths_or_images]
    else:
        items = list(paths_or_images)
    batch = np.zeros((len(items), h, w, c), dtype=np.float32)
    for i, item in enumerate(items):
        img = load_image(item) if isinstance(item, (str, os.PathLike)) else item
        if preprocess and mode == "mnist":
            digit = preprocess_digit(img, size=max(h, w))
            if (h, w) != digit.shape:
                digit = _resize(digit, w, h).astype(np.float32)
            batch[i] = np.clip(digit, 0.0, 1.0)[:, :, None]
        else:
            batch[i] = preprocess_resize(img, height=h, width=w, channels=c)
    if layout == "flat":
        return batch.reshape(len(items), h * w * c)
    return batch
