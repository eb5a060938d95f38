"""Read a .tflite file's metadata and operator list without TensorFlow or flatbuffers.

A TFLite model is a FlatBuffer (identifier ``TFL3``). This module walks just
enough of it to return the ``Model.metadata`` entries (name -> bytes), the
``"edgeport"`` JSON document that the exporter embeds there, and the names of
the operators the model uses. Every read is bounds-checked: a malformed file
raises :class:`~edgeport.errors.ModelFileError` naming the file, never
``struct.error`` or ``IndexError``.

Usage::

    from edgeport.mobile_demo.tflite_meta import list_ops, read_edgeport_metadata
    read_edgeport_metadata("model_int8.tflite")["labels"]
    list_ops("model_int8.tflite")  # ['FULLY_CONNECTED', 'QUANTIZE', 'SOFTMAX']

Schema fields used (tensorflow/compiler/mlir/lite/schema/schema.fbs):
``Model``: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers,
5 metadata_buffer, 6 metadata, 7 signature_defs. ``OperatorCode``:
0 deprecated_builtin_code (byte), 1 custom_code (string), 2 version,
3 builtin_code (int). ``Metadata``: 0 name, 1 buffer. ``Buffer``: 0 data,
1 offset, 2 size (for models over 2 GB the bytes live outside the flatbuffer
at that absolute file offset, valid when ``offset > 1``).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, NoReturn

from edgeport.errors import ModelFileError

__all__ = [
    "BUILTIN_OPS",
    "EDGEPORT_METADATA_KEY",
    "TFLITE_IDENTIFIER",
    "decode_edgeport_metadata",
    "has_tflite_identifier",
    "list_ops",
    "parse_metadata",
    "parse_ops",
    "read_edgeport_metadata",
    "read_metadata",
]

TFLITE_IDENTIFIER = b"TFL3"
EDGEPORT_METADATA_KEY = "edgeport"
_CUSTOM = 32  # BuiltinOperator.CUSTOM: the name is in OperatorCode.custom_code
# BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES: deprecated_builtin_code is
# an int8, so codes above 127 are stored only in builtin_code.
_PLACEHOLDER = 127
_FIX = "expected a .tflite file written by a TFLite converter; re-export the model"

# Generated once from tensorflow.lite.python.schema_py_generated.BuiltinOperator
# (TensorFlow 2.21); unknown codes read as f"BUILTIN_{code}".
BUILTIN_OPS: dict[int, str] = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    7: "EMBEDDING_LOOKUP",
    8: "FLOOR",
    9: "FULLY_CONNECTED",
    10: "HASHTABLE_LOOKUP",
    11: "L2_NORMALIZATION",
    12: "L2_POOL_2D",
    13: "LOCAL_RESPONSE_NORMALIZATION",
    14: "LOGISTIC",
    15: "LSH_PROJECTION",
    16: "LSTM",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    20: "RELU_N1_TO_1",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    24: "RNN",
    25: "SOFTMAX",
    26: "SPACE_TO_DEPTH",
    27: "SVDF",
    28: "TANH",
    29: "CONCAT_EMBEDDINGS",
    30: "SKIP_GRAM",
    31: "CALL",
    32: "CUSTOM",
    33: "EMBEDDING_LOOKUP_SPARSE",
    34: "PAD",
    35: "UNIDIRECTIONAL_SEQUENCE_RNN",
    36: "GATHER",
    37: "BATCH_TO_SPACE_ND",
    38: "SPACE_TO_BATCH_ND",
    39: "TRANSPOSE",
    40: "MEAN",
    41: "SUB",
    42: "DIV",
    43: "SQUEEZE",
    44: "UNIDIRECTIONAL_SEQUENCE_LSTM",
    45: "STRIDED_SLICE",
    46: "BIDIRECTIONAL_SEQUENCE_RNN",
    47: "EXP",
    48: "TOPK_V2",
    49: "SPLIT",
    50: "LOG_SOFTMAX",
    51: "DELEGATE",
    52: "BIDIRECTIONAL_SEQUENCE_LSTM",
    53: "CAST",
    54: "PRELU",
    55: "MAXIMUM",
    56: "ARG_MAX",
    57: "MINIMUM",
    58: "LESS",
    59: "NEG",
    60: "PADV2",
    61: "GREATER",
    62: "GREATER_EQUAL",
    63: "LESS_EQUAL",
    64: "SELECT",
    65: "SLICE",
    66: "SIN",
    67: "TRANSPOSE_CONV",
    68: "SPARSE_TO_DENSE",
    69: "TILE",
    70: "EXPAND_DIMS",
    71: "EQUAL",
    72: "NOT_EQUAL",
    73: "LOG",
    74: "SUM",
    75: "SQRT",
    76: "RSQRT",
    77: "SHAPE",
    78: "POW",
    79: "ARG_MIN",
    80: "FAKE_QUANT",
    81: "REDUCE_PROD",
    82: "REDUCE_MAX",
    83: "PACK",
    84: "LOGICAL_OR",
    85: "ONE_HOT",
    86: "LOGICAL_AND",
    87: "LOGICAL_NOT",
    88: "UNPACK",
    89: "REDUCE_MIN",
    90: "FLOOR_DIV",
    91: "REDUCE_ANY",
    92: "SQUARE",
    93: "ZEROS_LIKE",
    94: "FILL",
    95: "FLOOR_MOD",
    96: "RANGE",
    97: "RESIZE_NEAREST_NEIGHBOR",
    98: "LEAKY_RELU",
    99: "SQUARED_DIFFERENCE",
    100: "MIRROR_PAD",
    101: "ABS",
    102: "SPLIT_V",
    103: "UNIQUE",
    104: "CEIL",
    105: "REVERSE_V2",
    106: "ADD_N",
    107: "GATHER_ND",
    108: "COS",
    109: "WHERE",
    110: "RANK",
    111: "ELU",
    112: "REVERSE_SEQUENCE",
    113: "MATRIX_DIAG",
    114: "QUANTIZE",
    115: "MATRIX_SET_DIAG",
    116: "ROUND",
    117: "HARD_SWISH",
    118: "IF",
    119: "WHILE",
    120: "NON_MAX_SUPPRESSION_V4",
    121: "NON_MAX_SUPPRESSION_V5",
    122: "SCATTER_ND",
    123: "SELECT_V2",
    124: "DENSIFY",
    125: "SEGMENT_SUM",
    126: "BATCH_MATMUL",
    127: "PLACEHOLDER_FOR_GREATER_OP_CODES",
    128: "CUMSUM",
    129: "CALL_ONCE",
    130: "BROADCAST_TO",
    131: "RFFT2D",
    132: "CONV_3D",
    133: "IMAG",
    134: "REAL",
    135: "COMPLEX_ABS",
    136: "HASHTABLE",
    137: "HASHTABLE_FIND",
    138: "HASHTABLE_IMPORT",
    139: "HASHTABLE_SIZE",
    140: "REDUCE_ALL",
    141: "CONV_3D_TRANSPOSE",
    142: "VAR_HANDLE",
    143: "READ_VARIABLE",
    144: "ASSIGN_VARIABLE",
    145: "BROADCAST_ARGS",
    146: "RANDOM_STANDARD_NORMAL",
    147: "BUCKETIZE",
    148: "RANDOM_UNIFORM",
    149: "MULTINOMIAL",
    150: "GELU",
    151: "DYNAMIC_UPDATE_SLICE",
    152: "RELU_0_TO_1",
    153: "UNSORTED_SEGMENT_PROD",
    154: "UNSORTED_SEGMENT_MAX",
    155: "UNSORTED_SEGMENT_SUM",
    156: "ATAN2",
    157: "UNSORTED_SEGMENT_MIN",
    158: "SIGN",
    159: "BITCAST",
    160: "BITWISE_XOR",
    161: "RIGHT_SHIFT",
    162: "STABLEHLO_LOGISTIC",
    163: "STABLEHLO_ADD",
    164: "STABLEHLO_DIVIDE",
    165: "STABLEHLO_MULTIPLY",
    166: "STABLEHLO_MAXIMUM",
    167: "STABLEHLO_RESHAPE",
    168: "STABLEHLO_CLAMP",
    169: "STABLEHLO_CONCATENATE",
    170: "STABLEHLO_BROADCAST_IN_DIM",
    171: "STABLEHLO_CONVOLUTION",
    172: "STABLEHLO_SLICE",
    173: "STABLEHLO_CUSTOM_CALL",
    174: "STABLEHLO_REDUCE",
    175: "STABLEHLO_ABS",
    176: "STABLEHLO_AND",
    177: "STABLEHLO_COSINE",
    178: "STABLEHLO_EXPONENTIAL",
    179: "STABLEHLO_FLOOR",
    180: "STABLEHLO_LOG",
    181: "STABLEHLO_MINIMUM",
    182: "STABLEHLO_NEGATE",
    183: "STABLEHLO_OR",
    184: "STABLEHLO_POWER",
    185: "STABLEHLO_REMAINDER",
    186: "STABLEHLO_RSQRT",
    187: "STABLEHLO_SELECT",
    188: "STABLEHLO_SUBTRACT",
    189: "STABLEHLO_TANH",
    190: "STABLEHLO_SCATTER",
    191: "STABLEHLO_COMPARE",
    192: "STABLEHLO_CONVERT",
    193: "STABLEHLO_DYNAMIC_SLICE",
    194: "STABLEHLO_DYNAMIC_UPDATE_SLICE",
    195: "STABLEHLO_PAD",
    196: "STABLEHLO_IOTA",
    197: "STABLEHLO_DOT_GENERAL",
    198: "STABLEHLO_REDUCE_WINDOW",
    199: "STABLEHLO_SORT",
    200: "STABLEHLO_WHILE",
    201: "STABLEHLO_GATHER",
    202: "STABLEHLO_TRANSPOSE",
    203: "DILATE",
    204: "STABLEHLO_RNG_BIT_GENERATOR",
    205: "REDUCE_WINDOW",
    206: "STABLEHLO_COMPOSITE",
    207: "STABLEHLO_SHIFT_LEFT",
    208: "STABLEHLO_CBRT",
    209: "STABLEHLO_CASE",
}


class _Table:
    """One FlatBuffer table: field lookups through its vtable, all bounds-checked."""

    def __init__(self, buf: _Buffer, pos: int, what: str) -> None:
        self.buf = buf
        self.pos = pos
        self.what = what
        vtable = pos - buf.i32(pos, what)
        self.vt_len = buf.u16(vtable, what)
        self.obj_len = buf.u16(vtable + 2, what)
        if self.vt_len < 4 or self.vt_len % 2 or self.obj_len < 4:
            buf.fail(f"{what} has a corrupt vtable at byte {vtable}")
        buf.need(vtable, self.vt_len, what)
        buf.need(pos, self.obj_len, what)
        self.vtable = vtable

    def _field(self, index: int, size: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vt_len:
            return None
        rel = self.buf.u16(self.vtable + slot, self.what)
        if rel == 0:
            return None
        if rel + size > self.obj_len:
            self.buf.fail(f"{self.what} field {index} lies outside its table")
        return self.pos + rel

    def scalar(self, index: int, fmt: str, default: int) -> int:
        at = self._field(index, struct.calcsize(fmt))
        return default if at is None else self.buf.unpack(fmt, at, self.what)

    def _target(self, index: int) -> int | None:
        at = self._field(index, 4)
        return None if at is None else at + self.buf.u32(at, self.what)

    def table(self, index: int, what: str) -> _Table | None:
        at = self._target(index)
        return None if at is None else _Table(self.buf, at, what)

    def string(self, index: int, what: str) -> str | None:
        at = self._target(index)
        return None if at is None else self.buf.string(at, what)

    def vector(self, index: int, elem_size: int, what: str) -> tuple[int, int] | None:
        """Return ``(first element position, length)`` of a vector field."""
        at = self._target(index)
        if at is None:
            return None
        length = self.buf.u32(at, what)
        self.buf.need(at + 4, length * elem_size, what)
        return at + 4, length

    def tables(self, index: int, what: str) -> list[_Table]:
        vec = self.vector(index, 4, what)
        if vec is None:
            return []
        start, length = vec
        out = []
        for i in range(length):
            at = start + 4 * i
            out.append(_Table(self.buf, at + self.buf.u32(at, what), f"{what}[{i}]"))
        return out


class _Buffer:
    """The file's bytes plus bounds-checked little-endian reads."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name

    def fail(self, what: str) -> NoReturn:
        raise ModelFileError(f"{self.name}: not a valid TFLite model: {what}; {_FIX}")

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.data):
            self.fail(
                f"{what} needs bytes {pos}..{pos + size} but the file has {len(self.data)} "
                "(truncated or corrupt)"
            )

    def unpack(self, fmt: str, pos: int, what: str) -> int:
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u16(self, pos: int, what: str) -> int:
        return self.unpack("<H", pos, what)

    def u32(self, pos: int, what: str) -> int:
        return self.unpack("<I", pos, what)

    def i32(self, pos: int, what: str) -> int:
        return self.unpack("<i", pos, what)

    def string(self, pos: int, what: str) -> str:
        length = self.u32(pos, what)
        self.need(pos + 4, length, what)
        try:
            return self.data[pos + 4 : pos + 4 + length].decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8")

    def root(self) -> _Table:
        if len(self.data) < 8:
            self.fail(f"{len(self.data)} bytes is too short for a FlatBuffer header")
        ident = self.data[4:8]
        if ident != TFLITE_IDENTIFIER:
            self.fail(f"file identifier is {ident!r}, expected {TFLITE_IDENTIFIER!r}")
        return _Table(self, self.u32(0, "root offset"), "Model")


