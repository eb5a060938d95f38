"""export.bench on a real exported MNIST run: the JSON schema and sane figures, not the speed.

Timings depend on the machine, so nothing here compares them with a number;
every figure must be present, positive and finite, and the rows must cover
every artifact with the runtimes that are installed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from edgeport.export.bench import (
    _CRASH_ENV,
    BenchError,
    BenchReport,
    BenchRow,
    BenchSkip,
    benchmark,
)
from edgeport.export.formats import ARTIFACT_KINDS
from edgeport.export.report import format_bench_table, to_markdown
from edgeport.mobile_demo.runtime import available_runtimes

pytestmark = pytest.mark.slow

FILES = [k.file for k in ARTIFACT_KINDS]
TIMINGS = ("import_ms", "load_ms", "first_inference_ms", "latency_p50_ms", "latency_p99_ms",
           "throughput_ips", "peak_rss_mb", "base_rss_mb")


@pytest.fixture(scope="module")
def bench(exported_run: Path, tmp_path_factory: pytest.TempPathFactory, device_python: str):
    out = tmp_path_factory.mktemp("bench")
    # Tiny counts: this checks the plumbing; `edgeport bench` defaults to 1,000 runs.
    # tflite-runtime (numpy<2) is only in the device venv: its rows are measured there.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPORT_DEVICE_PYTHON", device_python)
        report = benchmark(exported_run, runs=5, batch=16, warmup=1, repeats=2,
                           progress=False, json_path=out / "copy.json",
                           markdown_path=out / "bench.md", plot_path=out / "bench.png")
    return report, out


def test_rows_cover_every_artifact_and_the_baseline(bench):
    report, _ = bench
    assert "tflite-runtime" not in available_runtimes()  # numpy 2 here: never in the main venv
    expected = [(f, "litert") for f in FILES if f.endswith(".tflite")]
    # tflite-runtime 2.14 predates the FULLY_CONNECTED v12 of TF 2.21's dynamic-range model.
    expected += [(f, "tflite-runtime") for f in FILES
                 if f.endswith(".tflite") and f != "model_dynamic_int8.tflite"]
    expected += [("model.onnx", "onnxruntime"), ("saved_model", "tensorflow")]
    assert sorted((r.artifact, r.runtime) for r in report.rows) == sorted(expected)
    assert report.rows[-1].baseline and report.rows[-1].format == "saved_model"
    assert sum(r.baseline for r in report.rows) == 1
    assert report.skipped == (BenchSkip(
        "model_dynamic_int8.tflite", "tflite-runtime",
        "cannot load it (Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An "
        "older version of this builtin might be supported. Are you using an old TFLite binary "
        "with a newer model?)"),)


def test_without_the_device_venv_tflite_runtime_is_reported_missing(
    exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import shutil

    run = tmp_path / "run"  # a copy: bench.json of the shared run stays the fixture's
    shutil.copytree(exported_run, run)
    monkeypatch.delenv("EDGEPORT_DEVICE_PYTHON", raising=False)
    report = benchmark(run, runs=2, batch=4, warmup=0, repeats=1, progress=False,
                       runtimes=None, baseline=False)
    assert {r.runtime for r in report.rows} == {"litert", "onnxruntime"}
    assert any(s.file == "*" and s.runtime == "tflite-runtime"
               and s.reason.startswith("not installed") for s in report.skipped)


def test_every_figure_is_positive_and_finite(bench, exported_run: Path):
    report, _ = bench
    parity = json.loads((exported_run / "export" / "parity.json").read_text())
    accuracy = {r["artifact"]: r["accuracy"] for r in parity["results"]}
    for row in report.rows:
        for name in (*TIMINGS, "bytes"):
            value = getattr(row, name)
            assert math.isfinite(value) and value > 0, (row.artifact, row.runtime, name, value)
        assert row.peak_rss_mb >= row.base_rss_mb
        assert row.latency_p99_ms >= row.latency_p50_ms
        assert 0.0 < row.accuracy <= 1.0 and 0.0 < row.agreement <= 1.0
        if row.baseline:
            assert row.parity_passed is None
            assert row.agreement == pytest.approx(1.0, abs=0)  # the reference agrees with itself
        else:
            assert row.parity_passed is True
            assert row.accuracy == accuracy[row.artifact]  # taken from the parity gate
            assert row.bytes == (exported_run / "export" / row.artifact).stat().st_size


def test_json_schema_on_disk(bench, exported_run: Path):
    report, out = bench
    doc = json.loads((exported_run / "bench.json").read_text())
    assert not (exported_run / "export" / "bench.json").exists()  # verify would call it extra
    assert doc == report.to_dict()
    assert json.loads((out / "copy.json").read_text()) == doc
    assert set(doc) == {"settings", "environment", "parity_source", "rows", "skipped",
                        "recommendation"}
    assert doc["skipped"] == [s.to_dict() for s in report.skipped]
    assert doc["settings"] == {"runs": 5, "batch": 16, "warmup": 1, "repeats": 2,
                               "num_threads": None}
    fields = {f.name for f in dataclasses.fields(BenchRow)}
    for row in doc["rows"]:
        assert set(row) == fields
    assert {"python", "platform", "cpu", "cpu_count", "versions"} <= set(doc["environment"])
    rec = doc["recommendation"]
    names = {(r["artifact"], r["runtime"]) for r in doc["rows"]}
    assert (rec["smallest"]["artifact"], rec["smallest"]["runtime"]) in names
    assert (rec["fastest"]["artifact"], rec["fastest"]["runtime"]) in names
    assert rec["target"] == "litert"
    assert rec["line"].startswith("recommended for litert: smallest passing: ")


def test_markdown_plot_and_table(bench):
    report, out = bench
    text = (out / "bench.md").read_text(encoding="utf-8")
    assert text == to_markdown(report)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(report.rows)
    assert report.recommendation in text
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_bench_table(report)
    assert all(r.artifact in table for r in report.rows)
    assert table.splitlines()[-1] == report.recommendation


def test_runtime_selection_and_no_baseline(exported_run: Path):
    report = benchmark(exported_run, runs=3, batch=8, warmup=0, repeats=1, progress=False,
                       runtimes=["onnxruntime"], baseline=False, target="onnxruntime")
    assert [(r.artifact, r.runtime) for r in report.rows] == [("model.onnx", "onnxruntime")]
    assert report.smallest == report.fastest == report.rows[0]
    assert report.recommendation.startswith("recommended for onnxruntime: smallest passing: "
                                            "model.onnx")
    litert = dataclasses.replace(report, target="litert")  # nothing measured there
    assert litert.smallest is None
    assert litert.recommendation.startswith("recommended for litert: none: nothing was "
                                            "measured on litert (see skipped); fix: install it")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"runs": 0}, "runs=0; expected an integer >= 1"),
        ({"batch": -1}, "batch=-1"),
        ({"runtimes": ["tflite"]}, "runtime 'tflite' is not one the benchmark knows"),
        ({"num_threads": 0}, "num_threads=0"),
        # Upper limits (issue 18), refused before the run is even loaded.
        ({"runs": 10**12}, "runs=1000000000000; expected at most 100000 (p50/p99 settle"),
        ({"batch": 10**9}, "batch=1000000000; expected at most 10000 (the batch is cut from "
                           "the test split: MNIST's has 10000); fix: pass batch=10000 or less"),
        ({"repeats": 10**6}, "repeats=1000000; expected at most 1000"),
        ({"num_threads": 10**5}, "num_threads=100000; expected at most"),
    ],
)
def test_bad_options(exported_run: Path, kwargs: dict, needle: str):
    with pytest.raises(BenchError) as e:
        benchmark(exported_run, progress=False, **kwargs)
    assert needle in str(e.value)
    assert e.value.exit_code == 2


def _row(artifact: str, size: int, p50: float, passed: bool | None, **kw) -> BenchRow:
    figures = dict.fromkeys(TIMINGS, 1.0)
    figures["latency_p50_ms"] = p50
    return BenchRow(artifact=artifact, format="tflite", precision="float32", runtime="litert",
                    bytes=size, accuracy=0.9, agreement=1.0, parity_passed=passed,
                    **{**figures, **kw})


def test_recommendation_skips_failing_files_and_the_baseline():
    rows = (
        _row("tiny_but_failing.tflite", 100, 0.001, False),
        _row("small.tflite", 1000, 0.5, True),
        _row("fast.tflite", 5000, 0.1, True),
        _row("saved_model", 50, 0.01, None, baseline=True),
    )
    report = BenchReport(rows=rows, runs=1, batch=1, warmup=0, repeats=1, num_threads=None)
    assert report.smallest.artifact == "small.tflite"
    assert report.fastest.artifact == "fast.tflite"
    failing = BenchReport(rows=rows[:1], runs=1, batch=1, warmup=0, repeats=1, num_threads=None)
    assert failing.smallest is None
    assert failing.recommendation == ("recommended for litert: none: no file that loads there "
                                      "passes parity; fix the export before shipping one")


def test_batch_is_capped_at_the_test_split(exported_run: Path, capsys):
    # A run whose test split holds fewer images than --batch was measured on those images
    # but reported "at batch N": the batch is refused above the split, with the flag.
    from edgeport.export.bench import _check_options
    from edgeport.export.cli import main

    with pytest.raises(BenchError, match=r"^batch=600; expected at most 500 \(the batch is "
                       r"cut from the 500-image test split\); fix: pass batch=500 or less$"):
        _check_options(runs=10, batch=600, warmup=0, repeats=1, num_threads=None,
                       test_images=500)
    _check_options(runs=10, batch=500, warmup=0, repeats=1, num_threads=None, test_images=500)
    assert main(["bench", str(exported_run), "--batch", str(10**9)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("edgeport: error: --batch 1000000000; expected at most 10000 (the batch is "
                   "cut from the test split: MNIST's has 10000); fix: pass --batch 10000 or less")


def test_recommendation_for_the_browser_needs_browser_rows():
    rows = (_row("model_float32.tflite", 1000, 0.5, True),)
    report = BenchReport(rows=rows, runs=1, batch=1, warmup=0, repeats=1, num_threads=None,
                         target="browser")
    assert "parity.json has no browser rows; fix: run `edgeport parity RUN --browser`" in (
        report.recommendation)
    gated = dataclasses.replace(report, browser_passed=("model_float32.tflite",))
    assert gated.smallest == rows[0]
    assert gated.recommendation.startswith("recommended for browser: smallest passing: "
                                           "model_float32.tflite")


def _copy(run: Path, dest: Path) -> Path:
    """A whole copy (export and parity.json too): bench.json of the shared run stays theirs."""
    import shutil

    shutil.copytree(run, dest)
    return dest


def _quick(run: Path, **kwargs) -> BenchReport:
    """A benchmark with tiny counts: these tests check behaviour, not speed."""
    return benchmark(run, runs=3, batch=4, warmup=0, repeats=1, **kwargs)


def test_parity_json_is_reused_when_current_and_the_gate_reruns_when_stale(
    exported_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    run = _copy(exported_run, tmp_path / "run")
    parity = run / "export" / "parity.json"
    parity.unlink(missing_ok=True)
    _quick(run, runtimes=["onnxruntime"], baseline=False)  # stderr is not a terminal here
    err = capsys.readouterr().err
    assert f"bench: no parity.json: running the parity gate first (`edgeport parity {run}`)" in err
    assert "\nparity: model_int8.tflite (4/5)\n" in err  # the gate's progress, line by line
    assert parity.is_file()
    before = parity.stat().st_mtime_ns

    report = _quick(run, runtimes=["onnxruntime"], baseline=False)
    err = capsys.readouterr().err
    assert parity.stat().st_mtime_ns == before  # the gate did not run
    assert not [line for line in err.splitlines() if line.startswith("parity")]
    assert err.splitlines()[0] == (f"bench: reusing {parity} (made for this manifest.json; "
                                   "the gate is not re-run)")
    assert report.parity_source == err.splitlines()[0]
    assert "\r" not in err

    doc = json.loads(parity.read_text())
    doc["manifest_sha256"] = "0" * 64  # a verdict on another export
    parity.write_text(json.dumps(doc))
    _quick(run, runtimes=["onnxruntime"], baseline=False)
    err = capsys.readouterr().err
    assert "bench: parity.json: made for another manifest.json" in err
    assert "running the parity gate first" in err
    assert json.loads(parity.read_text())["manifest_sha256"] != "0" * 64


def test_a_crashing_row_is_its_error_and_the_others_finish(
    exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = _copy(exported_run, tmp_path / "run")
    monkeypatch.setenv(_CRASH_ENV, "model_float16.tflite")  # its worker calls os.abort()
    report = _quick(run, runtimes=["litert"], baseline=False, progress=False)
    rows = {r.artifact: r for r in report.rows}
    assert set(rows) == {f for f in FILES if f.endswith(".tflite")}
    crashed = rows.pop("model_float16.tflite")
    assert crashed.error.startswith("crashed (SIGABRT) in 2 runs")
    assert crashed.latency_p50_ms is None and crashed.parity_passed is True
    for row in rows.values():
        assert row.error is None and row.latency_p50_ms > 0
    assert report.smallest.artifact != "model_float16.tflite"
    table = format_bench_table(report)
    assert "error: crashed (SIGABRT) in 2 runs" in table
    assert json.loads((run / "bench.json").read_text())["rows"][1]["error"] == crashed.error


@pytest.fixture(scope="module")
def app_bench(cnn_run: Path, tmp_path_factory: pytest.TempPathFactory, device_python: str):
    """`edgeport run --model cnn` (app models, model.ort, gated) benchmarked for tflite-runtime.

    Its parity.json is current, so bench reuses it: the gate's MediaPipe rows over 10,000
    pictures are not paid twice.
    """
    run = _copy(cnn_run, tmp_path_factory.mktemp("bench-app") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPORT_DEVICE_PYTHON", device_python)
        report = _quick(run, progress=False, baseline=False, target="tflite-runtime")
    assert report.parity_source.startswith("bench: reusing ")
    return run, report


def test_app_models_are_measured_photo_in(app_bench):
    run, report = app_bench
    app = [(r.artifact, r.runtime) for r in report.rows if r.family == "app"]
    assert sorted(app) == sorted((f, rt) for f in ("model_app_float32.tflite",
                                                   "model_app_int8.tflite")
                                 for rt in ("litert", "mediapipe"))
    parity = json.loads((run / "export" / "parity.json").read_text())
    gate = {(r["artifact"], r["runtime"]): r for r in parity["results"]}
    for row in report.rows:
        if row.family != "app":
            continue
        assert row.error is None and row.parity_passed is True
        assert row.accuracy == gate[row.artifact, row.runtime]["accuracy"]
        for name in TIMINGS:
            assert math.isfinite(getattr(row, name)) and getattr(row, name) > 0
    assert ("model.ort", "onnxruntime") in {(r.artifact, r.runtime) for r in report.rows}


def test_target_tflite_runtime_never_recommends_dynamic_int8(app_bench):
    _, report = app_bench
    assert report.target == "tflite-runtime"
    assert BenchSkip("model_dynamic_int8.tflite", "tflite-runtime", report.skipped[0].reason) in (
        report.skipped)
    for pick in (report.smallest, report.fastest):
        assert pick.runtime == "tflite-runtime"
        assert pick.artifact != "model_dynamic_int8.tflite"
    line = report.recommendation
    assert line.startswith("recommended for tflite-runtime: smallest passing: ")
    assert "dynamic_int8" not in line
    table = format_bench_table(report)
    assert "skipped (file, runtime: reason):\n  model_dynamic_int8.tflite, tflite-runtime: " \
           "cannot load it" in table


def test_missing_dataset_fails_first_with_a_fix_bench_has(exported_run: Path, tmp_path: Path):
    import os
    import subprocess
    import sys

    run = _copy(exported_run, tmp_path / "run")
    (run / "export" / "parity.json").unlink(missing_ok=True)
    (run / "bench.json").unlink(missing_ok=True)  # another test's bench of the shared run
    blocked = tmp_path / "no-data"
    blocked.write_text("a file, so no download can land there either (with or without network)")
    env = {**os.environ, "EDGEPORT_DATA": str(blocked)}
    code = ("import sys; from edgeport.export.cli import main; rc = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "bench", str(run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --data-dir DIR" in lines[0], proc.stderr
    assert proc.stdout.strip() == "False"  # refused before TensorFlow or the gate
    assert not (run / "export" / "parity.json").exists()
    assert not (run / "bench.json").exists()
