"""Tests for export/onnx.py: checker, names, dynamic batch, metadata, numerics, opset.

Run: ``python -m pytest tests/test_onnx.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runs import MNIST_INPUT, load_mnist, shared_export

from edgeport.export.onnx import convert_onnx, make_session, onnx_ops, read_onnx_metadata

pytestmark = pytest.mark.slow  # exports a real MNIST model (MNIST must be present: no skip)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def model_bytes(run_dir: Path) -> bytes:
    return (run_dir / "export" / "model.onnx").read_bytes()


def test_checker_full(model_bytes: bytes) -> None:
    onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)


def test_producer_opset_and_metadata(model_bytes: bytes) -> None:
    model = onnx.load_from_string(model_bytes)
    assert model.producer_name == "edgeport"
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["edgeport"]) == {
        "format_version": 1,
        "labels": [str(i) for i in range(10)],
        "input": MNIST_INPUT,
        "precision": "float32",
        "dataset": "mnist",
        "model": "softmax",
    }
    assert read_onnx_metadata(model_bytes)["model"] == "softmax"


def test_io_names_and_dynamic_batch(model_bytes: bytes) -> None:
    graph = onnx.load_from_string(model_bytes).graph
    assert [v.name for v in graph.input] == ["image"]
    assert [v.name for v in graph.output] == ["probabilities", "logits"]
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = make_session(model_bytes)
    assert [a.name for a in session.get_inputs()] == ["image"]
    assert [a.name for a in session.get_outputs()] == ["probabilities", "logits"]


@pytest.mark.parametrize("batch", [1, 7])
def test_batch_1_and_n_run(model_bytes: bytes, batch: int) -> None:
    x, _ = load_mnist("test")
    probs, logits = make_session(model_bytes).run(None, {"image": x[:batch]})
    assert probs.shape == logits.shape == (batch, 10)
    # softmax rows sum to one up to float32 rounding over 10 terms
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-6)


def test_matches_saved_model(run_dir: Path, model_bytes: bytes) -> None:
    import tensorflow as tf

    x, _ = load_mnist("test")
    serving = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    expected = serving(image=tf.constant(x[:256]))
    probs, logits = make_session(model_bytes).run(None, {"image": x[:256]})
    # same float32 ops; only the matmul's summation order differs
    np.testing.assert_allclose(logits, expected["logits"].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(probs, expected["probabilities"].numpy(), rtol=0, atol=1e-5)


def test_ops(model_bytes: bytes) -> None:
    assert onnx_ops(model_bytes) == ["Add", "MatMul", "Softmax"]


def test_opset_is_configurable_and_deterministic(run_dir: Path, model_bytes: bytes) -> None:
    from edgeport.export.serving import load_serving

    serving = load_serving(run_dir / "saved_model")
    doc = read_onnx_metadata(model_bytes)
    again = convert_onnx(serving, metadata=doc)
    assert again == model_bytes  # same process, second trace: still the same bytes
    older = onnx.load_from_string(convert_onnx(serving, metadata=doc, opset=13))
    assert {o.domain: o.version for o in older.opset_import}[""] == 13


def _graph_with(op_type: str) -> onnx.ModelProto:
    """``image`` [batch, 2] -> ``op_type`` -> ``probabilities``: what tf2onnx leaves behind
    for a TensorFlow op it cannot convert (the node keeps the TensorFlow op name)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op_type, ["image"], ["probabilities"], name=f"Call/{op_type}")],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unconverted_tensorflow_ops_are_found_and_fail_the_check() -> None:
    from edgeport.export.onnx import check_onnx, unconverted_ops

    assert unconverted_ops(_graph_with("Relu")) == []
    proto = _graph_with("ReadFile")
    assert unconverted_ops(proto) == [("ReadFile", "Call/ReadFile")]
    problems = check_onnx(proto.SerializeToString(), input_shape=(2,))
    assert any(p.startswith("ONNX Runtime cannot load it") for p in problems), problems
