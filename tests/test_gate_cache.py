"""export/gate_cache.py and its use by the app rows (export/app_checks.py): hit, miss,
corruption, a stale entry, the cache turned off or unwritable."""

from __future__ import annotations

import numpy as np
import pytest

from edgeport.export import app_checks
from edgeport.export.gate_cache import (
    CACHE_ENV,
    cache_dir,
    cached_arrays,
    content_key,
    entry_path,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


class Counter:
    def __init__(self, value: np.ndarray) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"a": self.value.copy(), "flag": self.value > 2}


def test_miss_writes_then_hit_reads_without_computing(cache) -> None:
    compute = Counter(np.arange(6, dtype=np.float32).reshape(2, 3))
    key = content_key("t", compute.value, {"k": 1})
    first = cached_arrays("t", key, compute)
    second = cached_arrays("t", key, compute)
    assert compute.calls == 1
    assert entry_path("t", key).is_file() and entry_path("t", key).parent == cache
    for got in (first, second):
        assert set(got) == {"a", "flag"}
        np.testing.assert_array_equal(got["a"], compute.value)
        assert got["a"].dtype == np.float32 and got["flag"].dtype == bool


def test_key_covers_content_and_parameters() -> None:
    a = np.zeros((2, 2), np.uint8)
    b = a.copy()
    b[1, 1] = 1
    assert content_key("t", a) == content_key("t", a.copy())
    assert content_key("t", a) != content_key("t", b)
    assert content_key("t", a) != content_key("t", a.astype(np.int16))
    assert content_key("t", a, {"n": 1}) != content_key("t", a, {"n": 2})
    assert content_key("t", a) != content_key("u", a)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other_key"])
def test_a_damaged_or_foreign_entry_is_recomputed_and_replaced(cache, damage) -> None:
    compute = Counter(np.arange(1000, dtype=np.float64))
    key = content_key("t", compute.value)
    cached_arrays("t", key, compute)
    path = entry_path("t", key)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # a bit inside the array data: the file still loads
        i = data.index(np.float64(500).tobytes())
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])
    elif damage == "garbage":
        path.write_bytes(b"not an npz")
    else:  # a valid entry of another key under this key's name
        other = Counter(np.arange(5, dtype=np.float64))
        other_key = content_key("t", other.value)
        cached_arrays("t", other_key, other)
        path.write_bytes(entry_path("t", other_key).read_bytes())
    got = cached_arrays("t", key, compute)
    assert compute.calls == 2
    np.testing.assert_array_equal(got["a"], compute.value)
    assert path.read_bytes() == data  # replaced by a good entry, byte for byte


def test_a_failed_spot_check_recomputes(cache) -> None:
    compute = Counter(np.arange(4.0))
    key = content_key("t", compute.value)
    cached_arrays("t", key, compute)
    cached_arrays("t", key, compute, check=lambda arrays: True)
    assert compute.calls == 1
    cached_arrays("t", key, compute, check=lambda arrays: False)
    assert compute.calls == 2


def test_off_computes_every_time_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() is None
    compute = Counter(np.arange(3.0))
    key = content_key("t", compute.value)
    cached_arrays("t", key, compute)
    cached_arrays("t", key, compute)
    assert compute.calls == 2
    assert not any(tmp_path.rglob("*.npz"))


def test_default_folder_is_beside_the_datasets(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "edgeport" / "gate-cache"


def test_an_unwritable_cache_is_one_line_and_the_work_still_done(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    compute = Counter(np.arange(3.0))
    got = cached_arrays("t", content_key("t", compute.value), compute)
    np.testing.assert_array_equal(got["a"], compute.value)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the gate cache" in err[0] and CACHE_ENV in err[0]


@pytest.fixture(scope="module")
def pictures(mnist):
    """20 test digits rendered as the gate renders them, then 4 empty frames."""
    from edgeport.export.app import render_pictures
    from edgeport.export.frames import empty_frames

    x = mnist.x_test[:20].reshape(-1, 28, 28, 1)
    digits = render_pictures(x, _INPUT)
    return np.concatenate([digits, empty_frames(4, digits.shape[1], seed=3)[0]])


_INPUT = {"layout": "nhwc", "height": 28, "width": 28, "channels": 1, "preprocess": "mnist"}


def test_the_oracle_inputs_from_the_cache_are_the_computed_ones(cache, pictures,
                                                                monkeypatch) -> None:
    x, found = app_checks.oracle_inputs(pictures, _INPUT)
    assert found[:20].sum() >= 18 and not found[20:].any()  # digits found, frames not
    calls = []
    real = app_checks.oracle_inputs
    monkeypatch.setattr(app_checks, "oracle_inputs",
                        lambda p, i: calls.append(len(p)) or real(p, i))
    for _ in range(2):  # a miss, then a hit
        x2, found2 = app_checks.cached_oracle_inputs(pictures, _INPUT)
        np.testing.assert_array_equal(x2, x)
        np.testing.assert_array_equal(found2, found)
    assert calls == [len(pictures), app_checks.SPOT_CHECKS]  # the hit re-did 8 at random


def test_a_stale_oracle_entry_fails_the_spot_check(cache, pictures) -> None:
    from edgeport.export import gate_cache

    x, found = app_checks.cached_oracle_inputs(pictures, _INPUT)
    [path] = cache.glob("oracle-inputs-*.npz")
    key = path.name[len("oracle-inputs-"):-len(".npz")]
    # Valid digest and key, wrong values: what an old pipeline would have stored.
    gate_cache._write(path, key, {"x": x + 0.25, "found": found})
    x2, _ = app_checks.cached_oracle_inputs(pictures, _INPUT)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(gate_cache._read(path, key)["x"], x)  # replaced


def test_empty_frames_from_the_cache(cache) -> None:
    from edgeport.export.frames import empty_frames

    expected = empty_frames(12, 112, seed=1)[0]
    for _ in range(2):
        np.testing.assert_array_equal(app_checks._empty_frames(_INPUT, 12), expected)
    assert len(list(cache.glob("empty-frames-*.npz"))) == 1
    assert app_checks._empty_frames({**_INPUT, "preprocess": "resize"}, 12).shape[0] == 0
