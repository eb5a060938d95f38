"""train.importer: `edgeport import` of real Keras architectures, then export and parity.

The architectures are built at test time (no weight downloads) and trained a
few steps on a generated folder of coloured squares (tests/_byom.py); each goes
through ``edgeport import`` + ``edgeport export`` + ``edgeport parity`` exactly
as a user runs them (``edgeport.export.cli.main``). Models that do not fit the
data must fail in one line with exit code 2 and leave nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _byom import (
    CLASSES,
    build_bn_dropout,
    build_logits,
    build_mobilenet_v3_small,
    build_rescaling,
    build_residual,
    load_xy,
    make_color_folder,
)

from edgeport.export.cli import main
from edgeport.train.importer import (
    NORMALIZATIONS,
    ModelFitError,
    _normalization_warnings,
    _output_kind,
    make_normalization,
)

SIZE = 24  # the generated pictures' side; the small models take it as is
BUILDERS = {
    "bn_dropout": build_bn_dropout,
    "residual": build_residual,
    "rescaling": build_rescaling,
    "logits": build_logits,
}


@pytest.fixture(scope="module")
def colors(tmp_path_factory) -> Path:
    return make_color_folder(tmp_path_factory.mktemp("data") / "colors", per_class=30, size=SIZE)


@pytest.fixture(scope="module")
def colors40(tmp_path_factory) -> Path:
    """More pictures for MobileNetV3Small: after 20 steps on 30 per class its int8 file
    flipped 3 of 9 test pictures (a barely trained net quantizes badly); 40 per class pass."""
    return make_color_folder(tmp_path_factory.mktemp("data40") / "colors", per_class=40,
                             size=SIZE)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, colors, colors40):
    """``model_file(name)``: the architecture trained on its folder and saved as .keras, once."""
    folder = tmp_path_factory.mktemp("models")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            mobilenet = name == "mobilenet_v3_small"
            x, y = load_xy(colors40 if mobilenet else colors, 96 if mobilenet else SIZE)
            build = build_mobilenet_v3_small if name == "mobilenet_v3_small" else BUILDERS[name]
            path = folder / f"{name}.keras"
            build(x, y).save(path)
            cache[name] = path
        return cache[name]

    return get


def _tiny(shape, classes: int = 3, *, flat: bool = False):
    """An untrained model: enough for import errors and for the file formats."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    body = [layers.Flatten()] if flat else [layers.Conv2D(4, 3, activation="relu"),
                                            layers.GlobalAveragePooling2D()]
    return keras.Sequential([keras.Input(shape), *body,
                             layers.Dense(classes, activation="softmax")])


def _run(argv: list[str], capfd) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capfd.readouterr()
    return code, out, err


def _import_export_parity(model: Path, data: Path | str, run: Path, capfd, *extra: str):
    code, out, err = _run(["import", str(model), "--dataset", str(data), "--out", str(run),
                           "--quiet", *extra], capfd)
    assert code == 0, err
    assert "imported" in out
    code, _, err = _run(["export", str(run)], capfd)
    assert code == 0, err
    code, out, err = _run(["parity", str(run)], capfd)
    parity = json.loads((run / "export" / "parity.json").read_text())
    return code, out, parity


# --- Options ------------------------------------------------------------------------------


def test_normalization_presets_and_custom():
    assert make_normalization(None) is None
    assert make_normalization("-1-1") == NORMALIZATIONS["-1-1"]
    custom = make_normalization(mean=[127.5], std=[127.5])
    assert (custom.name, custom.mean, custom.std) == ("custom", (127.5,), (127.5,))


@pytest.mark.parametrize(("name", "mean", "std", "needle"), [
    ("0-255", None, None, "expected one of 0-1, -1-1, imagenet, none"),
    ("0-1", [0.0], [255.0], "together with --mean/--std"),
    (None, [0.0], None, "--mean and --std go together"),
    (None, [0.0], [0.0], "std > 0"),
    (None, [0.0, 1.0], [1.0], "1 or 3 finite values"),
])
def test_bad_normalization_options_say_the_fix(name, mean, std, needle):
    with pytest.raises(ModelFitError, match=needle):
        make_normalization(name, mean=mean, std=std)


