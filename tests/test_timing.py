"""mobile_demo.timing: the one timing loop of edgeport bench, edgeport-demo --bench, benchmarks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeport.mobile_demo.timing import latency_ms, time_calls


def test_warmup_calls_are_not_timed_and_every_run_is() -> None:
    calls: list[int] = []
    ns = time_calls(lambda: calls.append(1), runs=5, warmup=3)
    assert len(calls) == 8
    assert ns.shape == (5,) and ns.dtype == np.int64 and (ns >= 0).all()


def test_durations_measure_the_call() -> None:
    ns = time_calls(lambda: time.sleep(0.002), runs=3)
    # sleep() never returns early; 2 ms is far above the clock's resolution.
    assert (ns >= 2_000_000).all()
    (p50,) = latency_ms(ns, 50)
    assert p50 >= 2.0


def test_latency_ms_is_percentiles_in_milliseconds() -> None:
    ns = np.array([1_000_000, 2_000_000, 3_000_000], dtype=np.int64)
    assert latency_ms(ns, 0, 50, 100) == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(("runs", "warmup"), [(0, 0), (1, -1)])
def test_bad_counts_name_the_parameter(runs: int, warmup: int) -> None:
    with pytest.raises(ValueError, match=r"runs=.*warmup=.*expected runs >= 1"):
        time_calls(lambda: None, runs=runs, warmup=warmup)
