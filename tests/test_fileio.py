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