def test_probabilities_are_rows_summing_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert _output_kind(probs) == "probabilities"
    assert _output_kind(logits) == "logits"
    assert _output_kind(np.abs(logits)) == "logits"  # non-negative, but rows do not sum to 1


def test_one_picture_is_no_evidence_for_another_normalization():
    """On 3 test pictures, 1 of 3 vs 2 of 3 is one picture: no "pass --normalize X" advice."""
    by_norm = {"0-1": 1 / 3, "-1-1": 1 / 3, "imagenet": 2 / 3, "none": 1 / 3}
    zero_one = NORMALIZATIONS["0-1"]
    tiny = _normalization_warnings(by_norm, zero_one, 3, "default", 3)
    assert len(tiny) == 1 and "no preset does clearly better" in tiny[0]
    many = _normalization_warnings(by_norm, zero_one, 3, "default", 256)
    assert len(many) == 1 and "fix: pass --normalize imagenet" in many[0]


def test_help_lists_import_and_its_flags(capfd):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    out = capfd.readouterr().out
    for flag in ("--dataset", "--out", "--labels", "--input", "--output", "--signature",
                 "--normalize", "--mean", "--std", "--image-size", "--split", "--allow-io-ops"):
        assert flag in out


# --- Bad fits: one line, exit 2, nothing left behind ----------------------------------------


def _bad_model(kind: str, tmp_path: Path) -> Path:
    if kind == "corrupt":
        path = tmp_path / "broken.keras"
        path.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
        return path
    model = {
        "size": lambda: _tiny((32, 32, 1), 10),
        "channels": lambda: _tiny((28, 28, 3), 10),
        "classes": lambda: _tiny((SIZE, SIZE, 3), 4),
        "non_image": lambda: _tiny((10,), 3, flat=True),
    }[kind]()
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    return path


@pytest.mark.parametrize(("kind", "dataset", "needle"), [
    ("size", "mnist", "size differ"),
    ("channels", "mnist", "channels differ"),
    ("classes", "colors", "outputs 4 classes but dataset colors has 3"),
    ("non_image", "colors", "not an image classifier"),
    ("corrupt", "colors", "cannot be read as a keras model"),
])
def test_models_that_do_not_fit_fail_in_one_line(kind, dataset, needle, tmp_path, colors,
                                                 capfd):
    model = _bad_model(kind, tmp_path)
    data = colors if dataset == "colors" else dataset
    out = tmp_path / "runs" / "bad"
    code, _, err = _run(["import", str(model), "--dataset", str(data), "--out", str(out),
                         "--quiet"], capfd)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("edgeport:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary folder


def test_labels_file_must_match_the_class_count(tmp_path, colors, capfd):
    model = tmp_path / "m.keras"
    _tiny((SIZE, SIZE, 3), 3).save(model)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--labels", str(labels),
                         "--out", str(tmp_path / "run"), "--quiet"], capfd)
    assert code == 2 and "has 2 names but dataset colors has 3 classes" in err
    assert not (tmp_path / "run").exists()


def test_existing_out_needs_force(tmp_path, colors, capfd):
    (tmp_path / "run").mkdir()
    model = tmp_path / "m.keras"
    _tiny((SIZE, SIZE, 3), 3).save(model)
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out",
                         str(tmp_path / "run"), "--quiet"], capfd)
    assert code == 2 and "--force" in err


# --- Real architectures: import + export + parity -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_architecture_imports_exports_and_passes_parity(name, model_file, colors, tmp_path,
                                                        capfd):
    run = tmp_path / name
    code, out, parity = _import_export_parity(model_file(name), colors, run, capfd)
    assert code == 0, out
    assert parity["passed"]
    # 5 plain files + model.ort + the two app models through LiteRT and MediaPipe
    assert len(parity["results"]) == 10
    metrics = json.loads((run / "metrics.json").read_text())
    record = metrics["import"]
    assert record["output_kind"] == ("logits" if name == "logits" else "probabilities")
    assert record["normalization"]["name"] == ("none" if name == "rescaling" else "0-1")
    assert metrics["test_accuracy"] > 0.9  # coloured squares are easy: trained, not constant
    assert metrics["calibration_split"] == "train"
    assert (run / "labels.txt").read_text().split() == sorted(CLASSES)
    # The run's SavedModel takes pixels in [0, 1] and returns both outputs (the contract).
    from edgeport.export.serving import load_serving

    serving = load_serving(run / "saved_model")
    assert serving.input_shape == (SIZE, SIZE, 3) and serving.num_classes == 3
    x = np.full((2, SIZE, SIZE, 3), 0.5, np.float32)
    y = serving.function(image=x)
    p = y["probabilities"].numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # softmax(logits) gives the probabilities back, whichever the model output
    logits = y["logits"].numpy()
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), p, atol=1e-5)


