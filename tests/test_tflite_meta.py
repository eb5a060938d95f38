"""mobile_demo.tflite_meta (generated schemas) against TensorFlow's own reader, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _models
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python import schema_util
from tensorflow.lite.tools import flatbuffer_utils

from edgeport.errors import ModelFileError
from edgeport.mobile_demo.tflite_meta import (
    list_ops,
    parse_metadata,
    parse_ops,
    read_edgeport_metadata,
    read_metadata,
)

TFLITE_FILES = ["model_float32.tflite", "model_int8.tflite"]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract-shaped export folder (tiny model); the real MNIST export fits as well."""
    return _models.tiny_export_dir(tmp_path_factory)


def _model_obj(path: Path) -> Any:
    return flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))


def _to_bytes(obj: Any, extra: bytes = b"") -> bytes:
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj, extra))


def _reference_metadata(obj: Any) -> dict[str, bytes]:
    out = {}
    for m in obj.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        data = obj.buffers[m.buffer].data
        out[name] = b"" if data is None else bytes(bytearray(data))
    return out


def _reference_ops(obj: Any) -> list[str]:
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = set()
    for code in obj.operatorCodes:
        value = schema_util.get_builtin_code_from_operator_code(code)
        if value == schema.BuiltinOperator.CUSTOM:
            out.add(code.customCode.decode())
        else:
            out.add(names[value])
    return sorted(out)


@pytest.mark.parametrize("name", TFLITE_FILES)
def test_metadata_matches_tensorflow_reader(export_dir: Path, name: str) -> None:
    path = export_dir / name
    got = read_metadata(path)
    assert got == _reference_metadata(_model_obj(path))
    assert "min_runtime_version" in got  # these test files keep the converter's entries
    assert parse_metadata(path.read_bytes(), name=name) == got


@pytest.mark.parametrize("name", TFLITE_FILES)
def test_edgeport_metadata_is_the_json_document(export_dir: Path, name: str) -> None:
    meta = read_edgeport_metadata(export_dir / name)
    assert meta["format_version"] == 1
    assert meta["input"]["name"] == "image"
    assert len(meta["labels"]) > 1
    assert meta["precision"] == name.removeprefix("model_").removesuffix(".tflite")


@pytest.mark.parametrize("name", TFLITE_FILES)
def test_ops_match_tensorflow_reader(export_dir: Path, name: str) -> None:
    path = export_dir / name
    ops = list_ops(path)
    assert ops == _reference_ops(_model_obj(path))
    assert ops == parse_ops(path.read_bytes())
    assert "FULLY_CONNECTED" in ops
    if name == "model_int8.tflite":
        assert "QUANTIZE" in ops  # float-free int8 model still quantizes its uint8 input


def test_vendored_metadata_schema_is_mediapipes() -> None:
    """The device copy of the generated metadata schema is byte-for-byte flatc's output."""
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as mediapipe_schema
    except ImportError:
        pytest.fail("mediapipe is not installed; fix: pip install 'edgeport[app]'", pytrace=False)
    from edgeport.mobile_demo import metadata_schema_py_generated as ours

    theirs = Path(mediapipe_schema.__file__).read_text()
    body = Path(ours.__file__).read_text().split("\n\n", 1)[1]  # drop the provenance header
    assert body == theirs


def test_custom_and_extended_op_codes(export_dir: Path, tmp_path: Path) -> None:
    obj = _model_obj(export_dir / "model_float32.tflite")
    custom, extended, unknown = (schema.OperatorCodeT() for _ in range(3))
    custom.builtinCode = custom.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    custom.customCode = "EdgeportTestOp"
    # Codes above 127 live only in builtin_code; the int8 field holds the placeholder.
    extended.deprecatedBuiltinCode = 127
    extended.builtinCode = 150
    unknown.deprecatedBuiltinCode = 127
    unknown.builtinCode = 9999
    obj.operatorCodes.extend([custom, extended, unknown])
    path = tmp_path / "ops.tflite"
    path.write_bytes(_to_bytes(obj))
    ops = list_ops(path)
    assert "EdgeportTestOp" in ops
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert names[150] in ops
    assert "BUILTIN_9999" in ops


