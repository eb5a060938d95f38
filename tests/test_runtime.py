"""mobile_demo.runtime: real runtimes on real .tflite / .onnx files, the tf.function as oracle."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import _models
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeport.errors import InputShapeError, ModelFileError, RuntimeNotFoundError
from edgeport.export.formats import Precision
from edgeport.export.thresholds import THRESHOLDS
from edgeport.mobile_demo.runtime import (
    Model,
    TensorSpec,
    available_runtimes,
    dequantize,
    load_model,
    quantize,
)

INSTALLED = available_runtimes()
_TFLITE = [
    ("model_float32.tflite", "float32"),
    ("model_float16.tflite", "float16"),
    ("model_dynamic_int8.tflite", "dynamic_int8"),
    ("model_int8.tflite", "int8"),
]
# (file, runtime, precision): every file under every installed runtime that can run it.
CASES = [
    (f, rt, p)
    for f, p in _TFLITE
    for rt in ("litert", "tflite-runtime", "tensorflow")
    if rt in INSTALLED
] + ([("model.onnx", "onnxruntime", "float32")] if "onnxruntime" in INSTALLED else [])


@pytest.fixture(
    scope="session",
    params=["tiny", pytest.param("mnist", marks=pytest.mark.slow)],
)
def export_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract-shaped export folder: the tiny fixed-weight model, and the real MNIST export.

    ``mnist`` is conftest's ``exported_run`` (trained and exported for real); deselect it
    with ``-m "not slow"``.
    """
    if request.param == "mnist":
        return Path(request.getfixturevalue("exported_run")) / "export"
    return _models.tiny_export_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def golden(export_dir: Path) -> dict[str, np.ndarray]:
    with np.load(export_dir / "golden.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _expected(golden: dict[str, np.ndarray], stem: str) -> np.ndarray:
    # Each file's own output, recorded by the exporter's interpreter (export.golden).
    return golden[f"{stem}__probabilities"]


# --- quantize / dequantize -------------------------------------------------------------


def test_pixels_round_trip_exactly_through_uint8() -> None:
    pixels = np.arange(256)
    q = quantize(pixels / 255.0, 1 / 255, 0, np.uint8)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, pixels)
    # 1/255 in float32 (as a .tflite stores it) still maps every pixel to itself.
    np.testing.assert_array_equal(
        quantize(pixels / 255.0, float(np.float32(1 / 255)), 0, "uint8"), pixels
    )


def test_quantize_rounds_half_to_even_and_clips() -> None:
    np.testing.assert_array_equal(quantize([0.5, 1.5, 2.5, -0.5], 1.0, 0, np.int8), [0, 2, 2, 0])
    np.testing.assert_array_equal(quantize([-1.0, 300.0], 1.0, 0, np.uint8), [0, 255])
    np.testing.assert_array_equal(quantize([-1.0, 1.0], 1 / 127.5, -1, np.int8), [-128, 127])
    np.testing.assert_array_equal(quantize([np.nan], 0.1, 7, np.uint8), [7])


def test_dequantize_is_affine() -> None:
    out = dequantize(np.array([0, 133, 255], np.uint8), 0.5, 133)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-66.5, 0.0, 61.0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.0, 0, np.float32), "integer dtype"),
        ((0.0, 0, np.uint8), "scale"),
        ((np.nan, 0, np.uint8), "scale"),
    ],
)
def test_quantize_rejects_bad_parameters(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantize([0.1], *args)


_dtypes = st.sampled_from([np.uint8, np.int8, np.int16])


@settings(max_examples=200, deadline=None)
@given(
    dtype=_dtypes,
    scale=st.floats(1e-4, 10.0),
    zp_frac=st.floats(0.0, 1.0),
    x=hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e4, 1e4)),
)
def test_round_trip_error_is_at_most_half_a_step(
    dtype: Any, scale: float, zp_frac: float, x: np.ndarray
) -> None:
    """Property: dequantize(quantize(x)) is x clipped to the range, within scale / 2."""
    info = np.iinfo(dtype)
    zp = int(info.min + round(zp_frac * (int(info.max) - int(info.min))))
    back = dequantize(quantize(x, scale, zp, dtype), scale, zp)
    clipped = np.clip(x, (info.min - zp) * scale, (info.max - zp) * scale)
    # Half a step of rounding, plus float32 rounding of the dequantized value.
    tol = scale / 2 + 1e-6 * np.maximum(1.0, np.abs(clipped))
    assert np.all(np.abs(back - clipped) <= tol)