@pytest.mark.slow
def test_wrong_normalization_is_refused_with_the_fix(model_file, colors, tmp_path, capfd):
    out = tmp_path / "run"
    argv = ["import", str(model_file("rescaling")), "--dataset", str(colors), "--out", str(out),
            "--normalize", "0-1", "--quiet"]
    code, _, err = _run(argv, capfd)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("edgeport:")]
    assert len(lines) == 1 and "near chance" in lines[0], err
    assert "fix: pass --normalize none (or --force-normalize to write the run anyway)" in lines[0]
    assert not out.exists()  # no run that answers near chance
    code, _, err = _run([*argv, "--force-normalize"], capfd)
    assert code == 0, err
    assert "warning: accuracy" in err and "fix: pass --normalize none" in err
    assert (out / "metrics.json").is_file()


def test_a_picture_as_model_is_refused_before_tensorflow(tmp_path):
    """`edgeport import x.jpg` fails on its suffix; TensorFlow is never imported for it."""
    import subprocess
    import sys

    picture = tmp_path / "x.jpg"
    picture.write_bytes(b"\xff\xd8\xff\xe0 a JPEG header")
    code = ("import sys; from edgeport.export.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "import", str(picture), "--dataset",
                           "mnist", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stdout.strip() == "[]"
    assert proc.stderr.strip() == (
        f"edgeport: error: {picture}: suffix '.jpg'; expected a Keras 3 .keras file, a legacy "
        ".h5 file or a SavedModel folder (with saved_model.pb)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_mobilenet_v3_small_imports_exports_and_passes_parity(model_file, colors40, tmp_path,
                                                              capfd):
    """keras.applications.MobileNetV3Small(weights=None) at 96x96, its preprocessing inside."""
    run = tmp_path / "mnv3"
    code, out, parity = _import_export_parity(model_file("mobilenet_v3_small"), colors40, run,
                                              capfd)
    print(out)  # the parity table, for the log
    assert code == 0, out
    assert parity["passed"] and len(parity["results"]) == 10  # as above
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["input"]["height"] == 96 and metrics["input"]["channels"] == 3
    assert metrics["import"]["output"] == "predictions"
    assert metrics["import"]["normalization"]["name"] == "none"  # include_preprocessing
    assert metrics["test_accuracy"] > 0.5  # trained a few steps: not a constant prediction
    code, _, err = _run(["verify", str(run / "export")], capfd)
    assert code == 0, err


# --- Other files and splits ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5", "saved_model"])
def test_h5_and_saved_model_files_import(fmt, tmp_path, colors, capfd):
    model = _tiny((SIZE, SIZE, 3), 3)
    if fmt == "h5":
        path = tmp_path / "m.h5"
        model.save(path)
    else:
        path = tmp_path / "exported"
        model.export(str(path), verbose=False)
    run = tmp_path / "run"
    code, out, err = _run(["import", str(path), "--dataset", str(colors), "--out", str(run),
                           "--quiet"], capfd)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["import"]["format"] == fmt
    if fmt == "saved_model":
        assert metrics["import"]["signature"] == "serving_default"
        assert "signature serving_default" in out
    code, _, err = _run(["export", str(run), "--formats", "float32,int8"], capfd)
    assert code == 0, err
    code, out, _ = _run(["parity", str(run)], capfd)
    assert code == 0, out


@pytest.mark.slow
def test_no_training_split_calibrates_on_the_test_split(tmp_path, colors, capfd):
    model = tmp_path / "m.keras"
    _tiny((SIZE, SIZE, 3), 3).save(model)
    run = tmp_path / "run"
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out", str(run),
                         "--split", "0,0,1", "--quiet"], capfd)
    assert code == 0, err
    assert "no training split" in err and "calibrated on the test split" in err
    assert json.loads((run / "metrics.json").read_text())["calibration_split"] == "test"
    code, _, err = _run(["export", str(run), "--formats", "int8"], capfd)
    assert code == 0, err
    code, out, _ = _run(["parity", str(run)], capfd)
    assert code == 0, out


