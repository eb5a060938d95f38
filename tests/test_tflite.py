"""Tests for export/tflite.py: names, batching, int8 quantization, metadata, determinism.

Run: ``python -m pytest tests/test_tflite.py``. The run is the test
helper's MNIST softmax regression (tests/_runs.py), exported once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runs import MNIST_INPUT, copy_run, load_mnist, shared_export

from edgeport.export import Precision
from edgeport.export.formats import ARTIFACT_KINDS, ArtifactFormat
from edgeport.export.golden import predict
from edgeport.export.tflite import (
    INT8_INPUT_SCALE,
    integer_only_problems,
    make_interpreter,
    read_tflite_metadata,
    tflite_ops,
)
from edgeport.export.thresholds import THRESHOLDS

pytestmark = pytest.mark.slow  # exports a real MNIST model (MNIST must be present: no skip)

TFLITE = [k for k in ARTIFACT_KINDS if k.format is ArtifactFormat.TFLITE]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_export(tmp_path_factory)


def _model(run_dir: Path, file: str) -> bytes:
    return (run_dir / "export" / file).read_bytes()


def _run(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = make_interpreter(model)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    if detail["dtype"] == np.uint8:
        x = np.round(x * 255).astype(np.uint8)
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


@pytest.mark.parametrize("kind", TFLITE, ids=lambda k: k.token)
def test_io_names_and_order(run_dir: Path, kind) -> None:
    interpreter = make_interpreter(_model(run_dir, kind.file))
    assert [d["name"] for d in interpreter.get_input_details()] == ["image"]
    assert [d["name"] for d in interpreter.get_output_details()] == ["probabilities", "logits"]
    signatures = interpreter.get_signature_list()
    assert list(signatures) == ["serving_default"]
    # the interpreter returns signature names from a sorted C++ map; the file's order is ours
    assert sorted(signatures["serving_default"]["outputs"]) == ["logits", "probabilities"]
    from tensorflow.lite.python import schema_py_generated as fb

    root = fb.Model.GetRootAsModel(bytearray(_model(run_dir, kind.file)), 0)
    sig = root.SignatureDefs(0)
    assert [sig.Inputs(i).Name() for i in range(sig.InputsLength())] == [b"image"]
    assert [sig.Outputs(i).Name() for i in range(sig.OutputsLength())] == [
        b"probabilities",
        b"logits",
    ]
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 784]


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("kind", TFLITE, ids=lambda k: k.token)
def test_batch_1_and_n_run(run_dir: Path, kind, batch: int) -> None:
    x, _ = load_mnist("test")
    out = _run(_model(run_dir, kind.file), x[:batch])
    assert out["probabilities"].shape == (batch, 10)
    assert out["logits"].shape == (batch, 10)


@pytest.mark.parametrize("kind", TFLITE, ids=lambda k: k.token)
def test_signature_runner_works(run_dir: Path, kind) -> None:
    interpreter = make_interpreter(_model(run_dir, kind.file))
    runner = interpreter.get_signature_runner("serving_default")
    dtype = np.uint8 if kind.precision is Precision.INT8 else np.float32
    out = runner(image=np.zeros((3, 784), dtype=dtype))
    assert set(out) == {"probabilities", "logits"}
    assert out["probabilities"].shape == (3, 10)


@pytest.mark.parametrize("kind", TFLITE, ids=lambda k: k.token)
def test_metadata_readable(run_dir: Path, kind) -> None:
    doc = read_tflite_metadata(_model(run_dir, kind.file))
    assert doc == {
        "format_version": 1,
        "labels": [str(i) for i in range(10)],
        "input": MNIST_INPUT,
        "precision": kind.precision.value,
        "dataset": "mnist",
        "model": "softmax",
    }


def test_metadata_readable_with_plain_flatbuffers(run_dir: Path) -> None:
    """The entry is a plain Model.metadata buffer: no tflite-support needed to read it."""
    from tensorflow.lite.python import schema_py_generated as fb

    root = fb.Model.GetRootAsModel(bytearray(_model(run_dir, "model_int8.tflite")), 0)
    entries = {
        root.Metadata(i).Name(): root.Metadata(i).Buffer() for i in range(root.MetadataLength())
    }
    payload = root.Buffers(entries[b"edgeport"]).DataAsNumpy().tobytes()
    assert json.loads(payload.decode("utf-8"))["precision"] == "int8"
    # The converter's own entries (min_runtime_version, CONVERSION_METADATA) are stripped.
    assert list(entries) == [b"edgeport"]


def test_int8_input_is_raw_pixels(run_dir: Path) -> None:
    interpreter = make_interpreter(_model(run_dir, "model_int8.tflite"))
    (detail,) = interpreter.get_input_details()
    scale, zero_point = detail["quantization"]
    assert detail["dtype"] == np.uint8
    # float32(1/255) is stored; it differs from 1/255 by 2.3e-10.
    assert scale == pytest.approx(INT8_INPUT_SCALE, abs=1e-9)
    assert zero_point == 0
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.uint8, np.uint8]
    probs_scale, probs_zero = interpreter.get_output_details()[0]["quantization"]
    assert (probs_scale, probs_zero) == (1 / 256, 0)  # TFLite's fixed softmax output range


def test_int8_is_integer_only(run_dir: Path) -> None:
    model = _model(run_dir, "model_int8.tflite")
    assert integer_only_problems(model) == []
    assert tflite_ops(model) == ["FULLY_CONNECTED", "QUANTIZE", "SOFTMAX"]


def test_integer_only_check_catches_float_ops(run_dir: Path) -> None:
    problems = integer_only_problems(_model(run_dir, "model_float16.tflite"))
    assert any("DEQUANTIZE" in p for p in problems)
    assert any("FLOAT32" in p for p in problems)


@pytest.mark.parametrize("kind", TFLITE, ids=lambda k: k.token)
def test_close_to_saved_model(run_dir: Path, kind) -> None:
    """A sanity check with the parity gate's own table (export/thresholds.py) on 1,000 images."""
    import tensorflow as tf

    x, _ = load_mnist("test")
    x = x[:1000]
    serving = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    expected = serving(image=tf.constant(x))["probabilities"].numpy()
    probs = predict(_model(run_dir, kind.file), kind, x)["probabilities"]
    tol = THRESHOLDS[kind.precision]
    agreement = float((probs.argmax(axis=1) == expected.argmax(axis=1)).mean())
    assert agreement >= tol.min_agreement
    if tol.max_abs_diff is not None:
        np.testing.assert_allclose(probs, expected, rtol=0, atol=tol.max_abs_diff)


