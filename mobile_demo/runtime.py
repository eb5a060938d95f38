"""Load an exported model with an on-device runtime and run it on float pixels.

Usage::

    from edgeport.mobile_demo import load_model
    model = load_model("RUN/export/model_int8.tflite")   # runtime="auto"
    probs = model.predict(x)["probabilities"]          # x: float32 [N, ...] in [0, 1]

``runtime="auto"`` picks ONNX Runtime for ``.onnx`` files and, for ``.tflite``
files, the first importable of ``ai_edge_litert`` (LiteRT), ``tflite_runtime``
and ``tensorflow.lite``. Runtimes are imported only when a model is loaded,
and TensorFlow only as the last resort, so a device with LiteRT never loads it.

:meth:`Model.predict` hides what differs between the files: it reshapes the
pixels to the model's input, quantizes them with the model's own scale and
zero point when the input is integer (``model_int8.tflite`` takes uint8),
runs in batches, and dequantizes integer outputs, so every file answers in
float32 probabilities.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeport.errors import InputShapeError, LimitError, ModelFileError, RuntimeNotFoundError
from edgeport.fileio import check_input_file, read_labels
from edgeport.quiet import quiet_native_stderr

from .tflite_meta import (
    TaskMetadata,
    _guarded,
    _text,
    decode_edgeport_metadata,
    has_tflite_identifier,
    parse_task_metadata,
    read_metadata,
    tflite_schema,
)

__all__ = [
    "MAX_TENSOR_BYTES",
    "RUNTIMES",
    "Model",
    "TensorSpec",
    "available_runtimes",
    "dequantize",
    "load_model",
    "max_threads",
    "quantize",
]

RUNTIMES = ("auto", "litert", "tflite-runtime", "tensorflow", "onnxruntime")
_TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tensorflow")  # "auto" tries them in this order
_MODULES = {
    "litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "onnxruntime": "onnxruntime",
}
_INSTALL = {
    "litert": "pip install ai-edge-litert",
    "tflite-runtime": "pip install tflite-runtime",
    "tensorflow": "pip install tensorflow",
    "onnxruntime": "pip install onnxruntime (part of `pip install edgeport`)",
}
# A model is refused before any runtime allocates it when one of its tensors would need more
# than this at batch 1 (issue 18: a 1.6 KB file declaring a 30000x30000x3 input made the
# demo allocate over 5 GB). An MNIST input is 3 KB; a 1024x1024x3 float32 photo 12 MB.
MAX_TENSOR_BYTES = 256 << 20
_THREADS_PER_CORE = 4  # more threads than this per core only contend for the cores
# The contract lists outputs in this order; other names follow in model order.
_OUTPUT_ORDER = ("probabilities", "logits")
_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime reports it.

    Attributes:
        name: signature name (``image``, ``probabilities``), else the tensor name without ``:0``.
        shape: dimensions, ``-1`` where the size is dynamic (the batch).
        dtype: numpy dtype name (``float32``, ``uint8``, ...).
        scale: quantization scale of an integer tensor, ``None`` for float tensors.
        zero_point: quantization zero point, ``None`` for float tensors.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        """Whether values are integers that stand for ``scale * (q - zero_point)``."""
        return self.scale is not None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's form: ``{"name", "shape", "dtype", "scale", "zero_point"}``."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def quantize(x: Any, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Map real values to integers: ``clip(round(x / scale) + zero_point)``.

    Rounds half to even (``np.rint``) and clips to the range of ``dtype``;
    NaN maps to ``zero_point`` (the integer that stands for 0.0).

    Args:
        x: real values (array-like).
        scale: positive quantization step.
        zero_point: the integer that represents 0.0.
        dtype: an integer numpy dtype, e.g. ``np.uint8``.

    Returns:
        An array of ``dtype`` with the shape of ``x``.

    Raises:
        ValueError: ``scale`` is not positive and finite, or ``dtype`` is not an integer type.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        raise ValueError(f"dtype={dtype}; quantize() needs an integer dtype such as uint8 or int8")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale}; expected a positive finite quantization scale")
    info = np.iinfo(dtype)
    arr = np.asarray(x)
    # float32 input is quantized in float32, as TFLite's own QUANTIZE kernel does (and
    # twice as fast as float64 on a 784-pixel image); anything else in float64. Plain
    # ufuncs with out= keep a batch-1 call to a few microseconds.
    work = np.float32 if arr.dtype == np.float32 else np.float64
    q = np.divide(arr, work(scale), dtype=work)
    np.rint(q, out=q)  # round first, then shift: q = round(x / scale) + zero_point, as TFLite
    if zero_point:
        q += zero_point
    np.minimum(q, info.max, out=q)
    np.maximum(q, info.min, out=q)
    nan = np.isnan(q)
    if nan.any():
        q[nan] = zero_point
    return q.astype(dtype)


def dequantize(q: Any, scale: float, zero_point: int) -> np.ndarray:
    """Map integers back to real values: ``scale * (q - zero_point)`` as float32.

    Computed in float32: ``q - zero_point`` is an exact small integer and a model's
    scale is a float32, so their product is rounded once, exactly as in float64.
    """
    out = np.asarray(q).astype(np.float32)
    if zero_point:
        out -= np.float32(zero_point)
    out *= np.float32(scale)
    return out


def available_runtimes() -> list[str]:
    """Names of the runtimes whose package is installed, in ``auto`` preference order.

    Looks the packages up without importing them (importing TensorFlow alone
    takes seconds), so a broken installation still shows up here and fails
    only when a model is loaded.
    """
    found = []
    for name in ("litert", "tflite-runtime", "tensorflow", "onnxruntime"):
        try:
            if importlib.util.find_spec(_MODULES[name]) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


class _Backend(Protocol):
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, Any]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one batch already in the input dtype; outputs in ``self.outputs`` order."""
        ...


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0].strip()