@pytest.mark.slow
def test_flat_mnist_model_with_labels_file(tmp_path, capfd):
    """A [batch, 784] model on MNIST: flat layout, class names from --labels."""
    model = tmp_path / "flat.keras"
    _tiny((784,), 10, flat=True).save(model)
    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"digit {i}\n" for i in range(10)))
    run = tmp_path / "run"
    code, _, err = _run(["import", str(model), "--dataset", "mnist", "--labels", str(labels),
                         "--out", str(run), "--quiet"], capfd)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["input"]["layout"] == "flat" and metrics["input"]["preprocess"] == "mnist"
    assert (run / "labels.txt").read_text().splitlines()[3] == "digit 3"
    with np.load(run / "reference.npz") as z:
        assert z["probabilities"].shape == (10000, 10)


@pytest.mark.slow
def test_a_format_the_model_cannot_take_is_explained_in_the_parity_table(tmp_path, colors,
                                                                         capfd):
    """tf.sin has no int8 kernel: the other four files are made and gated, int8 is explained."""
    import tensorflow as tf

    class Sine(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.eye(3) * 4.0)

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            return {"scores": tf.matmul(tf.math.sin(tf.reduce_mean(x, axis=[1, 2])), self.w)}

    model = Sine()
    tf.saved_model.save(model, str(tmp_path / "sine"), signatures={"serving_default": model.serve})
    run = tmp_path / "run"
    # An untrained toy: --normalize none is what it scores best under (else the import refuses
    # a normalization near chance).
    code, out, parity = _import_export_parity(tmp_path / "sine", colors, run, capfd,
                                              "--normalize", "none")
    assert code == 0, out
    assert parity["passed"] and len(parity["results"]) == 9  # 4 plain, .ort, 2 app x 2 runtimes
    assert [n["file"] for n in parity["not_produced"]] == ["model_int8.tflite"]
    assert "no int8 kernel for SIN" in parity["not_produced"][0]["reason"]
    row = next(line for line in out.splitlines() if line.startswith("model_int8.tflite"))
    assert row.endswith("NOT PRODUCED")
    assert "model_int8.tflite not produced: no int8 kernel for SIN" in out
    assert "Traceback" not in out
    code, out, _ = _run(["verify", str(run / "export")], capfd)
    assert code == 0, out
    junit, markdown = tmp_path / "parity.xml", tmp_path / "parity.md"
    code, _, _ = _run(["parity", str(run), "--junit", str(junit), "--markdown", str(markdown)],
                      capfd)
    assert code == 0
    assert 'skipped="1"' in junit.read_text() and "not produced: no int8 kernel" in \
        junit.read_text()
    assert "NOT PRODUCED" in markdown.read_text()


def test_several_outputs_need_output_and_the_choice_is_recorded(tmp_path, colors, capfd):
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, 3), name="pixels")
    h = layers.GlobalAveragePooling2D()(inp)
    model = keras.Model(inp, [layers.Dense(3, name="aux")(h),
                              layers.Dense(3, activation="softmax", name="main")(h)])
    path = tmp_path / "two.keras"
    model.save(path)
    argv = ["import", str(path), "--dataset", str(colors), "--out", str(tmp_path / "run"),
            "--quiet"]
    code, _, err = _run(argv, capfd)
    assert code == 2 and "2 candidate outputs" in err and "fix: pass --output NAME" in err
    code, out, err = _run([*argv, "--output", "main"], capfd)
    assert code == 0, err
    assert "input pixels [?, 24, 24, 3], output main (3 probabilities)" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["import"]["output"] == "main"


def test_a_model_without_a_fixed_size_needs_image_size(tmp_path, colors, capfd):
    path = tmp_path / "any_size.keras"
    _tiny((None, None, 3), 3).save(path)
    argv = ["import", str(path), "--dataset", str(colors), "--out", str(tmp_path / "run"),
            "--quiet"]
    code, _, err = _run(argv, capfd)
    assert code == 2 and "fix: pass --image-size N" in err
    code, _, err = _run([*argv, "--image-size", "32"], capfd)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["input"]["height"] == 32


