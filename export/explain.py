"""Which layer makes a quantized file miss its gate, and how much keeping it float gives back.

Usage::

    edgeport explain RUN [--file model_int8.tflite] [--json PATH]

    from edgeport.export.explain import explain
    result = explain("RUN")          # writes RUN/explain/<file>.png
    print(result.files[0].worst)

For every quantized ``.tflite`` file of ``RUN/export`` (``model_float16``,
``model_dynamic_int8``, ``model_int8`` and the app's ``model_app_int8``), on a
seeded, class-balanced sample of test images (500 by default):

1. **Per-layer error, TensorFlow-free.** The file and its float32 twin
   (``model_float32.tflite``, or ``model_app_float32.tflite`` for the app model)
   run in LiteRT with ``experimental_preserve_all_tensors=True``. A *layer* is
   the scope a tensor name carries (``sequential/dense_1/MatMul`` -> ``dense_1``;
   tensors outside any layer, such as the input scaling or the softmax, keep
   their own name). Each layer's last output tensor is compared, dequantized,
   with the float32 one: SQNR in dB (``10 log10(sum f^2 / sum (f - q)^2)``),
   cosine similarity and max absolute error.
2. **Recovery, full-int8 files only.** ``model_int8.tflite`` is re-quantized
   with the exporter's own settings (the same calibration images, converter
   options and uint8 I/O) with one layer *kept float*: its ops and the ops
   reading its output are denylisted in TFLite's MLIR quantizer, so the layer's
   output never passes through an 8-bit tensor. The weights of those float
   layers are then stored as int8 (hybrid kernels: int8 weights, float
   activations), so keeping a layer float costs little size. The recovery is
   the accuracy that comes back on the sample, in points. ``float16`` and
   ``dynamic_int8`` files have no calibrated activations to denylist, and the
   app model's graph is built by :mod:`export.app`: for those, only the errors.

The layers are sorted by recovery, worst (largest) first, then by SQNR; a PNG of
the SQNR by layer, in graph order, is written per file to ``RUN/explain/``
(outside ``RUN/export``, so ``verify`` still sees exactly the shipped files).
:func:`repair_int8` uses the ranking: it keeps the fewest layers float that make
``model_int8.tflite`` pass its parity thresholds (``edgeport export --repair``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError

__all__ = [
    "EXPLAIN_DIR_NAME",
    "MAX_KEPT_FLOAT",
    "ExplainError",
    "Explanation",
    "FileExplanation",
    "Int8Requantizer",
    "LayerError",
    "RepairResult",
    "explain",
    "format_explanation",
    "layer_errors",
    "layer_name",
    "parity_hints",
    "predict",
    "rank_layers",
    "repair_int8",
    "thresholds_gate",
    "worst_line",
]

EXPLAIN_DIR_NAME = "explain"
EXPLAIN_JSON = "explain.json"  # the latest table per file, read by parity's hints
MAX_KEPT_FLOAT = 5  # repair gives up beyond this many float layers (or the whole model)
_TWINS = {
    "model_float16.tflite": "model_float32.tflite",
    "model_dynamic_int8.tflite": "model_float32.tflite",
    "model_int8.tflite": "model_float32.tflite",
    "model_app_int8.tflite": "model_app_float32.tflite",
}
_APP_FILES = ("model_app_int8.tflite",)
_PLOT_LAYERS = 40  # the lowest-SQNR layers that differ from float32, kept in graph order
APP_SAMPLES = 100  # app models take one picture per call through a long preprocessing graph
_HYBRID_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")  # int8 weights, float I/O
# The converter's dynamic-range threshold: smaller weights stay float32 (they cost little,
# and a hybrid op would quantize its float input per sample, outlier included).
_HYBRID_MIN_ELEMENTS = 1024


class ExplainError(EdgeportError, ValueError):
    """The run has no quantized file to explain, or ``--file`` names none."""


@dataclass(frozen=True)
class LayerError:
    """One layer's error in a quantized file, against the float32 file.

    Attributes:
        name: the layer (scope in the TFLite tensor names, e.g. ``dense_1``).
        tensor: the compared tensor (the layer's last output) in the quantized file.
        sqnr_db: signal-to-quantization-noise ratio in dB (higher is better;
            ``inf`` when identical).
        cosine: cosine similarity of the flattened tensors (1 is identical).
        max_abs_error: ``max |f - q|``.
        recovery_points: accuracy points that come back on the sample when this layer
            alone is kept float; ``None`` when the file cannot be re-quantized per layer.
    """

    name: str
    tensor: str
    sqnr_db: float
    cosine: float
    max_abs_error: float
    recovery_points: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tensor": self.tensor, "sqnr_db": _finite(self.sqnr_db),
                "cosine": self.cosine, "max_abs_error": self.max_abs_error,
                "recovery_points": self.recovery_points}


@dataclass(frozen=True)
class FileExplanation:
    """The per-layer table of one quantized file.

    Attributes:
        artifact: the file name in ``RUN/export``.
        reference: the float32 file it is compared with.
        accuracy: its accuracy on the sample.
        float_accuracy: the float32 file's accuracy on the sample.
        layers: worst first (largest recovery, then lowest SQNR).
        plot: the PNG of the SQNR by layer, ``None`` if not drawn.
    """

    artifact: str
    reference: str
    accuracy: float
    float_accuracy: float
    layers: tuple[LayerError, ...]
    plot: Path | None
    sha256: str = ""

    @property
    def worst(self) -> str | None:
        """The layer whose float precision recovers the most (else the lowest SQNR)."""
        return self.layers[0].name if self.layers else None

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "sha256": self.sha256,
                "reference": self.reference, "worst": self.worst,
                "accuracy": self.accuracy, "float_accuracy": self.float_accuracy,
                "plot": str(self.plot) if self.plot else None,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Explanation:
    """``edgeport explain``'s result: one table per quantized file."""

    run_dir: Path
    samples: int
    files: tuple[FileExplanation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"run": str(self.run_dir), "samples": self.samples,
                "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair_int8` kept float, and whether that passes the gate.

    Attributes:
        model: the repaired ``.tflite`` bytes (``None`` when the repair failed).
        kept_float: the layers kept float, in the order they were added.
        passed: the repaired file passes the int8 thresholds on the full test set.
        reason: one line: why these layers, or why the repair failed.
        size_before: the original file's bytes.
        size_after: the repaired file's bytes (``None`` when it failed).
        failures: the gate's lines for the last file tried (empty when passed).
    """

    model: bytes | None
    kept_float: tuple[str, ...]
    passed: bool
    reason: str
    size_before: int
    size_after: int | None
    failures: tuple[str, ...] = field(default_factory=tuple)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest artifact entry's ``"repair"`` field."""
        return {"kept_float": list(self.kept_float), "passed": self.passed,
                "reason": self.reason, "size_before": self.size_before,
                "size_after": self.size_after}


# --------------------------------------------------------------------- the re-quantizer


class Int8Requantizer:
    """``model_int8.tflite`` again, with chosen layers kept float.

    Calibrates once with the exporter's int8 settings (:func:`export.tflite.convert_tflite`:
    the same representative images, builtin int8 ops, uint8 input and outputs), then
    quantizes with TFLite's MLIR quantizer, denylisting the kept layers' ops.
    """

    def __init__(self, serving: Any, *, calibration_images: np.ndarray,
                 metadata: Mapping[str, Any]) -> None:
        from .tflite import _calibration

        self.serving = serving
        self.metadata = dict(metadata)
        self.calibrated = self._calibrate(_calibration(calibration_images, serving.input_shape))
        self.layers, self.consumers = _graph_layers(self.calibrated)

    def _calibrate(self, images: np.ndarray) -> bytes:
        import tensorflow as tf

        from .tflite import set_full_integer

        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [self.serving.function], self.serving.module)
        set_full_integer(converter, images)  # the export's own int8 settings
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True  # the debugger's route to mlir_quantize
        return converter.convert()

    def quantize(self, keep: Sequence[str] = ()) -> bytes:
        """The int8 file with the layers ``keep`` (and their outputs' readers) in float."""
        import tensorflow as tf
        from tensorflow.lite.python import convert

        from .tflite import finalize_tflite

        nodes = sorted({n for layer in keep for n in self.nodes(layer)})
        model = convert.mlir_quantize(self.calibrated, fully_quantize=False,
                                      input_data_type=tf.uint8, output_data_type=tf.uint8,
                                      denylisted_nodes=nodes or None)
        if nodes:
            model = _int8_weights(model)
        return finalize_tflite(model, metadata=self.metadata)

    def nodes(self, layer: str) -> list[str]:
        """Output tensor names of the layer's ops and of the ops that read its output."""
        own = self.layers[layer]
        return sorted({*own, *(c for t in own for c in self.consumers.get(t, ()))})


def _graph_layers(model: bytes) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Layers in graph order -> their ops' output tensor names; tensor -> readers' outputs."""
    interpreter = _interpreter(model, preserve=False)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    display = _output_names(interpreter)
    layers: dict[str, list[str]] = {}
    readers: dict[str, list[str]] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outs = [names[i] for i in op["outputs"] if i >= 0]
        for out in outs:
            layers.setdefault(display.get(out, layer_name(out)), []).append(out)
        for i in op["inputs"]:
            if i >= 0:
                readers.setdefault(names[i], []).extend(outs)
    return layers, readers


def _output_names(interpreter: Any) -> dict[str, str]:
    """Tensor name -> the signature's output name (``logits``, ``probabilities``) for the
    tensors that produce the model outputs, also when a QUANTIZE op sits in between."""
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    outputs: dict[int, str] = {}
    for sig in interpreter._get_full_signature_list().values():
        outputs.update({i: n for n, i in sig.get("outputs", {}).items()})
    display = {names[i]: n for i, n in outputs.items()}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") and op["outputs"][0] in outputs:
            display[names[op["inputs"][0]]] = outputs[op["outputs"][0]]
    return display


def layer_name(tensor: str) -> str:
    """The layer scope of a TFLite tensor name: ``sequential/dense_1/MatMul`` -> ``dense_1``.

    Fused names (``a/dense/MatMul;a/dense/Relu``) use their first part; a name with no
    model scope (``serving_default_image:0``, ``StatefulPartitionedCall:0``) is its own layer.
    """
    first = tensor.split(";")[0]
    parts = first.split("/")
    return parts[1] if len(parts) >= 3 else first


def _int8_weights(model: bytes) -> bytes:
    """Store the float weights of FC/conv ops as symmetric per-tensor int8 (hybrid kernels)."""
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    codes = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    for subgraph in obj.subgraphs:
        for op in subgraph.operators:
            code = obj.operatorCodes[op.opcodeIndex]
            name = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if name not in _HYBRID_OPS or len(op.inputs) < 2:
                continue
            data_in, weight = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.inputs[1]]
            buffer = obj.buffers[weight.buffer]
            if (data_in.type != fb.TensorType.FLOAT32 or weight.type != fb.TensorType.FLOAT32
                    or buffer.data is None or len(buffer.data) < 4 * _HYBRID_MIN_ELEMENTS):
                continue
            # Per output channel, as the converter's dynamic-range files: one large channel
            # (the outlier this repair is for) must not flatten the others to zero.
            axis = 3 if name == "DEPTHWISE_CONV_2D" else 0
            w = np.frombuffer(bytes(buffer.data), dtype=np.float32).reshape(weight.shape)
            w = np.moveaxis(w, axis, 0)
            scale = np.abs(w.reshape(len(w), -1)).max(axis=1) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            shape = (-1,) + (1,) * (w.ndim - 1)
            q8 = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            buffer.data = np.moveaxis(q8, 0, axis).reshape(-1).view(np.uint8)
            weight.type = fb.TensorType.INT8
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = scale.tolist(), [0] * len(scale)
            q.quantizedDimension = axis
            weight.quantization = q
            options = op.builtinOptions
            if hasattr(options, "asymmetricQuantizeInputs"):
                options.asymmetricQuantizeInputs = True  # as the converter's hybrid ops
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


# --------------------------------------------------------------------- per-layer errors


def _interpreter(model: bytes, *, preserve: bool) -> Any:
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": it is
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_content=bytes(model),
                           experimental_preserve_all_tensors=preserve)


def _run(model: bytes, x: np.ndarray, *, preserve: bool) -> tuple[Any, np.ndarray]:
    """Invoke ``model`` on the float [0, 1] images ``x``; return (interpreter, probabilities)."""
    interpreter = _interpreter(model, preserve=preserve)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], _feed(detail, x, pictures=False))
    interpreter.invoke()
    out = interpreter.get_output_details()
    probs = next((d for d in out if d["name"] == "probabilities"), out[0])
    return interpreter, _dequantized(interpreter, probs)


def _feed(detail: Mapping[str, Any], x: np.ndarray, *, pictures: bool) -> np.ndarray:
    """``x`` as the input wants it: pictures keep their pixel values (uint8 or float32);
    [0, 1] images become raw pixels for a uint8 input (scale 1/255, zero point 0)."""
    if pictures:
        return x.astype(detail["dtype"])
    if np.dtype(detail["dtype"]) == np.uint8:
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return x.astype(np.float32)


def _dequantized(interpreter: Any, detail: Mapping[str, Any]) -> np.ndarray:
    value = interpreter.get_tensor(detail["index"])
    scale, zero_point = detail["quantization"]
    if np.dtype(value.dtype).kind in "iu" and scale > 0:
        return (value.astype(np.float64) - zero_point) * scale
    return value.astype(np.float64)


def _layer_tensors(interpreter: Any) -> dict[str, dict[str, Any]]:
    """Each layer's last float-or-quantized output tensor (graph order), by layer name."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    display = _output_names(interpreter)
    last: dict[str, dict[str, Any]] = {}
    for position, op in enumerate(interpreter._get_ops_details()):
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for i in op["outputs"]:
            if i >= 0:
                d = details[i]
                name = display.get(d["name"], layer_name(d["name"]))
                first = last.get(name, {}).get("position", position)
                last[name] = {**d, "position": first}  # the layer's last tensor, first op
    return dict(sorted(last.items(), key=lambda item: item[1]["position"]))


def _errors(reference: np.ndarray, quantized: np.ndarray) -> tuple[float, float, float]:
    f = reference.reshape(-1).astype(np.float64)
    q = quantized.reshape(-1).astype(np.float64)
    noise = float(np.sum((f - q) ** 2))
    signal = float(np.sum(f**2))
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)
    norms = float(np.linalg.norm(f) * np.linalg.norm(q))
    cosine = float(np.dot(f, q) / norms) if norms > 0 else float(np.array_equal(f, q))
    return sqnr, cosine, float(np.max(np.abs(f - q))) if f.size else 0.0


