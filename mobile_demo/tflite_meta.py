"""Read a .tflite file's metadata and operators through the generated TFLite schemas.

The one TFLite reader of edgeport, used by the device side and by the exporter.
A TFLite model is a FlatBuffer (identifier ``TFL3``); this module reads it with
the ``flatc``-generated schema that ships with the runtime
(``ai_edge_litert.schema_py_generated``; in the legacy tflite-runtime venv, the
PyPI package ``tflite``, generated from the same ``schema.fbs``) and the
standard ``TFLITE_METADATA`` entry with the generated TFLite metadata schema
(:mod:`edgeport.mobile_demo.metadata_schema_py_generated`). No op table is kept
here: names come from the schema's ``BuiltinOperator``.

Usage::

    from edgeport.mobile_demo.tflite_meta import list_ops, read_edgeport_metadata
    read_edgeport_metadata("model_int8.tflite")["labels"]
    list_ops("model_int8.tflite")  # ['FULLY_CONNECTED', 'QUANTIZE', 'SOFTMAX']
    read_task_metadata("model_app_float32.tflite").labels  # ('0', '1', ...)

Generated FlatBuffer code does not bounds-check, so the bytes are wrapped in a
``bytes`` subclass whose slices refuse to run past the end, and every
``struct.error`` / ``IndexError`` / ``ValueError`` the accessors raise becomes one
:class:`~edgeport.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeport.errors import ModelFileError

__all__ = [
    "EDGEPORT_METADATA_KEY",
    "TFLITE_IDENTIFIER",
    "TFLITE_METADATA_KEY",
    "TaskMetadata",
    "decode_edgeport_metadata",
    "has_tflite_identifier",
    "list_ops",
    "parse_metadata",
    "parse_operators",
    "parse_ops",
    "parse_task_metadata",
    "read_edgeport_metadata",
    "read_metadata",
    "read_task_metadata",
    "tflite_schema",
]

TFLITE_IDENTIFIER = b"TFL3"
EDGEPORT_METADATA_KEY = "edgeport"
TFLITE_METADATA_KEY = "TFLITE_METADATA"  # the standard entry (MediaPipe, Task Library)
_FIX = "expected a .tflite file written by a TFLite converter; re-export the model"
_CORRUPT = (struct.error, IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError)
_T = TypeVar("_T")


def tflite_schema() -> Any:
    """The generated TFLite schema module (``Model``, ``BuiltinOperator``, ``TensorType``...).

    ``ai_edge_litert.schema_py_generated`` where LiteRT is installed; the PyPI
    ``tflite`` package (pinned in ``requirements-device-legacy.txt``) in the
    legacy tflite-runtime venv. Both are ``flatc`` output of ``schema.fbs``, so
    their accessors have the same names.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            import tflite as schema
        except ImportError:
            raise ModelFileError(
                "reading .tflite files needs a generated TFLite schema, found neither "
                "ai_edge_litert nor tflite; pip install ai-edge-litert (or tflite==2.18.0 "
                "next to tflite-runtime)"
            ) from None
    return schema


def _metadata_schema() -> Any:
    from . import metadata_schema_py_generated as schema

    return schema


