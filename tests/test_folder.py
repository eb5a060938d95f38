"""train.folder: your own images, one sub-folder per class (generated here with Pillow).

The generated folder mixes sizes, modes (L, RGB, RGBA, P) and formats (PNG,
JPEG, BMP, GIF), and holds the files a real folder collects: an empty file, a
text file, a truncated PNG, and PNG headers that announce decompression bombs.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from edgeport.errors import DatasetError
from edgeport.train.data import load_dataset
from edgeport.train.folder import load_folder_dataset, train_batches

CLASSES = ("circle", "square", "triangle")
PER_CLASS = 60
FORMATS = (("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"), ("GIF", ".gif"))
MODES = ("L", "RGB", "RGBA", "P")


def _shape(kind: str, size: int, mode: str, rng: np.random.Generator) -> Image.Image:
    """A dark shape on white paper (transparent paper for RGBA)."""
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    m = size * rng.uniform(0.1, 0.25)
    ink = tuple(int(v) for v in rng.integers(0, 120, 3))
    if kind == "circle":
        d.ellipse([m, m, size - m, size - m], fill=ink)
    elif kind == "square":
        d.rectangle([m, m, size - m, size - m], fill=ink)
    else:
        d.polygon([(size / 2, m), (size - m, size - m), (m, size - m)], fill=ink)
    if mode == "RGBA":
        px = np.array(im.convert("RGBA"))
        px[..., 3] = np.where(px[..., :3].min(-1) == 255, 0, 255)  # paper fully transparent
        return Image.fromarray(px, "RGBA")
    return im.convert(mode)


def _png_header(width: int, height: int) -> bytes:
    """A small, valid PNG whose header announces ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def make_shapes(root: Path, per_class: int = PER_CLASS, *, bad: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = MODES[i % 4]
            fmt, ext = FORMATS[(i // 4 + i) % 4]
            if (fmt == "JPEG" and mode in ("RGBA", "P")) or (fmt == "BMP" and mode == "RGBA"):
                mode = "RGB"  # formats that cannot hold the mode
            _shape(kind, int(rng.integers(16, 90)), mode, rng).save(root / kind / f"{i:03d}{ext}",
                                                                     fmt)
    if bad:
        (root / "circle" / "empty.png").write_bytes(b"")
        (root / "square" / "notes.jpg").write_text("not a picture")
        (root / "triangle" / "bomb.png").write_bytes(_png_header(10_000, 10_000))  # > MAX
        (root / "triangle" / "huge-bomb.png").write_bytes(_png_header(30_000, 30_000))  # > 2x
        good = (root / "circle" / "000.png").read_bytes()
        (root / "circle" / "truncated.png").write_bytes(good[: len(good) // 2])
        (root / "circle" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored
        (root / "README.txt").write_text("shapes")  # outside the class folders
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def shapes_ds(shapes):
    return load_folder_dataset(shapes, seed=0, progress=False, verbose=False)


def _skipped(ds) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in ds.split["skipped"]}


def test_mixed_formats_and_modes_load(shapes_ds):
    ds = shapes_ds
    assert ds.class_names == CLASSES  # sorted folder names
    assert ds.preprocess == "resize"
    assert ds.x_train.shape[1:] == (28, 28, 1) and ds.x_train.dtype == np.uint8
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert n == 3 * PER_CLASS  # every good file, whatever its format or mode
    # Dark shapes on white paper (RGBA paper composited on white): the corners are white.
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert (x[:, 0, 0, 0] > 240).all()


def test_bad_files_are_skipped_with_their_reason(shapes_ds):
    why = _skipped(shapes_ds)
    assert why["circle/empty.png"] == "empty file (0 bytes)"
    assert why["square/notes.jpg"] == "not an image Pillow can read"
    assert "decompression bomb" in why["triangle/bomb.png"]
    assert "MAX_IMAGE_PIXELS" in why["triangle/bomb.png"]
    assert "decompression bomb" in why["triangle/huge-bomb.png"]  # Pillow's own refusal
    assert "cannot decode" in why["circle/truncated.png"]
    assert why["README.txt"] == "outside the class folders"
    assert not any(".DS_Store" in f for f in why)  # hidden files are not candidates
    assert len(why) == 6


def test_summary_goes_to_stderr(shapes, capsys):
    load_folder_dataset(shapes, seed=0, progress=False)
    err = capsys.readouterr().err
    assert f"{len(CLASSES)} classes, {3 * PER_CLASS} images" in err
    for c in CLASSES:
        assert c in err
    assert "skipped 6 files:" in err and "triangle/bomb.png: decompression bomb" in err
    assert "imbalanced" not in err


def test_heavy_imbalance_is_warned(tmp_path, capsys):
    root = tmp_path / "imb"
    make_shapes(root, per_class=4, bad=False)
    for i in range(4, 16):
        _shape("circle", 30, "L", np.random.default_rng(i)).save(root / "circle" / f"{i}.png")
    load_folder_dataset(root, seed=0, progress=False)
    err = capsys.readouterr().err
    assert "warning: classes are imbalanced ('circle' has 16 images" in err and "4.0x" in err


def test_split_is_seeded_stratified_and_recorded(shapes, shapes_ds):
    ds = shapes_ds
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) == {0, 1, 2}  # every class in every split
    s = ds.split
    assert s["fractions"] == [0.8, 0.1, 0.1] and s["seed"] == 0 and "stratified" in s["rule"]
    assert s["counts"]["square"] == {"train": 48, "validation": 6, "test": 6}
    assert (s["train"], s["validation"], s["test"]) == (len(ds.y_train), len(ds.y_val),
                                                        len(ds.y_test))
    json.dumps(s)  # recorded verbatim in metrics.json
    again = load_folder_dataset(shapes, seed=0, progress=False, verbose=False)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.y_train, ds.y_train)
    other = load_folder_dataset(shapes, seed=1, progress=False, verbose=False)
    assert not np.array_equal(other.x_test, ds.x_test)
    custom = load_folder_dataset(shapes, seed=0, split=(0.6, 0.2, 0.2), progress=False,
                                 verbose=False)
    assert custom.split["counts"]["square"] == {"train": 36, "validation": 12, "test": 12}


def test_pixels_are_the_devices(shapes, shapes_ds):
    # The trainer reads pictures with the device's own resize pipeline, so an exported
    # model sees on the phone exactly what it was trained on (up to uint8 rounding).
    from edgeport.mobile_demo.preprocess import load_image, preprocess_resize

    rgb = load_folder_dataset(shapes, seed=0, image_size=32, channels=3, progress=False,
                              verbose=False)
    assert rgb.x_train.shape[1:] == (32, 32, 3)
    names = sorted(p.name for p in (shapes / "circle").iterdir()
                   if p.name[0].isdigit())
    # Which files ended up in the test split is the loader's business; compare by content.
    for name in names[:8]:
        ref = preprocess_resize(load_image(shapes / "circle" / name), height=32, width=32,
                                channels=3)
        ref_u8 = np.rint(ref * 255).astype(np.uint8)
        pool = np.concatenate([rgb.x_train, rgb.x_val, rgb.x_test])
        assert (np.abs(pool.astype(int) - ref_u8).max(axis=(1, 2, 3)) == 0).any(), name


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ({"a.png": "img"}, "no class sub-folders"),
        ({"cat/a.png": "img", "cat/b.png": "img"}, "only one class sub-folder ('cat')"),
        ({"cat/a.png": "img", "dog/a.txt": "text", "dog/b.png": "empty"},
         "dog: class folder with no usable images (2 files skipped"),
        ({"cat/": None, "dog/": None}, "no usable images in any of the 2 class folders"),
    ],
)
def test_unusable_folders_fail_in_one_line(tmp_path, layout, needle):
    root = tmp_path / "d"
    root.mkdir()
    for rel, kind in layout.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "img":
            _shape("circle", 20, "L", np.random.default_rng(0)).save(path)
        elif kind == "text":
            path.write_text("hello")
        else:
            path.write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        load_folder_dataset(root, seed=0, progress=False, verbose=False)
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg and "expected" in msg and "Fix" in msg


def test_load_dataset_takes_a_folder_path(shapes):
    ds = load_dataset(str(shapes), seed=0, image_size=20, progress=False, verbose=False)
    assert ds.image_shape == (20, 20, 1) and ds.name == "shapes"


def test_stream_reads_the_same_training_split(shapes, shapes_ds):
    import tensorflow as tf

    ds = load_folder_dataset(shapes, seed=0, stream=True, progress=False, verbose=False)
    assert ds.x_train.shape == (0, 28, 28, 1)  # nothing decoded up front
    np.testing.assert_array_equal(ds.x_test, shapes_ds.x_test)  # in memory, as before
    np.testing.assert_array_equal(ds.x_val, shapes_ds.x_val)
    n = len(ds.y_train)
    # One epoch of the stream (one batch of everything) holds every training image once.
    batches = train_batches(ds, batch_size=n, seed=0, cache_dir=None)
    xb, yb = next(iter(batches))
    assert isinstance(xb, tf.Tensor) and xb.shape[0] <= n
    got = sorted(zip(yb.numpy().tolist(), (x.tobytes() for x in xb.numpy()), strict=True))
    ref = sorted(zip(shapes_ds.y_train.tolist(), (x.tobytes() for x in shapes_ds.x_train),
                     strict=True))
    if len(got) < len(ref):  # the truncated PNG was drawn into the training split
        assert "circle/truncated.png" in _skipped(ds)
    assert got == ref


@pytest.mark.slow
def test_train_cli_on_a_folder_end_to_end(shapes, tmp_path):
    import tensorflow as tf

    from edgeport.train.models import ModelSpec, build_model

    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "edgeport", "train", "--dataset", str(shapes), "--model", "cnn",
         "--epochs", "10", "--batch-size", "16", "--patience", "10", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert res.returncode == 0, res.stderr
    assert "skipped 6 files:" in res.stderr and "circle/empty.png" in res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["input"] == {"name": "image", "layout": "nhwc", "height": 28, "width": 28,
                          "channels": 1, "dtype": "float32", "range": [0.0, 1.0],
                          "normalization": "pixel / 255", "preprocess": "resize"}
    assert (out / "labels.txt").read_text().splitlines() == list(CLASSES)
    assert m["split"]["counts"]["square"]["test"] == 6 and len(m["split"]["skipped"]) == 6
    assert m["dataset"] == "shapes" and m["config"]["dataset"] == str(shapes)
    # Three drawn shapes, 18 test images: 90 steps on 144 images learn them (one miss is 5.6 %).
    assert m["test_accuracy"] >= 0.85
    # The best weights, as a tf.train.Checkpoint, restore into a fresh model.
    model = build_model(ModelSpec(kind="cnn", height=28, width=28, channels=1, num_classes=3),
                        seed=123)
    tf.train.Checkpoint(model=model).read(str(out / "checkpoint" / "best")).assert_consumed()
    from edgeport.train.run_dir import load_split

    x, _ = load_split(out, "test")
    probs = tf.nn.softmax(model(tf.constant(x))).numpy()
    with np.load(out / "reference.npz", allow_pickle=False) as z:
        # Same weights, same graph ops: float32 agreement to rounding.
        np.testing.assert_allclose(probs, z["probabilities"], atol=1e-5)


@pytest.fixture(scope="module")
def folder_run(shapes, tmp_path_factory) -> Path:
    """`edgeport run --dataset DIR --model cnn` on the generated shapes."""
    out = tmp_path_factory.mktemp("folder") / "run"
    res = subprocess.run(
        [sys.executable, "-m", "edgeport", "run", "--dataset", str(shapes), "--model", "cnn",
         "--epochs", "10", "--batch-size", "16", "--patience", "10", "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    return out


@pytest.mark.slow
def test_run_export_parity_and_demo_eval_agree_on_a_folder(shapes, folder_run, tmp_path):
    """`edgeport run --dataset DIR --model cnn`, then `edgeport-demo --eval` on its test split.

    The demo decodes each test picture with the same `preprocess_resize` the trainer
    used, so every artifact must score exactly the accuracy the parity gate measured.
    """
    out = folder_run
    parity = json.loads((out / "export" / "parity.json").read_text())
    # five files, model.ort, and the app models (resize path) through LiteRT and MediaPipe
    assert parity["passed"] and len(parity["results"]) == 10, parity
    test_files = json.loads((out / "metrics.json").read_text())["split"]["test_files"]
    assert len(test_files) == 18
    evaldir = tmp_path / "eval"  # DIR/<class>/<file>: the label is the sub-folder name
    for rel in test_files:
        (evaldir / rel).parent.mkdir(parents=True, exist_ok=True)
        (evaldir / rel).symlink_to(shapes / rel)
    for r in parity["results"]:
        if r["format"] != "tflite" or r["artifact"].startswith("model_app_"):
            continue  # app rows score rendered pictures, not these files
        demo = subprocess.run(
            [sys.executable, "-m", "edgeport.mobile_demo", str(out / "export" / r["artifact"]),
             "--eval", str(evaldir), "--json"],
            capture_output=True, text=True, timeout=300,
        )
        assert demo.returncode == 0, demo.stderr
        ev = json.loads(demo.stdout)
        assert ev["count"] == 18
        # Same pixels, same model file, same runtime: identical accuracy, no tolerance.
        assert ev["accuracy"] == pytest.approx(r["accuracy"], abs=1e-9), r["artifact"]


@pytest.mark.slow
def test_app_models_on_photos_agree_with_edgeport_demo(folder_run):
    """MediaPipe with the folder run's app models (resize path) vs edgeport-demo, on 300
    new photos of the shapes: 40-300 px, RGB, blurred, with sensor noise (issue 10's bar)."""
    from _apps import photo_agreement

    rng = np.random.default_rng(1)
    kinds = rng.integers(0, len(CLASSES), 300)
    photos = []
    for k in kinds:
        im = _shape(CLASSES[k], int(rng.integers(40, 300)), "RGB", rng)
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5))))
        noisy = np.asarray(im, np.float32) + rng.normal(0, 4, size=(im.height, im.width, 3))
        photos.append(np.clip(noisy, 0, 255).astype(np.uint8))
    rows = photo_agreement(folder_run / "export", photos, kinds)
    assert len(rows) == 2 and all(r.passed for r in rows), rows