@settings(max_examples=100, deadline=None)
@given(dtype=_dtypes, scale=st.floats(1e-3, 1.0), data=st.data())
def test_integers_survive_dequantize_then_quantize(dtype: Any, scale: float, data: Any) -> None:
    """Property: every integer maps back to itself, as a runtime's outputs must."""
    info = np.iinfo(dtype)
    zp = data.draw(st.integers(int(info.min), int(info.max)))
    q = np.arange(info.min, info.max + 1, max(1, (int(info.max) - int(info.min)) // 300)).astype(
        dtype
    )
    np.testing.assert_array_equal(quantize(dequantize(q, scale, zp), scale, zp, dtype), q)


# --- real models ---------------------------------------------------------------------


def test_available_runtimes_lists_what_is_installed() -> None:
    assert set(INSTALLED) <= {"litert", "tflite-runtime", "tensorflow", "onnxruntime"}
    assert INSTALLED, "the test environment needs at least one runtime"


@pytest.mark.parametrize(("name", "runtime", "precision"), CASES)
def test_predict_matches_reference(
    export_dir: Path, golden: dict[str, np.ndarray], name: str, runtime: str, precision: str
) -> None:
    model = load_model(export_dir / name, runtime=runtime)
    assert model.runtime == runtime
    x = golden["inputs"]
    out = model.predict(x)
    assert list(out) == ["probabilities", "logits"]
    probs = out["probabilities"]
    assert probs.dtype == np.float32
    assert probs.shape == (len(x), len(model.labels or []))
    tol = THRESHOLDS[Precision(precision)]
    expected = _expected(golden, Path(name).stem)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=tol.golden_atol)
    assert float(np.mean(probs.argmax(1) == expected.argmax(1))) >= tol.min_agreement
    if "reference__probabilities" in golden and tol.max_abs_diff is not None:
        # The tiny export: the float files also stay within the gate's bound of the tf.function.
        ref = _models.reference(x)
        np.testing.assert_allclose(probs, ref["probabilities"], rtol=0, atol=tol.max_abs_diff)


@pytest.mark.parametrize(("name", "runtime", "precision"), CASES)
def test_tensor_specs_follow_the_contract(
    export_dir: Path, name: str, runtime: str, precision: str
) -> None:
    model = load_model(export_dir / name, runtime=runtime)
    desc = model.input_desc
    size = desc["height"] * desc["width"] * desc["channels"]
    want_shape = (
        (-1, size)
        if desc["layout"] == "flat"
        else (-1, desc["height"], desc["width"], desc["channels"])
    )
    assert model.input.name == "image"
    assert model.input.shape == want_shape
    assert [o.name for o in model.outputs] == ["probabilities", "logits"]
    if precision == "int8":
        # The contract: uint8 input, scale 1/255, zero point 0; uint8 outputs.
        assert model.input.dtype == "uint8"
        assert model.input.scale == pytest.approx(1 / 255, rel=1e-6)  # stored as float32
        assert model.input.zero_point == 0
        assert all(o.dtype == "uint8" and o.scale is not None for o in model.outputs)
    else:
        assert model.input == TensorSpec("image", want_shape, "float32")
        assert all(o.scale is None and o.zero_point is None for o in model.outputs)
    assert model.metadata["precision"] == precision
    assert model.labels == model.metadata["labels"]
    assert model.input.to_dict()["shape"] == list(want_shape)


def test_auto_picks_the_preferred_runtime(export_dir: Path) -> None:
    tflite_rt = next(rt for rt in ("litert", "tflite-runtime", "tensorflow") if rt in INSTALLED)
    assert load_model(export_dir / "model_int8.tflite").runtime == tflite_rt
    if "onnxruntime" in INSTALLED:
        assert load_model(export_dir / "model.onnx").runtime == "onnxruntime"


def test_batching_and_shapes_do_not_change_results(
    export_dir: Path, golden: dict[str, np.ndarray]
) -> None:
    model = load_model(export_dir / "model_int8.tflite")
    x = golden["inputs"]
    whole = model.predict(x)["probabilities"]
    # Integer model: batching must give bit-identical results.
    np.testing.assert_array_equal(model.predict(x, batch_size=7)["probabilities"], whole)
    d = model.input_desc
    images = x.reshape(len(x), d["height"], d["width"], d["channels"])
    np.testing.assert_array_equal(model.predict(images)["probabilities"], whole)
    np.testing.assert_array_equal(model.predict(x[:1])["probabilities"], whole[:1])
    empty = model.predict(x[:0])
    assert empty["probabilities"].shape == (0, whole.shape[1])


def test_fixed_batch_model_pads_the_last_batch(tmp_path: Path) -> None:
    path = tmp_path / "batch4.tflite"
    path.write_bytes(_models.convert_tflite("float32", batch=4))
    model = load_model(path)
    assert model.input.shape == (4, _models.D)
    x = _models.pixel_batch(10)
    out = model.predict(x, batch_size=256)  # runs 4 + 4 + (2 padded to 4)
    assert out["probabilities"].shape == (10, _models.K)
    ref = _models.reference(x)
    # Float32 model: only kernel summation order differs from the tf.function.
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], rtol=0, atol=1e-5)


