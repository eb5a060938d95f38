"""The one timing loop behind every latency figure: ``edgeport bench``, ``edgeport-demo
--bench`` and the scripts in ``benchmarks/``.

Usage::

    from edgeport.mobile_demo.timing import latency_ms, time_calls
    ns = time_calls(lambda: model.predict(x), runs=200, warmup=10)
    p50, p99 = latency_ms(ns, 50, 99)

Each call is timed on its own with ``time.perf_counter_ns`` (a monotonic clock
with nanosecond resolution), after ``warmup`` untimed calls that let the runtime
allocate and plan. Pure Python and numpy, so it runs on the device side too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["latency_ms", "time_calls"]


def time_calls(fn: Callable[[], object], *, runs: int, warmup: int = 0) -> np.ndarray:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times, each one timed.

    Args:
        fn: what to time; anything it needs is prepared before (outside the timing).
        runs: timed calls, at least 1.
        warmup: untimed calls before them.

    Returns:
        The ``runs`` call durations in nanoseconds (int64), in call order.

    Raises:
        ValueError: ``runs < 1`` or ``warmup < 0``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs={runs}, warmup={warmup}; expected runs >= 1 and warmup >= 0")
    clock = time.perf_counter_ns
    for _ in range(warmup):
        fn()
    out = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def latency_ms(ns: np.ndarray, *percentiles: float) -> tuple[float, ...]:
    """Percentiles of nanosecond durations, in milliseconds (``latency_ms(ns, 50, 99)``)."""
    return tuple(float(v) / 1e6 for v in np.percentile(ns, percentiles))
