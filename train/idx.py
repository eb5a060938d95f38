"""A strict reader for IDX files (the MNIST / Fashion-MNIST format), gzip or raw.

Pure numpy, so the device side can read samples without TensorFlow. Any
malformed input raises :class:`DatasetError` naming the file; nothing else
escapes.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgeport.errors import DatasetError

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "parse_idx", "read_idx"]

# IDX magic = 0x00 0x00 <type code> <number of dims>; type 0x08 is unsigned byte.
LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension
IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
_MAX_ELEMENTS = 1 << 31  # refuse headers that claim more than 2 G elements


def parse_idx(data: bytes, *, name: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Parse the bytes of an uncompressed uint8 IDX file into an array.

    Args:
        data: the file's bytes, already decompressed.
        name: the file name used in error messages.
        expect_magic: ``LABELS_MAGIC`` or ``IMAGES_MAGIC`` to insist on one kind.

    Returns:
        A read-only ``uint8`` array with the shape the header declares.

    Raises:
        DatasetError: wrong magic, truncated or oversized payload, bad header.
    """
    fix = "delete it so edgeport downloads a fresh copy, or point data_dir at good files"
    if len(data) < 4:
        raise DatasetError(f"{name}: {len(data)} bytes is too short for an IDX header; {fix}")
    (magic,) = struct.unpack(">I", data[:4])
    zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expect_magic is not None and magic != expect_magic:
        raise DatasetError(
            f"{name}: magic number {magic} (0x{magic:08x}), expected {expect_magic}; {fix}"
        )
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DatasetError(
            f"{name}: magic number 0x{magic:08x} is not a uint8 IDX header "
            f"(expected 0x000008NN with 1-4 dimensions); {fix}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{name}: truncated header ({len(data)} of {header} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for d in dims:
        count *= d
    if count > _MAX_ELEMENTS:
        raise DatasetError(f"{name}: header claims {count} elements, more than any IDX file; {fix}")
    payload = len(data) - header
    if payload != count:
        what = "truncated" if payload < count else "has trailing bytes"
        raise DatasetError(
            f"{name}: {what}: header {list(dims)} needs {count} bytes of data, "
            f"found {payload}; {fix}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return arr


def read_idx(path: str | os.PathLike[str], *, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file from disk; ``.gz`` files are decompressed first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check data_dir or EDGEPORT_DATA") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(
                f"{path}: not a valid gzip file ({e}); delete it so edgeport downloads a fresh copy"
            ) from None
    return parse_idx(raw, name=str(path), expect_magic=expect_magic)
