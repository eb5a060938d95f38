"""export.verify on a real exported MNIST run: hashes and golden vectors, good and tampered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from _runs import rehash

from edgeport.export.formats import ARTIFACT_KINDS
from edgeport.export.manifest import ManifestError
from edgeport.export.report import format_verify_table, to_markdown, write_junit
from edgeport.export.thresholds import THRESHOLDS
from edgeport.export.verify import VerifyError, verify_export

pytestmark = pytest.mark.slow

FILES = [k.file for k in ARTIFACT_KINDS]
REPO = Path(__file__).resolve().parents[1]


def _copy_export(run: Path, dest: Path) -> Path:
    """The shared run's export, without the parity.json another test may have left in it
    (these tests judge the files; a stale parity.json would add its own problem)."""
    export = Path(shutil.copytree(run / "export", dest / "export"))
    (export / "parity.json").unlink(missing_ok=True)
    return export


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """A 300-byte .npz whose 'inputs' header declares ``shape`` float32 (a memory bomb)."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inputs.npy", head.getvalue() + bytes(64))
    return path


def _by_file(report) -> dict:
    return {r.artifact: r for r in report.results}


def test_good_export_passes(exported_run: Path):
    report = verify_export(exported_run / "export")
    assert report.passed, format_verify_table(report)
    assert [r.artifact for r in report.results] == FILES
    assert report.golden_count == 32  # the exporter's default golden_samples
    for r in report.results:
        assert r.sha256_ok and r.failures == ()
        assert r.atol == THRESHOLDS[r.precision].golden_atol
        assert 0.0 <= r.max_abs_diff <= r.atol
    assert report.problems == ()
    assert "verify PASS: 5/5" in format_verify_table(report)


def test_copied_export_passes_without_tensorflow(exported_run: Path, tmp_path: Path):
    export_dir = _copy_export(exported_run, tmp_path)
    code = ("import sys; from edgeport.export.verify import verify_export; "
            f"r = verify_export({str(export_dir)!r}); "
            "print(r.passed, 'tensorflow' in sys.modules)")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    # A device has the folder and a runtime, not TensorFlow: verify must not need it.
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]


def test_tampered_file_fails_with_the_sha_reason(exported_run: Path, tmp_path: Path):
    export_dir = _copy_export(exported_run, tmp_path)
    path = export_dir / "model_dynamic_int8.tflite"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the tail of the flatbuffer: it still loads, but it is not the same file
    path.write_bytes(bytes(data))
    report = verify_export(export_dir)
    assert not report.passed
    res = _by_file(report)
    bad = res["model_dynamic_int8.tflite"]
    assert not bad.sha256_ok and not bad.passed
    assert any(f.startswith("sha256 ") for f in bad.failures), bad.failures
    assert all(res[f].passed for f in FILES if f != "model_dynamic_int8.tflite")
    assert any(line.startswith("model_dynamic_int8.tflite: sha256") for line in report.failures)


def test_tampered_golden_fails_naming_the_artifact(exported_run: Path, tmp_path: Path):
    export_dir = _copy_export(exported_run, tmp_path)
    with np.load(export_dir / "golden.npz") as z:
        arrays = {k: z[k] for k in z.files}
    # One int8 output step is 1/256 = 0.0039 and the tolerance 0.004: 0.01 is 2.5 steps.
    arrays["model_int8__probabilities"] = arrays["model_int8__probabilities"] + np.float32(0.01)
    del arrays["model__probabilities"]
    np.savez(export_dir / "golden.npz", **arrays)
    rehash(export_dir, "golden.npz")  # an edited manifest too: else golden.npz is not loaded
    report = verify_export(export_dir)
    res = _by_file(report)
    assert not report.passed
    assert res["model_int8.tflite"].sha256_ok
    assert res["model_int8.tflite"].failures[0].startswith("golden max |Δp| 1.0e-02 > 4.0e-03")
    assert res["model.onnx"].failures == (
        "golden.npz has no 'model__probabilities'; expected one array per artifact",
    )
    assert res["model_float32.tflite"].passed


