"""`edgeport train` as a user runs it: output, exit codes, one-line errors, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edgeport.export.cli import main


def edgeport(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeport", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def test_help_is_instant_and_imports_no_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); "
            "from edgeport.export.cli import build_parser; "
            "build_parser(); print(time.perf_counter() - t, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1] == "False"
    assert float(out[0]) < 1.0  # the bound: --help answers in well under a second
    start = time.perf_counter()
    res = edgeport("--help")
    assert res.returncode == 0 and "train" in res.stdout and "parity" in res.stdout
    assert time.perf_counter() - start < 5  # generous: a cold interpreter on a busy CI box


@pytest.mark.slow
def test_train_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = edgeport("train", "--iterations", "100", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout and str(out) in res.stdout
    assert "0: 9.8%" in res.stderr  # the seed's first figure
    assert "true\\pred" in res.stderr  # the confusion matrix as text
    assert "Traceback" not in res.stderr and "cuda" not in res.stderr.lower()  # TF kept quiet
    m = json.loads((out / "metrics.json").read_text())
    assert m["iterations"] == 100 and m["history"][-1]["iteration"] == 100


def test_existing_out_needs_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", "--iterations", "5", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"  # untouched


def test_offline_without_data_exits_2_with_the_fix(tmp_path):
    env = {"EDGEPORT_DATA": str(tmp_path / "nodata"),
           # point the mirrors at nothing so no network is attempted
           "no_proxy": "*", "https_proxy": "http://127.0.0.1:9"}
    res = edgeport("train", "--out", str(tmp_path / "run"), env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("edgeport: error: ") and "Traceback" not in res.stderr
    assert "--dataset digits" in lines[-1] and "EDGEPORT_DATA" in lines[-1]
    assert not (tmp_path / "run").exists()  # nothing half-written
    assert not list(tmp_path.glob(".run.*"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch-size", "0"], "--batch-size 0"),
        (["--recipe", "nope"], "--recipe 'nope'"),
        (["--dataset", "/no/such/folder"], "not a known dataset nor a folder"),
        # Upper limits (issue 18): refused before any data is loaded, with the reason.
        (["--iterations", str(10**12)], "--iterations 1000000000000; expected at most 1e+09"),
        (["--epochs", "1e7"], "--epochs 10000000.0; expected 0 < epochs <= 1e+06"),
        (["--batch-size", str(10**9)], "--batch-size 1000000000; expected at most 65536"),
        (["--image-size", "0"], "--image-size 0; expected 8..256"),
    ],
)
def test_bad_options_exit_2_one_line(tmp_path, capsys, args, needle):
    code = main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and err.count("\n") == 0
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_digits_trains_offline(tmp_path):
    res = edgeport("train", "--dataset", "digits", "--iterations", "200", "--out",
                   str(tmp_path / "d"), "--quiet")
    assert res.returncode == 0, res.stderr
    acc = json.loads((tmp_path / "d" / "metrics.json").read_text())["test_accuracy"]
    assert acc > 0.8  # 8x8 digits are easy: 200 steps of the seed recipe suffice


def test_an_out_path_that_is_not_utf8_exits_2_before_training(tmp_path):
    # Issue 18: under LC_ALL=POSIX an --out with a non-UTF-8 byte trained, then exited 70
    # (TensorFlow encodes every path as UTF-8). Now: one line, exit 2, before any work.
    out = os.fsencode(tmp_path) + b"/run\xff"
    res = subprocess.run([sys.executable, "-m", "edgeport", "train", "--iterations", "5",
                          "--quiet", "--out", out], capture_output=True,
                         env={**os.environ, "LC_ALL": "POSIX"}, timeout=600)
    assert res.returncode == 2, res.stderr
    assert res.stderr.decode("utf-8", "replace").strip().splitlines() == [
        f"edgeport: error: {out!r}: the path has bytes that are not UTF-8; expected a UTF-8 "
        "path (TensorFlow reads and writes only those); fix: pass a --out of UTF-8 characters"]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_non_utf8_name_met_later_is_exit_2_not_a_bug():
    # Any other place a non-UTF-8 name reaches TensorFlow, JSON or XML: the same exit 2.
    from edgeport.errors import environment_error_message

    with pytest.raises(UnicodeEncodeError) as e:
        os.fsdecode(b"/data/photo\xff.png").encode("utf-8")
    assert environment_error_message(e.value) == (
        "b'/data/photo\\xff.png': a path or name with bytes that are not UTF-8; expected "
        "UTF-8 names; fix: rename it, or choose another path")
