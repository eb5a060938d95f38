"""Tests for export/manifest.py, export/formats.py and export/exporter.py.

Run: ``python -m pytest tests/test_manifest.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _runs import MNIST_INPUT, copy_run, load_mnist, shared_export

from edgeport.export import (
    ExportError,
    ExportExistsError,
    ExportResult,
    FormatError,
    RunDirError,
    export_model,
    parse_formats,
    verify_manifest,
)
from edgeport.export.exporter import balanced_sample
from edgeport.export.formats import FORMAT_TOKENS
from edgeport.export.manifest import file_sha256, read_manifest, saved_model_sha256
from edgeport.export.metadata import decode_metadata
from edgeport.export.onnx import read_onnx_metadata
from edgeport.export.tflite import read_tflite_metadata

FILES = [
    "model_float32.tflite",
    "model_float16.tflite",
    "model_dynamic_int8.tflite",
    "model_int8.tflite",
    "model.onnx",
]
# Written beside the artifact table: model.ort (export.ort), the app models (export.app).
APP_FILES = ["model.ort", "model_app_float32.tflite", "model_app_int8.tflite"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(run_dir: Path) -> dict:
    return read_manifest(run_dir / "export")


# ---- formats ---------------------------------------------------------------------------


def test_parse_formats() -> None:
    assert [k.token for k in parse_formats("all")] == list(FORMAT_TOKENS)
    assert [k.token for k in parse_formats(" ONNX, int8,onnx ")] == ["int8", "onnx"]
    assert [k.file for k in parse_formats(["float16"])] == ["model_float16.tflite"]


@pytest.mark.parametrize("spec", ["float32,int4", "tflite", "float64"])
def test_bad_formats_name_value_and_allowed(spec: str) -> None:
    with pytest.raises(FormatError) as err:
        parse_formats(spec)
    message = str(err.value)
    bad = spec.split(",")[-1]
    assert f"'{bad}'" in message
    assert "float32, float16, dynamic_int8, int8, onnx" in message
    assert "\n" not in message


def test_empty_formats() -> None:
    with pytest.raises(FormatError, match="selects no format"):
        parse_formats(" , ")


def test_balanced_sample() -> None:
    labels = np.repeat(np.arange(10), 100)
    picked = balanced_sample(labels, 95, seed=3)
    counts = np.bincount(labels[picked], minlength=10)
    assert counts.tolist() == [10] * 5 + [9] * 5
    assert np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(picked, balanced_sample(labels, 95, seed=3))
    assert not np.array_equal(picked, balanced_sample(labels, 95, seed=4))


# ---- run directory errors (no TensorFlow needed) ------------------------------------------


def test_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"does not exist.*edgeport train"):
        export_model(tmp_path / "nope", progress=False)


def test_missing_saved_model(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"missing saved_model/saved_model.pb"):
        export_model(tmp_path, progress=False)


@pytest.mark.slow
def test_missing_metrics(run_dir: Path, tmp_path: Path) -> None:
    copy = copy_run(run_dir, tmp_path / "run")
    (copy / "metrics.json").unlink()
    with pytest.raises(RunDirError, match=r"missing metrics\.json"):
        export_model(copy, progress=False)


# ---- the shared export ------------------------------------------------------------------


@pytest.mark.slow
def test_export_folder_contents(run_dir: Path) -> None:
    names = sorted(p.name for p in (run_dir / "export").iterdir())
    extra = ["labels.txt", "manifest.json", "golden.npz", "required_operators.config",
             "MODEL_CARD.md", ".edgeport"]
    assert names == sorted([*FILES, *APP_FILES, *extra])
    assert not list(run_dir.glob(".export.*"))  # the temporary folder was renamed away
    labels = (run_dir / "export" / "labels.txt").read_text().splitlines()
    assert labels == [str(i) for i in range(10)]


@pytest.mark.slow
def test_manifest_document(run_dir: Path, manifest: dict) -> None:
    assert manifest["format_version"] == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", manifest["edgeport_version"])
    assert manifest["run"] == str(run_dir.resolve())
    assert manifest["saved_model_sha256"] == saved_model_sha256(run_dir / "saved_model")
    assert set(manifest["versions"]) == {"tensorflow", "tf2onnx", "onnx", "numpy"}
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["input"] == MNIST_INPUT
    assert [a["file"] for a in manifest["artifacts"]] == FILES + APP_FILES
    assert [a["family"] for a in manifest["artifacts"]] == ["plain"] * 6 + ["app"] * 2
    for entry in manifest["artifacts"][: len(FILES)]:
        assert set(entry) == {
            "family",
            "file",
            "format",
            "precision",
            "bytes",
            "sha256",
            "inputs",
            "outputs",
            "ops",
            "gpu",
        }
        assert [t["name"] for t in entry["inputs"]] == ["image"]
        assert [t["name"] for t in entry["outputs"]] == ["probabilities", "logits"]
        assert entry["inputs"][0]["shape"] == [-1, 784]
        assert all(t["shape"] == [-1, 10] for t in entry["outputs"])


@pytest.mark.slow
def test_manifest_int8_entry(manifest: dict) -> None:
    entry = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    (image,) = entry["inputs"]
    assert image["dtype"] == "uint8"
    assert image["scale"] == pytest.approx(1 / 255, abs=1e-9)  # float32(1/255) stored
    assert image["zero_point"] == 0
    assert entry["outputs"][0]["scale"] == pytest.approx(1 / 256, abs=0)  # exactly 2**-8
    assert entry["ops"] == ["FULLY_CONNECTED", "QUANTIZE", "SOFTMAX"]
    floats = [
        a for a in manifest["artifacts"] if a["precision"] != "int8" and a["family"] == "plain"
    ]
    assert all(
        t["scale"] is None and t["zero_point"] is None
        for a in floats
        for t in a["inputs"] + a["outputs"]
    )


@pytest.mark.slow
def test_manifest_hashes_match_files(run_dir: Path, manifest: dict) -> None:
    for entry in manifest["artifacts"]:
        path = run_dir / "export" / entry["file"]
        assert entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == file_sha256(path)
    assert verify_manifest(run_dir / "export") == []


@pytest.mark.slow
def test_verify_reports_tampering(run_dir: Path, tmp_path: Path) -> None:
    export = shutil.copytree(run_dir / "export", tmp_path / "export")
    data = bytearray((export / "model_int8.tflite").read_bytes())
    data[-1] ^= 0xFF
    (export / "model_int8.tflite").write_bytes(bytes(data))
    (export / "model.onnx").unlink()
    problems = verify_manifest(export)
    assert any(p.startswith("model_int8.tflite: sha256") for p in problems)
    assert any(p.startswith("model.onnx:") and "missing" in p for p in problems)
    assert len(problems) == 2
    (export / "manifest.json").unlink()
    assert "not found" in verify_manifest(export)[0]


@pytest.mark.slow
def test_metadata_read_back_from_every_file(run_dir: Path) -> None:
    for file in FILES:
        data = (run_dir / "export" / file).read_bytes()
        doc = read_onnx_metadata(data) if file.endswith(".onnx") else read_tflite_metadata(data)
        assert doc["labels"] == [str(i) for i in range(10)]
        assert doc["input"] == MNIST_INPUT
    assert decode_metadata(b'{"a": 1}') == {"a": 1}


@pytest.mark.slow
def test_golden(run_dir: Path) -> None:
    with np.load(run_dir / "export" / "golden.npz", allow_pickle=False) as z:
        golden = dict(z)
    stems = [f.rsplit(".", 1)[0] for f in FILES]
    app = [f"{f.rsplit('.', 1)[0]}__probabilities" for f in APP_FILES[1:]]  # .ort = model
    expected = ["inputs", "labels", "probes", "app_pictures", *app,
                *(f"{s}__probabilities" for s in stems),
                *(f"{s}__probe_probabilities" for s in stems)]
    assert sorted(golden) == sorted(expected)
    assert golden["inputs"].dtype == np.float32 and golden["inputs"].shape == (32, 784)
    assert golden["labels"].dtype == np.int64
    assert sorted(np.bincount(golden["labels"], minlength=10)) == [3] * 8 + [4] * 2
    x_test, y_test = load_mnist("test")
    rows = [np.flatnonzero((x_test == g).all(axis=1))[0] for g in golden["inputs"]]
    np.testing.assert_array_equal(y_test[rows], golden["labels"])  # real test images
    for stem in stems:
        probs = golden[f"{stem}__probabilities"]
        assert probs.dtype == np.float32 and probs.shape == (32, 10)
        # dequantized uint8 probabilities sum to 1 within 10 steps of 1/256
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=10 / 256)


# ---- re-export: force, determinism ------------------------------------------------------


@pytest.mark.slow
def test_existing_export_needs_force(run_dir: Path, tmp_path: Path) -> None:
    copy = copy_run(run_dir, tmp_path / "run")
    shutil.copytree(run_dir / "export", copy / "export")
    (copy / "export" / "marker").write_text("old")
    before = {p.name: file_sha256(p) for p in (copy / "export").iterdir()}
    with pytest.raises(ExportExistsError, match="--force"):
        export_model(copy, load_split=load_mnist, progress=False)
    assert {p.name: file_sha256(p) for p in (copy / "export").iterdir()} == before

    result = export_model(copy, force=True, load_split=load_mnist, progress=False)
    assert isinstance(result, ExportResult)
    assert not (copy / "export" / "marker").exists()
    assert not list(copy.glob(".export.*"))
    # same SavedModel, second export in this process: identical model bytes
    original = json.loads((run_dir / "export" / "manifest.json").read_text())
    # model.ort excepted: ONNX Runtime's converter does not write the same bytes every run.
    assert {a.file: a.sha256 for a in result.artifacts if a.file != "model.ort"} == {
        a["file"]: a["sha256"] for a in original["artifacts"] if a["file"] != "model.ort"
    }
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert [a["file"] for a in as_dict["artifacts"]] == FILES + APP_FILES
    assert as_dict["artifacts"][3]["precision"] == "int8"


@pytest.mark.slow
def test_failed_export_leaves_old_export(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeport.export.onnx

    copy = copy_run(run_dir, tmp_path / "run")
    shutil.copytree(run_dir / "export", copy / "export")
    before = {p.name: file_sha256(p) for p in (copy / "export").iterdir()}

    def broken(*args: object, **kwargs: object) -> bytes:
        raise ExportError("ONNX conversion failed: simulated")

    monkeypatch.setattr(edgeport.export.onnx, "convert_onnx", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_model(
            copy, formats="float32,onnx", force=True, load_split=load_mnist, progress=False
        )
    assert {p.name: file_sha256(p) for p in (copy / "export").iterdir()} == before
    assert not list(copy.glob(".export.*"))  # the half-written folder was removed


@pytest.mark.slow
def test_subset_of_formats(run_dir: Path, tmp_path: Path) -> None:
    copy = copy_run(run_dir, tmp_path / "run")
    result = export_model(copy, formats="onnx,float32", load_split=load_mnist, progress=False)
    assert [a.file for a in result.artifacts] == ["model_float32.tflite", "model.onnx"]
    assert verify_manifest(copy / "export") == []
    with np.load(copy / "export" / "golden.npz", allow_pickle=False) as z:
        assert sorted(z) == [
            "inputs",
            "labels",
            "model__probabilities",
            "model__probe_probabilities",
            "model_float32__probabilities",
            "model_float32__probe_probabilities",
            "probes",
        ]


def test_saved_model_sha256(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "variables" / "v").write_bytes(b"weights")
    first = saved_model_sha256(tmp_path)
    assert first == saved_model_sha256(tmp_path)
    (tmp_path / "variables" / "v").write_bytes(b"weightz")
    assert saved_model_sha256(tmp_path) != first
    (tmp_path / "variables" / "v").write_bytes(b"weights")
    (tmp_path / "variables" / "v").rename(tmp_path / "variables" / "w")
    assert saved_model_sha256(tmp_path) != first


@pytest.mark.parametrize(("repair", "needle"), [
    ({"kept_float": "dense_1", "passed": True, "reason": "r", "size_after": 10},
     "expected a list of layer names"),
    ({"kept_float": ["dense_1"], "reason": "r", "size_after": 10}, "passed (bool)"),
    ({"kept_float": ["dense_1"], "passed": True, "reason": "r", "size_after": 9},
     "expected the file's 10 bytes"),
    ({"kept_float": [], "passed": True, "reason": "r", "size_after": 10}, ">= 1 layer"),
    ("dense_1", "expected an object"),
])
def test_a_bad_repair_record_is_a_manifest_problem(repair, needle):
    from edgeport.export.manifest import repair_problems

    good = {"kept_float": ["dense_1"], "passed": True, "reason": "r", "size_after": 10}
    assert repair_problems({"bytes": 10, "repair": good}) == []
    assert repair_problems({"bytes": 10}) == []
    problems = repair_problems({"bytes": 10, "repair": repair})
    assert len(problems) == 1 and needle in problems[0] and "--repair --force" in problems[0]