@pytest.mark.slow
def test_streamed_run_exports_from_a_calibration_sample(shapes, tmp_path):
    """A --stream run never loads its training split whole: export decodes a sample."""
    from edgeport.train.run_dir import load_split

    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "edgeport", "run", "--dataset", str(shapes), "--model", "softmax",
         "--stream", "--iterations", "60", "--calibration-samples", "30", "--out", str(out),
         "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert json.loads((out / "metrics.json").read_text())["config"]["stream"] is True
    assert json.loads((out / "export" / "parity.json").read_text())["passed"]
    x, y = load_split(out, "train", sample=30, sample_seed=0)
    assert x.shape == (30, 784) and np.bincount(y).tolist() == [10, 10, 10]  # balanced
    x_all, _ = load_split(out, "train")  # without a sample: every training file, decoded
    assert len(x_all) > 30


# --- A handful of pictures per class ---------------------------------------------------------


@pytest.mark.parametrize(("per_class", "split", "needle"), [
    (4, (0.8, 0.1, 0.1), "fix: add pictures (at least 6 in a class at this split), or a larger "
                         "test fraction, e.g. --split 0.6,0.2,0.2"),
    (2, (0.8, 0.1, 0.1), "fix: add pictures (at least 6 in a class at this split)"),
    (6, (0.9, 0.1, 0.0), "fix: a test fraction > 0"),
])
def test_a_split_without_test_pictures_fails_in_one_line(per_class, split, needle, tmp_path):
    """Too few pictures for the test share to round to one: a clear error, not a crash later."""
    root = make_shapes(tmp_path / "few", per_class=per_class, bad=False)
    with pytest.raises(DatasetError, match="leaves the test split empty") as e:
        load_folder_dataset(root, seed=0, split=split, progress=False, verbose=False)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_a_tiny_folder_runs_exports_gates_and_benches(tmp_path, capfd):
    """3 classes x 6 pictures (one test picture per class): `edgeport run` (train, plots,
    export, golden vectors, parity) and `edgeport bench` complete and write every file."""
    from edgeport.export.bench import benchmark
    from edgeport.export.cli import main

    root = make_shapes(tmp_path / "tiny", per_class=6, bad=False)
    run = tmp_path / "run"
    code = main(["run", "--dataset", str(root), "--model", "cnn", "--epochs", "3",
                 "--batch-size", "4", "--out", str(run), "--quiet"])
    out, err = capfd.readouterr()
    assert code == 0, err + out
    m = json.loads((run / "metrics.json").read_text())
    assert {c: n["test"] for c, n in m["split"]["counts"].items()} == dict.fromkeys(CLASSES, 1)
    for name in ("samples", "weights", "confusion_matrix", "accuracy"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000, name
    with np.load(run / "reference.npz") as z:
        assert z["probabilities"].shape == (3, 3)
    export = run / "export"
    with np.load(export / "golden.npz") as z:  # fewer test pictures than golden samples
        assert z["inputs"].shape[0] == 3 and z["labels"].tolist() == [0, 1, 2]
    parity = json.loads((export / "parity.json").read_text())
    assert parity["passed"] and len(parity["results"]) == 10, parity
    assert "parity PASS" in out

    # The ONNX Runtime rows only: each row is a fresh process, and the TFLite files and the
    # SavedModel baseline add half a minute without exercising anything else of a tiny set.
    # The default batch (256) fits the 3-image test split: all of it.
    report = benchmark(run, runs=5, warmup=2, repeats=2, runtimes=["onnxruntime"],
                       baseline=False, json_path=tmp_path / "bench.json", progress=False)
    rows = {r.artifact: r for r in report.rows}
    assert report.batch == 3
    assert set(rows) == {"model.onnx", "model.ort"}, rows
    assert all(r.accuracy is not None and 0 <= r.accuracy <= 1 for r in rows.values())
    assert json.loads((tmp_path / "bench.json").read_text())["rows"]
