"""export.explain: `edgeport explain` (per-layer error, recovery) and `edgeport export --repair`.

The outlier fixture is an MLP trained briefly on real MNIST whose hidden layer gets one
unit 1000x larger by a function-preserving rescale (incoming weights and bias x1000,
outgoing weights /1000; ReLU commutes with a positive scale): the float model's outputs
are unchanged, but the hidden activation's int8 range is set by that one unit, so the
full-int8 file collapses. `explain` must name the hidden layer, `--repair` must fix it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeport.export.cli import main
from edgeport.export.explain import layer_name

OUTLIER_SCALE = 1000.0


def _run(argv: list[str], capfd) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def outlier_run(tmp_path_factory, mnist, mnist_dir) -> Path:
    """The outlier MLP, imported with `edgeport import` and exported (four TFLite files)."""
    import keras

    root = tmp_path_factory.mktemp("outlier")
    x = mnist.x_train.reshape(len(mnist.x_train), -1).astype("float32") / 255.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(64, activation="relu", name="hidden"),
                              keras.layers.Dense(10, activation="softmax", name="output")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[:30000], mnist.y_train[:30000], batch_size=100, epochs=1, verbose=0,
              shuffle=False)  # 300 steps
    probe = x[:256]
    before = model.predict(probe, verbose=0)
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("output").get_weights()
    unit = int(np.argmax(np.abs(w2).sum(axis=1)))  # the unit the output leans on most
    w1[:, unit] *= OUTLIER_SCALE
    b1[unit] *= OUTLIER_SCALE
    w2[unit, :] /= OUTLIER_SCALE
    model.get_layer("hidden").set_weights([w1, b1])
    model.get_layer("output").set_weights([w2, b2])
    np.testing.assert_allclose(model.predict(probe, verbose=0), before, atol=1e-5)
    model.save(root / "outlier.keras")
    run = root / "run"
    assert main(["import", str(root / "outlier.keras"), "--dataset", "mnist", "--data-dir",
                 str(mnist_dir), "--out", str(run), "--quiet"]) == 0
    assert main(["export", str(run), "--formats", "float32,float16,dynamic_int8,int8"]) == 0
    return run


def test_layer_names_are_the_scope_of_tensor_names():
    assert layer_name("sequential/dense_1/MatMul") == "dense_1"
    assert layer_name("sequential_1/hidden_1/MatMul;sequential_1/hidden_1/Relu") == "hidden_1"
    assert layer_name("StatefulPartitionedCall:0") == "StatefulPartitionedCall:0"


def test_a_file_that_is_not_quantized_is_refused_in_one_line(exported_run, capfd):
    code, _, err = _run(["explain", str(exported_run), "--file", "model_float32.tflite"], capfd)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "--file model_float32.tflite" in line and "expected one of" in line
    assert "model_int8.tflite" in line and "fix: " in line


@pytest.mark.slow
def test_explain_softmax_tables_json_and_plots(exported_run, capfd, tmp_path):
    """The tutorial's softmax: every quantized file gets a table, a PNG and JSON rows."""
    out = tmp_path / "explain.json"
    code, text, err = _run(["explain", str(exported_run), "--json", str(out)], capfd)
    assert code == 0, err
    doc = json.loads(out.read_text())
    files = {f["artifact"]: f for f in doc["files"]}
    assert set(files) == {"model_float16.tflite", "model_dynamic_int8.tflite",
                          "model_int8.tflite"}
    for name, f in files.items():
        assert f["worst"] == f["layers"][0]["name"], name
        assert {"name", "sqnr_db", "cosine", "max_abs_error", "recovery_points"} <= set(
            f["layers"][0])
        png = Path(f["plot"])
        assert png.parent == exported_run / "explain" and png.read_bytes()[:4] == b"\x89PNG"
        assert f"{name}:" in text
    # float16 weights: every compared layer stays close to float32
    assert min(la["sqnr_db"] or 99 for la in files["model_float16.tflite"]["layers"]) > 40
    int8 = files["model_int8.tflite"]
    assert all(la["recovery_points"] is not None for la in int8["layers"])
    assert files["model_float16.tflite"]["layers"][0]["recovery_points"] is None
    assert "worst layer: " in text
    # RUN/explain is outside RUN/export: verify still sees exactly the shipped files
    code, _, err = _run(["verify", str(exported_run / "export")], capfd)
    assert code == 0, err


