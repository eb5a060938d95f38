"""One way to keep native libraries' start-up chatter off the terminal.

TensorFlow, the TFLite converter and LiteRT print from C++ straight to file
descriptor 2 ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", oneDNN
notices, absl ``I0000 00:00:...`` lines), with no switch that stops all of them.
That would break the CLIs' promise of one line per error.

Usage::

    from edgeport.quiet import quiet_native_stderr
    with quiet_native_stderr():               # drop everything native code prints
        import tensorflow as tf
    with quiet_native_stderr(pass_on=True):   # drop known chatter, show the rest afterwards
        interpreter.allocate_tensors()

Python's own ``sys.stderr`` (progress bars, warnings) keeps reaching the terminal.
``EDGEPORT_DEBUG=1`` (``--debug``) turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Generator

__all__ = ["CHATTER", "quiet_native_stderr"]

CHATTER = re.compile(r"INFO: |[IWE]\d{4} \d\d:\d\d|WARNING: All log messages before absl")
"""Lines that are start-up chatter: LiteRT's ``INFO: ...`` and absl-style ``I0000 00:00:...``."""


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # pytest's capture, io.StringIO, ...
        return False


@contextlib.contextmanager
def quiet_native_stderr(*, pass_on: bool = False) -> Generator[None, None, None]:
    """Capture what native code writes to file descriptor 2 during the block.

    Args:
        pass_on: after the block succeeds, print the captured lines that are not
            known chatter (:data:`CHATTER`); on failure they are dropped, since the
            exception carries the library's message. ``False`` drops everything.
    """
    if os.environ.get("EDGEPORT_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to filter
        yield
        return
    # Python writes bypass the capture: they go to a duplicate of the real stderr.
    old = sys.stderr
    py_stderr = None
    if _writes_to_fd2(old):
        py_stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old.encoding,
                              errors="backslashreplace")
        sys.stderr = py_stderr
    ok = False
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield
            ok = True
        finally:
            if py_stderr is not None:
                py_stderr.flush()
                sys.stderr = old
                py_stderr.close()
            os.dup2(saved, 2)
            os.close(saved)
            if ok and pass_on:
                tmp.seek(0)
                lines = tmp.read().decode("utf-8", "replace").splitlines()
                keep = [ln for ln in lines if ln.strip() and not CHATTER.match(ln)]
                if keep:
                    print("\n".join(keep), file=sys.stderr)
