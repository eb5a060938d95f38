"""App models: an RGB picture in, probabilities out, the preprocessing inside the graph.

Usage::

    from edgeport.export.app import convert_app, app_size
    data = convert_app(serving, input=run.input, precision=Precision.FLOAT32,
                       metadata=doc, labels=run.labels)

``model_app_float32.tflite`` takes ``image`` float32 ``[1, S, S, 3]``, RGB pixel
values 0-255 (so its ``TFLITE_METADATA`` normalization is mean 0, std 1: clients
hand the pixels over unchanged), ``model_app_int8.tflite`` the same picture as
uint8. Both return ``probabilities`` float32 ``[1, K]`` and run only TFLite
builtin ops (batch 1): MediaPipe Tasks 1.2.3, the TFLite Task Library 0.4.4 and
tflite-runtime 2.14 load them (tests/test_app.py); LiteRT.js is the web page's check.

The graph repeats :func:`edgeport.mobile_demo.preprocess.preprocess_digit` for
digit models (``input.preprocess == "mnist"``), step for step: grayscale as
Pillow's "L" (rounded to a level); the paper level is the median of the border and
the picture is inverted when the paper is the lighter end; contrast stretched so
the strongest stroke is 1, background below the noise floor dropped (its spread
estimated on every 4th row and column, see ``_digit``: the one approximation); the
ink's bounding box (minus 0.2 % stray mass at each end) is moved onto a work
canvas 4x the 20-px box (shrunk onto it when larger); strokes thinner than MNIST's
are thickened there (a 3x3 or 5x5 grey dilation, as numpy chooses it); the longer
side is resampled to 20 px (Pillow's BOX weights when shrinking, BILINEAR when
enlarging); and the digit is shifted so its centre of mass lands at (14, 14). Each
resampling is ``rows @ picture @ cols^T`` with weight matrices computed in the
graph from the box, to Pillow's coefficients (``_pil_matrix``), so it stays in
BATCH_MATMUL and element-wise ops. On 1,000 generated digits on paper the graph's
28x28 input equals numpy's on most pictures and MediaPipe picks edgeport-demo's
class on 99.4 % of them (softmax). For ``"resize"`` models the graph converts to
grayscale (1-channel models) and resizes as ``preprocess_resize`` does.

S (:func:`app_size`) is 4x the model's side (112 for MNIST): the numpy
pipeline measures strokes at 4x the 20-px box (80 px), so a camera crop of
112 px keeps that detail for a digit filling 70 % of the frame, while the
resampling matrices stay small (80x112, then 28x80).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.mobile_demo.preprocess import DIGIT_RULE, NONE_LABEL, labels_with_none

from .errors import ExportError
from .formats import ArtifactFormat, ArtifactKind, Precision

__all__ = [
    "APP_FAMILY",
    "APP_FILES",
    "APP_KINDS",
    "GOLDEN_PICTURES",
    "NORMALIZATION",
    "app_input",
    "app_labels",
    "app_size",
    "build_app_function",
    "claims_webgpu",
    "convert_app",
    "predict_app",
    "render_pictures",
    "write_app_models",
]

APP_FILES = {Precision.FLOAT32: "model_app_float32.tflite", Precision.INT8: "model_app_int8.tflite"}
# The float model takes raw pixel values: NormalizationOptions mean 0, std 1 tell clients
# (MediaPipe, the Task Library) to hand over 0-255 unchanged.
NORMALIZATION = (0.0, 1.0)
APP_SCALE = 4  # S = 4 x the model's side, see the module docstring
_BOX = 20 / 28  # as mobile_demo.preprocess._DIGIT_BOX
_MIN_CONTRAST = 0.08
_NOISE_FLOOR, _NOISE_CEIL = 0.15, 0.5
_MASS_TRIM = 0.002
_WORK_SCALE = 4  # as preprocess._WORK_SCALE: strokes are measured at 4x the 20-px box
_MIN_STROKE = 6.0  # as preprocess._MIN_STROKE
_EPS = 1e-12


def app_size(input: Mapping[str, Any]) -> int:
    """The side S of the square picture an app model takes (4x the model's larger side)."""
    return APP_SCALE * max(int(input["height"]), int(input["width"]))


def claims_webgpu(file: str, input: Mapping[str, Any]) -> bool:
    """Whether ``file`` is written for LiteRT's GPU delegate: a digit model's app models,
    whose graphs run wholly on WebGPU in LiteRT.js (4-D tensors, see below; the delegate
    runs the int8 file's quantized classifier too). Their manifest entries say so
    (``"gpu": {"claims_webgpu": true}``), so the parity gate's WebGPU row fails, not merely
    notes, when one stops doing so. A ``"resize"`` model's app graph does not claim it (its
    resampling is a 3-D batch over the channels, not measured on WebGPU)."""
    return file in APP_FILES.values() and input.get("preprocess") == "mnist"


def app_labels(labels: Sequence[str], input: Mapping[str, Any]) -> list[str]:
    """The class names of an app model: a digit model's labels and ``none`` (no digit).

    A digit model (``preprocess == "mnist"``) answers ``none`` to a frame that holds no
    digit (:func:`edgeport.mobile_demo.preprocess.find_digit`): one more output after the
    K classes, unless the labels already have a ``none`` class, which then takes that
    answer. Other models keep their labels.
    """
    if input.get("preprocess") == "mnist":
        return labels_with_none(labels)
    return [str(label) for label in labels]


# Every tensor of the preprocessing is 4-D with batch 1: a picture is a plane [1, 1, H, W],
# a scalar [1, 1, 1, 1], a profile (a value per row or column) [1, 1, 1, n]. LiteRT's GPU
# delegate (LiteRT.js WebGPU) refuses 0-d tensors and maps a 2-D [n, m] tensor to n batches
# of m channels, where its broadcasts, one-axis reductions and CUMSUM came out wrong on
# WebGPU (SwiftShader); in 4-D with batch 1 every op of this graph computes what the CPU
# does (docs/contracts.md). The plane's columns are the last axis, not [1, H, W, 1]: with a
# last axis of 1 the CPU's PAD, SELECT, comparisons and row sums run 4-9x slower.


def _scalar_op(tf: Any, reduce: Any, x: Any) -> Any:
    """``reduce`` (tf.reduce_sum / _max / _min) over every element: ``[1, 1, 1, 1]``."""
    out = reduce(x, axis=list(range(len(x.shape))), keepdims=True)
    return tf.reshape(out, [1, 1, 1, 1])


def _index(tf: Any, n: int, axis: int) -> Any:
    """0 .. n - 1 as float32 along ``axis`` (2: rows, 3: columns and profiles) of a 4-D
    tensor."""
    shape = [1, 1, 1, 1]
    shape[axis] = n
    return tf.constant(np.arange(n, dtype=np.float32).reshape(shape))


def _quantile(tf: Any, x: Any, q: float) -> Any:
    """numpy.percentile(x, 100 q) (linear interpolation) of a tensor of static size."""
    n = int(np.prod(x.shape))
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    frac = pos - lo
    # top_k sorts descending: ascending index i is descending index n - 1 - i.
    k = n - lo
    top = tf.math.top_k(tf.reshape(x, [1, n]), k=k, sorted=True).values
    a = tf.reshape(top[:, k - 1:k], [1, 1, 1, 1])
    if lo + 1 >= n or pos == lo:  # an exact rank: no interpolation
        return a
    return a + frac * (tf.reshape(top[:, k - 2:k - 1], [1, 1, 1, 1]) - a)


def _border(tf: Any, a: Any) -> Any:
    """The outermost pixels of a plane, ``[1, n]``."""
    sides = (a[..., :1, :], a[..., -1:, :], a[..., 1:-1, :1], a[..., 1:-1, -1:])
    return tf.concat([tf.reshape(side, [1, -1]) for side in sides], axis=1)


def _row_profile(tf: Any, reduce: Any, a: Any) -> Any:
    """``reduce`` of each row of a plane: ``[1, 1, 1, H]``."""
    return tf.reshape(reduce(a, axis=3, keepdims=True), [1, 1, 1, int(a.shape[2])])


def _col_profile(tf: Any, reduce: Any, a: Any) -> Any:
    """``reduce`` of each column of a plane: ``[1, 1, 1, W]``."""
    return reduce(a, axis=2, keepdims=True)


def _first_last(tf: Any, present: Any) -> tuple[Any, Any]:
    """First and last index where a bool profile ``[1, 1, 1, n]`` is true (n and -1 when
    none is)."""
    n = int(present.shape[3])
    idx = _index(tf, n, 3)
    return (_scalar_op(tf, tf.reduce_min, tf.where(present, idx, float(n))),
            _scalar_op(tf, tf.reduce_max, tf.where(present, idx, -1.0)))


def _mass_range(tf: Any, profile: Any) -> tuple[Any, Any]:
    """As preprocess._mass_range: first and one-past-last index holding the ink."""
    cum = tf.math.cumsum(profile, axis=3)  # CUMSUM, a builtin since TFLite 2.5
    total = cum[..., -1:]
    lo = _scalar_op(tf, tf.reduce_sum, tf.cast(cum <= total * _MASS_TRIM, tf.float32))
    hi = _scalar_op(tf, tf.reduce_sum, tf.cast(cum < total * (1 - _MASS_TRIM), tf.float32)) + 1.0
    first, last = _first_last(tf, profile > 0)
    lo = tf.maximum(lo, first)
    hi = tf.minimum(tf.maximum(hi, lo + 1.0), last + 1.0)
    return lo, hi


def _pil_matrix(
    tf: Any, out_n: int, in_n: int, start: Any, count: Any, src: Any, length: Any,
    bilinear: Any = False,
) -> Any:
    """``[1, 1, out_n, in_n]`` resampling weights, Pillow's ``Image.resize`` to the coefficient.

    Output cells ``start .. start + count - 1`` resample the source pixels
    ``src .. src + length - 1`` into ``count`` cells, as Pillow's ``precompute_coeffs``
    does for its BOX filter (each source pixel whose centre lies in the cell, equal
    weights) or, where ``bilinear`` (a bool tensor; ``False``: BOX only) is true, its
    BILINEAR (triangle) filter; weights outside the source span are zero and each row
    sums to one. BOX is an index range per row: two comparisons per weight, where the
    triangle needs a dozen ops (the 80x112 BOX matrices were 1/3 of the graph's time).
    """
    o = _index(tf, out_n, 2) - start
    i = _index(tf, in_n, 3) - src
    scale = length / tf.maximum(count, 1.0)
    filterscale = tf.maximum(scale, 1.0)
    centre = (o + 0.5) * scale
    valid = (o >= 0.0) & (o < count)
    # BOX: Pillow's window [floor(c - h + 0.5), floor(c + h + 0.5)) with h = filterscale / 2,
    # and its filter's -0.5 < (i - c + 0.5) / filterscale <= 0.5, as integer bounds.
    half = 0.5 * filterscale
    lo = tf.maximum(tf.maximum(tf.floor(centre - half + 0.5), tf.floor(centre - 0.5 - half) + 1.0),
                    0.0)
    hi = tf.minimum(tf.minimum(tf.floor(centre + half + 0.5), tf.floor(centre - 0.5 + half) + 1.0),
                    length)
    hi = tf.where(valid, tf.maximum(hi, lo), lo)
    box = tf.cast((i >= lo) & (i < hi), tf.float32) / tf.maximum(hi - lo, 1.0)
    if bilinear is False:
        return box
    x = (i - centre + 0.5) / filterscale
    window = ((i >= tf.maximum(tf.floor(centre - filterscale + 0.5), 0.0))
              & (i < tf.minimum(tf.floor(centre + filterscale + 0.5), length)) & valid)
    triangle = tf.maximum(1.0 - tf.abs(x), 0.0) * tf.cast(window, tf.float32)
    triangle = triangle / tf.maximum(tf.reduce_sum(triangle, axis=3, keepdims=True), _EPS)
    return tf.where(bilinear, triangle, box)


def _resample(tf: Any, rows: Any, x: Any, cols: Any) -> Any:
    """``rows @ x @ cols^T`` of a plane with ``[1, 1, out, in]`` weights: a plane. Rank-3
    operands keep these BATCH_MATMUL: the converter turns a rank-2 matmul into
    FULLY_CONNECTED, which the int8 model would quantize with the classifier."""
    def squeeze(a: Any) -> Any:
        return tf.reshape(a, [1, int(a.shape[2]), int(a.shape[3])])

    picked = tf.matmul(squeeze(rows), squeeze(x))
    out = tf.matmul(picked, squeeze(cols), transpose_b=True)
    return tf.reshape(out, [1, 1, int(rows.shape[2]), int(cols.shape[2])])


def _pad(tf: Any, a: Any, r: int, value: float = 0.0) -> Any:
    """``np.pad(a, r, constant_values=value)`` of a plane (rows and columns)."""
    return tf.pad(a, [[0, 0], [0, 0], [r, r], [r, r]], constant_values=value)


def _stroke_width(tf: Any, a: Any) -> Any:
    """As preprocess._stroke_width: twice the ink area (``a > 0.5``) over its outline."""
    mask = tf.cast(a > 0.5, tf.float32)
    p = _pad(tf, mask, 1)
    inner = p[..., :-2, 1:-1] * p[..., 2:, 1:-1] * p[..., 1:-1, :-2] * p[..., 1:-1, 2:] * mask
    area = _scalar_op(tf, tf.reduce_sum, mask)
    outline = area - _scalar_op(tf, tf.reduce_sum, inner)
    return tf.where(area > 0.0, 2.0 * area / tf.maximum(outline, 1.0), 0.0)


def _dilate3(tf: Any, a: Any) -> Any:
    """Grey dilation with a 3 x 3 square (zero padding), made of MAXIMUM ops: MAX_POOL_2D
    would be quantized with a cnn's own pooling in the int8 model."""
    p = _pad(tf, a, 1)
    rows = tf.maximum(tf.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return tf.maximum(tf.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def _digit(tf: Any, g: Any, size: int) -> Any:
    """The MNIST pipeline on a grayscale plane ``[1, 1, S, S]`` in [0, 1]; returns
    ``[1, 1, size, size]``."""
    paper = _quantile(tf, _border(tf, g), 0.5)
    lo, hi = _scalar_op(tf, tf.reduce_min, g), _scalar_op(tf, tf.reduce_max, g)
    signed = tf.where(paper >= (lo + hi) / 2.0, paper - g, g - paper)
    peak = tf.maximum(_scalar_op(tf, tf.reduce_max, signed), _MIN_CONTRAST)
    # The noise's spread (median absolute deviation) is estimated on the picture sampled at
    # the model's resolution (every APP_SCALE-th row and column: 784 of 12,544 pixels for
    # MNIST) where numpy uses every pixel: a median over mostly paper barely moves, and the
    # two full-size TOPK sorts were 3/4 of the app model's time (4.2 ms -> 0.7 ms a picture).
    grid = signed[..., ::APP_SCALE, ::APP_SCALE]
    med = _quantile(tf, grid, 0.5)
    sigma = 1.4826 * _quantile(tf, tf.abs(grid - med), 0.5)
    ink = tf.maximum(signed, 0.0) / peak
    noise = tf.maximum(_quantile(tf, _border(tf, ink), 0.9), 5.0 * sigma / peak)
    floor = tf.clip_by_value(noise, _NOISE_FLOOR, _NOISE_CEIL)
    ink = tf.clip_by_value((ink - floor) / (1.0 - floor), 0.0, 1.0)

    r0, r1 = _mass_range(tf, _row_profile(tf, tf.reduce_sum, ink))
    c0, c1 = _mass_range(tf, _col_profile(tf, tf.reduce_sum, ink))
    return _fit_and_centre(tf, ink, r0, r1 - r0, c0, c1 - c0, size)


def _fit_and_centre(tf: Any, ink: Any, r0: Any, ch: Any, c0: Any, cw: Any, size: int) -> Any:
    """As preprocess._fit_box and _centre: the crop ``ink[r0:r0+ch, c0:c0+cw]`` on a work
    canvas of 4x the 20-px box (shrunk to it when larger, then normalised), strokes thinner
    than MNIST's thickened there, the longer side resampled to 20 px (BOX when shrinking,
    BILINEAR when enlarging), and pasted with its centre of mass at the frame's middle."""
    s = int(ink.shape[3])
    box = float(max(1, round(size * _BOX)))
    work = int(box) * _WORK_SCALE
    longest = tf.maximum(ch, cw)
    shrink = longest > work
    scale = tf.where(shrink, work / longest, 1.0)
    h1 = tf.maximum(tf.round(ch * scale), 1.0)
    w1 = tf.maximum(tf.round(cw * scale), 1.0)
    crop = _resample(tf, _pil_matrix(tf, work, s, 0.0, h1, r0, ch), ink,
                     _pil_matrix(tf, work, s, 0.0, w1, c0, cw))
    crop_max = _scalar_op(tf, tf.reduce_max, crop)
    crop = tf.where(shrink, crop / tf.maximum(crop_max, _EPS), crop)

    longest1 = tf.maximum(h1, w1)
    target = _MIN_STROKE * longest1 / work
    width = _stroke_width(tf, crop)
    grow = tf.where((width > 0.0) & (width < target), tf.round(target - width), 0.0)
    radius = tf.floor(grow / 2.0)  # the numpy kernel is round(...) | 1 = 2 * radius + 1
    region = (tf.cast(_index(tf, work, 2) < h1, tf.float32)
              * tf.cast(_index(tf, work, 3) < w1, tf.float32))
    once = _dilate3(tf, crop) * region
    twice = _dilate3(tf, once) * region  # radius <= 2: target <= 6 px, width >= 2 px
    crop = tf.where(radius >= 2.0, twice, tf.where(radius >= 1.0, once, crop))

    h = tf.maximum(tf.round(h1 * box / longest1), 1.0)
    w = tf.maximum(tf.round(w1 * box / longest1), 1.0)
    bilinear = (h >= h1) & (w >= w1)
    rows = _pil_matrix(tf, size, work, 0.0, h, 0.0, h1, bilinear)
    cols = _pil_matrix(tf, size, work, 0.0, w, 0.0, w1, bilinear)
    small = tf.clip_by_value(_resample(tf, rows, crop, cols), 0.0, 1.0)
    small = small / tf.maximum(_scalar_op(tf, tf.reduce_max, small), _EPS)

    total = _scalar_op(tf, tf.reduce_sum, small)
    rows_pos, cols_pos = _index(tf, size, 2), _index(tf, size, 3)  # cols_pos: profiles too
    cy = _scalar_op(tf, tf.reduce_sum, _row_profile(tf, tf.reduce_sum, small) * cols_pos)
    cx = _scalar_op(tf, tf.reduce_sum, _col_profile(tf, tf.reduce_sum, small) * cols_pos)
    cy = tf.where(total > 0.0, cy / tf.maximum(total, _EPS), (h - 1.0) / 2.0)
    cx = tf.where(total > 0.0, cx / tf.maximum(total, _EPS), (w - 1.0) / 2.0)
    centre = size / 2.0
    top = tf.clip_by_value(tf.round(centre - cy), 0.0, size - h)
    left = tf.clip_by_value(tf.round(centre - cx), 0.0, size - w)
    # Pasting is a shift: out[top + j, left + k] = small[j, k].
    shift_rows = tf.cast(tf.equal(rows_pos - top, cols_pos), tf.float32)
    shift_cols = tf.cast(tf.equal(rows_pos - left, cols_pos), tf.float32)
    return _resample(tf, shift_rows, small, shift_cols)


def _box_filter(tf: Any, a: Any, k: int, reduce: Any, pad: float) -> Any:
    """As preprocess._box_filter: a k x k max or min filter (``reduce`` tf.maximum /
    tf.minimum) of a plane, padded with ``pad``; element-wise ops, so the int8 model keeps
    it float. Windows double (1, 2, 4, 8, then the rest: 4 ops an axis for k = 11, not 10);
    max and min are exact, so the result is numpy's to the bit."""
    out = _pad(tf, a, k // 2, pad)
    for axis in (2, 3):
        cover = 1
        while cover < k:
            step = min(cover, k - cover)
            n = int(out.shape[axis]) - step
            head = out[..., :n, :] if axis == 2 else out[..., :n]
            tail = out[..., step:, :] if axis == 2 else out[..., step:]
            out = reduce(head, tail)
            cover += step
    return out


def _digit_found(tf: Any, g: Any, size: int) -> Any:
    """As preprocess.find_digit on a grayscale plane ``[1, 1, S, S]``: 1.0 (a digit) or 0.0,
    ``[1, 1, 1, 1]``.

    S is twice the rule's grid (2 x size), so the grid is a 2 x 2 average, what
    Pillow's BOX resize does for a factor of 2; the rest is ``ink_map`` and
    ``check_ink`` step for step, with :data:`DIGIT_RULE`'s thresholds.
    """
    rule = DIGIT_RULE
    side = rule.grid_side(size)
    if int(g.shape[3]) != 2 * side:
        raise ExportError(f"app picture {int(g.shape[3])} px; expected {2 * side} (2 x the grid)")
    grid = (g[..., 0::2, 0::2] + g[..., 1::2, 0::2]
            + g[..., 0::2, 1::2] + g[..., 1::2, 1::2]) / 4.0
    paper = _quantile(tf, _border(tf, grid), 0.5)
    lo, hi = _scalar_op(tf, tf.reduce_min, grid), _scalar_op(tf, tf.reduce_max, grid)
    v = tf.where(paper >= (lo + hi) / 2.0, grid, 1.0 - grid)
    k = rule.window_px(size)
    light = _box_filter(tf, _box_filter(tf, v, k, tf.maximum, 0.0), k, tf.minimum, 1.0)
    ink = tf.clip_by_value(1.0 - v / tf.maximum(light, 1e-3), 0.0, 1.0)
    mask = tf.cast(ink > rule.ink, tf.float32)
    count = _scalar_op(tf, tf.reduce_sum, mask)
    r0, r1 = _first_last(tf, _row_profile(tf, tf.reduce_max, mask) > 0.0)
    c0, c1 = _first_last(tf, _col_profile(tf, tf.reduce_max, mask) > 0.0)
    height = (r1 - r0 + 1.0) / side
    width = (c1 - c0 + 1.0) / side
    area = count / float(side * side)
    b = rule.band_px(size)
    edge = 1.0 - _scalar_op(tf, tf.reduce_sum, mask[..., b:-b, b:-b]) / tf.maximum(count, 1.0)
    density = area / tf.maximum(height * width, _EPS)
    found = ((count > 0.0) & (area >= rule.min_area) & (area <= rule.max_area)
             & (edge <= rule.max_edge) & (height >= rule.min_height)
             & (density >= rule.min_density))
    return tf.cast(found, tf.float32)


def _resize(tf: Any, x: Any, height: int, width: int, *, bilinear: bool) -> Any:
    """Resize a picture ``[S, S, C]`` to ``[1, height, width, C]`` as Pillow does (BOX
    for grayscale float pictures, antialiased BILINEAR for RGB: what ``preprocess_resize``
    calls): per channel ``rows @ plane @ cols^T``, the weights folded into constants by the
    converter."""
    s, c = int(x.shape[0]), int(x.shape[2])
    flag = tf.constant(bilinear)
    rows = tf.reshape(_pil_matrix(tf, height, s, 0.0, float(height), 0.0, float(s), flag),
                      [1, height, s])
    cols = tf.reshape(_pil_matrix(tf, width, s, 0.0, float(width), 0.0, float(s), flag),
                      [1, width, s])
    planes = tf.transpose(x, [2, 0, 1])  # [C, S, S]: one BATCH_MATMUL over the channels
    out = tf.matmul(tf.matmul(tf.tile(rows, [c, 1, 1]), planes),
                    tf.tile(cols, [c, 1, 1]), transpose_b=True)
    return tf.transpose(out, [1, 2, 0])[None]


def build_app_function(serving: Any, input: Mapping[str, Any], *, uint8: bool = False,
                       labels: Sequence[str] | None = None) -> Any:
    """The app graph as a ``tf.function``: ``image`` float32 ``[1, S, S, 3]`` (0-255) in.

    Args:
        serving: the loaded reference signature (takes pixel values in [0, 1]).
        input: ``metrics.json["input"]`` (layout, height, width, channels, preprocess).
        uint8: take the picture as uint8 instead (cast to float inside the graph).
        labels: the model's class names (a digit model's ``none`` answer goes to its own
            ``none`` class when it has one, else to an output after the K classes).

    Returns:
        A ``tf.function`` returning ``{"probabilities": [1, K']}``, K' =
        ``len(app_labels(labels, input))``.
    """
    import tensorflow as tf

    s = app_size(input)
    height, width, channels = int(input["height"]), int(input["width"]), int(input["channels"])
    digit = input.get("preprocess") == "mnist"
    if digit and (height != width or channels != 1):
        raise ExportError(
            f"input {height}x{width}x{channels} with preprocess 'mnist', expected a square "
            "1-channel digit model; fix: train with preprocess 'resize' for other inputs"
        )
    # ITU-R 601 luma in Pillow's fixed point (its "L" conversion), rounded to a level: one
    # BATCH_MATMUL [1, S*S, 3] @ [1, 3, 1] (a SUM over the channel axis was 3x slower).
    weights = tf.constant((np.array([19595, 38470, 7471]) / 65536.0).reshape(1, 3, 1),
                          tf.float32)
    function = serving.function
    names = [str(label) for label in labels] if labels is not None else []
    own_none = names.index(NONE_LABEL) if NONE_LABEL in names else None

    dtype = tf.uint8 if uint8 else tf.float32

    # No autograph: the graph has no tensor-dependent Python control flow to convert.
    @tf.function(input_signature=[tf.TensorSpec([1, s, s, 3], dtype, name="image")],
                 autograph=False)
    def app(image: Any) -> dict[str, Any]:
        pixels = tf.cast(image, tf.float32)
        luma = tf.matmul(tf.reshape(pixels, [1, s * s, 3]), weights)
        gray = tf.reshape(tf.floor(luma + 0.5), [1, 1, s, s]) / 255.0
        if digit:
            x = _digit(tf, gray, height)
        elif channels == 1:
            x = _resize(tf, tf.reshape(gray, [s, s, 1]), height, width, bilinear=False)
        else:
            x = _resize(tf, pixels[0] / 255.0, height, width, bilinear=True)
        x = tf.clip_by_value(x, 0.0, 1.0)
        flat = input["layout"] == "flat"
        shape = [1, height * width * channels] if flat else [1, height, width, channels]
        probs = function(image=tf.reshape(x, shape))["probabilities"]
        if not digit:
            return {"probabilities": probs}
        # No digit in the frame: probability 1 for `none`, 0 for every digit.
        found = tf.reshape(_digit_found(tf, gray, height), [1, 1])
        if own_none is None:
            return {"probabilities": tf.concat([probs * found, 1.0 - found], axis=1)}
        onehot = tf.one_hot([own_none], int(probs.shape[1]), dtype=tf.float32)
        return {"probabilities": probs * found + onehot * (1.0 - found)}

    return app


def convert_app(
    serving: Any,
    *,
    input: Mapping[str, Any],
    precision: Precision,
    labels: Sequence[str],
    metadata: Mapping[str, Any],
    calibration: np.ndarray | None = None,
) -> bytes:
    """Convert the app graph to a finished ``.tflite`` with TFLITE_METADATA and packed labels.

    Args:
        serving: the loaded reference signature.
        input: ``metrics.json["input"]``.
        precision: ``float32`` (float input 0-255) or ``int8`` (uint8 input, int8
            classifier, the preprocessing left in float).
        labels: the class names in output order.
        metadata: the ``edgeport`` JSON document to keep beside the standard entry.
        calibration: for ``int8``: uint8 RGB training pictures ``[N, S, S, 3]``.

    Returns:
        The ``.tflite`` bytes.

    Raises:
        ExportError: conversion failed, or the file uses a Flex / custom op.
    """
    import tensorflow as tf

    from .task_metadata import add_task_metadata
    from .tflite import finalize_tflite, tflite_ops

    precision = Precision(precision)
    if precision is Precision.FLOAT32:
        app = build_app_function(serving, input, labels=labels)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [app.get_concrete_function()], serving.module
        )
        raw = _convert(converter, precision)
    elif precision is Precision.INT8:
        raw = _convert_int8(serving, input, _calibration(calibration, app_size(input)), labels)
    else:
        raise ExportError(f"app model precision={precision.value!r}; expected float32 or int8")
    data = finalize_tflite(raw, metadata=metadata, outputs=("probabilities",))
    odd = [op for op in tflite_ops(data) if op.startswith(("Flex", "CUSTOM")) or op.islower()]
    if odd:
        raise ExportError(
            f"{APP_FILES[precision]} uses non-builtin ops {odd}; expected TFLite builtins only "
            "so MediaPipe, LiteRT.js and tflite-runtime run it; fix: report it"
        )
    return add_task_metadata(
        data,
        name=f"edgeport {metadata.get('model', 'model')} {metadata.get('dataset', '')}".strip(),
        labels=app_labels(labels, input),
        uint8_input=precision is Precision.INT8,
        mean=NORMALIZATION[0],
        std=NORMALIZATION[1],
    )


# Op types the int8 app model quantizes: the classifiers' layers. Every other op type in the
# graph is the preprocessing and stays float. RESHAPE is not here though classifiers use it:
# quantized, the preprocessing's reshapes carried its resampling weights and pictures in
# 8 bits (MediaPipe's agreement with edgeport-demo on digits on paper fell to 95.6 %).
_INT8_OPS = frozenset({
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "MEAN",
    "SOFTMAX",
})


def _convert_int8(serving: Any, input: Mapping[str, Any], pictures: np.ndarray,
                  labels: Sequence[str]) -> bytes:
    """uint8 picture in, float preprocessing, int8 classifier (selective quantization).

    A full-integer graph breaks the crop (a quantized DIV fails on a zero
    denominator; 8-bit pixel levels through TOPK and the area matrices lose the
    contrast stretch), so the preprocessing op types are denylisted in the
    converter's ``QuantizationDebugger``. It needs a SavedModel, so the app
    function is saved to a temporary folder first. Dynamic-range kernels are
    avoided: tflite-runtime 2.14 and the Task Library lack FULLY_CONNECTED v12.
    """
    import tempfile

    import tensorflow as tf

    from .tflite import tflite_ops

    app = build_app_function(serving, input, uint8=True, labels=labels)
    module = tf.Module()
    module.reference = serving.module  # keeps the variables the function reads
    module.app = app

    def representative_dataset() -> Iterator[dict[str, np.ndarray]]:
        for picture in pictures:
            yield {"image": picture[None]}

    with tempfile.TemporaryDirectory(prefix="edgeport-app-") as tmp:
        tf.saved_model.save(
            module, tmp, signatures={"serving_default": app.get_concrete_function()}
        )
        plain = _convert(tf.lite.TFLiteConverter.from_saved_model(tmp), Precision.FLOAT32)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=sorted(set(tflite_ops(plain)) - _INT8_OPS)
        )
        try:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative_dataset, debug_options=options
            )
            return bytes(debugger.get_nondebug_quantized_model())
        except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
            raise ExportError(
                f"app model int8 conversion failed: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; fix: report it"
            ) from e


def _calibration(pictures: np.ndarray | None, s: int) -> np.ndarray:
    if pictures is None or len(pictures) == 0:
        raise ExportError(
            "the int8 app model got no calibration pictures; expected uint8 [N, S, S, 3] "
            "training pictures; fix: pass calibration_samples > 0"
        )
    pictures = np.asarray(pictures, dtype=np.uint8)
    if pictures.shape[1:] != (s, s, 3):
        raise ExportError(
            f"calibration pictures have shape {list(pictures.shape)}, expected [N, {s}, {s}, 3]"
        )
    return pictures


def _convert(converter: Any, precision: Precision) -> bytes:
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ExportError(
            f"app model {precision.value} conversion failed: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; fix: report it"
        ) from e


def render_pictures(images: np.ndarray, input: Mapping[str, Any]) -> np.ndarray:
    """Render model-layout images in [0, 1] as the RGB pictures an app hands in.

    Digit datasets (light ink on black) become dark ink on white paper; other
    datasets keep their colours. Each image is enlarged to ``S x S`` (bilinear).

    Args:
        images: float32 ``[N, ...]`` in the model input layout, values in [0, 1].
        input: ``metrics.json["input"]``.

    Returns:
        uint8 ``[N, S, S, 3]``.
    """
    from PIL import Image

    s = app_size(input)
    height, width, channels = int(input["height"]), int(input["width"]), int(input["channels"])
    out = np.empty((len(images), s, s, 3), np.uint8)
    for i, image in enumerate(np.asarray(images).reshape(-1, height, width, channels)):
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        if channels == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        big = np.asarray(Image.fromarray(pixels).resize((s, s), Image.Resampling.BILINEAR))
        out[i] = 255 - big if input.get("preprocess") == "mnist" else big
    return out


APP_KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind(
        "app_float32", APP_FILES[Precision.FLOAT32], ArtifactFormat.TFLITE, Precision.FLOAT32
    ),
    ArtifactKind("app_int8", APP_FILES[Precision.INT8], ArtifactFormat.TFLITE, Precision.INT8),
)
APP_FAMILY = "app"
GOLDEN_PICTURES = "app_pictures"  # golden.npz key: uint8 [G, S, S, 3]
GOLDEN_APP_COUNT = 8  # 37 KB per 112-px picture: a few replay the file, parity covers the rest
GOLDEN_EMPTY_COUNT = 2  # and, for digit models, two empty frames replay the `none` answer