class _Bytes(bytes):
    """File bytes whose slices raise IndexError instead of silently coming up short."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice) and (key.stop or 0) > len(self):
            raise IndexError(f"bytes {key.start}..{key.stop} are past the end ({len(self)})")
        return super().__getitem__(key)


def _guarded(data: bytes, name: str, read: Callable[[Any], _T]) -> _T:
    """Run ``read(model)`` on the parsed root table; any decoding failure is a ModelFileError."""
    if len(data) < 8:
        raise ModelFileError(
            f"{name}: not a valid TFLite model: {len(data)} bytes is too short for a "
            f"FlatBuffer header; {_FIX}"
        )
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(
            f"{name}: not a valid TFLite model: file identifier is {bytes(data[4:8])!r}, "
            f"expected {TFLITE_IDENTIFIER!r}; {_FIX}"
        )
    buf = _Bytes(data)
    try:
        return read(tflite_schema().Model.GetRootAs(buf, 0))
    except _CORRUPT as e:
        raise ModelFileError(
            f"{name}: not a valid TFLite model: truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'bad offset'}); {_FIX}"
        ) from None


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value or "")


def _entries(model: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name, index = _text(entry.Name()), entry.Buffer()
        if index >= model.BuffersLength():
            raise IndexError(f"metadata[{i}] ({name!r}) points at missing buffer {index}")
        buffer = model.Buffers(index)
        if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
            start, size = buffer.Offset(), buffer.Size()
            out[name] = bytes(model._tab.Bytes[start : start + size])
        else:
            out[name] = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return out


def _op_codes(model: Any) -> list[str]:
    schema = tflite_schema()
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Same rule as tflite::GetBuiltinCode: old files fill only the int8 field.
        value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if value == schema.BuiltinOperator.CUSTOM:
            codes.append(_text(code.CustomCode()) or "CUSTOM")
        else:
            codes.append(op_names.get(value, f"BUILTIN_{value}"))
    return codes


def _operators(model: Any) -> list[tuple[str, list[str]]]:
    schema = tflite_schema()
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = _op_codes(model)
    out = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            used = [op.Inputs(i) for i in range(op.InputsLength())]
            used += [op.Outputs(i) for i in range(op.OutputsLength())]
            types = [type_names.get(subgraph.Tensors(t).Type(), "?") for t in used if t >= 0]
            out.append((codes[op.OpcodeIndex()], types))
    return out


def parse_metadata(data: bytes, *, name: str = "<bytes>") -> dict[str, bytes]:
    """Return the ``Model.metadata`` entries of a TFLite flatbuffer held in memory.

    Args:
        data: the bytes of a .tflite file.
        name: the file name used in error messages.

    Returns:
        Entry name -> buffer bytes, in file order (a repeated name keeps the last).

    Raises:
        ModelFileError: the bytes are not a well-formed TFLite flatbuffer.
    """
    return _guarded(bytes(data), name, _entries)


def parse_operators(data: bytes, *, name: str = "<bytes>") -> list[tuple[str, list[str]]]:
    """Every operator in file order as ``(op name, tensor type names of its inputs+outputs)``.

    Raises:
        ModelFileError: the bytes are not a well-formed TFLite flatbuffer.
    """
    return _guarded(bytes(data), name, _operators)


def parse_ops(data: bytes, *, name: str = "<bytes>") -> list[str]:
    """Return the sorted, distinct operator names in a TFLite flatbuffer's operator codes.

    Builtin operators read as their schema name (``FULLY_CONNECTED``), custom
    operators as their ``custom_code``, codes newer than the schema as
    ``BUILTIN_<code>``.

    Raises:
        ModelFileError: the bytes are not a well-formed TFLite flatbuffer.
    """
    return sorted(set(_guarded(bytes(data), name, _op_codes)))


def _read(path: str | os.PathLike[str]) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found; check the path") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, expected a .tflite file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror}); check permissions") from None
    if not data:
        raise ModelFileError(f"{path}: empty file (0 bytes); {_FIX}")
    return data


def read_metadata(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read the ``Model.metadata`` entries (name -> bytes) of a .tflite file.

    Raises:
        ModelFileError: the file is missing, empty, truncated or not TFLite.
    """
    return parse_metadata(_read(path), name=str(path))


def list_ops(path: str | os.PathLike[str]) -> list[str]:
    """Read the sorted, distinct operator names a .tflite file uses (see :func:`parse_ops`).

    Raises:
        ModelFileError: the file is missing, empty, truncated or not TFLite.
    """
    return parse_ops(_read(path), name=str(path))


def decode_edgeport_metadata(entries: dict[str, bytes], *, name: str) -> dict[str, Any]:
    """Decode the ``"edgeport"`` entry of ``entries`` as a JSON object ({} when absent).

    Raises:
        ModelFileError: the entry is not UTF-8 JSON or not a JSON object.
    """
    raw = entries.get(EDGEPORT_METADATA_KEY)
    if raw is None:
        return {}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(
            f"{name}: the 'edgeport' metadata is not UTF-8 JSON ({e}); re-export the model"
        ) from None
    if not isinstance(doc, dict):
        raise ModelFileError(
            f"{name}: the 'edgeport' metadata is a JSON {type(doc).__name__}, "
            "expected an object; re-export the model"
        )
    return doc


