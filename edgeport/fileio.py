"""Atomic file writes, the one reader of ``labels.txt`` and of bounded ``.npz`` files, and
edgeport's folder marker.

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
    "MARKER_NAME",
    "UnsafeReplaceError",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_input_file",
    "check_npz_size",
    "check_replaceable",
    "check_utf8_path",
    "has_marker",
    "npz_headers",
    "read_labels",
    "read_npz",
    "remove_stale_temps",
]

MARKER_NAME = ".edgeport"
"""The file that marks a folder edgeport wrote (a run or an export): only such a folder
is ever replaced by ``--force``. It holds ``{"kind": "run" | "export"}``."""


class UnsafeReplaceError(EdgeportError, FileExistsError):
    """``--force`` was asked to replace a folder edgeport did not write (or must not touch)."""


def has_marker(folder: str | os.PathLike[str], kind: str) -> bool:
    """Whether ``folder`` holds edgeport's marker file for ``kind`` (``run`` or ``export``)."""
    marker = Path(folder) / MARKER_NAME
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_replaceable(
    path: str | os.PathLike[str],
    *,
    kind: str,
    protect: tuple[str | os.PathLike[str] | None, ...] = (),
    flag: str = "--out",
) -> None:
    """Refuse to replace ``path`` unless it is a folder edgeport wrote as ``kind``.

    Never the current directory or one of its parents, never a folder that is, or
    holds, one of ``protect`` (the dataset, the input), never a file, never a
    folder without the marker. Nothing happens when ``path`` does not exist.

    Raises:
        UnsafeReplaceError: with what was found and the fix.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    real = p.resolve()
    fix = f"fix: choose another {flag}, or delete the folder yourself if you mean it"
    if p.is_symlink() or not p.is_dir():
        raise UnsafeReplaceError(
            f"{flag} {p} is {'a link' if p.is_symlink() else 'a file'}; expected an edgeport "
            f"{kind} folder to replace; {fix}")
    if _inside(Path.cwd().resolve(), real):
        raise UnsafeReplaceError(
            f"{flag} {p} is the current folder or one of its parents; --force replaces only "
            f"an edgeport {kind} folder; {fix}")
    for other in protect:
        if other is None:
            continue
        o = Path(other).resolve()
        if _inside(o, real):
            raise UnsafeReplaceError(
                f"{flag} {p} is or holds the input {o}; --force would delete it; {fix}")
    if not has_marker(real, kind):
        raise UnsafeReplaceError(
            f"{flag} {p} exists and is not an edgeport {kind} (no {MARKER_NAME} marker file); "
            f"--force replaces only folders edgeport wrote; {fix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temps(parent: str | os.PathLike[str], name: str) -> list[Path]:
    """Delete ``.NAME.PID.*.tmp`` / ``.old`` leftovers of processes that no longer run.

    A killed process (SIGKILL, power loss) cannot clean up after itself; the next
    edgeport process that writes ``NAME`` does. Returns what was removed.
    """
    removed = []
    prefix = f".{name}."
    try:
        candidates = [c for c in Path(parent).iterdir() if c.name.startswith(prefix)
                      and c.name.endswith((".tmp", ".old"))]
    except OSError:
        return removed
    for c in candidates:
        pid = c.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)) or c.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if c.is_dir():
                shutil.rmtree(c)
            else:
                c.unlink()
            removed.append(c)
    return removed


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
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
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
    path: str | os.PathLike[str], *, overwrite: bool = False, marker: str | None = None
) -> Generator[Path, None, None]:
    """Build a folder under a temporary name and move it to ``path`` when the block succeeds.

    The caller writes into the yielded folder. On success an existing ``path``
    (allowed only with ``overwrite=True``) is swapped out and deleted; on any
    exception (Ctrl-C and SIGTERM included) the temporary folder is removed and
    ``path`` is untouched. Leftovers of killed processes are removed first.

    With ``marker`` (``"run"`` or ``"export"``) the folder gets edgeport's marker
    file, and an existing ``path`` is replaced only if it carries the same marker.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the final folder is an ordinary one
    try:
        if marker is not None:
            (tmp / MARKER_NAME).write_text(json.dumps({"kind": marker}) + "\n", encoding="utf-8")
        yield tmp
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(path)
            if marker is not None:
                check_replaceable(path, kind=marker, flag=str(path.name))
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".old",
                                        dir=path.parent))
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


