"""train.data: the seed's split on real MNIST, verified downloads, and clear failures."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from _idxfiles import idx_gz, write_idx_dataset

from edgeport.errors import DatasetError
from edgeport.train.data import DATASETS, ensure_files, load_dataset, to_model_input
from edgeport.train.idx import read_idx


def test_mnist_split_is_the_seeds(mnist, mnist_dir):
    assert (len(mnist.y_train), len(mnist.y_val), len(mnist.y_test)) == (55000, 5000, 10000)
    assert mnist.x_train.shape[1:] == (28, 28, 1) and mnist.x_train.dtype == np.uint8
    assert mnist.class_names == tuple("0123456789")
    # Validation is the LAST 5,000 images of the training file, in file order.
    raw = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(mnist.y_val, raw[55000:])
    np.testing.assert_array_equal(mnist.y_train, raw[:55000])


def test_model_input_layouts(mnist):
    flat = to_model_input(mnist.x_test[:5], "flat")
    nhwc = to_model_input(mnist.x_test[:5], "nhwc")
    assert flat.shape == (5, 784) and nhwc.shape == (5, 28, 28, 1)
    assert flat.dtype == np.float32 and 0.0 <= flat.min() and flat.max() <= 1.0
    np.testing.assert_array_equal(flat, nhwc.reshape(5, -1))
    with pytest.raises(ValueError, match="expected 'flat' or 'nhwc'"):
        to_model_input(mnist.x_test[:1], "nchw")


def test_digits_offline_dataset_is_mnist_like():
    ds = load_dataset("digits", seed=0, progress=False)
    assert ds.x_train.shape[1:] == (28, 28, 1)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    # Stratified: every class is in every split.
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) == set(range(10))
    # Same seed, same split; another seed, another split.
    np.testing.assert_array_equal(load_dataset("digits", seed=0).y_test, ds.y_test)
    assert not np.array_equal(load_dataset("digits", seed=1).y_test, ds.y_test)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DatasetError, match="expected one of mnist, fashion-mnist, digits"):
        load_dataset("cifar-1000")


# ---- downloads, against a local file:// mirror (no network in tests) -----------------------

@pytest.fixture
def tiny_mirror(tmp_path):
    """A mirror folder with four small, valid IDX files and a spec whose md5s match them."""
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    md5 = write_idx_dataset(mirror, rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10,
                            rng.integers(0, 256, (10, 28, 28)), np.arange(10))
    payloads = {name: (mirror / name).read_bytes() for name in md5}
    spec = dataclasses.replace(DATASETS["mnist"], md5=md5, mirrors=(mirror.as_uri() + "/",))
    return spec, mirror, payloads


def test_download_verifies_and_leaves_no_partial_files(tmp_path, tiny_mirror):
    spec, _, payloads = tiny_mirror
    cache = tmp_path / "cache"
    assert ensure_files(spec, cache, progress=False) == cache
    for name, data in payloads.items():
        assert (cache / name).read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == sorted(payloads)  # no .part left


def test_corrupt_cached_file_is_downloaded_again_once(tmp_path, tiny_mirror):
    spec, _, payloads = tiny_mirror
    cache = tmp_path / "cache"
    ensure_files(spec, cache, progress=False)
    victim = cache / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(b"garbage")
    ensure_files(spec, cache, progress=False)
    assert victim.read_bytes() == payloads[victim.name]


def test_md5_mismatch_on_mirror_fails_and_keeps_nothing(tmp_path, tiny_mirror):
    spec, mirror, _ = tiny_mirror
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.zeros(30)))  # wrong content
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: missing.*md5"):
        ensure_files(spec, cache, progress=False)
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files


def test_offline_error_names_folder_files_and_fixes(tmp_path):
    spec = dataclasses.replace(DATASETS["mnist"], mirrors=((tmp_path / "none").as_uri() + "/",))
    with pytest.raises(DatasetError) as e:
        ensure_files(spec, tmp_path / "empty", progress=False)
    msg = str(e.value)
    assert str(tmp_path / "empty") in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "data_dir=DIR" in msg and "EDGEPORT_DATA" in msg and "dataset=digits" in msg
    assert "\n" not in msg


def test_plain_http_mirror_is_refused(tmp_path):
    spec = dataclasses.replace(DATASETS["mnist"], mirrors=("http://example.invalid/",))
    with pytest.raises(DatasetError, match="refusing a http:// download"):
        ensure_files(spec, tmp_path / "c", progress=False)


def test_image_label_count_mismatch(tmp_path, tiny_mirror, monkeypatch):
    spec, mirror, _payloads = tiny_mirror
    bad = idx_gz(np.arange(29) % 10)  # 29 labels for 30 images
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(bad)
    md5 = {**spec.md5, "train-labels-idx1-ubyte.gz": hashlib.md5(bad).hexdigest()}
    spec = dataclasses.replace(spec, md5=md5)
    monkeypatch.setitem(DATASETS, "mnist", spec)
    with pytest.raises(DatasetError, match=r"has 30 images but .* has 29 labels"):
        load_dataset("mnist", data_dir=tmp_path / "c", validation_size=5, progress=False)


# ---- Fashion-MNIST: the same IDX loader, its own md5 values -------------------------------

def test_fashion_mnist_is_verified_against_its_own_md5s():
    fashion, mnist = DATASETS["fashion-mnist"], DATASETS["mnist"]
    assert fashion.files == mnist.files  # same file names and IDX layout as MNIST
    assert set(fashion.md5) == set(fashion.files.values())
    assert set(fashion.md5.values()).isdisjoint(mnist.md5.values())
    assert all(m.startswith("https://") for m in fashion.mirrors)
    assert fashion.class_names[0] == "T-shirt/top" and len(fashion.class_names) == 10


def test_mnist_files_are_refused_as_fashion_mnist(tmp_path, mnist_dir, monkeypatch):
    # MNIST's real files under the fashion-mnist name fail its md5 check: each dataset
    # is verified against its own published values, not against "some IDX file".
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in DATASETS["mnist"].files.values():
        (folder / name).symlink_to(mnist_dir / name)
    spec = dataclasses.replace(DATASETS["fashion-mnist"],
                               mirrors=((tmp_path / "offline").as_uri() + "/",))
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=folder, progress=False)
    msg = str(e.value)
    assert "md5 f68b3c2dcbeaaa9fbdd348bbdeb94873, expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d" in msg
    assert "\n" not in msg


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Fashion-MNIST-shaped IDX files (5,100 + 20 images) and a spec whose md5s match them."""
    rng = np.random.default_rng(1)
    mirror = tmp_path / "fashion-mirror"
    md5 = write_idx_dataset(mirror, rng.integers(0, 256, (5100, 28, 28)), np.arange(5100) % 10,
                            rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10)
    spec = dataclasses.replace(DATASETS["fashion-mnist"], md5=md5,
                               mirrors=(mirror.as_uri() + "/",))
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    return spec