def read_edgeport_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the edgeport JSON document embedded in a .tflite file ({} when it has none).

    Raises:
        ModelFileError: the file is not TFLite or its ``"edgeport"`` entry is not a JSON object.
    """
    return decode_edgeport_metadata(read_metadata(path), name=str(path))


@dataclass(frozen=True)
class TaskMetadata:
    """What the standard ``TFLITE_METADATA`` entry says about an image classifier.

    ``mean``/``std`` are the input's ``NormalizationOptions`` (the model takes
    ``(pixel - mean) / std``); ``labels`` come from the output's packed
    ``TENSOR_AXIS_LABELS`` file. Absent parts are ``None``.
    """

    name: str
    description: str
    version: str
    author: str
    license: str
    color_space: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    labels: tuple[str, ...] | None
    label_file: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def parse_task_metadata(data: bytes, *, name: str = "<bytes>") -> TaskMetadata | None:
    """Decode the standard ``TFLITE_METADATA`` entry of a model held in memory.

    Returns:
        The decoded metadata, or ``None`` when the model has no such entry.

    Raises:
        ModelFileError: the model, the entry or its packed label file is damaged.
    """
    raw = parse_metadata(data, name=name).get(TFLITE_METADATA_KEY)
    if raw is None:
        return None
    schema = _metadata_schema()
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        raise ModelFileError(
            f"{name}: the {TFLITE_METADATA_KEY} entry lacks the M001 identifier; "
            "expected TFLite model metadata; re-write it with a metadata writer"
        )
    try:
        meta = schema.ModelMetadataT.InitFromPackedBuf(_Bytes(raw), 0)
    except _CORRUPT as e:
        raise ModelFileError(
            f"{name}: the {TFLITE_METADATA_KEY} entry is corrupt ({type(e).__name__}); "
            "re-write the model metadata"
        ) from None
    sub = (meta.subgraphMetadata or [None])[0]
    color, mean, std = None, None, None
    if sub is not None and sub.inputTensorMetadata:
        tensor = sub.inputTensorMetadata[0]
        props = tensor.content.contentProperties if tensor.content else None
        if isinstance(props, schema.ImagePropertiesT):
            spaces = {v: k for k, v in vars(schema.ColorSpaceType).items() if k.isupper()}
            color = spaces.get(props.colorSpace, "UNKNOWN")
        for unit in tensor.processUnits or []:
            if isinstance(unit.options, schema.NormalizationOptionsT):
                mean = tuple(float(v) for v in unit.options.mean)
                std = tuple(float(v) for v in unit.options.std)
    label_file = None
    if sub is not None and sub.outputTensorMetadata:
        for file in sub.outputTensorMetadata[0].associatedFiles or []:
            if file.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS:
                label_file = _text(file.name)
                break
    labels = None if label_file is None else _packed_labels(data, label_file, name)
    return TaskMetadata(
        name=_text(meta.name),
        description=_text(meta.description),
        version=_text(meta.version),
        author=_text(meta.author),
        license=_text(meta.license),
        color_space=color,
        mean=mean,
        std=std,
        labels=labels,
        label_file=label_file,
    )


def _packed_labels(data: bytes, file: str, name: str) -> tuple[str, ...]:
    """Read a label file from the zip appended to the flatbuffer (tflite-support's packing)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            text = archive.read(file).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise ModelFileError(
            f"{name}: the metadata names label file {file!r} but it is not packed in the model "
            f"({type(e).__name__}); re-export the model"
        ) from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_task_metadata(path: str | os.PathLike[str]) -> TaskMetadata | None:
    """Read the standard ``TFLITE_METADATA`` of a .tflite file (``None`` when absent).

    Raises:
        ModelFileError: the file, its metadata or its packed label file is damaged.
    """
    return parse_task_metadata(_read(path), name=str(path))


def has_tflite_identifier(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a TFLite flatbuffer (identifier ``TFL3`` at byte 4)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False