@pytest.mark.slow
def test_outlier_int8_collapses_and_explain_names_the_hidden_layer(outlier_run, capfd,
                                                                  tmp_path):
    code, text, _ = _run(["parity", str(outlier_run)], capfd)
    assert code == 1
    parity = json.loads((outlier_run / "export" / "parity.json").read_text())
    row = next(r for r in parity["results"] if r["artifact"] == "model_int8.tflite")
    drop = (row["reference_accuracy"] - row["accuracy"]) * 100
    assert drop >= 20, f"the outlier should cost >= 20 points, cost {drop:.2f}"
    assert "`edgeport explain" in text and "--file model_int8.tflite" in text
    assert "--repair --force" in text

    out = tmp_path / "explain.json"
    code, text, err = _run(["explain", str(outlier_run), "--file", "model_int8.tflite",
                            "--json", str(out)], capfd)
    assert code == 0, err
    f = json.loads(out.read_text())["files"][0]
    assert f["worst"] == "hidden_1", f
    hidden = f["layers"][0]
    assert hidden["recovery_points"] >= 20 and hidden["cosine"] < 1.0
    assert text.splitlines()[1].startswith("worst layer: hidden_1 (keeping it float recovers +")

    # parity now names the layer, from the explain result of this very file
    summary = tmp_path / "summary.md"
    code, text, _ = _run(["parity", str(outlier_run), "--markdown", str(summary)], capfd)
    assert code == 1 and "model_int8.tflite FAIL: worst layer hidden_1" in text
    assert "- model_int8.tflite FAIL: worst layer hidden_1" in summary.read_text()
    assert "--repair --force" in summary.read_text()


@pytest.mark.slow
def test_repair_keeps_the_hidden_layer_float_and_passes(outlier_run, capfd):
    code, _, err = _run(["export", str(outlier_run), "--formats",
                         "float32,float16,dynamic_int8,int8", "--repair", "--force"], capfd)
    assert code == 0, err
    assert "model_int8.tflite: repaired: hidden_1 float" in err
    manifest = json.loads((outlier_run / "export" / "manifest.json").read_text())
    entries = {e["file"]: e for e in manifest["artifacts"]}
    repair = entries["model_int8.tflite"]["repair"]
    assert repair["kept_float"] == ["hidden_1"] and repair["passed"]
    assert repair["size_after"] == entries["model_int8.tflite"]["bytes"]
    assert repair["size_after"] < 0.4 * entries["model_float32.tflite"]["bytes"]
    assert "repair" not in entries["model_dynamic_int8.tflite"]  # it passed: untouched
    # the integer I/O contract holds: uint8 input scale 1/255 zero point 0, uint8 outputs
    image = entries["model_int8.tflite"]["inputs"][0]
    assert image["dtype"] == "uint8" and image["zero_point"] == 0
    assert abs(image["scale"] - 1 / 255) < 1e-9
    assert {o["dtype"] for o in entries["model_int8.tflite"]["outputs"]} == {"uint8"}

    code, text, _ = _run(["parity", str(outlier_run)], capfd)
    assert code == 0, text
    assert "model_int8.tflite (repaired: hidden_1 float;" in text
    code, _, err = _run(["verify", str(outlier_run / "export")], capfd)
    assert code == 0, err


@pytest.mark.slow
def test_repair_stops_at_the_cap_with_the_reason(outlier_run, mnist_dir):
    """A gate nothing can pass: the repair gives up after max_layers and says why."""
    from edgeport.export.explain import _requantizer, repair_int8
    from edgeport.train.run_dir import load_run

    run = load_run(outlier_run, need_reference=False)
    requantizer = _requantizer(run, mnist_dir, 500, run.seed)
    shipped = (outlier_run / "export" / "model_int8.tflite").read_bytes()
    tried: list[int] = []

    def gate(model: bytes) -> list[str]:
        tried.append(len(model))
        return ["agreement 50.00% < 99.00%"]

    result = repair_int8(requantizer, ["hidden_1", "output_1", "logits"], gate=gate,
                         size_before=len(shipped), max_layers=2)
    assert not result.passed and result.model is None and len(tried) == 2
    assert result.kept_float == ("hidden_1", "output_1")
    assert result.reason.startswith("repair failed: keeping 2 layers float (hidden_1, output_1) "
                                    "still fails: agreement 50.00% < 99.00%")
    assert result.to_manifest()["size_after"] is None
