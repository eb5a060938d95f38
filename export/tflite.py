"""Convert a run's SavedModel to TFLite at four precisions.

Usage::

    from edgeport.export.serving import load_serving
    from edgeport.export.tflite import convert_tflite
    data = convert_tflite(load_serving("RUN/saved_model"), precision=Precision.INT8,
                          metadata=doc, calibration_images=x_train_sample)

``float32`` is the plain conversion; ``float16`` stores float16 weights;
``dynamic_int8`` stores int8 weights and quantizes activations at run time;
``int8`` is full-integer with a uint8 input (scale 1/255, zero point 0, i.e.
the raw pixel values) and uint8 outputs, calibrated on training images.

The converter's output is then rewritten with ``flatbuffer_utils``: the input
tensor is renamed ``image`` and the outputs ``probabilities`` (first) and
``logits`` in both the subgraph and the ``serving_default`` signature, and the
JSON metadata document is added as a ``Model.metadata`` entry named
``"edgeport"``. Conversion is byte-deterministic for the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgeport.mobile_demo.tflite_meta import parse_metadata, parse_operators, parse_ops

from .errors import ExportError
from .formats import Precision
from .metadata import METADATA_KEY, decode_metadata, encode_metadata
from .serving import INPUT_NAME, OUTPUT_NAMES, Serving

__all__ = [
    "INT8_INPUT_SCALE",
    "check_tflite",
    "convert_tflite",
    "finalize_tflite",
    "integer_only_problems",
    "make_interpreter",
    "read_tflite_metadata",
    "tflite_ops",
    "tflite_tensor_details",
]

INT8_INPUT_SCALE = 1.0 / 255.0  # uint8 input = raw pixel value
_SCALE_ATOL = 1e-9  # float32(1/255) differs from 1/255 by 2.3e-10
_INTEGER_TYPES = ("UINT8", "INT8", "INT16", "INT32", "INT64")  # INT32 holds the biases
_CHECK_BATCHES = (1, 7)


def convert_tflite(
    serving: Serving,
    *,
    precision: Precision,
    metadata: Mapping[str, Any],
    calibration_images: np.ndarray | None = None,
) -> bytes:
    """Convert ``serving_default`` to a finished, checked TFLite flatbuffer.

    Args:
        serving: the loaded signature (:func:`export.serving.load_serving`).
        precision: one of the four :class:`Precision` values.
        metadata: the JSON metadata document to embed.
        calibration_images: for ``int8`` only: float32 training images in
            [0, 1] in the model's input layout (class-balanced, seeded; never
            the test split).

    Returns:
        The ``.tflite`` bytes.

    Raises:
        ExportError: the converter failed, ``int8`` got no calibration images,
            or the result breaks the contract (names, integer-only, scales).
    """
    import tensorflow as tf

    precision = Precision(precision)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.function], serving.module)
    if precision is not Precision.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if precision is Precision.INT8:
        set_full_integer(converter, _calibration(calibration_images, serving.input_shape))
    try:
        raw = converter.convert()
    except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ExportError(
            f"TFLite {precision.value} conversion failed: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; expected a model of "
            "builtin TFLite ops; fix: simplify the model or export without this format"
        ) from e
    data = finalize_tflite(raw, metadata=metadata)
    problems = check_tflite(data, precision=precision, input_shape=serving.input_shape)
    if problems:
        raise ExportError(
            f"model_{precision.value}.tflite breaks the export contract: {'; '.join(problems)}"
        )
    return data


def finalize_tflite(
    model: bytes, *, metadata: Mapping[str, Any], outputs: Sequence[str] = OUTPUT_NAMES
) -> bytes:
    """Rename the I/O tensors, order the outputs, and embed the metadata document.

    Args:
        model: a converter's output with one subgraph and its ``serving_default``
            signature (inputs ``image``; outputs ``probabilities``, ``logits``).
        metadata: the document stored under ``Model.metadata["edgeport"]``, the only
            metadata entry left (the converter's entries are removed).
        outputs: the signature's output names, in file order (app models: only
            ``probabilities``).

    Returns:
        The rewritten flatbuffer.

    Raises:
        ExportError: the signature does not have the expected names.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    _name_signature_io(obj, tuple(outputs))
    _replace_metadata(obj, metadata)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def _name_signature_io(obj: Any, names: tuple[str, ...]) -> None:
    """Check the one signature, name its I/O tensors, and order the outputs as ``names``."""
    sigs = obj.signatureDefs or []
    if len(sigs) != 1:
        raise ExportError(
            f"the converter wrote {len(sigs)} signatures, expected 1 (serving_default); "
            "fix: export a SavedModel with only that signature"
        )
    sig = sigs[0]
    subgraph = obj.subgraphs[sig.subgraphIndex]
    inputs = {_text(t.name): t for t in sig.inputs}
    outputs = {_text(t.name): t for t in sig.outputs}
    if set(inputs) != {INPUT_NAME} or set(outputs) != set(names):
        raise ExportError(
            f"TFLite signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
            f"expected ['{INPUT_NAME}'] and {sorted(names)}; fix: re-train so the "
            "serving_default signature follows docs/contracts.md"
        )
    order = [INPUT_NAME, *names]
    tensors = {**inputs, **outputs}
    if sorted(subgraph.inputs) != [inputs[INPUT_NAME].tensorIndex] or sorted(
        subgraph.outputs
    ) != sorted(outputs[n].tensorIndex for n in names):
        raise ExportError(
            "TFLite subgraph I/O does not match its signature; expected one input and the two "
            "signature outputs; fix: report this converter output as a bug"
        )
    for name in order:
        subgraph.tensors[tensors[name].tensorIndex].name = name.encode()
    sig.inputs = [inputs[INPUT_NAME]]
    sig.outputs = [outputs[n] for n in names]
    subgraph.inputs = [inputs[INPUT_NAME].tensorIndex]
    subgraph.outputs = [outputs[n].tensorIndex for n in names]