def _import_runtime(name: str) -> Any:
    """Import one runtime and return its interpreter class or module.

    Raises:
        RuntimeNotFoundError: the package is missing or broken.
    """
    try:
        if name == "litert":
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter
        if name == "tflite-runtime":
            from tflite_runtime.interpreter import Interpreter

            return Interpreter
        if name == "tensorflow":
            # TensorFlow's C++ start-up chatter would bury the demo's output.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with quiet_native_stderr(pass_on=True):
                import tensorflow as tf

            return tf.lite.Interpreter
        return importlib.import_module("onnxruntime")
    except ImportError as e:
        reason = f"is not installed ({_first_line(e)})"
    except Exception as e:  # a broken install (e.g. a numpy ABI mismatch) fails in any way
        reason = f"failed to import ({type(e).__name__}: {_first_line(e)})"
    raise RuntimeNotFoundError(
        f"runtime {name!r} ({_MODULES[name]}) {reason}; {_INSTALL[name]}, or pick another "
        f"runtime (installed: {', '.join(available_runtimes()) or 'none'})"
    )


def _spec(
    name: str, shape: Any, dtype: Any, scales: Any, zero_points: Any, path: Path
) -> TensorSpec:
    dims = tuple(int(d) for d in shape)
    dtype_name = np.dtype(dtype).name
    scales = np.asarray(scales, dtype=np.float64).ravel()
    zero_points = np.asarray(zero_points, dtype=np.int64).ravel()
    if scales.size > 1:
        raise ModelFileError(
            f"{path}: tensor {name!r} is quantized per channel ({scales.size} scales); "
            "expected per-tensor quantization on inputs and outputs; re-export the model"
        )
    if scales.size == 1 and scales[0] > 0 and np.dtype(dtype).kind in "iu":
        zp = int(zero_points[0]) if zero_points.size else 0
        return TensorSpec(name, dims, dtype_name, float(scales[0]), zp)
    return TensorSpec(name, dims, dtype_name)


def _strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _ordered(pairs: list[tuple[TensorSpec, Any]]) -> list[tuple[TensorSpec, Any]]:
    rank = {n: i for i, n in enumerate(_OUTPUT_ORDER)}
    return sorted(pairs, key=lambda p: rank.get(p[0].name, len(rank)))  # stable: model order