@pytest.mark.parametrize("size", [0, 100000])
def test_image_size_is_range_checked_before_any_work(size, tmp_path, colors, capfd):
    # Issue 18: --image-size 0 was not range-checked. The model file is never opened.
    code, _, err = _run(["import", str(tmp_path / "absent.keras"), "--dataset", str(colors),
                         "--out", str(tmp_path / "run"), "--image-size", str(size)], capfd)
    assert code == 2
    assert err.strip().splitlines() == [
        f"edgeport: error: --image-size {size}; expected 8..1024 pixels a side (1024x1024x3 "
        "float32 is 12 MB a picture); fix: pass the size the model was trained at, e.g. "
        "--image-size 224"]
    assert not (tmp_path / "run").exists()


# --- What the model holds and does: finite weights and outputs, no file/network ops --------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(("edgeport:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("edgeport: error:"), err
    assert "Traceback" not in err
    return lines[0]


def _nothing_written(run: Path) -> None:
    assert not run.exists()
    assert not (run.parent.exists() and any(run.parent.iterdir()))  # no temporary folder


def _poisoned_keras(tmp_path: Path, value: float, where: str) -> Path:
    """A conv + dense model with ``value`` written into some weights of ``where``."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), layers.Conv2D(4, 3, activation="relu", name="conv"),
        layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax", name="dense_1"),
    ])
    layer = model.get_layer(where)
    kernel = layer.kernel.numpy()
    if where == "dense_1":
        kernel[0, :3] = value  # 3 values
    else:
        kernel[...] = value  # every weight huge: the outputs overflow
    layer.kernel.assign(kernel)
    path = tmp_path / f"{where}.keras"
    model.save(path)
    return path


def test_nan_weights_are_refused_before_the_model_runs(tmp_path, colors, capfd):
    run = tmp_path / "runs" / "nan"
    model = _poisoned_keras(tmp_path, float("nan"), "dense_1")
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out", str(run),
                         "--quiet"], capfd)
    assert code == 2
    line = _one_error_line(err)
    assert "dense_1/kernel has 3 NaN values; expected finite weights; fix: retrain or fix the " \
        "checkpoint" in line
    _nothing_written(run)


def test_infinite_weights_of_a_saved_model_are_named(tmp_path, colors, capfd):
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.head = tf.Variable([[1.0, 0.0, float("inf")], [0.0, 1.0, 0.0],
                                     [0.0, 0.0, 1.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            return {"scores": tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.head)}

    net = Net()
    tf.saved_model.save(net, str(tmp_path / "inf"), signatures={"serving_default": net.serve})
    run = tmp_path / "runs" / "inf"
    code, _, err = _run(["import", str(tmp_path / "inf"), "--dataset", str(colors), "--out",
                         str(run), "--quiet"], capfd)
    assert code == 2
    assert "head has 1 infinite values; expected finite weights" in _one_error_line(err)
    _nothing_written(run)


def test_weights_that_overflow_the_outputs_are_refused(tmp_path, colors, capfd):
    """1e38 is a finite float32, but the convolution's sums overflow: inf, then NaN."""
    run = tmp_path / "runs" / "huge"
    model = _poisoned_keras(tmp_path, 1e38, "conv")
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out", str(run),
                         "--quiet"], capfd)
    assert code == 2
    line = _one_error_line(err)
    assert "output dense_1 is non-finite (NaN or inf) on 9 of 9 test images" in line, line
    assert "fix: check the weights for huge values" in line
    _nothing_written(run)


