"""A content-addressed cache for the parity gate's slow, model-independent inputs.

Usage::

    from edgeport.export.gate_cache import cached_arrays, content_key
    key = content_key("oracle-prep", x_test, {"input": run.input}, sources=[preprocess_file])
    arrays = cached_arrays("oracle-prep", key, lambda: {"x": x, "found": found})

The app rows of ``edgeport parity`` feed every app model 11,000 pictures (the 10,000
test digits rendered as photos and 1,000 generated empty frames) and compare it with
the numpy oracle's preprocessing of the same pictures. The frames and the oracle's
preprocessing (about 12 s of a 2-core machine's time) depend only on the test images,
the input description and the code that makes them, not on the trained model: they are
kept here, keyed by the SHA-256 of all of that, so the next ``parity``, ``run``,
``bench`` (when it must re-run the gate) or ``--browser`` on the same data reads them
back. A new run of the same dataset hits the same entries.

Where: ``$EDGEPORT_CACHE`` if set, else ``~/.cache/edgeport/gate-cache`` (beside the
datasets edgeport downloads). ``EDGEPORT_CACHE=off`` turns the cache off. Not under
``RUN/export``: that folder holds exactly what its manifest lists
(:func:`export.integrity.folder_problems`), and the entries are shared between runs.
Clearing it is ``rm -rf ~/.cache/edgeport/gate-cache``; edgeport itself never deletes
a file there, it only replaces its own entries (``<name>-<key>.npz``).

Trust: an entry is written atomically (:func:`edgeport.fileio.atomic_write_bytes`) and
holds the SHA-256 of its own arrays and its key; a truncated, corrupt, foreign or
mismatched entry is recomputed and replaced, never used. The key covers the source
code of the modules that compute the entry (a change of the pipeline is a new key), and
the caller re-computes a few random items of every hit and compares them exactly
(:func:`spot_check`), so a stale entry cannot pass as current.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_ENV",
    "CACHE_FORMAT",
    "cache_dir",
    "cached_arrays",
    "content_key",
    "entry_path",
    "source_sha256",
]

CACHE_ENV = "EDGEPORT_CACHE"
CACHE_FORMAT = 1  # the entry layout; part of every key
_OFF = ("off", "0", "no", "false", "none")
_DIGEST = "__sha256__"  # the SHA-256 of the entry's arrays (names, dtypes, shapes, bytes)
_KEY = "__key__"


def cache_dir() -> Path | None:
    """The cache folder (``$EDGEPORT_CACHE``, else ``~/.cache/edgeport/gate-cache``);
    ``None`` when ``EDGEPORT_CACHE`` is ``off``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "edgeport" / "gate-cache"


def source_sha256(modules: Iterable[Any]) -> str:
    """SHA-256 of the source files of ``modules`` (module objects or file paths)."""
    h = hashlib.sha256()
    for m in modules:
        path = Path(m if isinstance(m, (str, os.PathLike)) else m.__file__)
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def content_key(name: str, *parts: Any) -> str:
    """SHA-256 over ``name``, the format, package versions and ``parts`` (arrays by their
    dtype, shape and bytes; anything else as sorted JSON)."""
    import PIL

    h = hashlib.sha256()
    head = {"name": name, "format": CACHE_FORMAT, "numpy": np.__version__,
            "pillow": PIL.__version__}
    h.update(json.dumps(head, sort_keys=True).encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"array {a.dtype.str} {list(a.shape)}".encode())
            h.update(a.data)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {a.dtype.str} {list(a.shape)}\n".encode())
        h.update(a.data)
    return h.hexdigest()


def entry_path(name: str, key: str, folder: Path | None = None) -> Path | None:
    """Where the entry ``name``/``key`` lives (``None``: the cache is off)."""
    folder = cache_dir() if folder is None else folder
    return None if folder is None else folder / f"{name}-{key}.npz"


def _read(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or ``None`` when it is missing, unreadable or not this key's."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception:  # OSError, ValueError, zipfile.BadZipFile, EOFError...: not usable
        return None
    digest = arrays.pop(_DIGEST, None)
    stored_key = arrays.pop(_KEY, None)
    if digest is None or stored_key is None or str(stored_key) != key:
        return None
    return arrays if str(digest) == _digest(arrays) else None


def _write(path: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    from edgeport.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_DIGEST: np.array(_digest(arrays)), _KEY: np.array(key)})
    atomic_write_bytes(path, buf.getvalue())


def cached_arrays(
    name: str,
    key: str,
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    check: Callable[[Mapping[str, np.ndarray]], bool] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of entry ``name``/``key``: read back when valid, else ``compute()``\\ d and
    stored.

    Args:
        name: the kind of entry (a file name prefix: letters, digits, ``-``).
        key: :func:`content_key` of everything the arrays depend on.
        compute: makes the arrays (a ``{name: ndarray}`` mapping) on a miss.
        check: called on a hit; ``False`` (a spot check found a difference) recomputes
            and replaces the entry.

    An entry that cannot be written (a read-only home, a full disk) is only computed,
    with one line on stderr saying why.
    """
    path = entry_path(name, key)
    if path is not None and path.is_file():
        arrays = _read(path, key)
        if arrays is not None and (check is None or check(arrays)):
            return arrays
    result = {k: np.asarray(v) for k, v in compute().items()}
    if path is not None:
        try:
            _write(path, key, result)
        except OSError as e:
            print(f"edgeport: cannot write the gate cache {path}: {e.strerror or e}; "
                  f"computed without it (fix: set {CACHE_ENV} to a writable folder, or "
                  f"{CACHE_ENV}=off)", file=sys.stderr)
    return result
