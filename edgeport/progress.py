"""The one progress helper: a tqdm bar in a terminal, one plain line per step elsewhere.

Usage::

    from edgeport.progress import progress_bar as tqdm   # the same calls as tqdm's
    bar = tqdm(total=8, desc="export", unit="file", file=sys.stderr, disable=not progress)
    bar.set_description("export model_int8.tflite")     # line mode: export: model_int8.tflite (4/8)
    bar.update(1)

Three modes, decided once per bar:

* ``--no-progress`` (the CLIs set ``EDGEPORT_NO_PROGRESS=1``), or ``disable=True``:
  nothing is printed;
* stderr (the bar's ``file``) is not a terminal, or ``CI`` is set: one line per step
  (a new description, or each tenth of the total for counting bars), never a ``\\r``
  frame, so CI logs and ``2> log.txt`` stay readable;
* otherwise: tqdm's bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["NO_PROGRESS_ENV", "LineProgress", "line_mode", "progress_bar"]

NO_PROGRESS_ENV = "EDGEPORT_NO_PROGRESS"
_STEPS = 10  # a counting bar prints a line at each tenth of its total
_IDLE_S = 10.0  # and, without a total, at most one line every 10 s


def line_mode(file: TextIO | None = None) -> bool:
    """True when progress must be plain lines: ``CI`` set, or ``file`` not a terminal."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return True
    stream = sys.stderr if file is None else file
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return True


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False,
                 file: TextIO | None = None, **kwargs: Any) -> Any:
    """A tqdm bar, a :class:`LineProgress`, or a silent tqdm (see the module docstring).

    Takes tqdm's arguments (``total``, ``desc``, ``unit``, ``unit_scale``, ``leave``...).
    """
    from tqdm import tqdm

    stream = sys.stderr if file is None else file
    if disable or os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0"):
        return tqdm(iterable, disable=True, file=stream, **kwargs)
    if line_mode(stream):
        return LineProgress(iterable, file=stream, **kwargs)
    return tqdm(iterable, file=stream, **kwargs)


class LineProgress:
    """The subset of tqdm edgeport uses, printing whole lines (no ``\\r``)."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", unit_scale: bool = False,
                 file: TextIO | None = None, **_: Any) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.unit_scale = unit_scale
        self.file = sys.stderr if file is None else file
        self.n = 0
        self._named = False  # set_description was called: lines name steps, not counts
        self._printed_step = 0
        self._last = time.monotonic()
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LineProgress without an iterable is not iterable"
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _print(self, text: str) -> None:
        try:
            print(text + self._postfix, file=self.file, flush=True)
        except (OSError, ValueError):  # a closed pipe must not stop the work
            pass
        self._last = time.monotonic()

    def _count(self, n: float) -> str:
        if not self.unit_scale:
            return f"{int(n)}"
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if n >= scale:
                return f"{n / scale:.1f}{prefix}"
        return f"{int(n)}"

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        """A named step: ``export model_int8.tflite`` -> ``export: model_int8.tflite (4/8)``."""
        self._named = True
        self.desc = desc
        head, _, rest = desc.partition(" ")
        text = f"{head}: {rest}" if rest else head
        if self.total:
            text += f" ({min(self.n + 1, self.total)}/{self.total})"
        self._print(text)

    def set_postfix(self, **kwargs: Any) -> None:
        self._postfix = "  " + ", ".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else ""

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._named:
            return  # the next step's description is the line
        if self.total:
            step = int(self.n * _STEPS // self.total)
            if step > self._printed_step:
                self._printed_step = step
                self._print(f"{self.desc}: {self._count(self.n)}/{self._count(self.total)} "
                            f"{self.unit} ({min(100, round(100 * self.n / self.total))}%)")
        elif time.monotonic() - self._last >= _IDLE_S:
            self._print(f"{self.desc}: {self._count(self.n)} {self.unit}")

    def write(self, text: str, file: TextIO | None = None, **_: Any) -> None:
        print(text, file=file or self.file, flush=True)

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed as steps happen."""

    def close(self) -> None:
        self._closed = True