def test_missing_and_unloadable_files_are_failures(exported_run: Path, tmp_path: Path):
    export_dir = _copy_export(exported_run, tmp_path)
    (export_dir / "model_float16.tflite").unlink()
    (export_dir / "model.onnx").write_bytes(b"not an onnx model")
    (export_dir / "model_int8.tflite").write_bytes(b"not a tflite model")
    rehash(export_dir, "model_int8.tflite")  # its manifest entry edited to match
    report = verify_export(export_dir)
    res = _by_file(report)
    assert res["model_float16.tflite"].failures == (
        "file missing: listed in manifest.json but not in the export folder",
    )
    onnx = res["model.onnx"]
    assert not onnx.sha256_ok
    # Hash first: a file that is not the exported one is never parsed or run.
    assert [f.split()[0] for f in onnx.failures] == ["size", "sha256"]
    assert res["model_int8.tflite"].sha256_ok
    assert res["model_int8.tflite"].failures[0].startswith("cannot load")
    root = ET.parse(write_junit(report, tmp_path / "verify.xml")).getroot()
    assert [c.get("name") for c in root.iter("testcase")] == FILES
    assert root.find("testsuite").get("failures") == "3"
    assert "❌" in to_markdown(report)


def test_changed_saved_model_is_a_folder_problem(exported_run: Path, tmp_path: Path):
    run = Path(shutil.copytree(exported_run, tmp_path / "run"))
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    manifest["run"] = str(run)  # the manifest is not hashed; point it at the copy
    (run / "export" / "manifest.json").write_text(json.dumps(manifest))
    # parity.json names the manifest it judged (an earlier test may have written one)
    (run / "export" / "parity.json").unlink(missing_ok=True)
    assert verify_export(run / "export").passed
    (run / "saved_model" / "assets").mkdir(exist_ok=True)
    (run / "saved_model" / "assets" / "extra.txt").write_text("retrained")
    report = verify_export(run / "export")
    assert not report.passed
    assert all(r.passed for r in report.results)
    assert len(report.problems) == 1 and "changed since the export" in report.problems[0]


def test_missing_folder_manifest_or_golden_are_errors(exported_run: Path, tmp_path: Path):
    with pytest.raises(VerifyError, match="not a folder"):
        verify_export(tmp_path / "absent")
    export_dir = _copy_export(exported_run, tmp_path)
    (export_dir / "golden.npz").unlink()
    with pytest.raises(VerifyError, match=r"golden\.npz: not found") as e:
        verify_export(export_dir)
    assert e.value.exit_code == 2
    (export_dir / "manifest.json").unlink()
    with pytest.raises(ManifestError, match=r"manifest\.json: not found"):
        verify_export(export_dir)


def test_a_changed_golden_npz_is_never_loaded(exported_run: Path, tmp_path: Path):
    # Issue 18: verify loaded golden.npz before checking its hash, so a small file declaring
    # (1e11, 784) arrays exited 70 (2.7 MB of zeros expanded to 2.7 GB). The hash comes
    # first now: a golden.npz that is not the exported one is reported, not opened.
    export_dir = _copy_export(exported_run, tmp_path)
    _npz_declaring(export_dir / "golden.npz", (10**11, 784))
    report = verify_export(export_dir)
    assert not report.passed and report.golden_count == 0
    assert any(p.startswith("golden.npz: sha256 ") for p in report.problems), report.problems
    for r in report.results:
        assert r.sha256_ok and r.max_abs_diff is None
        assert r.failures == ("not replayed: golden.npz differs from manifest.json, so it was "
                              "not loaded",)


def test_a_golden_npz_declaring_huge_arrays_is_refused_before_loading(
    exported_run: Path, tmp_path: Path
):
    # The manifest edited to match (an unsigned export cannot stop that): the .npy headers
    # are read first and the declared 292 GB refused with exit 2, nothing loaded.
    export_dir = _copy_export(exported_run, tmp_path)
    _npz_declaring(export_dir / "golden.npz", (10**11, 784))
    rehash(export_dir, "golden.npz")
    with pytest.raises(VerifyError) as e:
        verify_export(export_dir)
    assert e.value.exit_code == 2
    assert str(e.value) == (
        f"{export_dir / 'golden.npz'}: its arrays declare 299,072,266 MB (largest 'inputs' "
        "[100000000000, 784] float32); expected at most 256 MB; nothing was loaded; fix: "
        "re-run `edgeport export RUN --force`")