def _io_model(path: Path, side: Path, *, nested: bool = False) -> Path:
    """A SavedModel whose serving function writes ``side`` and reads ``side.in``.

    ``nested``: the file ops sit inside a ``tf.cond`` branch (a function of the graph's
    library, not a node of the serving function itself)."""
    import tensorflow as tf

    class Leaky(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.eye(3) * 4.0)

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            pooled = tf.reduce_mean(x, axis=[1, 2])

            def leak():
                tf.io.write_file(str(side), tf.strings.as_string(tf.reduce_sum(x)))
                return tf.cast(tf.strings.length(tf.io.read_file(str(side) + ".in")),
                               tf.float32)

            extra = (tf.cond(tf.reduce_sum(x) >= 0, leak, lambda: tf.constant(0.0))
                     if nested else leak())
            return {"scores": tf.matmul(pooled, self.w) + 0.0 * extra}

    net = Leaky()
    tf.saved_model.save(net, str(path), signatures={"serving_default": net.serve})
    return path


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_file_ops_are_refused_before_the_model_runs(nested, tmp_path, colors, capfd):
    import tensorflow as tf

    side = tmp_path / "side.txt"
    Path(f"{side}.in").write_text("hello")
    model = _io_model(tmp_path / "leaky", side, nested=nested)
    # Loading a SavedModel does not run its serving function; calling it writes the file.
    loaded = tf.saved_model.load(str(model))
    assert not side.exists()
    loaded.signatures["serving_default"](x=tf.zeros([1, SIZE, SIZE, 3]))
    assert side.read_text() == "0.000000"  # tf.strings.as_string of the sum of zeros
    side.unlink()

    run = tmp_path / "runs" / "leaky"
    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out", str(run),
                         "--quiet"], capfd)
    assert code == 2
    line = _one_error_line(err)
    node = "cond/" if nested else ""  # a tf.cond branch is a function of its own
    fn = "__inference_cond_true_" if nested else "__inference_serve_"
    assert f"WriteFile (node {node}WriteFile in {fn}" in line, line
    assert f"ReadFile (node {node}ReadFile in {fn}" in line
    assert "fix: re-export the model without them, or pass --allow-io-ops" in line
    assert not side.exists()  # refused before the model ran on any picture
    _nothing_written(run)

    code, _, err = _run(["import", str(model), "--dataset", str(colors), "--out", str(run),
                           "--quiet", "--allow-io-ops"], capfd)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "--allow-io-ops" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: --allow-io-ops: ")
    assert "is a program that reaches outside the model when run" in warning[0]
    assert side.exists()  # it ran, as promised
    record = json.loads((run / "metrics.json").read_text())["import"]
    assert {op["op"] for op in record["io_ops"]} == {"WriteFile", "ReadFile"}


def test_python_ops_are_refused(tmp_path, colors, capfd):
    """tf.numpy_function: the Python code is not in the SavedModel; the op is named anyway."""
    import tensorflow as tf

    class Py(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            y = tf.numpy_function(lambda a: a, [tf.reduce_mean(x, axis=[1, 2])], tf.float32)
            return {"scores": tf.reshape(y, [-1, 3])}

    net = Py()
    tf.saved_model.save(net, str(tmp_path / "py"), signatures={"serving_default": net.serve})
    code, _, err = _run(["import", str(tmp_path / "py"), "--dataset", str(colors), "--out",
                         str(tmp_path / "run"), "--quiet"], capfd)
    assert code == 2
    assert "PyFunc (node PyFunc in __inference_" in _one_error_line(err)
    assert "runs Python code" in err


@pytest.mark.slow
def test_a_read_file_model_exports_without_onnx_with_the_reason(tmp_path, colors, capfd):
    """ReadFile has no ONNX op: model.onnx is NOT PRODUCED with the reason; TFLite folds the
    unused read away, so the TFLite files are made and gated."""
    import tensorflow as tf

    source = tmp_path / "note.txt"
    source.write_text("hello")

    class Reader(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.eye(3) * 4.0)

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def serve(self, x):
            n = tf.cast(tf.strings.length(tf.io.read_file(str(source))), tf.float32)
            return {"scores": tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w) + 0.0 * n}

    net = Reader()
    tf.saved_model.save(net, str(tmp_path / "reader"), signatures={"serving_default": net.serve})
    run = tmp_path / "run"
    code, out, parity = _import_export_parity(tmp_path / "reader", colors, run, capfd,
                                              "--allow-io-ops", "--normalize", "none")
    assert code == 0, out
    assert [n["file"] for n in parity["not_produced"]] == ["model.onnx"]
    reason = parity["not_produced"][0]["reason"]
    assert "tf2onnx has no ONNX op for TensorFlow ReadFile (node ReadFile)" in reason, reason
    row = next(line for line in out.splitlines() if line.startswith("model.onnx"))
    assert row.endswith("NOT PRODUCED")
    assert {r["artifact"] for r in parity["results"]} >= {"model_float32.tflite",
                                                         "model_int8.tflite"}
