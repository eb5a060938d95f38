"""Write IDX files (the MNIST layout) for tests: small datasets made on the spot."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """An uncompressed uint8 IDX file: magic (0x0800 | ndim by default), dims, data."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else (0x0800 | arr.ndim)
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def idx_gz(arr: np.ndarray) -> bytes:
    """The same, gzip-compressed with a fixed mtime (byte-stable, so its md5 is too)."""
    return gzip.compress(idx_bytes(arr), mtime=0)


def write_idx_dataset(folder: Path, x_train, y_train, x_test, y_test) -> dict[str, str]:
    """The four gzip IDX files in ``folder``; returns ``{file name: md5}`` for a spec."""
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name, arr in zip(NAMES, (x_train, y_train, x_test, y_test), strict=True):
        data = idx_gz(arr)
        (folder / name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return md5