def _values(model: bytes, x: np.ndarray, *, pictures: bool) -> dict[str, tuple[str, np.ndarray]]:
    """Each layer's (tensor name, dequantized values, flattened) on ``x``: one batch, or one
    picture at a time for the app models (their input has batch 1)."""
    interpreter = _interpreter(model, preserve=True)
    detail = interpreter.get_input_details()[0]
    if not pictures:
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    layers: dict[str, dict[str, Any]] = {}
    values: dict[str, list[np.ndarray]] = {}
    for batch in ([x[i:i + 1] for i in range(len(x))] if pictures else [x]):
        interpreter.set_tensor(detail["index"], _feed(detail, batch, pictures=pictures))
        interpreter.invoke()
        # Only real-valued tensors: indices (TOPK_V2), masks and shapes have no
        # quantization error, and a tie broken the other way is not one either.
        layers = layers or {n: d for n, d in _layer_tensors(interpreter).items()
                            if np.dtype(d["dtype"]).kind == "f" or d["quantization"][0] > 0}
        for name, d in layers.items():
            values.setdefault(name, []).append(_dequantized(interpreter, d).reshape(-1))
    return {n: (layers[n]["name"], np.concatenate(v)) for n, v in values.items()}


def layer_errors(float_model: bytes, model: bytes, x: np.ndarray, *,
                 pictures: bool = False) -> list[tuple[str, str, float, float, float]]:
    """(layer, tensor, SQNR dB, cosine, max abs error) for each layer both files have, in
    the quantized file's graph order. ``pictures``: ``x`` are the app models' uint8 RGB
    pictures, else float [0, 1] images in the model input layout."""
    ft = _values(float_model, x, pictures=pictures)
    rows = []
    for name, (tensor, qv) in _values(model, x, pictures=pictures).items():
        fv = ft.get(name, ("", None))[1]
        if fv is None or fv.shape != qv.shape:
            continue
        if pictures and name == layer_name(tensor) and name not in ("probabilities", "logits"):
            # The two app graphs are built apart (uint8 vs float32 input), so TF's automatic
            # op names (Cast_5, mul_3) name different ops in each: only layer scopes and
            # the outputs are the same tensors.
            continue
        rows.append((name, tensor, *_errors(fv, qv)))
    return rows


