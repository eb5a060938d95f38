"""export/cli.py, the `edgeport` command: interrupted exports, reproducible artifacts, bad
input, and `edgeport run` (train -> export -> parity) end to end.

Every bad input below must end with exit code 2 and exactly one line on stderr
(what was received, what was expected, the fix), no traceback, and nothing
half-written under a final name.

There is no copy of Fashion-MNIST here, so the `edgeport run` test writes the four files
in its exact IDX layout (learnable class patterns, so quantized files agree with the
reference) and registers their md5 values in place of Zalando's published ones; the
loader, the md5 check and every later stage are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _idxfiles import write_idx_dataset

from edgeport.export.cli import main
from edgeport.export.manifest import verify_manifest
from edgeport.train.data import DATASETS


def edgeport(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeport", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeport: error: "), res.stderr
    for n in needles:
        assert n in last, (n, last)
    return last


# ---- SIGKILL in the middle of an export -------------------------------------------------

def _tmp_exports(run: Path) -> list[Path]:
    return [p for p in run.iterdir() if p.name.startswith(".export.") and p.is_dir()]


def test_sigkill_mid_export_leaves_previous_export_or_none(tmp_path, exported_run):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = json.loads((run / "export" / "manifest.json").read_text())
    kills = 0
    for attempt in range(4):
        if attempt == 2:  # also the case with no previous export at all
            shutil.rmtree(run / "export")
        proc = subprocess.Popen([sys.executable, "-m", "edgeport", "export", str(run), "--force"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until the export is really under way (its temporary folder holds a file),
        # then kill it without warning at a different moment each time.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(any(t.iterdir()) for t in _tmp_exports(run)):
                break
            time.sleep(0.005)
        time.sleep(0.05 * attempt)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        final = run / "export"
        if final.exists():
            # Complete and exactly what the manifest says: the old export, or a new one
            # that was renamed into place just before the kill.
            assert verify_manifest(final) == []
            now = json.loads((final / "manifest.json").read_text())
            assert [a["sha256"] for a in now["artifacts"]] == \
                   [a["sha256"] for a in before["artifacts"]]
        else:
            assert attempt >= 2, "the previous export vanished"
        for f in run.rglob("*"):  # no model file outside a hidden temporary folder
            if f.suffix in (".tflite", ".onnx"):
                assert f.parent == final or f.parent.name.startswith(".export."), f
    assert kills >= 3  # the test really interrupted exports, not just watched them finish


# ---- reproducible artifacts ---------------------------------------------------------------

def test_two_runs_give_byte_identical_artifacts(tmp_path, exported_run):
    """`edgeport run` in a fresh process reproduces the session run's five files exactly."""
    # The five formats named: the app models (and their 10,000-photo gate rows, most of a
    # run's time) are not compared here; tests/test_app.py checks them.
    res = edgeport("run", "--out", str(tmp_path / "again"), "--quiet",
                   "--formats", "float32,float16,dynamic_int8,int8,onnx")
    assert res.returncode == 0, res.stderr
    a = json.loads((exported_run / "export" / "manifest.json").read_text())["artifacts"]
    b = json.loads((tmp_path / "again" / "export" / "manifest.json").read_text())["artifacts"]
    assert len(a) == 5
    assert {x["file"]: x["sha256"] for x in a} == {
        x["file"]: x["sha256"] for x in b if x["family"] == "plain" and x["file"] != "model.ort"
    }


# ---- bad input at the CLI -----------------------------------------------------------------

@pytest.fixture
def run_copy(tmp_path, exported_run) -> Path:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    return run


def test_export_missing_run(tmp_path):
    assert_one_line_error(edgeport("export", str(tmp_path / "nope")), "does not exist", "--out")


def test_export_run_without_saved_model(run_copy):
    shutil.rmtree(run_copy / "saved_model")
    res = edgeport("export", str(run_copy), "--force")
    assert_one_line_error(res, "saved_model")
    assert (run_copy / "export" / "manifest.json").is_file()  # the old export is untouched


def test_export_existing_needs_force(run_copy):
    assert_one_line_error(edgeport("export", str(run_copy)), "--force")


