"""Import TensorFlow once, quietly.

TensorFlow's C++ runtime prints start-up lines (oneDNN notice, "could not find
cuda drivers", cuInit errors on machines without a GPU) straight to file
descriptor 2 before Python's logging is set up; no environment variable stops
all of them. The CLI imports TensorFlow through here so a user sees only
edgeport's own output; ``--debug`` (``EDGEPORT_DEBUG=1``) keeps everything.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["import_tensorflow", "quiet_native_stderr"]


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ code writes to fd 2, keep Python's ``sys.stderr`` working.

    Python-level output (progress bars, warnings, tracebacks) is redirected to a
    duplicate of the real stderr, so the user still sees it; the TFLite
    converter's and XNNPACK's native chatter goes to /dev/null. A no-op with
    ``EDGEPORT_DEBUG=1``.
    """
    if os.environ.get("EDGEPORT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    py_stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding,
                          errors="backslashreplace")
    old = sys.stderr
    sys.stderr = py_stderr
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        py_stderr.flush()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        py_stderr.close()


def import_tensorflow():
    """Return the ``tensorflow`` module, imported with its start-up chatter silenced."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, while fd 2 is silenced
        tf.get_logger().setLevel("ERROR")
    return tf
