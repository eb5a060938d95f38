"""mobile_demo/demo.py and cli.py, edgeport-demo end to end: main([...]) in process, plus real
subprocesses where it matters."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import _models
import numpy as np
import pytest
from PIL import Image

from edgeport.errors import ImageError
from edgeport.mobile_demo.cli import main
from edgeport.mobile_demo.runtime import available_runtimes

REPO = Path(__file__).resolve().parents[1]
INSTALLED = available_runtimes()


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract-shaped export folder (tiny model); the real MNIST export fits as well."""
    return _models.tiny_export_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def golden_pngs(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden inputs saved as ``<label>_<i>.png``: an --eval folder with known answers."""
    root = tmp_path_factory.mktemp("golden_pngs")
    with np.load(export_dir / "golden.npz", allow_pickle=False) as z:
        inputs, labels = z["inputs"], z["labels"]
    with (export_dir / "manifest.json").open() as f:
        desc = json.load(f)["input"]
    names = (export_dir / "labels.txt").read_text().split()
    for i, (x, y) in enumerate(zip(inputs, labels, strict=True)):
        pixels = (x.reshape(desc["height"], desc["width"], desc["channels"]) * 255).round()
        img = Image.fromarray(
            pixels.astype(np.uint8).squeeze(-1)
            if desc["channels"] == 1
            else pixels.astype(np.uint8)
        )
        img.save(root / f"{names[int(y)]}_{i:03d}.png")
    return root


@pytest.fixture()
def digits(tmp_path: Path) -> list[Path]:
    paths = []
    for shape in ("seven", "zero", "one"):
        p = tmp_path / f"{shape}.png"
        _models.draw_digit((120, 90), shape=shape).save(p)
        paths.append(p)
    return paths


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeport-demo: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


# --- classify --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model_float32.tflite", "model_int8.tflite", "model.onnx"])
def test_classify_json(
    export_dir: Path, digits: list[Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = _run([export_dir / name, *digits, "--json", "--top-k", "4"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    labels = json.loads((export_dir / name).with_name("manifest.json").read_text())["labels"]
    assert doc["runtime"] in INSTALLED
    assert [p["file"] for p in doc["predictions"]] == [str(d) for d in digits]
    for p in doc["predictions"]:
        assert p["label"] in labels
        assert len(p["top_k"]) == 4
        probs = [t["probability"] for t in p["top_k"]]
        assert probs == sorted(probs, reverse=True)
        assert p["probability"] == probs[0] and p["label"] == p["top_k"][0]["label"]
        assert 0.0 <= probs[-1] <= probs[0] <= 1.0


def test_classify_text_and_folder(
    export_dir: Path, digits: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run([export_dir / "model_int8.tflite", digits[0].parent], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(digits)  # the folder expands to its three pictures
    assert all(": " in ln and "top-3:" in ln for ln in lines)


def test_labels_option_overrides(
    export_dir: Path, digits: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = len((export_dir / "labels.txt").read_text().split())
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class-{i}" for i in range(k)))
    code, out, _ = _run(
        [export_dir / "model_float32.tflite", digits[0], "--labels", names, "--json"], capsys
    )
    assert code == 0
    assert json.loads(out)["predictions"][0]["label"].startswith("class-")
    names.write_text("only\ntwo\n")
    code, _, err = _run([export_dir / "model_float32.tflite", digits[0], "--labels", names], capsys)
    _assert_one_line_error(code, err, "2 class names")


# --- eval --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model_float32.tflite", "model_int8.tflite"])
def test_eval_on_golden_pictures(
    export_dir: Path, golden_pngs: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = _run(
        [export_dir / name, "--eval", golden_pngs, "--no-preprocess", "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"accuracy", "count", "confusion_matrix", "labels", "runtime"}
    cm = np.array(doc["confusion_matrix"])
    assert doc["count"] == len(list(golden_pngs.glob("*.png"))) == cm.sum()
    assert doc["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # The PNGs hold the golden inputs exactly (k/255 pixels) and the labels are the
    # reference's answers, so only int8 near-ties may differ. Own bound, not the gate's
    # 0.99: the tiny model's random weights leave near-ties, and on 32 pictures one flip
    # is 3 points; 0.9 allows three.
    assert doc["accuracy"] >= 0.9


def test_eval_text_and_sub_folders(
    export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "7").mkdir()
    _models.draw_digit((60, 60), shape="seven").save(tmp_path / "7" / "a.png")
    _models.draw_digit((60, 60), shape="zero").save(tmp_path / "0_b.png")
    code, out, _ = _run([export_dir / "model_int8.tflite", "--eval", tmp_path], capsys)
    assert code == 0
    assert out.startswith("accuracy ")
    assert "on 2 pictures" in out and "confusion matrix" in out
    _models.draw_digit((60, 60), shape="one").save(tmp_path / "unlabelled.png")
    code, _, err = _run([export_dir / "model_int8.tflite", "--eval", tmp_path], capsys)
    _assert_one_line_error(code, err, "unlabelled.png", "cannot tell the label")
    (tmp_path / "unlabelled.png").rename(tmp_path / "dog_1.png")
    code, _, err = _run([export_dir / "model_int8.tflite", "--eval", tmp_path], capsys)
    _assert_one_line_error(code, err, "'dog'")


# --- bench and export-samples ------------------------------------------------------------------


def test_bench_json(export_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        [export_dir / "model_int8.tflite", "--bench", "--runs", "20", "--json"], capsys
    )
    assert code == 0
    r = json.loads(out)
    assert r["runs"] == 20
    assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert r["load_ms"] > 0 and r["first_inference_ms"] > 0
    code, out, _ = _run([export_dir / "model.onnx", "--bench", "--runs", "5"], capsys)
    assert code == 0 and "p50" in out and "p99" in out


def _write_idx(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())


def test_export_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], np.uint8)
    _write_idx(tmp_path / "data", images, labels)
    code, out, _ = _run(
        ["--export-samples", "3", tmp_path / "out", "--data-dir", tmp_path / "data"], capsys
    )
    assert code == 0 and "wrote 3" in out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["1_00002.png", "2_00001.png", "7_00000.png"]
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / "2_00001.png")), images[1]
    )
    # Default location: $EDGEPORT_DATA/mnist.
    _write_idx(tmp_path / "env" / "mnist", images, labels)
    monkeypatch.setenv("EDGEPORT_DATA", str(tmp_path / "env"))
    code, _, _ = _run(["--export-samples", "1", tmp_path / "out2"], capsys)
    assert code == 0 and (tmp_path / "out2" / "7_00000.png").is_file()
    code, _, err = _run(["--export-samples", "9", tmp_path / "out3"], capsys)
    _assert_one_line_error(code, err, "from 1 to 5")
    code, _, err = _run(
        ["--export-samples", "1", tmp_path / "out3", "--data-dir", tmp_path / "nowhere"], capsys
    )
    _assert_one_line_error(code, err, "not found")


# --- errors ------------------------------------------------------------------------------


def test_bad_inputs_give_one_line_and_exit_2(
    export_dir: Path, digits: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = export_dir / "model_int8.tflite"
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    fake = tmp_path / "fake.tflite"
    fake.write_text("not a model either")
    cases = [
        ([model, tmp_path / "missing.png"], "image not found"),
        ([model, text], "not a picture"),
        ([fake, digits[0]], "fake.tflite"),
        ([tmp_path / "missing.tflite", digits[0]], "model file not found"),
        ([model, "--eval", tmp_path / "no_dir"], "not a folder"),
    ]
    for args, needle in cases:
        code, out, err = _run(args, capsys)
        _assert_one_line_error(code, err, needle)
        assert out == ""


def test_a_broken_picture_in_a_batch_names_itself_and_spares_the_others(
    export_dir: Path, digits: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = _run([export_dir / "model_int8.tflite", digits[0], broken, digits[1]],
                          capsys)
    _assert_one_line_error(code, err, "broken.png")
    answered = [line.split(":")[0] for line in out.splitlines()]
    assert answered == [str(digits[0]), str(digits[1])]  # both real pictures, in order


def test_paper_with_no_digit_is_answered_none(
    export_dir: Path, digits: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Blank paper and a lighting gradient are answers (`none`), not errors; digits keep theirs."""
    from edgeport.export.frames import empty_frames

    frames, kinds = empty_frames(2, 200, seed=0)
    paths = []
    for frame, kind in zip(frames, kinds, strict=True):
        paths.append(tmp_path / f"{kind}.png")
        Image.fromarray(frame).save(paths[-1])
    code, out, err = _run([export_dir / "model_int8.tflite", *paths, digits[0], "--json"], capsys)
    assert code == 0 and err == ""
    preds = json.loads(out)["predictions"]
    assert [p["label"] for p in preds[:2]] == ["none", "none"]
    assert [p["probability"] for p in preds[:2]] == [1.0, 1.0]
    assert preds[2]["label"] != "none" and preds[2]["top_k"][0]["label"] == preds[2]["label"]


def test_usage_errors_exit_2(export_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        [],
        [export_dir / "model.onnx"],
        [export_dir / "model.onnx", "--runtime", "nope", "x.png"],
    ):
        code, _, err = _run(args, capsys)
        assert code == 2 and "usage:" in err and "Traceback" not in err
    assert main(["--help"]) == 0
    assert "edgeport-demo" in capsys.readouterr().out


def test_debug_shows_the_exception(export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        main([str(export_dir / "model_int8.tflite"), str(tmp_path / "missing.png"), "--debug"])


# --- real processes ------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("EDGEPORT_DATA", None)
    return env


def test_subprocess_run_and_clean_error(export_dir: Path, digits: list[Path]) -> None:
    """Only a real process shows what the runtimes' C++ code prints on stderr."""
    ok = subprocess.run(
        [sys.executable, "-m", "edgeport.mobile_demo", export_dir / "model_int8.tflite", digits[0]],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{digits[0]}: ")
    assert ok.stderr == ""  # LiteRT's "INFO: Created ... XNNPACK delegate" is filtered
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeport.mobile_demo",
            export_dir / "model_int8.tflite",
            digits[0].with_suffix(".txt"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    _assert_one_line_error(bad.returncode, bad.stderr, "image not found")


_PROBE = """
import json, sys
from edgeport.mobile_demo.cli import main
code = main(sys.argv[1:])
banned = {"tensorflow", "keras", "tf2onnx", "edgeport.train", "edgeport.export"}
heavy = sorted(m for m in sys.modules if m in banned or m.split(".")[0] in banned)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("name", "runtime"),
    [("model_int8.tflite", "litert"), ("model_float32.tflite", "auto"), ("model.onnx", "auto")],
)
def test_tensorflow_is_never_imported(
    export_dir: Path, digits: list[Path], name: str, runtime: str
) -> None:
    assert "litert" in INSTALLED  # the main venv installs edgeport[device]
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            export_dir / name,
            digits[0],
            "--runtime",
            runtime,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    report = json.loads(r.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}
    assert json.loads(r.stdout)["runtime"] != "tensorflow"


@pytest.mark.device
@pytest.mark.parametrize("name", [f for f in _models.ARTIFACTS if f.endswith(".tflite")])
def test_runs_in_the_device_venv(
    device_python: str, export_dir: Path, digits: list[Path], name: str
) -> None:
    r = subprocess.run(
        [device_python, "-m", "edgeport.mobile_demo", export_dir / name, *digits, "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    if name == "model_dynamic_int8.tflite":
        # tflite-runtime 2.14 (its last release) lacks the operator versions that TF 2.21's
        # dynamic-range quantizer emits (FULLY_CONNECTED v12): the demo must say so in one line.
        _assert_one_line_error(r.returncode, r.stderr, name, "older than the converter")
        return
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["runtime"] == "tflite-runtime"
    assert len(doc["predictions"]) == len(digits)


# --- bounded resources (issue 18) ---------------------------------------------------------


def _mean_tflite(path: Path, shape: tuple[int, ...]) -> Path:
    """A one-op .tflite (MEAN over H and W) built with the generated schema: no weights, so a
    file of a few hundred bytes can declare any input shape."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name: str, dims: list[int], kind: int, buffer: int):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, dims, kind, buffer
        return t

    axes = s.BufferT()
    axes.data = list(np.array([1, 2], np.int32).tobytes())
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.MEAN
    code.version = 1
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 2], [1]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.ReducerOptions, s.ReducerOptionsT()
    graph = s.SubGraphT()
    graph.tensors = [tensor("pixels", list(shape), s.TensorType.FLOAT32, 0),
                     tensor("probabilities", [1, shape[-1]], s.TensorType.FLOAT32, 0),
                     tensor("axes", [2], s.TensorType.INT32, 1)]
    graph.inputs, graph.outputs, graph.operators = [0], [1], [op]
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [s.BufferT(), axes]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(b.Output())
    return path


def _mean_onnx(path: Path, shape: tuple[int, ...]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixels"], ["probabilities"], axes=[1, 2],
                          keepdims=0)],
        "huge", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, shape[-1]])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _limited_demo(args: list[Any]) -> subprocess.CompletedProcess[str]:
    """edgeport-demo in a process that cannot map more than 2 GB: a 10 GB input would fail."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "edgeport.mobile_demo", *map(str, args)],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False,
                          preexec_fn=limit)


@pytest.mark.parametrize("make", [_mean_tflite, _mean_onnx], ids=["tflite", "onnx"])
def test_a_model_declaring_a_huge_input_is_refused_before_allocating(
    make: Any, tmp_path: Path, digits: list[Path]
) -> None:
    # Issue 18: a 1.6 KB .tflite declaring a 30000x30000x3 input made the demo allocate
    # over 5 GB. The declared shape is read first (the flatbuffer, or the ONNX session's
    # inputs before any run) and refused; the same file with a small input runs.
    suffix = ".tflite" if make is _mean_tflite else ".onnx"
    huge = make(tmp_path / f"huge{suffix}", (1, 30000, 30000, 3))
    assert huge.stat().st_size < 2000
    r = _limited_demo([huge, digits[0]])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"edgeport-demo: error: {huge}: tensor 'pixels' declares shape [1, 30000, 30000, 3], "
        "10,300 MB for one sample; expected at most 256 MB per tensor (an image classifier's "
        "input is a few MB); fix: export the model with a smaller input size")
    small = make(tmp_path / f"small{suffix}", (1, 28, 28, 3))
    r = _limited_demo([small, "--bench", "--runs", "3", "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["runs"] == 3


def test_threads_and_runs_have_upper_limits(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 18: --threads 100000 segfaulted LiteRT (exit 139) or ran ONNX Runtime with
    # 4,653 threads and 16 GB; --bench --runs 10**12 exited 70 (MemoryError).
    cores = os.cpu_count() or 1
    for name in ("model_int8.tflite", "model.onnx"):
        code, out, err = _run([export_dir / name, "--bench", "--threads", "100000"], capsys)
        _assert_one_line_error(
            code, err, f"--threads 100000; expected 1..{4 * cores} (4 per CPU core, this "
            f"machine has {cores}: more threads only contend); fix: pass --threads {cores}")
    code, out, err = _run([export_dir / "model.onnx", "--bench", "--runs", str(10**12)], capsys)
    _assert_one_line_error(code, err, "--runs 1000000000000; expected at most 100000",
                           "fix: pass --runs 1000")
    code, out, _ = _run([export_dir / "model.onnx", "--bench", "--threads", str(4 * cores),
                         "--runs", "5", "--json"], capsys)
    assert code == 0 and json.loads(out)["runs"] == 5  # the limit itself is accepted


def test_export_samples_never_overwrites_a_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 18: --export-samples DIR overwrote whatever was there under the same names.
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "data", images, np.array([3, 1, 4, 1], np.uint8))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["--export-samples", "3", out, "--data-dir", tmp_path / "data"]
    code, _, _ = _run(args, capsys)
    assert code == 0 and (out / "notes.txt").read_text() == "keep me"  # other files: untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, out_text, _ = _run(args, capsys)  # a rerun: the same bytes, nothing to do
    assert code == 0 and "wrote 3" in out_text
    (out / "1_00001.png").write_bytes(b"my own picture")
    code, _, err = _run(["--export-samples", "4", out, "--data-dir", tmp_path / "data"], capsys)
    _assert_one_line_error(code, err, f"{out / '1_00001.png'}: already exists with other "
                           "contents (1 of the 4 names are taken)", "fix: choose a new or "
                           "empty folder")
    assert (out / "1_00001.png").read_bytes() == b"my own picture"
    assert not (out / "1_00003.png").exists()  # nothing written when one name is taken
    assert {p.name for p in out.iterdir()} == set(before)


def test_a_closed_pipe_ends_quietly(export_dir: Path, digits: list[Path], tmp_path: Path) -> None:
    """`edgeport-demo MODEL PICTURES | head -1` through a real shell pipe: no internal error."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(800):  # ~100 KB of answers: more than a pipe holds once head has gone
        os.link(digits[i % 3], folder / f"{i:04d}.png")
    err = tmp_path / "stderr.txt"
    cmd = (f"'{sys.executable}' -m edgeport.mobile_demo '{export_dir / 'model_int8.tflite'}' "
           f"'{folder}' 2>'{err}' | head -1; echo \"exit=${{PIPESTATUS[0]}}\"")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=_env(),
                          timeout=300, check=False)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{folder}/0000.png: "), proc.stdout
    assert lines[1] == "exit=141"  # 128 + SIGPIPE, as Unix tools end when the reader leaves
    assert err.read_text() == ""  # no traceback, no "internal error ... a bug in edgeport"


def test_a_folder_as_model_lists_the_models_inside(
    export_dir: Path, digits: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run([export_dir, digits[0]], capsys)
    models = sorted(p.name for p in export_dir.iterdir()
                    if p.suffix in (".tflite", ".onnx", ".ort"))
    _assert_one_line_error(code, err, f"{export_dir}: is a folder; expected a model file",
                           f"it holds {', '.join(models)}",
                           f"fix: edgeport-demo {export_dir / 'model_int8.tflite'} IMAGE")
    assert out == ""
    code, _, err = _run([digits[0].parent, digits[0]], capsys)
    _assert_one_line_error(code, err, "is a folder with no .tflite or .onnx model")
