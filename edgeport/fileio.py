"""Atomic file writes, and the one reader of ``labels.txt``.

Everything edgeport writes goes through here: the data goes to a temporary
name in the same folder, is flushed to disk, then renamed into place
(``os.replace`` is atomic on POSIX), so an interrupted process never leaves a
truncated file under a name that looks complete.

``labels.txt`` (one class name a line) is read by the trainer's run directory,
the exporter and the device runtime alike: :func:`read_labels` is that reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

from edgeport.errors import EdgeportError, LabelsFileError

__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_input_file",
    "read_labels",
]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The file gets ordinary permissions (0666 less the umask), not mkstemp's 0600:
    exported models are meant to be shipped and read by others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str], *, overwrite: bool = False
) -> Generator[Path, None, None]:
    """Build a folder under a temporary name and move it to ``path`` when the block succeeds.

    The caller writes into the yielded folder. On success an existing ``path``
    (allowed only with ``overwrite=True``) is swapped out and deleted; on any
    exception the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the final folder is an ordinary one
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read class names from a labels file: one a line, blanks around a name and blank lines
    dropped.

    Args:
        path: the file (``labels.txt``).

    Returns:
        The names in file order, at least one.

    Raises:
        LabelsFileError: the file is missing, unreadable, not UTF-8 or holds no name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelsFileError(f"{path}: labels file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabelsFileError(
            f"{path}: cannot read the labels file ({reason}); expected UTF-8 text, "
            "one class name a line"
        ) from None
    labels = [s.strip() for s in text.splitlines() if s.strip()]
    if not labels:
        raise LabelsFileError(f"{path}: the labels file is empty; expected one class name a line")
    return labels


def check_input_file(
    path: Path, error: type[EdgeportError], *, what: str, expected: str, if_empty: str
) -> None:
    """Refuse a missing path, a folder, or an empty file before reading it, in one line.

    Args:
        path: the file to read.
        error: the error class to raise (``ModelFileError``, ``ImageError``, ...).
        what: what the file is, for "not found" (``"model file"``).
        expected: what it should be, for a folder (``"a .tflite or .onnx model file"``).
        if_empty: the fix for an empty file.
    """
    if not path.exists():
        raise error(f"{path}: {what} not found; check the path")
    if not path.is_file():
        raise error(f"{path}: is not a file; expected {expected}")
    if path.stat().st_size == 0:
        raise error(f"{path}: empty file (0 bytes); {if_empty}")