# --------------------------------------------------------------------- explain


def explain(
    run_dir: str | os.PathLike[str],
    *,
    file: str | None = None,
    samples: int = 500,
    seed: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    calibration_samples: int = 500,
    plot: bool = True,
) -> Explanation:
    """Explain each quantized file of ``RUN/export`` layer by layer.

    Args:
        run_dir: the run directory, with ``export/``.
        file: explain only this file (e.g. ``model_int8.tflite``).
        samples: class-balanced test images to measure on.
        seed: the sample's seed (default: the run's seed).
        data_dir: where the dataset lives, if not where the run found it.
        calibration_samples: the export's ``--calibration-samples`` (recovery re-quantizes
            with the same images).
        plot: write ``RUN/explain/<file stem>.png``.

    Returns:
        One :class:`FileExplanation` per file, in manifest order.

    Raises:
        ExplainError: no quantized file, or ``file`` is not one of them.
        RunDirError, ManifestError: the run or its export is missing or broken.
    """
    from edgeport.train.data import balanced_sample
    from edgeport.train.run_dir import load_run, load_split

    from .manifest import read_manifest

    run = load_run(run_dir, need_reference=False)
    export_dir = run.path / "export"
    if not export_dir.is_dir():
        raise ExplainError(f"{export_dir}: no export folder; expected the output of "
                           f"`edgeport export`; fix: run `edgeport export {run.path}` first")
    listed = [e["file"] for e in read_manifest(export_dir)["artifacts"]]
    candidates = [f for f in listed if f in _TWINS and _TWINS[f] in listed]
    if file is not None:
        if file not in candidates:
            allowed = ", ".join(candidates) or "(none)"
            raise ExplainError(f"--file {file}: not a quantized file of {export_dir} with a "
                               f"float32 twin; expected one of {allowed}; "
                               "fix: pass one of them, or leave out --file for all")
        candidates = [file]
    if not candidates:
        raise ExplainError(f"{export_dir} has no quantized .tflite file with its float32 twin; "
                           "expected e.g. model_int8.tflite and model_float32.tflite; fix: "
                           f"`edgeport export {run.path} --force`")
    seed = run.seed if seed is None else int(seed)
    x, y = load_split(run.path, "test", data_dir=data_dir)
    pick = balanced_sample(np.asarray(y), min(samples, len(y)), seed=seed)
    x, y = np.asarray(x, dtype=np.float32)[pick], np.asarray(y)[pick]
    requantizer = None
    if "model_int8.tflite" in candidates:
        requantizer = _requantizer(run, data_dir, calibration_samples, seed)
    out_dir = run.path / EXPLAIN_DIR_NAME
    files = []
    for name in candidates:
        float_model = (export_dir / _TWINS[name]).read_bytes()
        model = (export_dir / name).read_bytes()
        if name in _APP_FILES:  # picture in: the first APP_SAMPLES of the sample, rendered
            from .app import render_pictures

            fx, fy = render_pictures(x[:APP_SAMPLES], run.input), y[:APP_SAMPLES]
        else:
            fx, fy = x, y
        one = _explain_file(name, _TWINS[name], float_model, model, fx, fy,
                            requantizer if name == "model_int8.tflite" else None,
                            out_dir if plot else None, pictures=name in _APP_FILES)
        files.append(replace(one, sha256=hashlib.sha256(model).hexdigest()))
    result = Explanation(run_dir=run.path, samples=len(x), files=tuple(files))
    _remember(out_dir, result)
    return result


