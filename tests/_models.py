"""Tiny real models for the mobile_demo tests (a helper module, not a conftest).

``build_tiny_export(root)`` writes a folder laid out like ``RUN/export/`` in
docs/contracts.md: ``model_float32.tflite``, ``model_float16.tflite``,
``model_dynamic_int8.tflite``, ``model_int8.tflite`` (uint8 input and outputs),
``model.onnx``, ``labels.txt``, ``manifest.json`` (labels and input only) and
``golden.npz`` (written by the exporter's own ``export.golden.make_golden``, plus
``reference__probabilities`` from the tf.function), all
from one ``tf.function`` ``image[?, 784] -> {probabilities, logits}`` with
fixed weights, each model carrying the ``"edgeport"`` metadata document. Tests
that take an export folder therefore also run on the real trained+exported
MNIST run (conftest's ``exported_run``).

TensorFlow is imported inside the functions: the device-side tests that only
need the files never pay for it once the folder exists.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

H, W, C = 28, 28, 1
D = H * W * C
K = 10
LABELS = [str(i) for i in range(K)]
INPUT_DESC: dict[str, Any] = {
    "name": "image",
    "layout": "flat",
    "height": H,
    "width": W,
    "channels": C,
    "dtype": "float32",
    "range": [0.0, 1.0],
    "normalization": "pixel / 255",
    "preprocess": "mnist",
}
ARTIFACTS = {
    "model_float32.tflite": "float32",
    "model_float16.tflite": "float16",
    "model_dynamic_int8.tflite": "dynamic_int8",
    "model_int8.tflite": "int8",
    "model.onnx": "float32",
}
_CACHE: dict[str, Path] = {}


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed weights of the tiny softmax classifier."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.1, size=(D, K)).astype(np.float32)
    b = rng.normal(0.0, 0.1, size=(K,)).astype(np.float32)
    return w, b


def pixel_batch(n: int, *, seed: int = 1) -> np.ndarray:
    """MNIST-like inputs: mostly zero, the rest whole multiples of 1/255."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, D))
    pixels[rng.random((n, D)) < 0.8] = 0
    return (pixels / 255.0).astype(np.float32)


def make_function(batch: int | None = None) -> Any:
    """The reference ``tf.function``: ``image[batch, 784] -> {probabilities, logits}``.

    ``batch=None`` (the contract) makes the batch dynamic.
    """
    import tensorflow as tf

    w, b = weights()

    @tf.function(input_signature=[tf.TensorSpec([batch, D], tf.float32, name="image")])
    def serve(image: Any) -> dict[str, Any]:
        # Constants built inside the body: captured eager tensors would become
        # extra graph inputs in the ONNX conversion.
        logits = tf.matmul(image, tf.constant(w)) + tf.constant(b)
        return {"probabilities": tf.nn.softmax(logits), "logits": logits}

    return serve


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the reference ``tf.function`` on ``x``."""
    out = make_function()(x)
    return {k: v.numpy() for k, v in out.items()}


def metadata(precision: str) -> dict[str, Any]:
    """The contract's embedded metadata document for one precision."""
    return {
        "format_version": 1,
        "labels": LABELS,
        "input": INPUT_DESC,
        "precision": precision,
        "dataset": "tiny",
        "model": "softmax",
    }


def add_tflite_metadata(model: bytes, entries: dict[str, bytes]) -> bytes:
    """Append ``Model.metadata`` entries (name -> buffer bytes) to a .tflite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    if obj.metadata is None:
        obj.metadata = []
    for name, data in entries.items():
        buf = schema.BufferT()
        buf.data = list(data)
        obj.buffers.append(buf)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(obj.buffers) - 1
        obj.metadata.append(meta)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def convert_tflite(precision: str = "float32", *, batch: int | None = None) -> bytes:
    """Convert the reference function to TFLite in one of the contract's precisions."""
    import tensorflow as tf

    # Through a SavedModel, as the exporter does, so the file carries the
    # ``serving_default`` signature that names the outputs.
    module = tf.Module()
    module.serve = make_function(batch)
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if precision == "int8":
            from edgeport.export.tflite import set_full_integer

            set_full_integer(converter, pixel_batch(64, seed=2))  # the exporter's own settings
        elif precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision != "float32":
            raise ValueError(
                f"precision={precision!r}; expected float32, float16, dynamic_int8 or int8"
            )
        return bytes(converter.convert())


