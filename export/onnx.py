"""Convert a run's SavedModel to ONNX with tf2onnx.

Usage::

    from edgeport.export.onnx import convert_onnx
    data = convert_onnx(load_serving("RUN/saved_model"), metadata=doc, opset=17)

The graph takes ``image`` float32 ``[batch, ...]`` and returns
``probabilities`` then ``logits`` float32 ``[batch, K]``; the batch dimension is
the symbolic ``batch``. The file passes ``onnx.checker.check_model(full_check=True)``,
carries the JSON metadata document in ``metadata_props["edgeport"]`` and has
``producer_name="edgeport"``. Names that tf2onnx derives from TensorFlow's
function counters (graph name and doc string, symbolic dims) are fixed, so the same weights
give the same bytes, in one process or many.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ExportError
from .metadata import METADATA_KEY, decode_metadata, encode_metadata
from .serving import INPUT_NAME, OUTPUT_NAMES, Serving

__all__ = [
    "DEFAULT_OPSET",
    "check_onnx",
    "convert_onnx",
    "make_session",
    "onnx_ops",
    "onnx_tensor_details",
    "read_onnx_metadata",
]

DEFAULT_OPSET = 17
BATCH_DIM = "batch"
_CHECK_BATCHES = (1, 7)
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def convert_onnx(
    serving: Serving, *, metadata: Mapping[str, Any], opset: int = DEFAULT_OPSET
) -> bytes:
    """Convert ``serving_default`` to a finished, checked ONNX model.

    Args:
        serving: the loaded signature (:func:`export.serving.load_serving`).
        metadata: the JSON metadata document to embed.
        opset: the ONNX opset (default 17).

    Returns:
        The serialized ``.onnx`` bytes.

    Raises:
        ExportError: tf2onnx failed or the result breaks the contract.
    """
    import tensorflow as tf
    import tf2onnx

    try:
        with tf.device("/cpu:0"):
            proto, _ = tf2onnx.convert.from_function(
                serving.as_tf_function(), input_signature=[serving.input_spec()], opset=opset
            )
    except Exception as e:  # tf2onnx raises ValueError, KeyError, RuntimeError...
        raise ExportError(
            f"ONNX conversion (opset {opset}) failed: {type(e).__name__}: {e}; expected a model "
            "of ops tf2onnx supports; fix: try another --opset or export without onnx"
        ) from e
    unconverted = unconverted_ops(proto)
    if unconverted:  # tf2onnx logs these and leaves the TensorFlow node in place
        listed = ", ".join(f"{op} (node {_short(node)})" for op, node in unconverted[:3])
        raise ExportError(
            f"ONNX conversion (opset {opset}): tf2onnx has no ONNX op for TensorFlow "
            f"{listed}{' and more' if len(unconverted) > 3 else ''}; expected ops tf2onnx "
            "supports; fix: remove those ops from the model, or export without onnx"
        )
    _finish_proto(proto, metadata, producer_version=f"tf2onnx {tf2onnx.__version__}")
    data = proto.SerializeToString(deterministic=True)
    problems = check_onnx(data, input_shape=serving.input_shape)
    if problems:
        raise ExportError(f"model.onnx breaks the export contract: {'; '.join(problems)}")
    return data


def _short(node: str) -> str:
    """A node name without the call wrappers: ``StatefulPartitionedCall/.../ReadFile`` ->
    ``ReadFile``."""
    parts = [p for p in node.split("/") if p not in ("StatefulPartitionedCall",
                                                     "PartitionedCall")]
    return "/".join(parts) or node


def unconverted_ops(proto: Any) -> list[tuple[str, str]]:
    """``(op_type, node name)`` of nodes (subgraphs included) that no ONNX opset defines:
    TensorFlow ops tf2onnx could not convert and left as they were."""
    import onnx

    found: list[tuple[str, str]] = []
    stack = [proto.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            for a in node.attribute:  # If/Loop/Scan bodies
                stack.extend([a.g] if a.HasField("g") else a.graphs)
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
                found.append((node.op_type, node.name))
    return found


def _finish_proto(proto: Any, metadata: Mapping[str, Any], *, producer_version: str) -> None:
    """Check the I/O names, order the outputs, name the batch dimension, embed the metadata."""
    import onnx

    graph = proto.graph
    graph.name = "edgeport"
    # tf2onnx writes "converted from b'__inference_serve_<counter>'": the counter
    # depends on how many functions the process traced before, so it goes.
    graph.doc_string = ""
    inputs = {v.name: v for v in graph.input}
    outputs = {v.name: v for v in graph.output}
    if set(inputs) != {INPUT_NAME} or set(outputs) != set(OUTPUT_NAMES):
        raise ExportError(
            f"ONNX graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}, expected "
            f"['{INPUT_NAME}'] and {sorted(OUTPUT_NAMES)}; fix: re-train so the serving_default "
            "signature follows docs/contracts.md"
        )
    ordered = [outputs[n] for n in OUTPUT_NAMES]
    copies = [onnx.ValueInfoProto() for _ in ordered]
    for copy, value in zip(copies, ordered, strict=True):
        copy.CopyFrom(value)
    del graph.output[:]
    graph.output.extend(copies)
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    proto.producer_name = "edgeport"
    proto.producer_version = producer_version
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = encode_metadata(metadata).decode("utf-8")


def read_onnx_metadata(model: bytes) -> dict[str, Any]:
    """Read the ``"edgeport"`` metadata document back from ``.onnx`` bytes.

    Raises:
        ExportError: the model has no ``"edgeport"`` entry.
    """
    import onnx

    for entry in onnx.load_from_string(model).metadata_props:
        if entry.key == METADATA_KEY:
            return decode_metadata(entry.value)
    raise ExportError(
        f"ONNX model has no {METADATA_KEY!r} metadata_props entry; expected one written by "
        "`edgeport export`; fix: re-export the run"
    )


def onnx_ops(model: bytes) -> list[str]:
    """The sorted, distinct ``op_type`` names of the main graph (``["Add", "MatMul", ...]``)."""
    import onnx

    return sorted({node.op_type for node in onnx.load_from_string(model).graph.node})


def onnx_tensor_details(model: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensors as ONNX Runtime reports them, in manifest form.

    Returns:
        ``(inputs, outputs)``, each a list of ``{"name", "shape", "dtype",
        "scale", "zero_point"}``; symbolic dims are -1, and ``scale`` /
        ``zero_point`` are ``None`` (the graph's I/O is float).
    """
    session = make_session(model)

    def detail(arg: Any) -> dict[str, Any]:
        return {
            "name": arg.name,
            "shape": [d if isinstance(d, int) else -1 for d in arg.shape],
            "dtype": _ORT_DTYPES.get(arg.type, arg.type),
            "scale": None,
            "zero_point": None,
        }

    return [detail(a) for a in session.get_inputs()], [detail(a) for a in session.get_outputs()]


