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
digit models (``input.preprocess == "mnist"``): grayscale; the paper level is
the median of the border and the picture is inverted when the paper is the
lighter end; contrast stretched so the strongest stroke is 1, background below
the noise floor dropped (its spread estimated on every 4th row and column, see
``_digit``); the ink's bounding box (minus 0.2 % stray mass at each
end, as in numpy) is resampled so its longer side is 20 px with *area*
interpolation matrices built from the box, ``rows @ ink @ cols^T`` (two
FULLY_CONNECTED / BATCH_MATMUL), then resampled again with the rows and columns
shifted so the centre of mass lands at (14, 14). What it leaves out: the
stroke thickening of thin pen lines (the numpy code dilates strokes thinner
than MNIST's at 4x scale) and the bilinear filter numpy uses when a tiny digit
is enlarged; the parity rows measure what that costs. For ``"resize"`` models
the graph converts to grayscale (1-channel models) and area-resizes.

S (:func:`app_size`) is 4x the model's side (112 for MNIST): the numpy
pipeline measures strokes at 4x the 20-px box (80 px), so a camera crop of
112 px keeps that detail for a digit filling 70 % of the frame, while the two
resampling matrices stay small (28x112).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError
from .formats import ArtifactFormat, ArtifactKind, Precision

__all__ = [
    "APP_FAMILY",
    "APP_FILES",
    "APP_KINDS",
    "GOLDEN_PICTURES",
    "NORMALIZATION",
    "app_input",
    "app_size",
    "build_app_function",
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
_EPS = 1e-12


def app_size(input: Mapping[str, Any]) -> int:
    """The side S of the square picture an app model takes (4x the model's larger side)."""
    return APP_SCALE * max(int(input["height"]), int(input["width"]))


def _quantile(tf: Any, x: Any, q: float) -> Any:
    """numpy.percentile(x, 100 q) (linear interpolation) of a flat tensor of static length."""
    n = int(x.shape[0])
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    frac = pos - lo
    # top_k sorts descending: ascending index i is descending index n - 1 - i.
    k = n - lo
    top = tf.math.top_k(x, k=k, sorted=True).values
    a = top[k - 1]
    if lo + 1 >= n or pos == lo:  # an exact rank: no interpolation
        return a
    return a + frac * (top[k - 2] - a)


def _border(tf: Any, a: Any) -> Any:
    return tf.concat([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]], axis=0)


def _mass_range(tf: Any, profile: Any) -> tuple[Any, Any]:
    """As preprocess._mass_range: first and one-past-last index holding the ink."""
    n = int(profile.shape[0])
    cum = tf.math.cumsum(profile)  # CUMSUM, a builtin since TFLite 2.5
    total = cum[-1]
    lo = tf.reduce_sum(tf.cast(cum <= total * _MASS_TRIM, tf.float32))
    hi = tf.reduce_sum(tf.cast(cum < total * (1 - _MASS_TRIM), tf.float32)) + 1.0
    idx = tf.range(n, dtype=tf.float32)
    has = profile > 0
    first = tf.reduce_min(tf.where(has, idx, float(n)))
    last = tf.reduce_max(tf.where(has, idx, -1.0))
    lo = tf.maximum(lo, first)
    hi = tf.minimum(tf.maximum(hi, lo + 1.0), last + 1.0)
    return lo, hi


def _area_matrix(
    tf: Any, out_n: int, in_n: int, start: Any, count: Any, src: Any, length: Any
) -> Any:
    """``[out_n, in_n]`` area-resampling weights.

    Output cells ``start .. start + count - 1`` cover the source interval
    ``[src, src + length)`` in ``count`` equal parts; each weight is the overlap of
    source pixel ``i`` with the cell, over the cell's width (PIL's BOX filter).
    """
    o = tf.range(out_n, dtype=tf.float32)[:, None] - start
    i = tf.range(in_n, dtype=tf.float32)[None, :]
    step = length / tf.maximum(count, 1.0)
    a = src + o * step
    b = a + step
    overlap = tf.maximum(tf.minimum(i + 1.0, b) - tf.maximum(i, a), 0.0)
    inside = tf.cast((o >= 0.0) & (o < count), tf.float32)
    return overlap * inside / tf.maximum(step, _EPS)


def _digit(tf: Any, g: Any, size: int) -> Any:
    """The MNIST pipeline on a grayscale ``[S, S]`` picture in [0, 1]; returns ``[size, size]``."""
    s = int(g.shape[0])
    flat = tf.reshape(g, [-1])
    border = _border(tf, g)
    paper = _quantile(tf, border, 0.5)
    lo, hi = tf.reduce_min(flat), tf.reduce_max(flat)
    signed = tf.where(paper >= (lo + hi) / 2.0, paper - g, g - paper)
    peak = tf.maximum(tf.reduce_max(signed), _MIN_CONTRAST)
    # The noise's spread (median absolute deviation) is estimated on the picture sampled at
    # the model's resolution (every APP_SCALE-th row and column: 784 of 12,544 pixels for
    # MNIST) where numpy uses every pixel: a median over mostly paper barely moves, and the
    # two full-size TOPK sorts were 3/4 of the app model's time (4.2 ms -> 0.7 ms a picture).
    grid = tf.reshape(signed[::APP_SCALE, ::APP_SCALE], [-1])
    med = _quantile(tf, grid, 0.5)
    sigma = 1.4826 * _quantile(tf, tf.abs(grid - med), 0.5)
    ink = tf.maximum(signed, 0.0) / peak
    noise = tf.maximum(_quantile(tf, _border(tf, ink), 0.9), 5.0 * sigma / peak)
    floor = tf.clip_by_value(noise, _NOISE_FLOOR, _NOISE_CEIL)
    ink = tf.clip_by_value((ink - floor) / (1.0 - floor), 0.0, 1.0)

    r0, r1 = _mass_range(tf, tf.reduce_sum(ink, axis=1))
    c0, c1 = _mass_range(tf, tf.reduce_sum(ink, axis=0))
    ch, cw = r1 - r0, c1 - c0
    box = float(max(1, round(size * _BOX)))
    longest = tf.maximum(ch, cw)
    h = tf.maximum(tf.round(ch * box / longest), 1.0)
    w = tf.maximum(tf.round(cw * box / longest), 1.0)

    def place(top: Any, left: Any) -> Any:
        rows = _area_matrix(tf, size, s, top, h, r0, ch)
        cols = _area_matrix(tf, size, s, left, w, c0, cw)
        # Rank-3 operands keep these BATCH_MATMUL: the converter turns a rank-2 matmul into
        # FULLY_CONNECTED, which the int8 model would then quantize with the classifier.
        picked = tf.matmul(rows[None], ink[None])
        return tf.matmul(picked, cols[None], transpose_b=True)[0]

    small = tf.clip_by_value(place(0.0, 0.0), 0.0, 1.0)
    small = small / tf.maximum(tf.reduce_max(small), _EPS)
    total = tf.reduce_sum(small)
    idx = tf.range(size, dtype=tf.float32)
    cy = tf.reduce_sum(tf.reduce_sum(small, axis=1) * idx) / tf.maximum(total, _EPS)
    cx = tf.reduce_sum(tf.reduce_sum(small, axis=0) * idx) / tf.maximum(total, _EPS)
    centre = size / 2.0
    top = tf.clip_by_value(tf.round(centre - cy), 0.0, size - h)
    left = tf.clip_by_value(tf.round(centre - cx), 0.0, size - w)
    out = tf.clip_by_value(place(top, left), 0.0, 1.0)
    return out / tf.maximum(tf.reduce_max(out), _EPS)


def _resize(tf: Any, x: Any, height: int, width: int) -> Any:
    """Area-resize ``[S, S, C]`` to ``[height, width, C]`` (two matmuls per channel)."""
    s = int(x.shape[0])
    rows = tf.constant(_static_area(height, s))
    cols = tf.constant(_static_area(width, s))
    chans = [
        tf.matmul(tf.matmul(rows, x[:, :, c]), cols, transpose_b=True) for c in range(x.shape[2])
    ]
    return tf.stack(chans, axis=-1)


def _static_area(out_n: int, in_n: int) -> np.ndarray:
    step = in_n / out_n
    a = np.arange(out_n)[:, None] * step
    i = np.arange(in_n)[None, :]
    overlap = np.maximum(np.minimum(i + 1.0, a + step) - np.maximum(i, a), 0.0)
    return (overlap / step).astype(np.float32)


def build_app_function(serving: Any, input: Mapping[str, Any], *, uint8: bool = False) -> Any:
    """The app graph as a ``tf.function``: ``image`` float32 ``[1, S, S, 3]`` (0-255) in.

    Args:
        serving: the loaded reference signature (takes pixel values in [0, 1]).
        input: ``metrics.json["input"]`` (layout, height, width, channels, preprocess).
        uint8: take the picture as uint8 instead (cast to float inside the graph).

    Returns:
        A ``tf.function`` returning ``{"probabilities": [1, K]}``.
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
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)  # ITU-R 601, as PIL's "L"
    function = serving.function

    dtype = tf.uint8 if uint8 else tf.float32

    @tf.function(input_signature=[tf.TensorSpec([1, s, s, 3], dtype, name="image")])
    def app(image: Any) -> dict[str, Any]:
        rgb = tf.cast(image[0], tf.float32) / 255.0
        gray = tf.reduce_sum(rgb * weights, axis=-1)
        if digit:
            x = _digit(tf, gray, height)[:, :, None]
        elif channels == 1:
            x = _resize(tf, gray[:, :, None], height, width)
        else:
            x = _resize(tf, rgb, height, width)
        x = tf.clip_by_value(x, 0.0, 1.0)
        shape = [1, height * width * channels] if input["layout"] == "flat" else [1, *x.shape]
        return {"probabilities": function(image=tf.reshape(x, shape))["probabilities"]}

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
        app = build_app_function(serving, input)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [app.get_concrete_function()], serving.module
        )
        raw = _convert(converter, precision)
    elif precision is Precision.INT8:
        raw = _convert_int8(serving, input, _calibration(calibration, app_size(input)))
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
        labels=labels,
        uint8_input=precision is Precision.INT8,
        mean=NORMALIZATION[0],
        std=NORMALIZATION[1],
    )


# Op types the int8 app model quantizes: the classifiers' layers. Every other op type in the
# graph is the preprocessing and stays float.
_INT8_OPS = frozenset({
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "MEAN",
    "RESHAPE",
    "SOFTMAX",
})


def _convert_int8(serving: Any, input: Mapping[str, Any], pictures: np.ndarray) -> bytes:
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

    app = build_app_function(serving, input, uint8=True)
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


def predict_app(model: bytes, pictures: np.ndarray) -> np.ndarray:
    """Run an app model on RGB pictures ``[N, S, S, 3]`` one at a time (it has batch 1).

    Returns:
        float32 ``[N, K]`` probabilities.
    """
    from .tflite import make_interpreter

    interpreter = make_interpreter(model)
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

    pictures = render_pictures(golden_inputs[:GOLDEN_APP_COUNT], run.input)
    entries, arrays = [], {GOLDEN_PICTURES: pictures}
    calibration_pictures = None if calibration is None else render_pictures(calibration, run.input)
    for kind in APP_KINDS:
        doc = build_metadata(
            labels=run.labels,
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
        entries.append({**artifact_entry(export_dir / kind.file, kind), "family": APP_FAMILY})
        arrays[f"{kind.stem}__probabilities"] = predict_app(data, pictures)
    return entries, arrays