def test_fashion_mnist_loads_like_mnist(tmp_path, tiny_fashion):
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "cache", progress=False)
    assert ds.name == "fashion-mnist" and ds.class_names == tiny_fashion.class_names
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (100, 5000, 20)  # seed's split
    assert ds.x_train.shape[1:] == (28, 28, 1) and ds.preprocess == "resize"


def test_train_cli_takes_dataset_fashion_mnist(tmp_path, tiny_fashion, monkeypatch, capsys):
    import json

    from edgeport.train.cli import main

    monkeypatch.setenv("EDGEPORT_DATA", str(tmp_path / "data"))  # downloads land here
    out = tmp_path / "run"
    code = main(["--dataset", "fashion-mnist", "--iterations", "5", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "fashion-mnist" and m["input"]["preprocess"] == "resize"
    assert (out / "labels.txt").read_text().splitlines()[9] == "Ankle boot"


def test_failed_download_leaves_no_empty_folder(tmp_path):
    # A relative --data-dir used from another folder, offline: nothing is left behind.
    spec = dataclasses.replace(DATASETS["mnist"], mirrors=((tmp_path / "none").as_uri() + "/",))
    with pytest.raises(DatasetError):
        ensure_files(spec, tmp_path / "new" / "mnist", progress=False)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("layout", "shape"), [("flat", (0, 12)), ("nhwc", (0, 2, 2, 3))])
def test_model_input_of_no_images_keeps_its_shape(layout, shape):
    """An empty split (a small folder without validation pictures) still has the right shape."""
    x = to_model_input(np.zeros((0, 2, 2, 3), np.uint8), layout)
    assert x.shape == shape and x.dtype == np.float32