def check_onnx(model: bytes, *, input_shape: tuple[int, ...]) -> list[str]:
    """Check finished ``.onnx`` bytes against the contract; a sanity check, not parity.

    Runs ``onnx.checker.check_model(full_check=True)``, checks the I/O names,
    order and dtypes, the metadata entry, and that batch 1 and batch 7 run
    with finite outputs of shape ``[batch, K]``.

    Returns:
        The problems found, one line each; empty when the file is good.
    """
    import numpy as np
    import onnx

    problems: list[str] = []
    try:
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    except onnx.checker.ValidationError as e:
        problems.append(f"onnx.checker: {str(e).strip().splitlines()[0]}")
    try:
        read_onnx_metadata(model)
    except ExportError as e:
        problems.append(str(e))
    try:
        inputs, outputs = onnx_tensor_details(model)
    except Exception as e:  # onnxruntime's own exception types (InvalidGraph, Fail...)
        text = " ".join(str(e).split())
        return [*problems, f"ONNX Runtime cannot load it ({type(e).__name__}: {text[:300]})"]
    names = ([d["name"] for d in inputs], [d["name"] for d in outputs])
    if names != ([INPUT_NAME], list(OUTPUT_NAMES)):
        problems.append(f"I/O names {names}, expected (['image'], {list(OUTPUT_NAMES)})")
    dtypes = {d["dtype"] for d in inputs + outputs}
    if dtypes != {"float32"}:
        problems.append(f"I/O dtypes {sorted(dtypes)}, expected float32")
    session = make_session(model)
    rng = np.random.default_rng(0)
    for batch in _CHECK_BATCHES:
        x = (rng.integers(0, 256, size=(batch, *input_shape)) / 255.0).astype(np.float32)
        for name, y in zip(
            OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}), strict=True
        ):
            if y.ndim != 2 or y.shape[0] != batch or not np.all(np.isfinite(y)):
                problems.append(f"batch {batch}: output {name} has shape {y.shape}")
    return problems


def make_session(model: bytes) -> Any:
    """An ONNX Runtime CPU session for ``model``, single-threaded (the graphs are tiny)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # do not grab every core for a tiny graph
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