def _read(path: str | os.PathLike[str]) -> _Buffer:
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
    return _Buffer(data, str(path))


def _buffer_bytes(buf: _Buffer, table: _Table, index: int) -> bytes:
    what = f"buffers[{index}]"
    offset = table.scalar(1, "<Q", 0)
    size = table.scalar(2, "<Q", 0)
    if offset > 1:
        buf.need(offset, size, f"{what} (stored outside the flatbuffer)")
        return buf.data[offset : offset + size]
    vec = table.vector(0, 1, f"{what}.data")
    if vec is None:
        return b""
    start, length = vec
    return buf.data[start : start + length]


def _metadata(buf: _Buffer) -> dict[str, bytes]:
    model = buf.root()
    entries = model.tables(6, "metadata")
    if not entries:
        return {}
    buffers = model.tables(4, "buffers")
    out: dict[str, bytes] = {}
    for i, entry in enumerate(entries):
        name = entry.string(0, f"metadata[{i}].name") or ""
        index = entry.scalar(1, "<I", 0)
        if index >= len(buffers):
            buf.fail(
                f"metadata[{i}] ({name!r}) points at buffer {index} "
                f"but the model has {len(buffers)} buffers"
            )
        out[name] = _buffer_bytes(buf, buffers[index], index)
    return out