def _remember(out_dir: Path, result: Explanation) -> None:
    """Keep each file's latest table in ``RUN/explain/explain.json`` (for parity's hints)."""
    from edgeport.fileio import atomic_write_json

    path = out_dir / EXPLAIN_JSON
    known = {f["artifact"]: f for f in _read_json(path).get("files", [])}
    known.update({f.artifact: f.to_dict() for f in result.files})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"run": str(result.run_dir), "samples": result.samples,
                             "files": list(known.values())})


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def parity_hints(run_dir: str | os.PathLike[str], report: Any) -> list[str]:
    """Lines under the parity table: repaired files, and for each failing quantized file
    the responsible layer (when ``edgeport explain`` has measured this very file) or the
    command that finds it, and the command that repairs it."""
    from .manifest import read_manifest

    run = Path(run_dir)
    export_dir = run / "export"
    try:
        entries = {e["file"]: e for e in read_manifest(export_dir)["artifacts"]}
    except Exception:  # no manifest: parity has already said so
        return []
    lines = []
    for name, entry in entries.items():
        repair = entry.get("repair")
        if isinstance(repair, dict) and repair.get("passed"):
            lines.append(f"{name} (repaired: {', '.join(repair.get('kept_float', []))} float; "
                         f"{repair.get('size_before', 0) / 1000:.1f} -> "
                         f"{(repair.get('size_after') or 0) / 1000:.1f} KB)")
        elif isinstance(repair, dict):
            lines.append(f"{name}: {repair.get('reason', 'repair failed')}")
    known = {f.get("artifact"): f for f in
             _read_json(run / EXPLAIN_DIR_NAME / EXPLAIN_JSON).get("files", [])}
    for r in getattr(report, "results", ()):
        if r.passed or r.artifact not in _TWINS:
            continue
        command = f"`edgeport explain {run} --file {r.artifact}`"
        fix = (f"; fix: `edgeport export {run} --repair --force`"
               if r.artifact == "model_int8.tflite" else "")
        seen = known.get(r.artifact)
        sha = entries.get(r.artifact, {}).get("sha256")
        if seen and seen.get("worst") and seen.get("sha256") == sha:
            worst = next((la for la in seen.get("layers", []) if la["name"] == seen["worst"]),
                         {})
            points = worst.get("recovery_points")
            gain = (f"keeping it float recovers {points:+.1f} points"
                    if points is not None else f"SQNR {worst.get('sqnr_db')} dB")
            lines.append(f"{r.artifact} FAIL: worst layer {seen['worst']} ({gain}; {command})"
                         f"{fix}")
        else:
            lines.append(f"{r.artifact} FAIL: find the layer with {command}{fix}")
    return lines