def signature_names(interpreter: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index -> signature name (``image``, ``probabilities``) for inputs and outputs.

    Reads the ``serving_default`` signature (else the first one) of a TFLite
    interpreter; ``({}, {})`` when the file has none or the runtime predates
    signature details (tflite-runtime 2.5).
    """
    try:
        sigs = interpreter.get_signature_list()
        if not sigs:
            return {}, {}
        key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        runner = interpreter.get_signature_runner(key)
        ins = {d["index"]: n for n, d in runner.get_input_details().items()}
        outs = {d["index"]: n for n, d in runner.get_output_details().items()}
        return ins, outs
    except (AttributeError, ValueError, KeyError):  # older runtimes lack signature details
        return {}, {}


class _TFLiteBackend:
    def __init__(
        self,
        interpreter_cls: Any,
        path: Path,
        num_threads: int | None,
        metadata: dict[str, Any],
        runtime: str,
    ) -> None:
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if num_threads is not None:
            kwargs["num_threads"] = num_threads
        try:
            with warnings.catch_warnings(), quiet_native_stderr(pass_on=True):
                # tf.lite.Interpreter warns that it is deprecated in favour of LiteRT.
                warnings.simplefilter("ignore")
                it = interpreter_cls(**kwargs)
                it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            reason = _first_line(e)
            if any(s in reason for s in ("find op", "newer model", "custom op", "Unsupported")):
                # The file is fine; this runtime predates an operator (or version) it uses.
                fix = (
                    f"{runtime} is older than the converter that wrote the file; install a newer "
                    "runtime (pip install -U ai-edge-litert) or run another precision"
                )
            else:
                fix = "expected a complete .tflite file; re-export or re-copy it"
            raise ModelFileError(f"{path}: {runtime} cannot load it ({reason}); {fix}") from None
        self._it = it
        self.metadata = metadata
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1:
            raise ModelFileError(
                f"{path}: the model has {len(inputs)} inputs, expected one image input; "
                "export a single-input classifier"
            )
        in_names, out_names = signature_names(it)

        def spec(d: dict[str, Any], names: dict[int, str]) -> TensorSpec:
            q = d.get("quantization_parameters", {})
            scales = q.get("scales", [d["quantization"][0]])
            zero_points = q.get("zero_points", [d["quantization"][1]])
            shape = d.get("shape_signature", d["shape"])
            if len(shape) == 0:
                shape = d["shape"]
            name = names.get(d["index"], _strip(d["name"]))
            return _spec(name, shape, d["dtype"], scales, zero_points, path)

        d_in = inputs[0]
        self.input = spec(d_in, in_names)
        self._in_index = d_in["index"]
        pairs = _ordered([(spec(d, out_names), d["index"]) for d in outputs])
        self.outputs = tuple(s for s, _ in pairs)
        self._out_index = [i for _, i in pairs]
        self._batch = int(d_in["shape"][0]) if len(d_in["shape"]) else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.shape[0] != self._batch:
            self._it.resize_tensor_input(self._in_index, list(batch.shape), strict=False)
            self._it.allocate_tensors()
            self._batch = batch.shape[0]
        self._it.set_tensor(self._in_index, batch)
        self._it.invoke()
        return [self._it.get_tensor(i) for i in self._out_index]


class _OnnxBackend:
    def __init__(self, ort: Any, path: Path, num_threads: int | None) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: keep the demo's output clean
        if num_threads is not None:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise ModelFileError(
                f"{path}: ONNX Runtime cannot load it ({_first_line(e)}); "
                "expected a complete .onnx file; re-export or re-copy it"
            ) from None
        self._sess = sess
        raw = sess.get_modelmeta().custom_metadata_map.get("edgeport")
        self.metadata = decode_edgeport_metadata(
            {} if raw is None else {"edgeport": raw.encode("utf-8")}, name=str(path)
        )
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(
                f"{path}: the model has {len(inputs)} inputs, expected one image input; "
                "export a single-input classifier"
            )

        def spec(arg: Any) -> TensorSpec:
            dtype = _ONNX_TYPES.get(arg.type)
            if dtype is None:
                raise ModelFileError(
                    f"{path}: tensor {arg.name!r} has type {arg.type}, expected a numeric "
                    "tensor; export an image classifier"
                )
            shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
            return TensorSpec(_strip(arg.name), shape, dtype)

        self._in_name = inputs[0].name
        self.input = spec(inputs[0])
        pairs = _ordered([(spec(o), o.name) for o in sess.get_outputs()])
        self.outputs = tuple(s for s, _ in pairs)
        self._out_names = [n for _, n in pairs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self._sess.run(self._out_names, {self._in_name: batch}))


class Model:
    """A loaded model; build it with :func:`load_model`.

    Attributes:
        path: the model file.
        runtime: the runtime that actually runs it (``litert``, ``tflite-runtime``,
            ``tensorflow`` or ``onnxruntime``).
        input: the input tensor (``image``).
        outputs: the output tensors, ``probabilities`` and ``logits`` first when present.
        metadata: the embedded edgeport JSON document, ``{}`` if the file has none.
        task_metadata: the standard ``TFLITE_METADATA`` (what MediaPipe and the Task
            Library read), ``None`` if the file has none.
        labels: class names from the edgeport metadata, else the ``TFLITE_METADATA``
            label file, else ``manifest.json`` or ``labels.txt`` beside the model, else ``None``.
    """

    def __init__(
        self, path: Path, runtime: str, backend: _Backend, task_metadata: TaskMetadata | None = None
    ) -> None:
        self.path = path
        self.runtime = runtime
        self._backend = backend
        self.input: TensorSpec = backend.input
        self.outputs: tuple[TensorSpec, ...] = backend.outputs
        self.metadata: dict[str, Any] = backend.metadata
        self.task_metadata = task_metadata
        self.labels: list[str] | None = self._find_labels()

    def __repr__(self) -> str:
        outs = ", ".join(o.name for o in self.outputs)
        return (
            f"Model(path={str(self.path)!r}, runtime={self.runtime!r}, "
            f"input={self.input.name}{list(self.input.shape)}:{self.input.dtype}, outputs=[{outs}])"
        )

    def _manifest(self) -> dict[str, Any]:
        path = self.path.parent / "manifest.json"
        if not path.is_file():
            return {}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(
                f"{path}: unreadable manifest ({_first_line(e)}); expected the JSON written "
                "by `edgeport export`; re-export or delete it"
            ) from None
        return doc if isinstance(doc, dict) else {}

    def _find_labels(self) -> list[str] | None:
        task = self.task_metadata
        task_labels = list(task.labels) if task is not None and task.labels else None
        for source, labels in (
            ("embedded metadata", self.metadata.get("labels")),
            ("TFLITE_METADATA", None if "labels" in self.metadata else task_labels),
            (
                "manifest.json",
                None
                if "labels" in self.metadata or task_labels
                else self._manifest().get("labels"),
            ),
        ):
            if labels is None:
                continue
            if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
                raise ModelFileError(
                    f"{self.path}: 'labels' in the {source} is {type(labels).__name__}, "
                    "expected a list of strings; re-export the model"
                )
            return labels
        txt = self.path.parent / "labels.txt"
        return read_labels(txt) if txt.is_file() else None

    @property
    def input_desc(self) -> dict[str, Any]:
        """The contract's ``input`` description: embedded metadata, else ``manifest.json``.

        Files without either (a model that edgeport did not export) get a
        description read off the input tensor's shape: ``[N, H, W, C]`` is
        ``nhwc``; ``[N, D]`` is ``flat`` with a square ``H = W = sqrt(D)``
        (one channel, or three when ``D / 3`` is square). One channel implies
        the MNIST digit pipeline, three channels a plain resize.

        Raises:
            ModelFileError: nothing describes the input and its shape is not an image.
        """
        desc = self.metadata.get("input")
        if desc is None:
            desc = self._manifest().get("input")
        if isinstance(desc, dict):
            return desc
        dims = self.input.shape[1:]
        if self._pixel_normalization() is not None and len(dims) == 3 and dims[2] == 3:
            # A Task-Library-style picture model: RGB in, its own preprocessing inside.
            return {"name": self.input.name, "layout": "nhwc", "height": dims[0],
                    "width": dims[1], "channels": 3, "preprocess": "resize"}
        guess: tuple[str, int, int, int] | None = None
        if len(dims) == 3 and all(d > 0 for d in dims):
            guess = ("nhwc", dims[0], dims[1], dims[2])
        elif len(dims) == 1 and dims[0] > 0:
            for c in (1, 3):
                side = math.isqrt(dims[0] // c)
                if dims[0] % c == 0 and side * side * c == dims[0]:
                    guess = ("flat", side, side, c)
                    break
        if guess is None:
            raise ModelFileError(
                f"{self.path}: no 'input' description in the metadata or manifest.json and the "
                f"input shape {list(self.input.shape)} is not an image; re-export with edgeport"
            )
        layout, h, w, c = guess
        return {
            "name": self.input.name,
            "layout": layout,
            "height": h,
            "width": w,
            "channels": c,
            "preprocess": "mnist" if c == 1 else "resize",
        }

    def predict(self, x: Any, *, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Run the model on float pixels and return float32 outputs keyed by output name.

        Args:
            x: pixels in [0, 1], shape ``[N, ...]`` with as many values per
                sample as the model input (``[N, 28, 28]`` feeds ``[N, 784]``);
                for a full-integer model with uint8 input (scale 1/255, zero
                point 0), uint8 pixels 0..255 are passed through unchanged.
            batch_size: samples per runtime call (a model with a fixed batch
                size uses its own and pads the last batch).

        Returns:
            ``{"probabilities": [N, K], "logits": [N, K], ...}``, dequantized float32.

        Raises:
            InputShapeError: ``x`` holds integers or does not fit the input shape.
            ModelFileError: the runtime fails while running the model.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer")
        arr = self._as_input(np.asarray(x))
        n = arr.shape[0]
        spec = self.input
        fixed = spec.shape[0] if spec.shape and spec.shape[0] > 0 else None
        step = fixed or batch_size
        if fixed is None and 0 < n <= step:  # one runtime call: no chunk bookkeeping
            values = self._run(np.ascontiguousarray(arr))
            return {o.name: self._as_float(o, v) for o, v in zip(self.outputs, values,
                                                                   strict=True)}
        chunks: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, n, step):
            batch = arr[start : start + step]
            real = batch.shape[0]
            if fixed is not None and real < fixed:
                pad = np.zeros((fixed - real, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, pad])
            for out, values in zip(chunks, self._run(np.ascontiguousarray(batch)), strict=True):
                out.append(values[:real])
        result = {}
        for o, parts in zip(self.outputs, chunks, strict=True):
            if parts:
                values = np.concatenate(parts)
            else:
                values = np.zeros((0, *(max(d, 0) for d in o.shape[1:])), dtype=o.dtype)
            result[o.name] = self._as_float(o, values)
        return result

    def _pixel_normalization(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` from TFLITE_METADATA's NormalizationOptions, for picture inputs."""
        task = self.task_metadata
        if task is None or task.mean is None or task.std is None:
            return None
        if self.input.dtype != "uint8" and self.input.quantized:
            return None  # a quantized float-range input: the scale already says how to feed it
        return np.asarray(task.mean, np.float32), np.asarray(task.std, np.float32)

    def _as_input(self, arr: np.ndarray) -> np.ndarray:
        """Pixels -> the input tensor's shape and dtype (quantized with its scale if integer).

        A picture model with ``TFLITE_METADATA`` normalization (the app models) takes
        ``(pixel - mean) / std`` of pixels 0..255, or the uint8 pixels themselves
        (clients ignore normalization for uint8 inputs).
        """
        spec = self.input
        norm = self._pixel_normalization()
        if norm is not None:
            if arr.dtype == np.uint8:
                arr = arr.astype(np.float32) / 255.0  # picture models take uint8 pixels too
            if arr.dtype.kind == "f":
                pixels = np.clip(self._fit_shape(arr).astype(np.float32) * 255.0, 0.0, 255.0)
                if spec.dtype == "uint8":
                    return np.round(pixels).astype(np.uint8)
                return ((pixels - norm[0]) / norm[1]).astype(spec.dtype)
        raw_pixels = (arr.dtype == np.uint8 and spec.dtype == "uint8" and spec.zero_point == 0
                      and spec.scale is not None and abs(spec.scale * 255.0 - 1.0) < 1e-6)
        if arr.dtype.kind not in "f" and not raw_pixels:
            raise InputShapeError(
                f"{self.path}: predict() got {arr.dtype} values, expected float pixels in [0, 1] "
                "(or uint8 pixels for a model with uint8 input, scale 1/255); "
                "divide uint8 pixels by 255"
            )
        arr = self._fit_shape(arr)
        if raw_pixels:
            return arr  # camera bytes go straight in: the model's scale is 1/255, zero point 0
        if spec.quantized:
            assert spec.scale is not None and spec.zero_point is not None
            return quantize(arr, spec.scale, spec.zero_point, spec.dtype)
        return arr.astype(spec.dtype, copy=False)

    @staticmethod
    def _as_float(spec: TensorSpec, values: np.ndarray) -> np.ndarray:
        """An output as float32: dequantized with its own scale and zero point if integer."""
        if spec.quantized:
            assert spec.scale is not None and spec.zero_point is not None
            return dequantize(values, spec.scale, spec.zero_point)
        return values.astype(np.float32, copy=False)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self._backend.run(batch)
        except Exception as e:  # runtimes raise RuntimeError, ValueError or their own types
            raise ModelFileError(
                f"{self.path}: {self.runtime} failed to run the model on a batch of shape "
                f"{list(batch.shape)} ({_first_line(e)}); expected a model that edgeport "
                "exported and verified; re-export it or try another runtime"
            ) from None

    def _fit_shape(self, arr: np.ndarray) -> np.ndarray:
        want = self.input.shape
        if arr.ndim < 1:
            raise InputShapeError(
                f"{self.path}: predict() got a scalar, expected a batch [N, ...] "
                f"for the model input {list(want)}"
            )
        sample = want[1:]
        if any(d < 0 for d in sample):  # dynamic image size: pass through when the rank fits
            fits = arr.ndim == len(want) and all(
                d < 0 or d == a for d, a in zip(sample, arr.shape[1:], strict=True)
            )
            if fits:
                return arr
        elif math.prod(arr.shape[1:]) == math.prod(sample):
            return arr.reshape((arr.shape[0], *sample))
        raise InputShapeError(
            f"{self.path}: input of shape {list(arr.shape)} does not fit the model input "
            f"'{self.input.name}' of shape {list(want)}; pass [N, ...] pixels with "
            f"{math.prod(sample) if all(d > 0 for d in sample) else 'matching'} values per sample "
            "(add a batch axis with x[None] for one image)"
        )


def _model_format(path: Path, runtime: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".ort"):  # .ort: ONNX Runtime Mobile's format, same session API
        return "onnx"
    if suffix == ".tflite" or has_tflite_identifier(path):
        return "tflite"
    if runtime == "onnxruntime":
        return "onnx"
    raise ModelFileError(
        f"{path}: unknown model type (suffix {suffix or 'none'!r}, no TFLite identifier); "
        "expected a .tflite or .onnx file from `edgeport export`"
    )


def max_threads() -> int:
    """The most runtime threads edgeport accepts: 4 per CPU core of this machine."""
    return _THREADS_PER_CORE * (os.cpu_count() or 1)


def _check_arguments(path: Path, runtime: str, num_threads: int | None) -> None:
    if runtime not in RUNTIMES:
        raise RuntimeNotFoundError(
            f"runtime={runtime!r} is not one of {', '.join(RUNTIMES)}; pick one of those"
        )
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads={num_threads}; expected a positive integer or None")
    if num_threads is not None and num_threads > max_threads():
        # 100,000 threads crashed LiteRT (exit 139) and ran ONNX Runtime with 16 GB.
        raise LimitError(
            f"num_threads={num_threads}; expected 1..{max_threads()} ({_THREADS_PER_CORE} per "
            f"CPU core, this machine has {os.cpu_count() or 1}: more threads only contend); "
            f"fix: pass num_threads={os.cpu_count() or 1} or leave it out")
    check_input_file(path, ModelFileError, what="model file",
                     expected="a .tflite or .onnx model file",
                     if_empty="re-export or re-copy the model")


_TFLITE_ITEM_BYTES = {"FLOAT16": 2, "INT16": 2, "UINT16": 2, "BFLOAT16": 2, "FLOAT32": 4,
                      "INT32": 4, "UINT32": 4, "FLOAT64": 8, "INT64": 8, "UINT64": 8,
                      "COMPLEX64": 8, "COMPLEX128": 16}


def _check_tensor_bytes(path: Path, name: str, shape: Any, itemsize: int) -> None:
    """Refuse a tensor over :data:`MAX_TENSOR_BYTES` at batch 1 (dynamic sizes count as 1)."""
    dims = [int(d) if int(d) > 0 else 1 for d in shape]
    if dims:
        dims[0] = 1  # per sample: the batch axis is the caller's choice
    need = math.prod(dims) * itemsize
    if need > MAX_TENSOR_BYTES:
        raise LimitError(
            f"{path}: tensor {name!r} declares shape {list(shape)}, {need / 2**20:,.0f} MB for "
            f"one sample; expected at most {MAX_TENSOR_BYTES >> 20} MB per tensor (an image "
            "classifier's input is a few MB); fix: export the model with a smaller input size"
        )


def _check_tflite_tensors(data: bytes, path: Path) -> None:
    """Every activation's declared size, read from the flatbuffer before a runtime allocates it."""

    def sizes(model: Any) -> list[tuple[str, list[int], int]]:
        schema = tflite_schema()
        types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        out = []
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            for t in range(sub.TensorsLength()):
                tensor = sub.Tensors(t)
                buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() > 0 else None
                if buffer is not None and (buffer.DataLength() or buffer.Offset() > 1):
                    continue  # weights: already in the file, not allocated per sample
                shape = [tensor.Shape(i) for i in range(tensor.ShapeLength())]
                itemsize = _TFLITE_ITEM_BYTES.get(types.get(tensor.Type(), ""), 1)
                out.append((_text(tensor.Name()), shape, itemsize))
        return out

    for name, shape, itemsize in _guarded(data, str(path), sizes):
        _check_tensor_bytes(path, name, shape, itemsize)


def load_model(
    path: str | os.PathLike[str], *, runtime: str = "auto", num_threads: int | None = None
) -> Model:
    """Load a .tflite or .onnx model with an on-device runtime.

    Args:
        path: the model file.
        runtime: ``auto``, ``litert``, ``tflite-runtime``, ``tensorflow`` or
            ``onnxruntime``; ``auto`` picks ONNX Runtime for ``.onnx`` and the
            first installed of litert, tflite-runtime, tensorflow for ``.tflite``.
        num_threads: CPU threads for the runtime; ``None`` keeps its default.

    Returns:
        The loaded :class:`Model`.

    Raises:
        ModelFileError: the file is missing, empty, truncated or not a model.
        RuntimeNotFoundError: the runtime is unknown, cannot run this format, or is not installed.
        LimitError: ``num_threads`` is over :func:`max_threads`, or a tensor would need more
            than :data:`MAX_TENSOR_BYTES` for one sample.
    """
    path = Path(path)
    _check_arguments(path, runtime, num_threads)
    fmt = _model_format(path, runtime)
    if fmt == "onnx":
        if runtime not in ("auto", "onnxruntime"):
            raise RuntimeNotFoundError(
                f"runtime {runtime!r} cannot run ONNX file {path}; use runtime=onnxruntime "
                "or auto, or pass a .tflite file"
            )
        backend = _OnnxBackend(_import_runtime("onnxruntime"), path, num_threads)
        # ONNX Runtime allocates at run time: the declared input is checked before any run.
        _check_tensor_bytes(path, backend.input.name, backend.input.shape,
                            np.dtype(backend.input.dtype).itemsize)
        return Model(path, "onnxruntime", backend)
    if runtime == "onnxruntime":
        raise RuntimeNotFoundError(
            f"runtime 'onnxruntime' cannot run TFLite file {path}; use auto, litert, "
            "tflite-runtime or tensorflow, or pass a .onnx file"
        )
    # Parsing the flatbuffer first gives clearer errors than the runtime's own.
    data = path.read_bytes()
    metadata = decode_edgeport_metadata(read_metadata(path), name=str(path))
    task = parse_task_metadata(data, name=str(path))
    _check_tflite_tensors(data, path)  # before allocate_tensors() would claim the memory
    if runtime != "auto":
        backend = _TFLiteBackend(_import_runtime(runtime), path, num_threads, metadata, runtime)
        return Model(path, runtime, backend, task)
    reasons = []
    for name in _TFLITE_RUNTIMES:
        try:
            cls = _import_runtime(name)
        except RuntimeNotFoundError as e:
            reasons.append(f"{name}: {_first_line(e).split(';')[0]}")
            continue
        return Model(path, name, _TFLiteBackend(cls, path, num_threads, metadata, name), task)
    raise RuntimeNotFoundError(
        f"no TFLite runtime can be imported to run {path} ({'; '.join(reasons)}); "
        "pip install ai-edge-litert (or tflite-runtime on older devices)"
    )
