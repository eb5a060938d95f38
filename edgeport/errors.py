"""The error family shared by every edgeport package.

Every message says what was received, what was expected, and how to fix it,
in one line. The CLIs print ``str(error)`` and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import re


class EdgeportError(Exception):
    """Base class: a user-facing error with a one-line, actionable message."""

    exit_code = 2


class ModelFileError(EdgeportError, ValueError):
    """A model file is missing, empty, truncated or not a model."""


class LabelsFileError(ModelFileError):
    """A labels file (``labels.txt``) is missing, unreadable or empty."""


class ImageError(EdgeportError, ValueError):
    """An image is missing, unreadable, too large, or holds no ink."""


class RuntimeNotFoundError(EdgeportError, RuntimeError):
    """No runtime that can execute the model is installed."""


class InputShapeError(EdgeportError, ValueError):
    """The data does not fit the model's input."""


class MissingExtraError(EdgeportError, ImportError):
    """A feature needs an optional dependency group (``edgeport[tensorflow]``) not installed."""


class DatasetError(EdgeportError, ValueError):
    """A dataset file or folder is missing, corrupt, or does not match its checksum."""


# Library messages name parameters (``data_dir``, ``batch_size=0``); the CLIs speak in the
# flags that set them. One table for both commands, whose flags share these names.
_FLAGS = (
    ("out_dir", "--out"),
    ("force=True", "--force"),
    ("data_dir=", "--data-dir "),
    ("data_dir", "--data-dir"),
    ("labels_file", "--labels"),
    ("num_threads=", "--threads "),
    *((f"{name}=", f"--{name.replace('_', '-')} ") for name in (
        "model", "recipe", "dataset", "optimizer", "schedule", "strategy", "batch_size",
        "learning_rate", "iterations", "epochs", "dropout", "channels", "image_size", "split",
        "runtime",
    )),
)
_FLAG_RE = re.compile(r"(?<![\w./-])(" + "|".join(
    re.escape(p) + ("" if p.endswith("=") else r"(?!\w)")
    for p, _ in sorted(_FLAGS, key=lambda f: -len(f[0]))
) + ")")


def in_flags(message: str) -> str:
    """A library message as the CLI says it: ``batch_size=0`` becomes ``--batch-size 0``."""
    table = dict(_FLAGS)
    return _FLAG_RE.sub(lambda m: table[m.group(1)], message)


def run_cli(prog: str, func, *, debug: bool = False) -> int:
    """Call ``func()`` as a CLI body: its int result is the exit code.

    An :class:`EdgeportError` becomes one line ``PROG: error: MESSAGE`` on stderr
    (parameter names said as flags, :func:`in_flags`) and its exit code (2); Ctrl-C
    becomes exit 130. ``debug`` re-raises instead,
    so the traceback shows.
    """
    import sys

    try:
        code = func()
        return 0 if code is None else int(code)
    except EdgeportError as e:
        if debug:
            raise
        print(f"{prog}: error: {in_flags(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
