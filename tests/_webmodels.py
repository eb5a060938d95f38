"""A stand-in app model for the browser tests, until issue 10's app models are on main.

Usage (from a test)::

    from _webmodels import ensure_app_model
    ensure_app_model(run_dir)      # adds RUN/export/model_app_{float32,int8}.tflite if missing

The stand-in follows the app-model contract of the brief as far as the page and the
browser gate see it: one input ``[1, 28, 28, 3]`` float32 RGB pixel values 0-255,
one output ``probabilities`` ``[1, K]``, batch 1, listed in ``manifest.json`` with
``"family": "app"``; the int8 twin takes uint8 pixels and answers uint8 probabilities
(scale 1/256), calibrated on 200 training digits, half of them inverted. Their
in-graph preprocessing is the minimum: grayscale, and invert when the border is light
(dark ink on paper), then the run's own SavedModel. The real app models also crop and
centre the digit; the tests draw digits already at MNIST's geometry so that both
classify them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

APP_FILE = "model_app_float32.tflite"
APP_INT8_FILE = "model_app_int8.tflite"


def ensure_app_model(run_dir: str | os.PathLike[str]) -> Path:
    """Add the stand-in app model to ``RUN/export`` unless an app model is already listed.

    Returns:
        The export folder.
    """
    export_dir = Path(run_dir) / "export"
    manifest_path = export_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if any(a.get("family") == "app" for a in manifest["artifacts"]):
        return export_dir
    from edgeport.export.formats import ArtifactFormat, ArtifactKind, Precision
    from edgeport.export.manifest import artifact_entry, write_manifest

    for file, precision in ((APP_FILE, Precision.FLOAT32), (APP_INT8_FILE, Precision.INT8)):
        (export_dir / file).write_bytes(_convert(Path(run_dir) / "saved_model", precision))
        kind = ArtifactKind(file, file, ArtifactFormat.TFLITE, precision)
        manifest["artifacts"].append({**artifact_entry(export_dir / file, kind), "family": "app"})
    write_manifest(export_dir, manifest)
    return export_dir


def _convert(saved_model: Path, precision: Any) -> bytes:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))  # keep: the signature needs its variables
    serving = loaded.signatures["serving_default"]
    spec = serving.structured_input_signature[1]["image"]
    flat = len(spec.shape) == 2

    @tf.function(input_signature=[tf.TensorSpec([1, 28, 28, 3], tf.float32, name="image")])
    def app(image: tf.Tensor) -> dict[str, tf.Tensor]:
        gray = tf.reduce_mean(image, axis=-1) / 255.0  # [1, 28, 28]
        border = tf.concat([gray[:, 0, :], gray[:, -1, :], gray[:, :, 0], gray[:, :, -1]], 1)
        light_paper = tf.reduce_mean(border) > 0.5
        x = tf.where(light_paper, 1.0 - gray, gray)
        x = tf.reshape(x, [1, 784]) if flat else tf.reshape(x, [1, 28, 28, 1])
        return {"probabilities": serving(image=x)["probabilities"]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [app.get_concrete_function()], trackable_obj=loaded
    )
    if precision.value == "int8":
        from _runs import load_mnist

        x, _ = load_mnist("train")
        rgb = np.repeat(x[:200].reshape(-1, 28, 28, 1) * 255, 3, axis=-1).astype(np.float32)
        rgb[1::2] = 255 - rgb[1::2]  # half as dark ink on paper, or the inversion saturates
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([img[None]] for img in rgb)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()
