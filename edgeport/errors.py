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


class LimitError(EdgeportError, ValueError):
    """An option or a file asks for more than a stated limit (threads, runs, memory)."""


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
        "runtime", "seed", "eval_every", "patience", "runs", "batch",
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


class InternalError(EdgeportError, RuntimeError):
    """Something edgeport did not expect went wrong: a bug, exit code 70 (``EX_SOFTWARE``)."""

    exit_code = 70


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C so every temporary file is removed on the way."""


EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: neither "a check failed" (1) nor "bad input" (2)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# Errors the environment (not edgeport) causes: full disk, read-only or missing folders,
# permissions, a file where a folder is expected. They get the one-line exit 2.
_ENV_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded",
               "EROFS": "the file system is read-only", "EACCES": "permission denied",
               "EPERM": "operation not permitted", "EFBIG": "the file is too large",
               "ENOTDIR": "a file is where a folder is expected",
               "EISDIR": "a folder is where a file is expected", "ENOENT": "no such file",
               "EEXIST": "it already exists (another edgeport process?)",
               "ENOTEMPTY": "the folder is not empty", "ENAMETOOLONG": "the name is too long",
               "EMFILE": "too many open files", "ELOOP": "too many levels of links"}
# TensorFlow wraps file-system failures in its own errors (no OSError): the same exit 2.
_TF_ENV_ERRORS = {"PermissionDeniedError", "NotFoundError", "AlreadyExistsError",
                  "ResourceExhaustedError", "FailedPreconditionError"}


def environment_error_message(e: BaseException) -> str | None:
    """One line for an error the environment caused (full disk, read-only folder...), else None.

    The line names the path, the cause and the fix.
    """
    import errno as errno_mod

    if isinstance(e, UnicodeEncodeError) and "surrogates" in e.reason:
        # A name of bytes that are not UTF-8 (os.fsdecode's surrogate escapes): TensorFlow's
        # file functions, JSON and XML reports take only UTF-8 text.
        raw = e.object.encode("utf-8", "surrogateescape")[:200] if isinstance(e.object, str) \
            else b""
        return (f"{raw!r}: a path or name with bytes that are not UTF-8; expected UTF-8 "
                "names; fix: rename it, or choose another path")
    if isinstance(e, OSError) and e.errno is not None:
        name = errno_mod.errorcode.get(e.errno, "")
        if name not in _ENV_ERRNOS:
            return None
        where = e.filename if e.filename is not None else "writing a file"
        if name in ("ENOSPC", "EDQUOT", "EFBIG"):
            fix = "free some space or choose another folder"
        elif name in ("EROFS", "EACCES", "EPERM"):
            fix = "choose a folder you can write to"
        else:
            fix = "check the path"
        return f"{where}: {_ENV_ERRNOS[name]} ({e.strerror}); fix: {fix}"
    if type(e).__name__ in _TF_ENV_ERRORS and type(e).__module__.startswith("tensorflow"):
        text = " ".join(str(getattr(e, "message", e)).split())[:300]
        if type(e).__name__ == "ResourceExhaustedError" and "space" not in text.lower():
            return None  # out of memory, not out of disk: keep it an internal error
        return f"{text}; fix: check the folder exists, is writable and has free space"
    return None


_received: list[int] = []  # exit codes of the signals seen: a caught one still counts


def _install_signal_handlers():
    """SIGTERM raises :class:`Terminated`, SIGINT ``KeyboardInterrupt``; returns the restorer."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        _received.append(EXIT_SIGTERM)
        raise Terminated()

    def on_int(signum, frame):
        _received.append(EXIT_SIGINT)
        raise KeyboardInterrupt()

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)

    def restore():
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    return restore


def run_cli(prog: str, func, *, debug: bool = False) -> int:
    """Call ``func()`` as a CLI body: its int result is the exit code.

    - :class:`EdgeportError` (parameter names said as flags, :func:`in_flags`) and
      environment errors (full disk, read-only folder,
      permission denied, a lost race for a folder): one line ``PROG: error: MESSAGE``
      on stderr, exit 2.
    - any other exception: one line ``PROG: internal error: ...``, exit 70.
    - Ctrl-C: exit 130; SIGTERM: exit 143. Both unwind through every ``finally``, so
      no temporary folder is left; neither is ever turned into a success.

    ``debug`` re-raises instead, so the traceback shows.
    """
    import sys

    restore = _install_signal_handlers()
    _received.clear()
    try:
        code = func()
        code = 0 if code is None else int(code)
        if _received and code == 0:  # a library caught the interrupt: it still stops us
            print(f"{prog}: interrupted; the result may be incomplete", file=sys.stderr)
            return _received[0]
        return code
    except EdgeportError as e:
        if debug:
            raise
        label = "internal error" if e.exit_code == EXIT_INTERNAL else "error"
        print(f"{prog}: {label}: {in_flags(_one_line(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        if debug:
            raise
        print(f"{prog}: terminated (SIGTERM); nothing half-written was left behind",
              file=sys.stderr)
        return EXIT_SIGTERM
    except Exception as e:
        if debug:
            raise
        env = environment_error_message(e)
        if env is not None:
            print(f"{prog}: error: {env}", file=sys.stderr)
            return 2
        print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)[:500]} "
              "(a bug in edgeport; rerun with --debug for the traceback and report it)",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        restore()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
