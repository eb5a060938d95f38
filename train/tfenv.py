"""Import TensorFlow once, quietly.

TensorFlow's C++ runtime prints start-up lines (oneDNN notice, "could not find
cuda drivers", cuInit errors on machines without a GPU) straight to file
descriptor 2 before Python's logging is set up; no environment variable stops
all of them. The CLI imports TensorFlow through here so a user sees only
edgeport's own output; ``--debug`` (``EDGEPORT_DEBUG=1``) keeps everything.
The silencing itself is :func:`edgeport.quiet.quiet_native_stderr`, shared with the
device runtime.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from edgeport.errors import MissingExtraError
from edgeport.quiet import quiet_native_stderr

__all__ = ["import_tensorflow", "quiet_native_stderr"]


def import_tensorflow():
    """Return the ``tensorflow`` module, imported with its start-up chatter silenced.

    Raises:
        MissingExtraError: TensorFlow is not installed (a device-side install,
            ``pip install edgeport``); the message names the extra to install.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingExtraError(
            "TensorFlow is not installed (this is the device-side install: edgeport-demo and "
            "edgeport verify); training, export, parity and bench need it: "
            "pip install 'edgeport[tensorflow]'"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, while fd 2 is silenced
        tf.get_logger().setLevel("ERROR")
    return tf
