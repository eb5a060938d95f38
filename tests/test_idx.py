"""The strict IDX parser: good files round-trip, every kind of bad input raises DatasetError."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from _idxfiles import idx_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeport.errors import DatasetError
from edgeport.train.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx


def test_images_round_trip(tmp_path):
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(imgs)))
    out = read_idx(path, expect_magic=IMAGES_MAGIC)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)


def test_labels_round_trip_uncompressed(tmp_path):
    labels = np.array([7, 2, 1, 0], dtype=np.uint8)
    path = tmp_path / "y-idx1-ubyte"
    path.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(path, expect_magic=LABELS_MAGIC), labels)


def test_real_mnist_headers(mnist_dir):
    x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", expect_magic=IMAGES_MAGIC)
    y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", expect_magic=LABELS_MAGIC)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert y[:4].tolist() == [7, 2, 1, 0]  # the first test digits, as every tutorial shows


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (struct.pack(">I", 0x12345678) + b"\x00" * 8, "not a uint8 IDX header"),
        (struct.pack(">I", 0x00000D01) + struct.pack(">I", 1) + b"\x00" * 4, "not a uint8"),
        (struct.pack(">II", 2049, 5) + b"\x01\x02", "truncated"),
        (struct.pack(">II", 2049, 2) + b"\x01\x02\x03", "trailing bytes"),
        (struct.pack(">I", 2051) + b"\x00\x00", "truncated header"),
        (struct.pack(">IIII", 2051, 0xFFFFFFFF, 0xFFFFFFFF, 28), "more than any IDX file"),
    ],
)
def test_bad_bytes_raise_dataset_error(data, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(data, name="bad.idx")


def test_wrong_magic_names_file_and_expected(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 2, 2), np.uint8)))  # an images file, 3 dims
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: magic number 2051.*2049"):
        read_idx(path, expect_magic=LABELS_MAGIC)


def test_corrupt_gzip_names_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 3, 3))))[:-9])  # cut the trailer
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: not a valid gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_dataset_error(data):
    try:
        arr = parse_idx(data)
    except DatasetError:
        return
    # Whatever parses must be self-consistent: header dims times one byte each.
    assert arr.dtype == np.uint8 and arr.size == len(data) - 4 - 4 * arr.ndim


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_gzip_payloads_only_raise_dataset_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("h") / "f.gz"
    path.write_bytes(data)
    try:
        read_idx(path)
    except DatasetError:
        pass