def test_export_bad_formats(run_copy):
    assert_one_line_error(edgeport("export", str(run_copy), "--formats", "float32,int4",
                                   "--force"), "int4", "dynamic_int8")


def test_parity_reference_needing_pickle_is_refused(run_copy):
    np.savez(run_copy / "reference.npz",
             probabilities=np.array([object()], dtype=object), labels=np.zeros(1))
    assert_one_line_error(edgeport("parity", str(run_copy)), "reference.npz", "pickle")


def test_parity_missing_reference(run_copy):
    (run_copy / "reference.npz").unlink()
    assert_one_line_error(edgeport("parity", str(run_copy)), "reference.npz")


def test_parity_malformed_thresholds(run_copy, tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"int8": {"min_agreement": "high"}}')
    assert_one_line_error(edgeport("parity", str(run_copy), "--thresholds", str(bad)),
                          "min_agreement")


def test_parity_unreadable_model_is_bad_input(run_copy):
    """A model file that is not a model but whose hash was updated to match: exit 2."""
    target = run_copy / "export" / "model_float32.tflite"
    target.write_bytes(b"not a flatbuffer at all" * 10)
    manifest = json.loads((run_copy / "export" / "manifest.json").read_text())
    from edgeport.export.manifest import file_sha256

    for a in manifest["artifacts"]:
        if a["file"] == target.name:
            a["sha256"], a["bytes"] = file_sha256(target), target.stat().st_size
    (run_copy / "export" / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(edgeport("parity", str(run_copy)), "model_float32.tflite")


def test_parity_tampered_artifact_fails_with_exit_1(run_copy):
    target = run_copy / "export" / "model_int8.tflite"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    res = edgeport("parity", str(run_copy))
    assert res.returncode == 1, res.stderr
    assert "model_int8.tflite" in res.stdout and "sha256" in res.stdout
    assert "FAIL" in res.stdout


def test_verify_missing_folder(tmp_path):
    assert_one_line_error(edgeport("verify", str(tmp_path / "nope")), "nope")


# --- edgeport run ----------------------------------------------------------------------


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class k: a bright band at rows 2k..2k+5 over faint noise; easy to learn for any model."""
    x = rng.integers(0, 40, (len(labels), 28, 28))
    for i, k in enumerate(labels):
        x[i, 2 * k + 2 : 2 * k + 6, 4:24] = 230
    return x


@pytest.fixture
def fashion_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    y_train, y_test = np.arange(5600) % 10, np.arange(200) % 10
    folder = tmp_path / "data" / "fashion-mnist"
    md5 = write_idx_dataset(folder, _images(y_train, rng), y_train, _images(y_test, rng), y_test)
    spec = dataclasses.replace(DATASETS["fashion-mnist"], mirrors=(), md5=md5)
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    monkeypatch.setenv("EDGEPORT_DATA", str(tmp_path / "data"))
    return folder


# --model cnn on Fashion-MNIST-layout files runs in tests/test_app.py (fashion_run), with
# real strokes and its app models checked on photos.
@pytest.mark.slow
@pytest.mark.parametrize("model", ["softmax", "mlp"])
def test_run_fashion_mnist_end_to_end(fashion_files, tmp_path, capsys, model):
    out = tmp_path / "run"
    code = main(["run", "--dataset", "fashion-mnist", "--model", model, "--iterations", "60",
                 "--eval-every", "30", "--calibration-samples", "200", "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    parity = json.loads((out / "export" / "parity.json").read_text())
    # five files + model.ort + two app models through LiteRT and MediaPipe
    assert parity["passed"] and len(parity["results"]) == 10, parity
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "fashion-mnist" and m["test_accuracy"] >= 0.9  # bands are easy
    assert (out / "export" / "labels.txt").read_text().splitlines()[0] == "T-shirt/top"
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["input"]["layout"] == ("nhwc" if model == "cnn" else "flat")
    assert "parity PASS: 8 files, 10 rows: 10 passed" in captured.out
    # The run's own parity.json (two rows per app model) is the verdict verify accepts.
    assert main(["verify", str(out / "export")]) == 0, capsys.readouterr().out