def check_utf8_path(path: str | os.PathLike[str], error: type[EdgeportError], *,
                    flag: str) -> None:
    """Refuse a path whose bytes are not UTF-8, before any work (TensorFlow's file functions
    encode every path as UTF-8 and fail on the others, whatever the locale).

    Args:
        path: the path as given (a non-UTF-8 byte arrives as a surrogate escape).
        error: the error class raised.
        flag: the option that gave it, for the fix (``--out``).
    """
    text = os.fspath(path)
    raw = text if isinstance(text, bytes) else os.fsencode(text)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{raw!r}: the path has bytes that are not UTF-8; expected a UTF-8 path "
                    f"(TensorFlow reads and writes only those); fix: pass a {flag} of UTF-8 "
                    "characters") from None


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


_NPZ_MAX_MEMBERS = 1000  # golden.npz holds a dozen arrays, reference.npz two


def npz_headers(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Each array's shape and dtype in an ``.npz``, read from the ``.npy`` headers only.

    Nothing of the data is read or inflated, so a file whose arrays claim more than
    memory holds costs nothing to inspect (a zip member's header is its first bytes).

    Raises:
        OSError: the file cannot be opened.
        ValueError: not a zip of ``.npy`` arrays (also ``zipfile.BadZipFile``), too many
            members, or an object array (those need pickle).
    """
    import zipfile

    import numpy as np

    fmt = np.lib.format
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > _NPZ_MAX_MEMBERS:
            raise ValueError(f"{len(infos)} members; expected at most {_NPZ_MAX_MEMBERS}")
        for info in infos:
            name = info.filename.removesuffix(".npy")
            with zf.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f"{info.filename}: .npy format {version}; expected 1.0 "
                                     "or 2.0")
            if dtype.hasobject:
                raise ValueError(f"{info.filename}: object array ({dtype}); expected plain "
                                 "numbers (object arrays need pickle)")
            out[name] = (tuple(int(d) for d in shape), dtype)
    return out


def check_npz_size(
    path: str | os.PathLike[str], *, max_bytes: int, error: type[EdgeportError], fix: str
) -> None:
    """Refuse an ``.npz`` whose arrays declare more than ``max_bytes``, from the headers only.

    Args:
        path: the ``.npz`` file.
        max_bytes: the most all arrays together may take in memory.
        error: the error class raised (``VerifyError``, ``RunDirError``, ...).
        fix: the fix named in its message.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        error: unreadable, not plain arrays, or over ``max_bytes``.
    """
    import math
    import zipfile

    try:
        headers = npz_headers(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable_npz(path, e, error, fix) from None
    sizes = {k: math.prod(shape) * dtype.itemsize for k, (shape, dtype) in headers.items()}
    total = sum(sizes.values())
    if total > max_bytes:
        big = max(sizes, key=lambda k: sizes[k])
        raise error(
            f"{path}: its arrays declare {total / 2**20:,.0f} MB (largest {big!r} "
            f"{list(headers[big][0])} {headers[big][1]}); expected at most "
            f"{max_bytes / 2**20:,.0f} MB; nothing was loaded; {fix}")


def read_npz(
    path: str | os.PathLike[str], *, max_bytes: int, error: type[EdgeportError], fix: str
) -> dict[str, Any]:
    """Load every array of an ``.npz`` after :func:`check_npz_size` (no pickle).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        error: unreadable, not plain arrays, or over ``max_bytes`` (before any is loaded).
    """
    import zipfile

    import numpy as np

    check_npz_size(path, max_bytes=max_bytes, error=error, fix=fix)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable_npz(path, e, error, fix) from None


def _unreadable_npz(path: str | os.PathLike[str], e: Exception, error: type[EdgeportError],
                    fix: str) -> EdgeportError:
    reason = " ".join(str(e).split())[:200] or type(e).__name__
    return error(f"{path}: unreadable without pickle as plain arrays ({reason}); expected "
                 f"an .npz written by edgeport; {fix}")