def _requantizer(run: Any, data_dir: Any, calibration_samples: int, seed: int) -> Int8Requantizer:
    """The exporter's int8 conversion inputs: its serving model, calibration images, metadata."""
    from edgeport.train.data import balanced_sample

    from .exporter import _calibration_split, _default_loader, _load
    from .formats import Precision
    from .metadata import build_metadata
    from .serving import load_serving

    serving = load_serving(run.saved_model)
    loader = _default_loader(run.path, data_dir, calibration_samples=calibration_samples,
                             seed=seed, calibration_split=_calibration_split(run))
    x_train, y_train = _load(loader, "train", serving.input_shape, len(run.labels))
    calibration = x_train[balanced_sample(y_train, calibration_samples, seed=seed)]
    doc = build_metadata(labels=run.labels, input=run.input, precision=Precision.INT8,
                         dataset=run.dataset, model=run.model)
    return Int8Requantizer(serving, calibration_images=calibration, metadata=doc)


def _explain_file(name: str, reference: str, float_model: bytes, model: bytes, x: np.ndarray,
                  y: np.ndarray, requantizer: Int8Requantizer | None,
                  out_dir: Path | None, *, pictures: bool = False) -> FileExplanation:
    if pictures:
        from .app import predict_app

        fp, qp = predict_app(float_model, x), predict_app(model, x)
    else:
        fp, qp = predict(float_model, x), predict(model, x)
    float_acc = float(np.mean(fp.argmax(1) == y))
    acc = float(np.mean(qp.argmax(1) == y))
    rows = layer_errors(float_model, model, x, pictures=pictures)
    recovery = dict(rank_layers(requantizer, x, y)) if requantizer is not None else {}
    layers = [LayerError(n, t, s, c, m, recovery.get(n) if requantizer else None)
              for n, t, s, c, m in rows]
    ranked = sorted(layers, key=lambda e: (-(e.recovery_points or 0.0), e.sqnr_db))
    plot = _plot(name, layers, out_dir / (Path(name).stem + ".png")) if out_dir else None
    return FileExplanation(artifact=name, reference=reference, accuracy=acc,
                           float_accuracy=float_acc, layers=tuple(ranked), plot=plot)