def test_tensorspec_is_frozen() -> None:
    spec = TensorSpec("image", (-1, 784), "uint8", 1 / 255, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    assert spec.quantized and not TensorSpec("x", (1,), "float32").quantized


def test_predict_rejects_bad_input(export_dir: Path, golden: dict[str, np.ndarray]) -> None:
    model = load_model(export_dir / "model_float32.tflite")
    with pytest.raises(InputShapeError, match=r"\[3, 100\].*\[-1, 784\]"):
        model.predict(np.zeros((3, 100), np.float32))
    with pytest.raises(InputShapeError, match="divide uint8 pixels by 255"):
        model.predict((golden["inputs"] * 255).astype(np.uint8))
    with pytest.raises(InputShapeError, match="batch"):
        model.predict(np.float32(0.5))


def test_labels_and_input_desc_fall_back_without_metadata(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    bare = _models.bare_model_dir(tmp_path_factory)
    model = load_model(bare / "model.tflite")
    assert model.metadata == {}
    assert model.labels is None
    # Read off the [N, 784] input: a square, one-channel picture.
    assert model.input_desc == {
        "name": "image",
        "layout": "flat",
        "height": 28,
        "width": 28,
        "channels": 1,
        "preprocess": "mnist",
    }
    shutil.copy(bare / "model.tflite", tmp_path / "model.tflite")
    (tmp_path / "labels.txt").write_text("zero\none\n\n")
    assert load_model(tmp_path / "model.tflite").labels == ["zero", "one"]
    (tmp_path / "manifest.json").write_text('{"labels": ["a", "b"], "input": {"layout": "nhwc"}}')
    model = load_model(tmp_path / "model.tflite")
    assert model.labels == ["a", "b"]
    assert model.input_desc == {"layout": "nhwc"}
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="manifest"):
        load_model(tmp_path / "model.tflite")


# --- bad files and options -------------------------------------------------------------


def _bad_files(export_dir: Path, root: Path) -> dict[str, Path]:
    good = (export_dir / "model_float32.tflite").read_bytes()
    onnx = (export_dir / "model.onnx").read_bytes()
    files = {
        "empty.tflite": b"",
        "text.tflite": b"this is not a model\n" * 10,
        "half.tflite": good[: len(good) // 2],
        "tail.tflite": good[:-100],
        "identifier_only.tflite": good[:8],
        "garbage.onnx": b"\x08\x07garbage" * 20,
        "half.onnx": onnx[: len(onnx) // 2],
        "notes.txt": b"hello",
    }
    out = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        out[name] = root / name
    out["missing.tflite"] = root / "missing.tflite"
    out["folder.tflite"] = root / "sub"
    (root / "sub").mkdir()
    return out


def test_bad_model_files_raise_one_line_model_file_error(export_dir: Path, tmp_path: Path) -> None:
    for name, path in _bad_files(export_dir, tmp_path).items():
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        message = str(info.value)
        assert str(path) in message, name
        assert "\n" not in message, name


def test_runtime_choice_errors(export_dir: Path) -> None:
    with pytest.raises(RuntimeNotFoundError, match="not one of"):
        load_model(export_dir / "model_float32.tflite", runtime="coreml")
    with pytest.raises(RuntimeNotFoundError, match="cannot run TFLite"):
        load_model(export_dir / "model_float32.tflite", runtime="onnxruntime")
    with pytest.raises(RuntimeNotFoundError, match="cannot run ONNX"):
        load_model(export_dir / "model.onnx", runtime="litert")
    missing = [rt for rt in ("litert", "tflite-runtime") if rt not in INSTALLED]
    for rt in missing:
        with pytest.raises(RuntimeNotFoundError, match="pip install"):
            load_model(export_dir / "model_float32.tflite", runtime=rt)


def test_model_repr_and_type(export_dir: Path) -> None:
    model = load_model(export_dir / "model_int8.tflite", num_threads=1)
    assert isinstance(model, Model)
    assert "uint8" in repr(model) and "probabilities" in repr(model)


def test_int8_model_takes_raw_uint8_pixels(export_dir: Path, golden: dict[str, np.ndarray]) -> None:
    """Camera bytes feed the full-integer model directly, with the float path's results."""
    model = load_model(export_dir / "model_int8.tflite")
    x = golden["inputs"]
    pixels = np.rint(x * 255).astype(np.uint8)
    # Golden inputs are k/255 exactly, so quantizing them gives these very bytes: identical.
    np.testing.assert_array_equal(model.predict(pixels)["probabilities"],
                                  model.predict(x)["probabilities"])
    # A float model still refuses integers rather than guessing their scale.
    with pytest.raises(InputShapeError, match="divide uint8 pixels by 255"):
        load_model(export_dir / "model_float32.tflite").predict(pixels)
