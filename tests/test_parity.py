"""export.parity, export.thresholds and export.report on a real trained and exported MNIST run.

The oracle is ``RUN/reference.npz`` (the reloaded SavedModel on the 10,000 test
digits); the files run through ``mobile_demo.runtime`` with the real runtimes.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError, ModelFileError
from edgeport.export.formats import ARTIFACT_KINDS, Precision
from edgeport.export.parity import ParityError, ParityReport, check_parity, read_parity
from edgeport.export.report import format_parity_table, to_markdown, write_junit, write_markdown
from edgeport.export.thresholds import (
    FLOAT16_CALIBRATION_K,
    ORACLE_SAMPLE,
    THRESHOLDS,
    ThresholdsError,
    Tolerance,
    load_thresholds,
)
from edgeport.train.run_dir import RunDirError

pytestmark = pytest.mark.slow

FILES = [k.file for k in ARTIFACT_KINDS]
RESULT_KEYS = {"artifact", "format", "precision", "runtime", "accuracy", "reference_accuracy",
               "agreement", "max_abs_diff", "mean_abs_diff", "passed", "failures", "bytes",
               "images", "max_abs_diff_bound", "bound_source"}


@pytest.fixture(scope="module")
def report(exported_run: Path) -> ParityReport:
    return check_parity(exported_run, progress=False)


def _copy(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest / "run"))


def _by_file(report: ParityReport) -> dict:
    return {r.artifact: r for r in report.results}


# --- the gate passes on a real export -------------------------------------------------------


def test_every_artifact_passes_on_the_real_test_set(report: ParityReport, exported_run: Path):
    assert report.passed, format_parity_table(report)
    assert [r.artifact for r in report.results] == FILES
    metrics = json.loads((exported_run / "metrics.json").read_text())
    for r in report.results:
        assert r.failures == ()
        # The same 10,000 images and labels as the trainer's own evaluation: exact.
        assert r.reference_accuracy == pytest.approx(metrics["reference_accuracy"], abs=0)
        assert r.bytes == (exported_run / "export" / r.artifact).stat().st_size
        tol = THRESHOLDS[r.precision]
        assert r.agreement >= tol.min_agreement
        assert 0.0 <= r.mean_abs_diff <= r.max_abs_diff
    res = _by_file(report)
    assert res["model_float32.tflite"].runtime == "litert"
    assert res["model.onnx"].runtime == "onnxruntime"
    # float32 files: same decisions everywhere, probabilities within float32 round-off.
    for name in ("model_float32.tflite", "model.onnx"):
        assert res[name].agreement == pytest.approx(1.0, abs=0)  # not one class flips
        assert res[name].accuracy == res[name].reference_accuracy
        assert res[name].max_abs_diff <= 1e-5
    # Quantized files do move the probabilities: proof the comparison is not vacuous.
    assert res["model_int8.tflite"].max_abs_diff > 1e-3


def test_parity_json_is_written_with_the_exact_schema(report: ParityReport, exported_run: Path):
    doc = json.loads((exported_run / "export" / "parity.json").read_text())
    assert doc == report.to_dict()
    assert set(doc) == {"passed", "results", "manifest_sha256", "calibration"}
    assert set(doc["calibration"]) == {"saved_model_content_sha256", "images",
                                       "float16_simulated_max_abs_diff"}
    for row in doc["results"]:
        assert set(row) == RESULT_KEYS
    assert read_parity(exported_run / "export") == report
    assert ParityReport.from_dict(report.to_dict()) == report


def test_runtime_option_applies_per_format(exported_run: Path, tmp_path: Path):
    run = _copy(exported_run, tmp_path)
    rep = check_parity(run, runtime="tensorflow", progress=False)
    assert rep.passed, format_parity_table(rep)
    runtimes = {r.artifact: r.runtime for r in rep.results}
    assert runtimes["model_float32.tflite"] == "tensorflow"  # tf.lite.Interpreter
    assert runtimes["model.onnx"] == "onnxruntime"  # a TFLite runtime cannot run ONNX


# --- the gate can fail -----------------------------------------------------------------------


def test_shifted_reference_fails_the_float32_files_on_max_diff(exported_run: Path, tmp_path):
    run = _copy(exported_run, tmp_path)
    with np.load(run / "reference.npz") as z:
        probs, labels = z["probabilities"], z["labels"]
    # +1e-4 is 10x the float32 tolerance, 10x under float16's and moves no argmax; rows
    # past the oracle's own re-run sample (export/oracle.py), which would refuse them outright.
    probs = probs.copy()
    probs[ORACLE_SAMPLE:] += np.float32(1e-4)
    np.savez(run / "reference.npz", probabilities=probs, labels=labels)
    (run / "export" / "parity.json").unlink(missing_ok=True)  # the calibration is made anew
    rep = check_parity(run, progress=False)
    assert not rep.passed
    res = _by_file(rep)
    for name in ("model_float32.tflite", "model.onnx"):
        assert not res[name].passed
        assert len(res[name].failures) == 1
        assert res[name].failures[0].startswith("max |Δp| 1.0e-04 > 1.0e-05"), res[name].failures
    for name in ("model_float16.tflite", "model_dynamic_int8.tflite", "model_int8.tflite"):
        assert res[name].passed, res[name].failures
    table = format_parity_table(rep)
    assert "parity FAIL: 5 files, 5 rows: 3 passed, 2 failed" in table
    # The float16 bound comes from the SavedModel, not from the (shifted) reference.
    assert rep.calibration == read_parity(exported_run / "export").calibration
    assert "- model.onnx: max |Δp| 1.0e-04 > 1.0e-05" in table
    on_disk = json.loads((run / "export" / "parity.json").read_text())
    assert on_disk["passed"] is False  # written whatever the verdict


def test_flipped_reference_decisions_fail_every_artifact_on_agreement(exported_run, tmp_path):
    run = _copy(exported_run, tmp_path)
    with np.load(run / "reference.npz") as z:
        probs, labels = z["probabilities"].copy(), z["labels"]
    # Rolling the classes of 200 rows moves their argmax: agreement drops to 98.00 %,
    # under every precision's floor (the lowest, int8, is 99 %).
    probs[1000:1200] = np.roll(probs[1000:1200], 1, axis=1)  # past the oracle's re-run sample
    np.savez(run / "reference.npz", probabilities=probs, labels=labels)
    rep = check_parity(run, progress=False)
    assert not rep.passed
    for r in rep.results:
        assert not r.passed
        line = next(f for f in r.failures if f.startswith("agreement"))
        floor = f"{THRESHOLDS[r.precision].min_agreement:.2%}"
        assert f"< {floor}" in line, line
        # 2 % rolled away, plus each file's own flips (under 1 %: int8's floor is 99 %).
        assert 0.97 <= r.agreement <= 0.98 + 1e-9


def test_tampered_artifact_fails_with_the_sha_reason(exported_run: Path, tmp_path: Path):
    run = _copy(exported_run, tmp_path)
    path = run / "export" / "model_float16.tflite"
    path.write_bytes(path.read_bytes() + b"\0" * 16)  # still a loadable flatbuffer
    rep = check_parity(run, progress=False)
    res = _by_file(rep)
    assert not rep.passed
    bad = res["model_float16.tflite"]
    assert not bad.passed
    assert any(f.startswith("sha256 ") and "changed since the export" in f for f in bad.failures)
    assert any(f.startswith("size ") for f in bad.failures)
    assert bad.accuracy is not None  # it still ran: every figure is reported
    assert all(res[f].passed for f in FILES if f != "model_float16.tflite")


def test_truncated_artifact_is_a_failure_not_a_crash(exported_run: Path, tmp_path: Path):
    run = _copy(exported_run, tmp_path)
    path = run / "export" / "model_int8.tflite"
    path.write_bytes(path.read_bytes()[:200])
    (run / "export" / "model.onnx").unlink()
    rep = check_parity(run, progress=False)
    res = _by_file(rep)
    assert not res["model_int8.tflite"].passed
    assert any(f.startswith("cannot load") for f in res["model_int8.tflite"].failures)
    assert res["model_int8.tflite"].accuracy is None
    assert res["model.onnx"].failures == (
        "file missing: listed in manifest.json but not in the export folder",
    )


def test_unloadable_file_with_matching_hash_is_bad_input(exported_run: Path, tmp_path: Path):
    run = _copy(exported_run, tmp_path)
    export_dir = run / "export"
    data = (export_dir / "model_float32.tflite").read_bytes()[:200]
    (export_dir / "model_float32.tflite").write_bytes(data)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    import hashlib

    manifest["artifacts"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (export_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError) as e:
        check_parity(run, progress=False)
    assert e.value.exit_code == 2


def test_missing_run_export_and_reference_are_errors(exported_run: Path, tmp_path: Path):
    with pytest.raises(RunDirError, match=r"run directory .* does not exist"):
        check_parity(tmp_path / "nope", progress=False)
    run = _copy(exported_run, tmp_path)
    shutil.rmtree(run / "export")
    with pytest.raises(ParityError, match=r"no export folder.*edgeport export") as e:
        check_parity(run, progress=False)
    assert isinstance(e.value, EdgeportError) and e.value.exit_code == 2
    (run / "reference.npz").unlink()
    with pytest.raises(RunDirError, match=r"missing reference\.npz"):
        check_parity(run, progress=False)


# --- reports ---------------------------------------------------------------------------------


def test_junit_is_valid_xml_with_one_testcase_per_artifact(exported_run, report, tmp_path):
    path = write_junit(report, tmp_path / "ok.xml")
    root = ET.parse(path).getroot()
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == FILES
    assert root.find("testsuite").get("failures") == "0"
    assert not root.findall(".//failure")

    run = _copy(exported_run, tmp_path)
    path = run / "export" / "model_int8.tflite"
    path.write_bytes(path.read_bytes() + b"\0")
    failing = check_parity(run, progress=False)
    root = ET.parse(write_junit(failing, tmp_path / "bad.xml")).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    failures = root.findall(".//testcase[@name='model_int8.tflite']/failure")
    assert len(failures) == 1
    assert "sha256" in failures[0].get("message")


def test_markdown_has_a_headline_and_a_row_per_artifact(report: ParityReport, tmp_path: Path):
    text = write_markdown(report, tmp_path / "summary.md").read_text(encoding="utf-8")
    assert text == to_markdown(report)
    assert text.startswith("### ✅ edgeport parity PASS: 5 files, 5 rows: 5 passed")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == FILES
    assert "max \\|Δp\\|" in text  # the pipe in the header is escaped
    write_markdown(report, tmp_path / "summary.md", append=True)
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == text * 2


def test_terminal_table(report: ParityReport):
    table = format_parity_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["artifact", "format", "precision"]
    for name in FILES:
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.rstrip().endswith("PASS")
    assert "parity PASS: 5 files, 5 rows: 5 passed" in table


# --- thresholds ------------------------------------------------------------------------------


def test_default_table():
    assert set(THRESHOLDS) == set(Precision)
    # (min_agreement, max_abs_diff, max_accuracy_drop, golden_atol), as the issue specifies.
    assert THRESHOLDS[Precision.FLOAT32] == Tolerance(1.0, 1e-5, None, 1e-5)
    assert THRESHOLDS[Precision.FLOAT16] == Tolerance(0.999, 1e-3, None, 1e-5)
    assert THRESHOLDS[Precision.DYNAMIC_INT8] == Tolerance(0.995, None, 0.003, 1e-4)
    assert THRESHOLDS[Precision.INT8] == Tolerance(0.99, None, 0.005, 0.004)
    assert load_thresholds(None) is THRESHOLDS


def test_override_file_changes_only_what_it_names(tmp_path: Path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"int8": {"min_agreement": 0.98, "max_abs_diff": 0.1},
                                "float16": {"max_abs_diff": None}}))
    table = load_thresholds(path)
    assert table[Precision.INT8] == Tolerance(0.98, 0.1, 0.005, 0.004)
    assert table[Precision.FLOAT16].max_abs_diff is None
    assert table[Precision.FLOAT32] == THRESHOLDS[Precision.FLOAT32]
    assert THRESHOLDS[Precision.INT8] == Tolerance(0.99, None, 0.005, 0.004)  # untouched


def test_stricter_thresholds_file_fails_the_int8_file(exported_run: Path, tmp_path: Path):
    run = _copy(exported_run, tmp_path)
    path = tmp_path / "strict.json"
    path.write_text(json.dumps({"int8": {"min_agreement": 1.0}}))
    rep = check_parity(run, thresholds=path, progress=False)
    res = _by_file(rep)
    assert not res["model_int8.tflite"].passed
    assert res["model_int8.tflite"].failures[0].startswith("agreement ")
    assert res["model_int8.tflite"].failures[0].split(" < ")[1].startswith("100.00%")
    assert res["model_float32.tflite"].passed


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("{not json", ["not valid JSON"]),
        ("[1, 2]", ["top level is list", "float32, float16, dynamic_int8, int8"]),
        ('{"int4": {"min_agreement": 0.9}}', ["'int4'", "allowed keys: float32, float16"]),
        ('{"int8": {"min_agreemnt": 0.9}}', ["int8.min_agreemnt",
                                             "allowed keys: min_agreement, max_abs_diff"]),
        ('{"int8": {"min_agreement": "0.99"}}', ["int8.min_agreement", "'0.99'", "a number"]),
        ('{"int8": {"min_agreement": true}}', ["int8.min_agreement", "True"]),
        ('{"int8": {"min_agreement": null}}', ["int8.min_agreement", "None", "a number"]),
        ('{"int8": {"min_agreement": 99}}', ["int8.min_agreement", "[0, 1]"]),
        ('{"int8": {"golden_atol": -1}}', ["int8.golden_atol", ">= 0"]),
        ('{"int8": 0.99}', ["'int8' is float", "min_agreement"]),
    ],
)
def test_bad_thresholds_file(tmp_path: Path, content: str, needles: list[str]):
    path = tmp_path / "thresholds.json"
    path.write_text(content)
    with pytest.raises(ThresholdsError) as e:
        load_thresholds(path)
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    assert isinstance(e.value, ValueError) and e.value.exit_code == 2


def test_missing_thresholds_file(tmp_path: Path):
    with pytest.raises(ThresholdsError, match=r"not found.*--thresholds"):
        load_thresholds(tmp_path / "absent.json")


# --- the whole folder, row counts, bounds ------------------------------------------------------


def test_rows_show_their_images_and_the_bound_they_were_gated_by(report: ParityReport):
    res = _by_file(report)
    assert all(r.images == 10_000 for r in report.results)
    for name in ("model_float32.tflite", "model.onnx"):
        assert (res[name].max_abs_diff_bound, res[name].bound_source) == (1e-5, "table")
    f16 = res["model_float16.tflite"]
    # The softmax regression's own float16 noise (3.9e-4) sets its bound over the table's 1e-3.
    assert report.calibration["images"] == 10_000
    simulated = report.calibration["float16_simulated_max_abs_diff"]
    assert 1e-4 < simulated < 1e-3
    bound = FLOAT16_CALIBRATION_K * simulated
    assert bound > THRESHOLDS[Precision.FLOAT16].max_abs_diff  # 4 x 3.9e-4 = 1.6e-3
    assert f16.max_abs_diff_bound == pytest.approx(bound)
    assert f16.bound_source == f"{FLOAT16_CALIBRATION_K:g} x float16 simulation {simulated:.1e}"
    assert f16.max_abs_diff <= bound
    for name in ("model_dynamic_int8.tflite", "model_int8.tflite"):
        assert (res[name].max_abs_diff_bound, res[name].bound_source) == (None, "not gated")
    table = format_parity_table(report)
    int8_row = next(line for line in table.splitlines() if line.startswith("model_int8.tflite"))
    assert "(not gated)" in int8_row and " 10,000 " in int8_row
    f16_row = next(line for line in table.splitlines() if line.startswith("model_float16"))
    assert f"{bound:.1e} ({f16.bound_source})" in f16_row
    assert "images" in table.splitlines()[0] and "max |Δp| bound" in table.splitlines()[0]
    md = to_markdown(report)
    assert "| 10,000 |" in md and "1.0e-05 (table)" in md and "(not gated)" in md


def test_the_calibration_is_computed_once_per_saved_model(exported_run, tmp_path, monkeypatch):
    import edgeport.export.oracle as oracle

    run = _copy(exported_run, tmp_path)
    before = read_parity(run / "export").calibration

    def boom(*args, **kwargs):
        raise AssertionError("float16_simulation ran again")

    monkeypatch.setattr(oracle, "float16_simulation", boom)
    rep = check_parity(run, progress=False)  # served from parity.json: same SavedModel
    assert rep.passed and rep.calibration == before
    doc = json.loads((run / "export" / "parity.json").read_text())
    doc["calibration"]["saved_model_content_sha256"] = "0" * 64  # made for another model
    (run / "export" / "parity.json").write_text(json.dumps(doc))
    with pytest.raises(AssertionError, match="ran again"):
        check_parity(run, progress=False)


def test_a_file_the_manifest_does_not_list_is_refused_like_verify(exported_run, tmp_path,
                                                                  capsys):
    from edgeport.export.cli import main
    from edgeport.export.verify import verify_export

    run = _copy(exported_run, tmp_path)
    export_dir = run / "export"
    shutil.copy(export_dir / "model_float32.tflite", export_dir / "model_extra.tflite")
    rep = check_parity(run, progress=False)
    assert not rep.passed and rep.results == ()
    line = "model_extra.tflite: extra file, not listed in manifest.json"
    assert rep.problems == (
        f"export/{line}; fix: make {export_dir} exactly what `edgeport export` wrote (move "
        f"the extra file out, or re-run `edgeport export {run} --force`)",)
    # The same rule as verify (one folder check, export/integrity.py).
    assert line in verify_export(export_dir).problems
    assert json.loads((export_dir / "parity.json").read_text())["passed"] is False
    capsys.readouterr()
    assert main(["parity", str(run)]) == 1  # a failed check, as verify's exit code
    out = capsys.readouterr().out
    assert "parity FAIL: export folder refused (1 problem(s) below)" in out
    assert f"- export/{line}; fix: " in out
    root = ET.parse(write_junit(rep, tmp_path / "refused.xml")).getroot()
    assert root.find(".//testcase[@name='export folder']/failure") is not None
    (export_dir / "model_extra.tflite").unlink()
    (export_dir / "notes.txt").write_text("any file counts")
    assert "notes.txt: extra file" in check_parity(run, progress=False).problems[0]


# --- calibrated float16 bound: a user's CNN (residual block, batch norm, logits) --------------

USER_CNN_TRAIN = 6000  # MNIST training digits, 2 epochs: about 30 s on 2 cores
USER_CNN_LOGIT_SCALE = 2.0  # sharpens the softmax, as a longer training run would


def _user_cnn(ds):
    """A small residual CNN with batch norm and a logits output, trained briefly on MNIST."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))

    def conv_bn(h, filters):
        h = layers.Conv2D(filters, 3, padding="same")(h)
        return layers.ReLU()(layers.BatchNormalization(momentum=0.8)(h))

    h = conv_bn(inp, 16)
    h = layers.Add()([h, conv_bn(h, 16)])  # the residual block
    h = conv_bn(layers.MaxPooling2D()(h), 32)
    dense = layers.Dense(10)  # logits
    model = keras.Model(inp, dense(layers.GlobalAveragePooling2D()(h)))
    model.compile(optimizer=keras.optimizers.Adam(0.003),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = ds.x_train[:USER_CNN_TRAIN].astype(np.float32) / 255.0
    model.fit(x, ds.y_train[:USER_CNN_TRAIN], epochs=2, batch_size=64, verbose=0)
    w, b = dense.get_weights()
    dense.set_weights([w * USER_CNN_LOGIT_SCALE, b * USER_CNN_LOGIT_SCALE])
    return model


@pytest.fixture(scope="module")
def user_cnn_run(tmp_path_factory, mnist) -> Path:
    """`edgeport import` of that CNN on MNIST, exported to float16 and gated."""
    from edgeport.export.cli import main
    from edgeport.export.exporter import export_model

    folder = tmp_path_factory.mktemp("user_cnn")
    _user_cnn(mnist).save(folder / "cnn.keras")
    run = folder / "run"
    assert main(["import", str(folder / "cnn.keras"), "--dataset", "mnist", "--out", str(run),
                 "--quiet"]) == 0
    export_model(run, formats="float32,float16", progress=False, app_models=False)
    return run


def _tamper_weights(path: Path, shape: tuple[int, ...], how: str) -> None:
    """Change the float16 constant of ``shape`` inside a .tflite file, in place:
    ``weight`` negates its largest weight, ``labels`` swaps the rows of classes 3 and 5
    (a swapped label order), ``bit`` flips the top exponent bit of its first weight."""
    from ai_edge_litert.interpreter import Interpreter

    data = bytearray(path.read_bytes())
    interpreter = Interpreter(model_content=bytes(data))
    d = next(d for d in interpreter.get_tensor_details()
             if tuple(d["shape"]) == shape and d["dtype"] == np.float16)
    w = interpreter.get_tensor(d["index"])
    at = bytes(data).index(w.tobytes())
    changed = w.copy()
    if how == "weight":
        flat = changed.reshape(-1)
        i = int(np.argmax(np.abs(flat)))
        flat[i] = -flat[i]
    elif how == "labels":
        changed[[3, 5]] = changed[[5, 3]]
    else:
        bits = changed.reshape(-1).view(np.uint16)
        bits[0] ^= np.uint16(0x4000)
    data[at : at + w.nbytes] = changed.tobytes()
    path.write_bytes(bytes(data))


def test_near_ties_are_flips_the_bound_allows():
    from edgeport.export.parity import _gate, near_ties

    reference = np.array([[0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.9, 0.1, 0.0]])
    ref_top = reference.argmax(1)  # [0, 0, 0]
    top = np.array([1, 1, 0])  # a tie flipped, a 0.2 margin flipped
    assert near_ties(reference, top, ref_top, bound=1e-5) == 1
    assert near_ties(reference, top, ref_top, bound=0.1) == 2
    assert near_ties(reference, top, ref_top, bound=None) == 0  # int8/app rows: decisions
    tol = THRESHOLDS[Precision.FLOAT32]
    args = {"accuracy": 0.9, "reference_accuracy": 0.9, "agreement": 2 / 3, "n": 3,
            "max_diff": 1e-6}
    assert _gate(tol, flips=1, near_ties=0, **{**args, "agreement": 2 / 3}) != []
    assert _gate(tol, flips=1, near_ties=1, **args) == []  # only the tie flipped
    assert "1 of them near-ties" in _gate(tol, flips=2, near_ties=1, **{**args,
                                                                      "agreement": 1 / 3})[0]


def test_user_cnn_float16_passes_by_its_calibrated_bound(user_cnn_run: Path):
    from edgeport.export.parity import _gate
    from edgeport.export.verify import verify_export

    rep = check_parity(user_cnn_run, progress=False)
    f16 = _by_file(rep)["model_float16.tflite"]
    assert f16.passed, format_parity_table(rep)
    simulated = rep.calibration["float16_simulated_max_abs_diff"]
    assert f16.max_abs_diff_bound == pytest.approx(FLOAT16_CALIBRATION_K * simulated)
    assert f16.bound_source == f"{FLOAT16_CALIBRATION_K:g} x float16 simulation {simulated:.1e}"
    # The model is sharp enough that the fixed 1e-3 bound false-fails it: the old gate's
    # verdict on the same figures, with every decision agreeing with the reference.
    assert f16.max_abs_diff > THRESHOLDS[Precision.FLOAT16].max_abs_diff
    # Its close calls may flip (the reference's two best classes within 2 x the bound):
    # not counted; every other decision agrees.
    assert f16.agreement + f16.near_ties / 10_000 >= THRESHOLDS[Precision.FLOAT16].min_agreement
    old = _gate(THRESHOLDS[Precision.FLOAT16], accuracy=f16.accuracy,
                reference_accuracy=f16.reference_accuracy, agreement=f16.agreement, flips=0,
                n=10_000, max_diff=f16.max_abs_diff, near_ties=f16.near_ties)
    assert [f.split(" > ")[1] for f in old] == ["1.0e-03"], old
    # float32 stays on the table's 1e-5, which it meets: summation order only.
    f32 = _by_file(rep)["model_float32.tflite"]
    assert f32.passed and f32.bound_source == "table" and f32.max_abs_diff < 1e-5
    row = next(line for line in format_parity_table(rep).splitlines()
               if line.startswith("model_float16.tflite"))
    assert f"({f16.bound_source})" in row
    # verify re-checks parity.json's verdict with the same calibrated bound.
    assert verify_export(user_cnn_run / "export").passed


@pytest.mark.parametrize("how", ["weight", "labels", "bit"])
def test_user_cnn_float16_with_a_changed_weight_still_fails(user_cnn_run: Path, tmp_path, how):
    import hashlib

    run = _copy(user_cnn_run, tmp_path)
    export_dir = run / "export"
    path = export_dir / "model_float16.tflite"
    _tamper_weights(path, (10, 32), how)  # the logits layer's kernel
    # Re-hash the manifest too: only the numbers can catch this file.
    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["file"] == path.name)
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (export_dir / "manifest.json").write_text(json.dumps(manifest))
    rep = check_parity(run, progress=False)
    f16 = _by_file(rep)["model_float16.tflite"]
    assert not f16.passed
    bound = f"{f16.max_abs_diff_bound:.1e}"
    assert any(f.startswith("max |Δp| ") and f.endswith(f" > {bound}") for f in f16.failures), \
        f16.failures