def _replace_metadata(obj: Any, metadata: Mapping[str, Any]) -> None:
    """Make ``metadata`` the model's only metadata entry, under :data:`METADATA_KEY`."""
    from tensorflow.lite.python import schema_py_generated as fb

    # The converter's own entries (min_runtime_version, CONVERSION_METADATA) are dropped:
    # no interpreter reads them, the manifest records the converter version instead, and
    # they cost ~210 bytes, 2 % of the int8 model. Their buffers stay, emptied, so every
    # other buffer index remains valid.
    for m in obj.metadata or []:
        obj.buffers[m.buffer].data = None
    entries: list = []
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(encode_metadata(metadata), dtype=np.uint8)
    obj.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name = METADATA_KEY.encode()
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = [*entries, entry]


def read_tflite_metadata(model: bytes) -> dict[str, Any]:
    """Read the ``"edgeport"`` metadata document back from a ``.tflite`` file's bytes.

    Raises:
        ExportError: the file has no ``"edgeport"`` entry.
    """
    entries = parse_metadata(model)
    if METADATA_KEY not in entries:
        raise ExportError(
            f"TFLite model has no {METADATA_KEY!r} metadata entry; expected one written by "
            "`edgeport export`; fix: re-export the run"
        )
    return decode_metadata(entries[METADATA_KEY])


def tflite_ops(model: bytes) -> list[str]:
    """The sorted, distinct operator names of every subgraph (``["FULLY_CONNECTED", ...]``)."""
    return parse_ops(model)


def integer_only_problems(model: bytes) -> list[str]:
    """List every operator of a full-integer model that touches a float tensor.

    A DEQUANTIZE, or any op with a float input or output, means some of the
    graph between the uint8 input and the uint8 outputs runs in float.

    Returns:
        One line per offending op; empty when the model is integer-only.
    """
    problems = []
    for index, (name, types) in enumerate(parse_operators(model)):
        floats = sorted({t for t in types if t not in _INTEGER_TYPES})
        if name == "DEQUANTIZE" or floats:
            what = f"has {', '.join(floats)} tensors" if floats else "dequantizes to float"
            problems.append(f"op {index} {name} {what}")
    return problems


def make_interpreter(model: bytes, *, num_threads: int | None = None) -> Any:
    """A LiteRT interpreter for ``model`` (``tf.lite.Interpreter`` if LiteRT is missing);
    ``num_threads``: CPU threads (``None``: the runtime's default)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the export environment ships ai-edge-litert
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=bytes(model), num_threads=num_threads)


def tflite_tensor_details(model: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensors as the interpreter reports them, in manifest form.

    Returns:
        ``(inputs, outputs)``, each a list of ``{"name", "shape", "dtype",
        "scale", "zero_point"}``; ``shape`` uses -1 for the dynamic batch and
        ``scale``/``zero_point`` are ``None`` for float tensors.
    """
    interpreter = make_interpreter(model)
    return (
        [_detail(d) for d in interpreter.get_input_details()],
        [_detail(d) for d in interpreter.get_output_details()],
    )