def test_sizes(run_dir: Path) -> None:
    size = {k.precision: (run_dir / "export" / k.file).stat().st_size for k in TFLITE}
    assert 30_000 < size[Precision.FLOAT32] < 36_000  # 784x10 float32 weights = 31,360 bytes
    assert size[Precision.FLOAT16] < 0.6 * size[Precision.FLOAT32]
    assert size[Precision.INT8] < 12_000
    assert size[Precision.DYNAMIC_INT8] < 12_000


def test_byte_identical_in_another_process(run_dir: Path, tmp_path: Path) -> None:
    """The same SavedModel, exported by a fresh interpreter process, gives the same bytes."""
    copy = copy_run(run_dir, tmp_path / "run")
    script = (
        "import json, sys\n"
        "from _runs import load_mnist\n"
        "from edgeport.export import export_model\n"
        "r = export_model(sys.argv[1], load_split=load_mnist, progress=False)\n"
        "print(json.dumps({a.file: a.sha256 for a in r.artifacts}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run(
        [sys.executable, "-c", script, str(copy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    other = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    # model.ort: ONNX Runtime's converter writes one of two byte layouts from one model.onnx
    # (seen across processes); its content is checked by parity and verify like every file.
    ours = {a["file"]: a["sha256"] for a in manifest["artifacts"] if a["file"] != "model.ort"}
    assert {f: h for f, h in other.items() if f != "model.ort"} == ours