def convert_onnx(meta: dict[str, Any] | None = None) -> bytes:
    """Convert the reference function to ONNX (opset 17) with optional edgeport metadata."""
    import tensorflow as tf
    import tf2onnx

    fn = make_function()
    proto, _ = tf2onnx.convert.from_function(
        fn, input_signature=[tf.TensorSpec([None, D], tf.float32, name="image")], opset=17
    )
    if meta is not None:
        prop = proto.metadata_props.add()
        prop.key = "edgeport"
        prop.value = json.dumps(meta)
    return proto.SerializeToString()


def tiny_export_dir(factory: Any) -> Path:
    """Build the tiny export folder once per test session (``factory``: tmp_path_factory)."""
    if "export" not in _CACHE:
        _CACHE["export"] = build_tiny_export(factory.mktemp("tiny_export"))
    return _CACHE["export"]


def bare_model_dir(factory: Any) -> Path:
    """A folder with ``model.tflite`` without edgeport metadata and nothing beside it."""
    if "bare" not in _CACHE:
        root = factory.mktemp("bare_model")
        atomic_write_bytes(root / "model.tflite", convert_tflite("float32"))
        _CACHE["bare"] = root
    return _CACHE["bare"]


def build_tiny_export(root: Path, *, golden_count: int = 32) -> Path:
    """Write a contract-shaped export folder into ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, precision in ARTIFACTS.items():
        meta = metadata(precision)
        if name.endswith(".tflite"):
            blob = add_tflite_metadata(
                convert_tflite(precision), {"edgeport": json.dumps(meta).encode("utf-8")}
            )
        else:
            blob = convert_onnx(meta)
        atomic_write_bytes(root / name, blob)
    atomic_write_text(root / "labels.txt", "\n".join(LABELS) + "\n")
    atomic_write_json(
        root / "manifest.json",
        {"format_version": 1, "labels": LABELS, "input": INPUT_DESC, "artifacts": []},
    )
    from edgeport.export.formats import ARTIFACT_KINDS
    from edgeport.export.golden import make_golden, write_golden

    x = pixel_batch(golden_count, seed=3)
    ref = reference(x)
    labels = ref["probabilities"].argmax(axis=1).astype(np.int64)
    kinds = [k for k in ARTIFACT_KINDS if k.file in ARTIFACTS]
    golden = make_golden(root, kinds, inputs=x, labels=labels)
    golden["reference__probabilities"] = ref["probabilities"]
    write_golden(root / "golden.npz", golden)
    return root


def draw_digit(
    size: tuple[int, int] = (28, 28),
    *,
    box: tuple[float, float, float, float] = (0.3, 0.2, 0.7, 0.8),
    shape: str = "seven",
    width: float = 0.08,
    dark_on_light: bool = True,
    mode: str = "L",
) -> Any:
    """Draw a digit-like figure (``seven``, ``zero`` or ``one``) with Pillow.

    Args:
        size: picture ``(width, height)`` in pixels.
        box: where the figure goes, as fractions ``(left, top, right, bottom)``.
        shape: which figure.
        width: stroke width as a fraction of the box height.
        dark_on_light: black ink on white paper, else white on black.
        mode: ``L``, ``RGB`` or ``RGBA`` (RGBA: transparent paper, opaque ink).
    """
    from PIL import Image, ImageDraw

    w, h = size
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    stroke = max(1, round(width * (y1 - y0)))
    img = Image.new("L", size, paper)
    d = ImageDraw.Draw(img)
    if shape == "seven":
        d.line([(x0, y0), (x1, y0), (x0 + 0.35 * (x1 - x0), y1)], fill=ink, width=stroke)
    elif shape == "zero":
        d.ellipse([x0, y0, x1, y1], outline=ink, width=stroke)
    elif shape == "one":
        xm = (x0 + x1) / 2
        d.line(
            [(xm - 0.2 * (x1 - x0), y0 + 0.15 * (y1 - y0)), (xm, y0), (xm, y1)],
            fill=ink,
            width=stroke,
        )
    else:
        raise ValueError(f"shape={shape!r}; expected 'seven', 'zero' or 'one'")
    if mode == "RGBA":
        alpha = img.point(lambda v: 255 if v == ink else round(abs(v - paper)))
        rgba = Image.new("RGBA", size, (ink, ink, ink, 0))
        rgba.putalpha(alpha)
        return rgba
    return img.convert(mode)