def check_tflite(model: bytes, *, precision: Precision, input_shape: tuple[int, ...]) -> list[str]:
    """Check a finished ``.tflite`` against the contract; a sanity check, not parity.

    Checks the I/O names and order, the dtypes for the precision, the int8
    input quantization (scale 1/255, zero point 0) and integer-only graph, the
    metadata entry, and that batch 1 and batch 7 run with finite outputs of
    shape ``[batch, K]`` after ``resize_tensor_input``.

    Returns:
        The problems found, one line each; empty when the file is good.
    """
    precision = Precision(precision)
    problems: list[str] = []
    inputs, outputs = tflite_tensor_details(model)
    names = ([d["name"] for d in inputs], [d["name"] for d in outputs])
    if names != ([INPUT_NAME], list(OUTPUT_NAMES)):
        problems.append(f"I/O names {names}, expected (['image'], {list(OUTPUT_NAMES)})")
    io_dtype = "uint8" if precision is Precision.INT8 else "float32"
    dtypes = {d["dtype"] for d in inputs + outputs}
    if dtypes != {io_dtype}:
        problems.append(f"I/O dtypes {sorted(dtypes)}, expected {io_dtype}")
    if precision is Precision.INT8 and inputs:
        scale, zero_point = inputs[0]["scale"], inputs[0]["zero_point"]
        if scale is None or abs(scale - INT8_INPUT_SCALE) > _SCALE_ATOL or zero_point != 0:
            problems.append(f"input scale {scale} zero point {zero_point}, expected 1/255 and 0")
        problems.extend(integer_only_problems(model))
    try:
        read_tflite_metadata(model)
    except ExportError as e:
        problems.append(str(e))
    interpreter = make_interpreter(model)
    index = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(0)
    for batch in _CHECK_BATCHES:
        interpreter.resize_tensor_input(index, [batch, *input_shape])
        interpreter.allocate_tensors()
        x = rng.integers(0, 256, size=(batch, *input_shape))
        x = x.astype(np.uint8) if io_dtype == "uint8" else (x / 255.0).astype(np.float32)
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            y = interpreter.get_tensor(detail["index"])
            if y.ndim != 2 or y.shape[0] != batch or not np.all(np.isfinite(y)):
                problems.append(f"batch {batch}: output {detail['name']} has shape {y.shape}")
    return problems


def set_full_integer(converter: Any, images: np.ndarray) -> None:
    """Full-integer settings on a TFLite converter (the one place they are written):
    calibration on ``images`` (one picture a step), int8 kernels only, uint8 input and output
    (the contract of ``model_int8.tflite``)."""
    import tensorflow as tf

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8


def _calibration(images: np.ndarray | None, input_shape: tuple[int, ...]) -> np.ndarray:
    if images is None or len(images) == 0:
        raise ExportError(
            "int8 export got no calibration images; expected float32 training images in "
            "[0, 1]; fix: pass calibration_samples > 0 and a training split"
        )
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] != tuple(input_shape):
        raise ExportError(
            f"calibration images have shape {list(images.shape)}, expected "
            f"[N, {', '.join(map(str, input_shape))}]; fix: load them in the model input layout"
        )
    if images.min() < 0.0 or images.max() > 1.0:
        raise ExportError(
            f"calibration images span [{images.min():g}, {images.max():g}], expected [0, 1]; "
            "fix: divide raw pixels by 255"
        )
    if images.min() > 0.0 or images.max() < 1.0:
        # The uint8 input must mean "pixel value" (scale 1/255, zero point 0), and the
        # converter derives that range from the calibration data: pin both ends.
        images = images.copy()
        images.reshape(len(images), -1)[0, 0] = 0.0
        images.reshape(len(images), -1)[-1, -1] = 1.0
    return images


def _detail(d: Mapping[str, Any]) -> dict[str, Any]:
    scale, zero_point = d["quantization"]
    quantized = np.dtype(d["dtype"]).kind in "iu" and scale > 0.0
    return {
        "name": d["name"],
        "shape": [int(v) for v in d["shape_signature"]],
        "dtype": np.dtype(d["dtype"]).name,
        "scale": float(scale) if quantized else None,
        "zero_point": int(zero_point) if quantized else None,
    }


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value or "")