def golden_pictures(images: np.ndarray, input: Mapping[str, Any]) -> np.ndarray:
    """The golden app pictures: the first test images rendered, then (digit models) empty
    frames of paper (``export.frames``), so a replay covers the ``none`` answer too."""
    pictures = render_pictures(images[:GOLDEN_APP_COUNT], input)
    if input.get("preprocess") != "mnist":
        return pictures
    from .frames import empty_frames

    frames, _ = empty_frames(GOLDEN_EMPTY_COUNT, app_size(input), seed=0)
    return np.concatenate([pictures, frames])


def app_input(input: Mapping[str, Any], precision: Precision) -> dict[str, Any]:
    """The ``input`` description of an app model (its ``edgeport`` metadata and manifest).

    The picture is RGB pixel values 0-255; ``preprocess`` is ``"resize"`` because all
    a caller does is fit the picture to S x S; ``model_input`` keeps the wrapped
    model's own description.
    """
    s = app_size(input)
    return {
        "name": "image",
        "layout": "nhwc",
        "height": s,
        "width": s,
        "channels": 3,
        "dtype": "uint8" if precision is Precision.INT8 else "float32",
        "range": [0.0, 255.0],
        "normalization": "none (pixel values 0-255; TFLITE_METADATA mean 0, std 1)",
        "preprocess": "resize",
        "model_input": dict(input),
    }