def _plot(name: str, layers: Sequence[LayerError], path: Path) -> Path:
    """SQNR by layer in graph order (bars), recovery on a second axis when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeport.fileio import atomic_write_bytes

    differ = [e for e in layers if e.max_abs_error > 0 or e.recovery_points]
    keep = {id(e) for e in sorted(differ, key=lambda e: e.sqnr_db)[:_PLOT_LAYERS]}
    layers = [e for e in differ if id(e) in keep] or list(layers)
    names = [e.name for e in layers]
    sqnr = [min(e.sqnr_db, 99.0) for e in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4.2))
    pos = np.arange(len(names))
    ax.bar(pos, sqnr, color="tab:blue", label="SQNR (dB, higher is better)")
    ax.set_ylabel("SQNR vs float32 (dB)")
    ax.set_xticks(pos, names, rotation=45, ha="right", fontsize=8)
    ax.set_title(f"{name}: error by layer (graph order)")
    if any(e.recovery_points is not None for e in layers):
        ax2 = ax.twinx()
        ax2.plot(pos, [e.recovery_points or 0.0 for e in layers], "o-", color="tab:red",
                 label="recovery if kept float (points)")
        ax2.set_ylabel("accuracy recovered (points)", color="tab:red")
        ax2.set_ylim(bottom=min(0.0, *(e.recovery_points or 0.0 for e in layers)))
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def worst_line(f: FileExplanation) -> str:
    """``worst layer: dense_1 (keeping it float recovers +47.1 points)``."""
    if not f.layers:
        return "worst layer: (no layer tensors matched the float32 file)"
    w = f.layers[0]
    if w.recovery_points is not None:
        return (f"worst layer: {w.name} (keeping it float recovers "
                f"{w.recovery_points:+.1f} points)")
    return f"worst layer: {w.name} (SQNR {w.sqnr_db:.1f} dB, lowest of the file)"


def format_explanation(result: Explanation) -> str:
    """The terminal view: per file, its accuracy, the worst-layer line and the table."""
    from .report import render_table

    blocks = []
    for f in result.files:
        shown = [e for e in f.layers if e.max_abs_error > 0 or e.recovery_points]
        rows = [[e.name, f"{e.sqnr_db:.1f}", f"{e.cosine:.4f}", f"{e.max_abs_error:.3g}",
                 "n/a" if e.recovery_points is None else f"{e.recovery_points:+.1f}"]
                for e in shown]
        n = min(result.samples, APP_SAMPLES) if f.artifact in _APP_FILES else result.samples
        head = (f"{f.artifact}: {f.accuracy:.2%} vs {f.float_accuracy:.2%} ({f.reference}) "
                f"on {n} test images")
        table = render_table(["layer", "SQNR dB", "cosine", "max |err|", "recovery pts"], rows)
        same = len(f.layers) - len(shown)
        tail = "\n".join(x for x in (
            f"(+{same} layers identical to {f.reference}; all in --json)" if same else "",
            f"plot: {f.plot}" if f.plot else "") if x)
        blocks.append("\n".join(x for x in (head, worst_line(f), table, tail) if x))
    return "\n\n".join(blocks)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


# --------------------------------------------------------------------- repair


def rank_layers(requantizer: Int8Requantizer, x: np.ndarray,
                y: np.ndarray) -> list[tuple[str, float]]:
    """(layer, accuracy points recovered on ``x`` when kept float), largest first."""
    base = float(np.mean(predict(requantizer.quantize(), x).argmax(1) == y))
    points = []
    for layer in requantizer.layers:
        kept = float(np.mean(predict(requantizer.quantize([layer]), x).argmax(1) == y))
        points.append((layer, round((kept - base) * 100.0, 2)))
    return sorted(points, key=lambda p: -p[1])


def predict(model: bytes, x: np.ndarray, *, batch: int = 1000) -> np.ndarray:
    """The file's probabilities for the float [0, 1] images ``x``, ``batch`` at a time."""
    return np.concatenate([_run(model, x[i:i + batch], preserve=False)[1]
                           for i in range(0, len(x), batch)])