def test_buffer_stored_outside_the_flatbuffer(export_dir: Path, tmp_path: Path) -> None:
    """Models over 2 GB keep buffers after the flatbuffer, addressed by offset and size."""
    obj = _model_obj(export_dir / "model_float32.tflite")
    payload = json.dumps({"format_version": 1, "labels": ["a", "b"]}).encode()
    buf = schema.BufferT()
    buf.offset, buf.size = 1 << 40, len(payload)  # placeholder: same encoded size as the real one
    obj.buffers.append(buf)
    meta = schema.MetadataT()
    meta.name, meta.buffer = "edgeport", len(obj.buffers) - 1
    obj.metadata = [m for m in obj.metadata if m.name not in (b"edgeport", "edgeport")] + [meta]
    head = _to_bytes(obj)
    buf.offset = len(head) + 16
    data = _to_bytes(obj, b"\0" * 16 + payload)
    assert len(data) == len(head) + 16 + len(payload)
    path = tmp_path / "big.tflite"
    path.write_bytes(data)
    assert read_metadata(path)["edgeport"] == payload
    assert read_edgeport_metadata(path)["labels"] == ["a", "b"]
    path.write_bytes(data[:-1])  # the outside buffer is cut short
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_metadata(path)


def test_model_without_metadata(export_dir: Path, tmp_path: Path) -> None:
    obj = _model_obj(export_dir / "model_float32.tflite")
    obj.metadata = None
    path = tmp_path / "plain.tflite"
    path.write_bytes(_to_bytes(obj))
    assert read_metadata(path) == {}
    assert read_edgeport_metadata(path) == {}
    assert list_ops(path) == list_ops(export_dir / "model_float32.tflite")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
        (b"{broken", "not UTF-8 JSON"),
        (b"[1, 2]", "list"),
    ],
)
def test_bad_edgeport_entry(tmp_path: Path, export_dir: Path, payload: bytes, message: str) -> None:
    model = _models.add_tflite_metadata(
        (export_dir / "model_float32.tflite").read_bytes(), {"edgeport": payload}
    )
    path = tmp_path / "bad_meta.tflite"
    path.write_bytes(model)
    with pytest.raises(ModelFileError, match=message) as info:
        read_edgeport_metadata(path)
    assert "bad_meta.tflite" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"TFL3", "too short"),
        (b"hello world, not a model", "identifier"),
        (b"\x10\x00\x00\x00TFL3" + b"\x00" * 4, "truncated or corrupt"),
        (b"\xff\xff\xff\x7fTFL3" + b"\x00" * 64, "truncated or corrupt"),
    ],
)
def test_malformed_files_raise_model_file_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message) as info:
        read_metadata(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_metadata(tmp_path / "nope.tflite")
    with pytest.raises(ModelFileError, match="folder"):
        list_ops(tmp_path)


@pytest.mark.parametrize("name", TFLITE_FILES)
def test_every_truncation_is_an_error_or_consistent(export_dir: Path, name: str) -> None:
    """Cutting the file anywhere raises ModelFileError (never struct.error / IndexError)."""
    data = (export_dir / name).read_bytes()
    full = parse_metadata(data)
    for cut in range(0, len(data), max(1, len(data) // 300)):
        try:
            got = parse_metadata(data[:cut])
        except ModelFileError:
            continue
        # Buffers sit at the end of the file, so some cuts still read every entry.
        assert got == full


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corrupted_bytes_never_escape(export_dir: Path, data: st.DataObject) -> None:
    """Property: any byte corruption gives a result or ModelFileError, nothing else."""
    blob = bytearray((export_dir / "model_int8.tflite").read_bytes())
    flips = data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8))
    for pos in flips:
        blob[pos] = data.draw(st.integers(0, 255))
    try:
        parse_metadata(bytes(blob))
        parse_ops(bytes(blob))
    except ModelFileError as e:
        assert "\n" not in str(e)
