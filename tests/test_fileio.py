"""edgeport.fileio: atomic writes and the one labels.txt reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.errors import LabelsFileError, ModelFileError
from edgeport.fileio import atomic_write_text, read_labels


def test_read_labels_strips_names_and_skips_blank_lines(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "labels.txt", "cat\n\n  dog \r\nT-shirt/top\n")
    assert read_labels(path) == ["cat", "dog", "T-shirt/top"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "labels file not found"), (b"\n \n", "is empty"), (b"\xff\xfe\x00", "UTF-8")],
)
def test_read_labels_errors_say_what_and_how(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "labels.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LabelsFileError, match=needle) as e:
        read_labels(path)
    assert isinstance(e.value, ModelFileError)  # the demo reports it as a bad model folder
    assert "\n" not in str(e.value)


def test_npz_headers_give_shapes_without_reading_the_data(tmp_path):
    import numpy as np

    from edgeport.errors import DatasetError
    from edgeport.fileio import check_npz_size, npz_headers, read_npz

    path = tmp_path / "a.npz"
    np.savez_compressed(path, x=np.zeros((300, 784), np.float32), y=np.arange(300))
    headers = npz_headers(path)
    assert {k: (s, str(d)) for k, (s, d) in headers.items()} == {
        "x": ((300, 784), "float32"), "y": ((300,), "int64")}
    # 940,800 + 2,400 bytes declared: 1 MB fits, 900 KB does not; nothing is loaded then.
    assert read_npz(path, max_bytes=1 << 20, error=DatasetError, fix="fix: -")["y"][-1] == 299
    with pytest.raises(DatasetError, match=r"declare 1 MB \(largest 'x' \[300, 784\] float32\); "
                       r"expected at most 1 MB; nothing was loaded; fix: -"):
        check_npz_size(path, max_bytes=900_000, error=DatasetError, fix="fix: -")
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match=r"object array .* need pickle"):
        check_npz_size(path, max_bytes=1 << 20, error=DatasetError, fix="fix: -")