def thresholds_gate(x: np.ndarray, y: np.ndarray, reference: np.ndarray,
                    precision: Any) -> Any:
    """``gate(model) -> failures``: the parity gate's check for ``precision`` on ``x``."""
    from .parity import _gate
    from .thresholds import THRESHOLDS

    ref_top = reference.argmax(axis=1)
    reference_accuracy = float(np.mean(ref_top == y))

    def gate(model: bytes) -> list[str]:
        top = predict(model, x).argmax(axis=1)
        flips = int(np.count_nonzero(top != ref_top))
        return _gate(THRESHOLDS[precision], accuracy=float(np.mean(top == y)),
                     reference_accuracy=reference_accuracy, agreement=1.0 - flips / len(top),
                     flips=flips, n=len(top), max_diff=None)

    return gate


def repair_int8(
    requantizer: Int8Requantizer,
    ranking: Sequence[str],
    *,
    gate: Any,
    size_before: int,
    max_layers: int = MAX_KEPT_FLOAT,
) -> RepairResult:
    """Keep the fewest layers float, in ``ranking`` order, until ``gate(model)`` passes.

    Args:
        requantizer: the exporter's int8 conversion, ready to denylist layers.
        ranking: layer names, worst first (:func:`explain`'s order).
        gate: ``gate(model_bytes) -> list[str]``: the parity failures on the full test set.
        size_before: the original file's bytes.
        max_layers: give up after this many layers (or when every layer is float).

    Returns:
        The :class:`RepairResult`; ``passed`` false with the reason when nothing passes.
    """
    kept: list[str] = []
    failures: list[str] = []
    every = list(requantizer.layers)
    for layer in ranking:
        if layer not in requantizer.layers or layer in kept:
            continue
        if len(kept) >= max_layers:
            break
        kept.append(layer)
        model = requantizer.quantize(kept)
        failures = gate(model)
        if not failures:
            return RepairResult(
                model=model, kept_float=tuple(kept), passed=True,
                reason=(f"int8 missed its thresholds; keeping {', '.join(kept)} float "
                        f"(worst first by `edgeport explain`) passes them"),
                size_before=size_before, size_after=len(model))
        if set(kept) >= set(every):
            break
    why = (f"every layer float ({len(kept)}) still fails" if set(kept) >= set(every)
           else f"keeping {len(kept)} layers float ({', '.join(kept)}) still fails")
    return RepairResult(model=None, kept_float=tuple(kept), passed=False,
                        reason=f"repair failed: {why}: {'; '.join(failures) or 'no layer'}; "
                               "fix: quantization-aware training, or ship dynamic_int8",
                        size_before=size_before, size_after=None, failures=tuple(failures))