def predict_app(model: bytes, pictures: np.ndarray, *, num_threads: int | None = None
                ) -> np.ndarray:
    """Run an app model on RGB pictures ``[N, S, S, 3]`` one at a time (it has batch 1);
    ``num_threads``: LiteRT's CPU threads (``None``: its default).

    Returns:
        float32 ``[N, K]`` probabilities.
    """
    from .tflite import make_interpreter

    interpreter = make_interpreter(model, num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for picture in pictures:
        interpreter.set_tensor(inp["index"], picture[None].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows).astype(np.float32)


def write_app_models(
    export_dir: Path,
    serving: Any,
    run: Any,
    *,
    golden_inputs: np.ndarray,
    calibration: np.ndarray | None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Write both app models into ``export_dir``; return manifest entries and golden arrays.

    Args:
        export_dir: the (temporary) export folder.
        serving: the loaded reference signature.
        run: the :class:`~edgeport.train.run_dir.RunInfo`.
        golden_inputs: the golden test images (model layout, [0, 1]), rendered as pictures.
        calibration: training images (model layout, [0, 1]) that calibrate the int8 file.

    Returns:
        ``(entries, arrays)``: manifest entries with ``"family": "app"``, and the
        ``golden.npz`` additions (``app_pictures`` and one probabilities array per file).
    """
    from edgeport.fileio import atomic_write_bytes

    from .manifest import artifact_entry
    from .metadata import build_metadata

    pictures = golden_pictures(golden_inputs, run.input)
    entries, arrays = [], {GOLDEN_PICTURES: pictures}
    names = app_labels(run.labels, run.input)
    calibration_pictures = None if calibration is None else render_pictures(calibration, run.input)
    for kind in APP_KINDS:
        doc = build_metadata(
            labels=names,
            input=app_input(run.input, kind.precision),
            precision=kind.precision,
            dataset=run.dataset,
            model=run.model,
        )
        data = convert_app(
            serving,
            input=run.input,
            precision=kind.precision,
            labels=run.labels,
            metadata=doc,
            calibration=calibration_pictures,
        )
        atomic_write_bytes(export_dir / kind.file, data)
        entries.append({**artifact_entry(export_dir / kind.file, kind), "family": APP_FAMILY,
                        "labels": names})
        arrays[f"{kind.stem}__probabilities"] = predict_app(data, pictures)
    return entries, arrays