def _ops(buf: _Buffer) -> list[str]:
    model = buf.root()
    names = []
    for i, code in enumerate(model.tables(1, "operator_codes")):
        deprecated = code.scalar(0, "<b", 0)
        builtin = code.scalar(3, "<i", 0)
        # Same rule as tflite::GetBuiltinCode: old files fill only the int8
        # field, new ones write both; the larger one is the real code.
        value = max(builtin, deprecated)
        if value == _CUSTOM:
            custom = code.string(1, f"operator_codes[{i}].custom_code")
            names.append(custom if custom else "CUSTOM")
        else:
            names.append(BUILTIN_OPS.get(value, f"BUILTIN_{value}"))
    return names


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
    return _metadata(_Buffer(bytes(data), name))


def parse_ops(data: bytes, *, name: str = "<bytes>") -> list[str]:
    """Return the sorted, distinct operator names of a TFLite flatbuffer held in memory.

    Builtin operators read as their schema name (``FULLY_CONNECTED``), custom
    operators as their ``custom_code``, codes newer than the table as
    ``BUILTIN_<code>``.

    Raises:
        ModelFileError: the bytes are not a well-formed TFLite flatbuffer.
    """
    return sorted(set(_ops(_Buffer(bytes(data), name))))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read the ``Model.metadata`` entries (name -> bytes) of a .tflite file.

    Raises:
        ModelFileError: the file is missing, empty, truncated or not TFLite.
    """
    return _metadata(_read(path))


def list_ops(path: str | os.PathLike[str]) -> list[str]:
    """Read the sorted, distinct operator names a .tflite file uses (see :func:`parse_ops`).

    Raises:
        ModelFileError: the file is missing, empty, truncated or not TFLite.
    """
    return sorted(set(_ops(_read(path))))


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


def has_tflite_identifier(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a TFLite flatbuffer (identifier ``TFL3`` at byte 4)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False
