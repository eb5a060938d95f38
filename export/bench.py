"""Benchmark every exported file: size, accuracy, load time, latency, throughput, memory.

Usage::

    from edgeport.export.bench import benchmark
    report = benchmark("runs/mnist", runs=1000, batch=256)   # writes runs/mnist/bench.json
    print(report.recommendation)

One row per artifact and runtime (LiteRT; tflite-runtime where installed;
ONNX Runtime for ``model.onnx``), one per app model (``"family": "app"``) and
app runtime (LiteRT; MediaPipe's ``ImageClassifier`` when installed), plus the
TensorFlow SavedModel as the baseline row. Anything left out is listed in
``skipped`` (file, runtime, reason). Each row is measured in its own fresh
Python process, so its load time is cold and its peak RSS (``VmHWM``) is that runtime's alone,
not the sum of everything the benchmark has loaded. Each process:

1. imports the runtime (``import_ms``) and loads the file (``load_ms``,
   :func:`mobile_demo.runtime.load_model`, the code the device demo uses);
2. times the first call on one image (``first_inference_ms``);
3. warms up with ``warmup`` batch-1 calls, then times ``runs`` batch-1 calls
   (:func:`mobile_demo.timing.time_calls`, the loop ``edgeport-demo --bench`` uses
   too) for the p50 and p99 latency;
4. warms up at ``batch`` images, then times ``repeats`` calls and takes the
   median for the throughput in images per second.

Times go through :meth:`mobile_demo.runtime.Model.predict`, so they include
what an app pays around the interpreter: the reshape, the uint8 quantization
of the pixels for ``model_int8.tflite`` and the dequantization of its outputs.
Inputs are real test images. An app model is timed the way an app calls it: a
photo in, probabilities out, batch 1: the first :data:`APP_PICTURES` test digits
rendered as RGB photos at its input size (:func:`export.app.render_pictures`,
the parity gate's own pictures); its throughput is one photo at a time.

Accuracy and agreement come from ``RUN/export/parity.json`` when it belongs to
this export (the checks ``edgeport verify`` makes: the same ``manifest.json``
SHA-256, every file covered, consistent verdicts); else the parity gate runs
first, and one line on stderr says which. A row whose process crashes (a native
abort in a runtime) is retried once, then kept with ``error`` set; the other rows
still run. The recommendation only considers files that load in the ``target``
runtime. Timings depend on the machine; ``environment`` in the JSON records which one.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.fileio import atomic_write_json

__all__ = [
    "APP_PICTURES",
    "BENCH_NAME",
    "BENCH_RUNTIMES",
    "BENCH_TARGETS",
    "BenchError",
    "BenchReport",
    "BenchRow",
    "BenchSkip",
    "benchmark",
    "write_plot",
]

BENCH_NAME = "bench.json"
BENCH_RUNTIMES = ("litert", "tflite-runtime", "tensorflow", "onnxruntime", "mediapipe")
"""Runtimes :func:`benchmark` accepts; ``tensorflow`` means ``tf.lite.Interpreter`` on .tflite;
``mediapipe`` (Tasks' ``ImageClassifier``) runs the app models only."""
_DEFAULT_RUNTIMES = ("litert", "tflite-runtime", "onnxruntime", "mediapipe")  # if installed
_TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tensorflow")
_MODULES = {
    "litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "onnxruntime": "onnxruntime",
    "mediapipe": "mediapipe",
}
_IMPORTS = {  # what load_model imports: the interpreter module, not just the package
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",
    "onnxruntime": "onnxruntime",
    "mediapipe": "mediapipe.tasks.python.vision",
}
_DISTRIBUTIONS = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow", "numpy",
                  "mediapipe")
_SAVED_MODEL = "saved_model"
BENCH_TARGETS = ("litert", "tflite-runtime", "onnxruntime", "browser")
"""Where the user ships: :func:`benchmark` recommends only files that load there."""
APP_PICTURES = 100
"""Test digits rendered as photos for the app-model rows (cycled through the timed calls)."""
_APP_RUNTIMES = ("litert", "mediapipe")
_CRASH_ENV = "EDGEPORT_BENCH_CRASH_FOR_TESTS"  # tests only: this artifact's worker aborts


class BenchError(EdgeportError, RuntimeError):
    """A benchmark option is invalid, a runtime is missing, or a measuring process failed."""


@dataclass(frozen=True)
class BenchSkip:
    """A file and runtime the benchmark did not measure, and why.

    Attributes:
        file: the file in ``RUN/export``, or ``*`` for every file of that runtime.
        runtime: the runtime it was not measured with.
        reason: why, with the fix when there is one.
    """

    file: str
    runtime: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} on {self.runtime}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class BenchRow:
    """One artifact measured with one runtime.

    Attributes:
        artifact: the file name in ``RUN/export``, or ``saved_model`` for the baseline.
        format: ``tflite``, ``onnx`` or ``saved_model``.
        precision: ``float32``, ``float16``, ``dynamic_int8`` or ``int8``.
        runtime: ``litert``, ``tflite-runtime``, ``onnxruntime`` or ``tensorflow``.
        bytes: the file size (the whole folder for the SavedModel).
        accuracy: test accuracy from the parity gate (the reference's for the baseline).
        agreement: top-1 agreement with the reference (1.0 for the baseline).
        parity_passed: the parity verdict; ``None`` for the baseline.
        import_ms: importing the runtime in a fresh process.
        load_ms: loading the file into the runtime, ready to run.
        first_inference_ms: the first call on one image.
        latency_p50_ms: median batch-1 latency over ``runs`` calls.
        latency_p99_ms: 99th-percentile batch-1 latency.
        throughput_ips: images per second at ``batch`` images per call (median call).
        peak_rss_mb: peak resident memory of the measuring process (MiB; Linux
            ``VmHWM``, else ``ru_maxrss``).
        base_rss_mb: its resident memory before the runtime was imported (Python,
            numpy and the inputs), so ``peak - base`` is the runtime and model.
        baseline: the row is the TensorFlow SavedModel the files were exported from.
        family: ``plain`` (a tensor in) or ``app`` (a photo in, see :data:`APP_PICTURES`).
        error: why the row's measuring process failed (its timings are then ``None``).
    """

    artifact: str
    format: str
    precision: str
    runtime: str
    bytes: int
    accuracy: float | None
    agreement: float | None
    parity_passed: bool | None
    import_ms: float | None
    load_ms: float | None
    first_inference_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    throughput_ips: float | None
    peak_rss_mb: float | None
    base_rss_mb: float | None
    baseline: bool = False
    family: str = "plain"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class BenchReport:
    """All rows of one benchmark and the settings that produced them.

    Attributes:
        rows: one :class:`BenchRow` per artifact and runtime, the baseline last.
        runs: batch-1 timing calls per row.
        batch: images per call in the throughput measurement.
        warmup: untimed batch-1 calls before timing.
        repeats: timed calls at ``batch`` images (the median is reported).
        num_threads: runtime threads (``None``: each runtime's default).
        skipped: files and runtimes left out, with the reason.
        environment: the machine and package versions the numbers come from.
        target: the runtime the recommendation is for (:data:`BENCH_TARGETS`).
        parity_source: where accuracy and verdicts came from (the line bench printed).
        browser_passed: files whose browser parity rows all passed (``None``: parity.json
            has no browser rows); the candidates for ``target="browser"``.
    """

    rows: tuple[BenchRow, ...]
    runs: int
    batch: int
    warmup: int
    repeats: int
    num_threads: int | None
    skipped: tuple[BenchSkip, ...] = ()
    environment: dict[str, Any] = field(default_factory=dict)
    target: str = "litert"
    parity_source: str = ""
    browser_passed: tuple[str, ...] | None = None

    @property
    def smallest(self) -> BenchRow | None:
        """The smallest tensor-input file that passes parity on the target (ties: faster)."""
        rows = self._passing()
        return min(rows, key=lambda r: (r.bytes, r.latency_p50_ms or 0.0)) if rows else None

    @property
    def fastest(self) -> BenchRow | None:
        """The tensor-input file with the lowest batch-1 p50 that passes parity on the target."""
        rows = self._passing()
        return min(rows, key=lambda r: (r.latency_p50_ms or 0.0, r.bytes)) if rows else None

    @property
    def app(self) -> BenchRow | None:
        """The smallest app model (photo in) that passes parity on the target, if any."""
        rows = self._passing(family="app")
        return min(rows, key=lambda r: (r.bytes, r.latency_p50_ms or 0.0)) if rows else None

    @property
    def recommendation(self) -> str:
        """One line: the smallest and the fastest file passing parity that load in ``target``."""
        head = f"recommended for {self.target}: "
        small, fast = self.smallest, self.fastest
        if small is None or fast is None:
            return head + self._none_reason()
        line = (
            f"{head}smallest passing: {small.artifact} ({small.bytes / 1024:.1f} KB, "
            f"accuracy {_pct(small.accuracy)}, p50 {small.latency_p50_ms:.3f} ms on "
            f"{small.runtime}); fastest passing: {fast.artifact} on {fast.runtime} "
            f"(p50 {fast.latency_p50_ms:.3f} ms, {fast.throughput_ips:,.0f} img/s at batch "
            f"{self.batch}, {fast.bytes / 1024:.1f} KB)"
        )
        app = self.app
        if app is not None:
            line += (f"; for photos (app model): {app.artifact} ({app.bytes / 1024:.1f} KB, "
                     f"p50 {app.latency_p50_ms:.3f} ms a photo on {app.runtime})")
        return line

    def _none_reason(self) -> str:
        if self.target == "browser" and self.browser_passed is None:
            return ("none: parity.json has no browser rows; fix: run `edgeport parity RUN "
                    "--browser` first")
        if self.target in (*_TFLITE_RUNTIMES, "onnxruntime") and not any(
                r.runtime == self.target for r in self.rows):
            return (f"none: nothing was measured on {self.target} (see skipped); fix: install "
                    f"it ({_INSTALL.get(self.target, 'pip install it')}) and re-run")
        return "none: no file that loads there passes parity; fix the export before shipping one"

    def _passing(self, family: str = "plain") -> list[BenchRow]:
        rows = [r for r in self.rows if not r.baseline and r.parity_passed and r.error is None
                and r.family == family]
        if self.target == "browser":
            allowed = set(self.browser_passed or ())
            return [r for r in rows if r.artifact in allowed
                    and r.runtime in ("litert", "onnxruntime")]
        return [r for r in rows if r.runtime == self.target]

    def to_dict(self) -> dict[str, Any]:
        """The content of ``bench.json``."""
        small, fast, app = self.smallest, self.fastest, self.app

        def pick(row: BenchRow | None) -> dict[str, str] | None:
            return None if row is None else {"artifact": row.artifact, "runtime": row.runtime}

        return {
            "settings": {
                "runs": self.runs,
                "batch": self.batch,
                "warmup": self.warmup,
                "repeats": self.repeats,
                "num_threads": self.num_threads,
            },
            "environment": dict(self.environment),
            "parity_source": self.parity_source,
            "rows": [r.to_dict() for r in self.rows],
            "skipped": [s.to_dict() for s in self.skipped],
            "recommendation": {
                "target": self.target,
                "smallest": pick(small),
                "fastest": pick(fast),
                "app": pick(app),
                "line": self.recommendation,
            },
        }


_INSTALL = {
    "tflite-runtime": "`make device-venv`, or set EDGEPORT_DEVICE_PYTHON to a Python with "
                      "tflite-runtime",
    "onnxruntime": "pip install onnxruntime",
    "litert": "pip install ai-edge-litert",
    "mediapipe": "pip install mediapipe",
}


def benchmark(
    run_dir: str | os.PathLike[str],
    *,
    runs: int = 1000,
    batch: int | None = None,
    warmup: int = 50,
    repeats: int = 10,
    runtimes: Iterable[str] | None = None,
    baseline: bool = True,
    num_threads: int | None = None,
    target: str = "litert",
    data_dir: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> BenchReport:
    """Measure every artifact of ``RUN/export`` (and the SavedModel baseline).

    Always writes ``RUN/bench.json`` (beside the export, not in it: the export folder holds
    exactly what its manifest lists, and a measurement of this machine is not part of it).

    Args:
        run_dir: the run directory holding ``export/``.
        runs: timed batch-1 calls per row (p50 and p99 latency).
        batch: images per call for the throughput figure; ``None``: 256, or the whole
            test split when it is smaller (a larger ``batch`` than the split is refused).
        warmup: untimed batch-1 calls before the timed ones.
        repeats: timed calls at ``batch`` images; the median is reported.
        runtimes: names from :data:`BENCH_RUNTIMES`; ``None`` uses LiteRT,
            tflite-runtime, ONNX Runtime and MediaPipe, those that are installed.
        baseline: add the TensorFlow SavedModel row.
        num_threads: CPU threads for every runtime; ``None`` keeps each default.
        target: where the files will run (:data:`BENCH_TARGETS`); the recommendation
            considers only files measured (or, for ``browser``, gated) there.
        data_dir: where the dataset lives, if not where the run found it.
        json_path: also write the JSON here.
        markdown_path: write a Markdown table here.
        plot_path: write a PNG of latency against size here.
        progress: show progress on stderr (:mod:`edgeport.progress`).

    Returns:
        The rows, settings, environment and recommendation.

    Raises:
        BenchError: a bad option, or a requested runtime that is not installed.
        DatasetError: the test split cannot be loaded (checked before anything slow).
        RunDirError, ParityError, ManifestError: the run or export is missing or broken.
    """
    _check_options(runs=runs, batch=DEFAULT_BATCH if batch is None else batch, warmup=warmup,
                   repeats=repeats, num_threads=num_threads)
    if target not in BENCH_TARGETS:
        raise BenchError(f"target {target!r}; expected one of {', '.join(BENCH_TARGETS)} "
                         "(the runtime the files will run in)")
    info, export_dir, manifest = _load_export(run_dir)
    from edgeport.train.run_dir import load_split

    # The dataset first: without it nothing below can run, so fail before the slow parts.
    x, _ = load_split(info, "test", data_dir=data_dir)
    if batch is None:  # the default fits any test split: 256 images, or all of a smaller one
        batch = min(DEFAULT_BATCH, len(x))
    _check_options(runs=runs, batch=batch, warmup=warmup, repeats=repeats,
                   num_threads=num_threads, test_images=len(x))  # batch <= the test split
    chosen, skipped = _select_runtimes(runtimes)
    parity = _parity_results(info.path, manifest, data_dir=data_dir, progress=progress)
    jobs = _model_jobs(manifest, export_dir, parity.plain, chosen)
    jobs += _app_jobs(manifest, export_dir, parity.app, chosen, skipped)
    if baseline:
        jobs.append(_baseline_job(info))
    if not jobs:
        raise BenchError(
            f"nothing to measure: runtimes {list(chosen)} run none of the files in {export_dir} "
            f"and baseline=False; expected e.g. runtimes=['litert', 'onnxruntime']"
        )
    pictures = None
    if any(spec["kind"] == "app" for spec, _ in jobs):
        from .app import render_pictures

        pictures = render_pictures(x[:APP_PICTURES], info.input)
    settings = {"runs": runs, "batch": batch, "warmup": warmup, "repeats": repeats,
                "num_threads": num_threads}
    rows = _measure_jobs(jobs, x[: max(batch, min(runs, len(x)))], pictures, settings,
                         skipped, progress=progress)
    report = BenchReport(
        rows=tuple(rows), runs=runs, batch=batch, warmup=warmup, repeats=repeats,
        num_threads=num_threads, skipped=tuple(skipped), environment=_environment(),
        target=target, parity_source=parity.source, browser_passed=parity.browser_passed,
    )
    _write_reports(report, info.path / BENCH_NAME, json_path=json_path,
                   markdown_path=markdown_path, plot_path=plot_path)
    return report


_Job = tuple[dict[str, Any], dict[str, Any]]  # (worker spec, row fields)


# Upper limits (issue 18), each with its reason. runs and warmup: the one cap of
# edgeport-demo --bench (mobile_demo.demo.MAX_RUNS). batch: the throughput batch is cut from
# the test split, so it can be no larger than that (MNIST's holds 10,000 images); a larger
# one was reported "at batch 1000000000" but measured on 10,000. repeats: each is a whole
# batch call; the median of 1,000 is as stable as it gets.
_MAX_BATCH = 10_000
_MAX_REPEATS = 1000


DEFAULT_BATCH = 256


def _check_options(*, runs: int, batch: int, warmup: int, repeats: int,
                   num_threads: int | None, test_images: int | None = None) -> None:
    from edgeport.mobile_demo.demo import MAX_RUNS
    from edgeport.mobile_demo.runtime import max_threads

    for name, value, low in (("runs", runs, 1), ("batch", batch, 1), ("warmup", warmup, 0),
                             ("repeats", repeats, 1)):
        if not isinstance(value, int) or value < low:
            raise BenchError(f"{name}={value!r}; expected an integer >= {low}")
    if num_threads is not None and num_threads < 1:
        raise BenchError(f"num_threads={num_threads}; expected a positive integer or None")
    most = min(_MAX_BATCH, test_images) if test_images is not None else _MAX_BATCH
    for name, value, high, why in (
        ("runs", runs, MAX_RUNS, "p50/p99 settle within a few hundred runs"),
        ("warmup", warmup, MAX_RUNS, "a few calls warm a runtime up"),
        ("repeats", repeats, _MAX_REPEATS, "the median of a few calls is stable"),
        ("batch", batch, most, f"the batch is cut from the {most}-image test split"
                               if test_images is not None and test_images < _MAX_BATCH
                               else "the batch is cut from the test split: MNIST's has 10000"),
        ("num_threads", num_threads or 1, max_threads(), "4 per CPU core; more only contend"),
    ):
        if value > high:
            raise BenchError(f"{name}={value}; expected at most {high} ({why}); fix: pass "
                             f"{name}={high} or less")


def _load_export(run_dir: str | os.PathLike[str]) -> tuple[Any, Path, dict[str, Any]]:
    """The run, its export folder and the export's manifest (a clear error without one)."""
    from edgeport.train.run_dir import load_run

    from .manifest import read_manifest

    info = load_run(run_dir)
    export_dir = info.path / "export"
    manifest = read_manifest(export_dir) if export_dir.is_dir() else None
    if manifest is None:
        from .parity import ParityError

        raise ParityError(
            f"{export_dir}: no export folder; expected the output of `edgeport export`; "
            f"fix: run `edgeport export {info.path}` first"
        )
    return info, export_dir, manifest


def _model_jobs(manifest: Mapping[str, Any], export_dir: Path, parity: Mapping[str, Any],
                chosen: Sequence[str]) -> list[_Job]:
    """One job per (plain artifact, runtime that runs its format)."""
    from edgeport.mobile_demo.runtime import available_runtimes

    # tflite-runtime rows run in the device venv when it is not importable here.
    legacy_python = None if "tflite-runtime" in available_runtimes() else device_python()
    jobs: list[_Job] = []
    for entry in _family(manifest, "plain"):
        name = str(entry["file"])
        result = parity.get(name)
        fmt = str(entry["format"])
        for rt in chosen:
            if rt == "mediapipe" or (fmt == "onnx") != (rt == "onnxruntime"):
                continue
            jobs.append((
                {"kind": "model", "path": str(export_dir / name), "runtime": rt,
                 "python": legacy_python if rt == "tflite-runtime" else None},
                {"artifact": name, "format": fmt, "precision": str(entry["precision"]),
                 "runtime": rt, "bytes": (export_dir / name).stat().st_size,
                 **_verdict(result)},
            ))
    return jobs


def _app_jobs(manifest: Mapping[str, Any], export_dir: Path, parity: Mapping[Any, Any],
              chosen: Sequence[str], skipped: list[BenchSkip]) -> list[_Job]:
    """One job per (app model, app runtime): a photo in, probabilities out, batch 1."""
    jobs: list[_Job] = []
    for entry in _family(manifest, "app"):
        name = str(entry["file"])
        for rt in _APP_RUNTIMES:
            if rt not in chosen:
                if not any(s.runtime == rt and s.file == "*" for s in skipped):
                    skipped.append(BenchSkip(name, rt, "not among the runtimes asked for"))
                continue
            jobs.append((
                {"kind": "app", "path": str(export_dir / name), "runtime": rt},
                {"artifact": name, "format": str(entry["format"]),
                 "precision": str(entry["precision"]), "runtime": rt,
                 "bytes": (export_dir / name).stat().st_size, "family": "app",
                 **_verdict(parity.get((name, rt)))},
            ))
    return jobs


def _verdict(result: Any) -> dict[str, Any]:
    return {"accuracy": None if result is None else result.accuracy,
            "agreement": None if result is None else result.agreement,
            "parity_passed": None if result is None else result.passed}


def _baseline_job(info: Any) -> _Job:
    """The TensorFlow SavedModel row every file is compared with."""
    ref = info.reference_probabilities.argmax(axis=1)
    saved = info.saved_model
    return (
        {"kind": "saved_model", "path": str(saved), "runtime": "tensorflow"},
        {"artifact": _SAVED_MODEL, "format": _SAVED_MODEL, "precision": "float32",
         "runtime": "tensorflow",
         "bytes": sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()),
         "accuracy": float(np.mean(ref == info.reference_labels)), "agreement": 1.0,
         "parity_passed": None, "baseline": True},
    )


_TIMINGS = ("import_ms", "load_ms", "first_inference_ms", "latency_p50_ms", "latency_p99_ms",
            "throughput_ips", "peak_rss_mb", "base_rss_mb")
_CANNOT_LOAD = re.compile(r"cannot load it \(([^)]*)\)")


def _measure_jobs(jobs: Sequence[_Job], x: np.ndarray, pictures: np.ndarray | None,
                  settings: Mapping[str, Any], skipped: list[BenchSkip], *,
                  progress: bool) -> list[BenchRow]:
    """Each job in a fresh worker process; a failed one becomes its row's ``error``.

    A file tflite-runtime cannot load is skipped instead: the legacy runtime predates
    operator versions of newer converters (TF 2.21's dynamic-range FULLY_CONNECTED v12).
    """
    from edgeport.progress import progress_bar as tqdm

    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="edgeport-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, np.ascontiguousarray(x))
        photos = Path(tmp) / "pictures.npy"
        if pictures is not None:
            np.save(photos, np.ascontiguousarray(pictures))
        bar = tqdm(jobs, desc="bench", unit="row", file=sys.stderr, disable=not progress,
                   leave=False)
        try:
            for i, (spec, fields_) in enumerate(bar):
                bar.set_description(f"bench {fields_['artifact']} ({fields_['runtime']})")
                out = Path(tmp) / f"row{i}.json"
                measured, error = _measure({**spec, **settings, "out": str(out),
                                            "inputs": str(photos if spec["kind"] == "app"
                                                          else inputs)})
                if measured is not None:
                    rows.append(BenchRow(**fields_, **measured))
                    continue
                assert error is not None
                cannot = _CANNOT_LOAD.search(error)
                if spec["runtime"] == "tflite-runtime" and cannot:
                    skipped.append(BenchSkip(fields_["artifact"], "tflite-runtime",
                                             f"cannot load it ({cannot.group(1)})"))
                    continue
                rows.append(BenchRow(**fields_, **dict.fromkeys(_TIMINGS), error=error))
        finally:
            bar.close()
    return rows


def _write_reports(report: BenchReport, bench_json: Path, *,
                   json_path: str | os.PathLike[str] | None,
                   markdown_path: str | os.PathLike[str] | None,
                   plot_path: str | os.PathLike[str] | None) -> None:
    atomic_write_json(bench_json, report.to_dict())
    if json_path is not None:
        atomic_write_json(json_path, report.to_dict())
    if markdown_path is not None:
        from .report import write_markdown

        write_markdown(report, markdown_path)
    if plot_path is not None:
        write_plot(report, plot_path)


def write_plot(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Write a PNG: batch-1 p50 latency against file size, each point labelled with accuracy.

    Args:
        report: a benchmark report.
        path: the PNG to write (atomically).

    Returns:
        The path written.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from edgeport.fileio import atomic_write_bytes

    fig = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers = {"litert": "o", "tflite-runtime": "s", "onnxruntime": "D", "tensorflow": "^"}
    for runtime in dict.fromkeys(r.runtime for r in report.rows):
        rows = [r for r in report.rows if r.runtime == runtime and r.error is None]
        ax.scatter([r.bytes / 1024 for r in rows], [r.latency_p50_ms for r in rows],
                   marker=markers.get(runtime, "o"), s=50, label=runtime, zorder=3)
        for r in rows:
            verdict = "" if r.parity_passed is None else (" ✓" if r.parity_passed else " ✗")
            ax.annotate(f"{r.artifact}\n{_pct(r.accuracy)}{verdict}",
                        (r.bytes / 1024, r.latency_p50_ms), textcoords="offset points",
                        xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(x=0.25, y=0.2)  # room for the labels of the outermost points
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("file size (KB, log scale)")
    ax.set_ylabel("batch-1 latency p50 (ms, log scale)")
    ax.set_title(f"edgeport bench: latency vs size ({report.runs} runs; labels: test accuracy)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="runtime", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def device_python(*candidates: str | os.PathLike[str]) -> str | None:
    """The TensorFlow-free device venv's Python, if there is one with tflite-runtime.

    The legacy tflite-runtime needs numpy<2, so it lives in its own venv
    (``make device-venv``); bench rows for it are measured with that Python, and the
    device tests and ``benchmarks/`` run in it. Looks at ``$EDGEPORT_DEVICE_PYTHON``
    first, then ``candidates`` (e.g. ``.venv-device/bin/python``), and returns the
    first that exists and imports ``tflite_runtime``; else ``None``.
    """
    probe = "import importlib.util as u; print(u.find_spec('tflite_runtime') is not None)"
    for python in (os.environ.get("EDGEPORT_DEVICE_PYTHON"), *candidates):
        if not python or not Path(python).is_file():
            continue
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                             check=False)
        if out.stdout.strip() == "True":
            return str(python)
    return None


def _select_runtimes(
    runtimes: Iterable[str] | None,
) -> tuple[tuple[str, ...], list[BenchSkip]]:
    import importlib.util

    from edgeport.mobile_demo.runtime import available_runtimes

    installed = set(available_runtimes())
    if device_python() is not None:
        installed.add("tflite-runtime")
    if importlib.util.find_spec("mediapipe") is not None:
        installed.add("mediapipe")
    if runtimes is None:
        chosen = tuple(r for r in _DEFAULT_RUNTIMES if r in installed)
        skipped = [BenchSkip("*", r, f"not installed ({_MODULES[r]}); fix: {_INSTALL[r]}")
                   for r in _DEFAULT_RUNTIMES if r not in installed]
        return chosen, skipped
    names = [runtimes] if isinstance(runtimes, str) else list(runtimes)
    for name in names:
        if name not in BENCH_RUNTIMES:
            raise BenchError(
                f"runtime {name!r} is not one the benchmark knows; expected some of "
                f"{', '.join(BENCH_RUNTIMES)}"
            )
        if name not in installed:
            raise BenchError(
                f"runtime {name!r} ({_MODULES[name]}) is not installed; fix: pip install it, "
                "or leave it out of runtimes"
            )
    return tuple(dict.fromkeys(names)), []


@dataclass(frozen=True)
class _Parity:
    """The gate's verdicts the rows carry, and where they came from."""

    plain: dict[str, Any]  # artifact -> ParityResult
    app: dict[tuple[str, str], Any]  # (app artifact, runtime) -> ParityResult
    browser_passed: tuple[str, ...] | None  # files whose browser rows passed; None: no rows
    source: str  # the line printed on stderr


def _parity_results(
    run: Path, manifest: dict[str, Any], *, data_dir: Any, progress: bool
) -> _Parity:
    """The verdicts of ``parity.json`` when it belongs to this export; else the gate re-run.

    "Belongs" is what ``edgeport verify`` checks (:func:`export.integrity.parity_problems`):
    the same ``manifest.json`` SHA-256, every file covered, verdicts consistent with the
    thresholds. One line on stderr says whether the file was reused or the gate re-run.
    """
    from .integrity import parity_problems
    from .parity import PARITY_NAME, check_parity, read_parity
    from .thresholds import THRESHOLDS

    export_dir = run / "export"
    path = export_dir / PARITY_NAME
    report = read_parity(export_dir)
    if report is None:
        why = "no parity.json" if not path.exists() else "parity.json is not a parity report"
    else:
        problems = parity_problems(export_dir, manifest, THRESHOLDS)
        why = problems[0].split("; fix:")[0] if problems else None
    if why is None:
        source = f"bench: reusing {path} (made for this manifest.json; the gate is not re-run)"
        print(source, file=sys.stderr, flush=True)
    else:
        source = f"bench: {why}: running the parity gate first (`edgeport parity {run}`)"
        print(source, file=sys.stderr, flush=True)
        from edgeport.train.tfenv import import_tensorflow

        import_tensorflow()  # quietly, before the gate needs it
        report = check_parity(run, data_dir=data_dir, progress=progress)
    assert report is not None
    app_files = {str(e["file"]) for e in _family(manifest, "app")}
    results = [r for r in report.results if r.runtime not in _BROWSER]
    browser = [r for r in report.results if r.runtime in _BROWSER]
    passed = {r.artifact for r in browser} - {r.artifact for r in browser if not r.passed}
    return _Parity(
        plain={r.artifact: r for r in results if r.artifact not in app_files},
        app={(r.artifact, r.runtime): r for r in results if r.artifact in app_files},
        browser_passed=tuple(sorted(passed)) if browser else None,
        source=source,
    )


# export/browser.py's rows (BROWSER_RUNTIMES; not imported: browser.py pulls in the page).
_BROWSER = ("litert.js (chromium)", "onnxruntime-web (chromium)", "litert.js webgpu (chromium)")


def _family(manifest: Mapping[str, Any], family: str) -> list[dict[str, Any]]:
    """The manifest entries of one family: ``plain`` (a tensor in) or ``app`` (a photo in)."""
    return [e for e in manifest["artifacts"] if e.get("family", "plain") == family]


def _measure(spec: dict[str, Any]) -> tuple[dict[str, float] | None, str | None]:
    """One row's figures from a fresh Python process, or one line saying why there are none.

    A process killed by a signal (a native crash in a runtime, seen once in two runs of
    TensorFlow's baseline on a loaded machine) is retried once; a Python error is not.
    """
    import signal

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    spec_path = Path(spec["out"]).with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    python = spec.get("python") or sys.executable
    worker = "from edgeport.export.bench import _worker_main; _worker_main()"
    cmd = [python, "-c", worker, str(spec_path)]
    out = Path(spec["out"])
    attempts = 0
    while True:
        attempts += 1
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode == 0 and out.is_file():
            return json.loads(out.read_text(encoding="utf-8")), None
        if proc.returncode >= 0 or attempts == 2:
            break
    lines = [" ".join(s.split()) for s in (proc.stderr or "").splitlines() if s.strip()]
    tail = lines[-1] if lines else ""  # whole: the skip reason of tflite-runtime is parsed from it
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return None, f"crashed ({name}) in {attempts} runs" + (f": {tail}" if tail else "")
    return None, tail or f"exit code {proc.returncode}"


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    # Linux: VmHWM belongs to this program's address space; ru_maxrss would carry over the
    # parent's peak through fork + exec and report the benchmark's memory, not this row's.
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _ms(ns: int) -> float:
    return ns / 1e6


def _worker_main() -> None:
    """Entry point of a measuring process: ``python -c ... SPEC.json`` (see :func:`_measure`)."""
    import importlib
    import itertools

    from edgeport.mobile_demo.timing import latency_ms, time_calls

    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    x = np.load(spec["inputs"])
    runs, batch, warmup, repeats = spec["runs"], spec["batch"], spec["warmup"], spec["repeats"]
    threads = spec["num_threads"]
    base_rss = _rss_mb()
    clock = time.perf_counter_ns

    t0 = clock()
    if spec["kind"] == "saved_model":
        import tensorflow as tf

        import_ns = clock() - t0
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        t0 = clock()
        fn = tf.saved_model.load(spec["path"]).signatures["serving_default"]
        load_ns = clock() - t0

        def predict(xb: np.ndarray) -> np.ndarray:
            return fn(image=tf.constant(xb))["probabilities"].numpy()
    elif spec["kind"] == "app":
        importlib.import_module(_IMPORTS[spec["runtime"]])
        import_ns = clock() - t0
        t0 = clock()
        predict_one = _load_app(spec["path"], spec["runtime"], threads)
        load_ns = clock() - t0

        def predict(xb: np.ndarray) -> np.ndarray:  # batch 1: one photo at a time
            return np.stack([predict_one(picture) for picture in xb])
    else:
        from edgeport.mobile_demo.runtime import load_model

        importlib.import_module(_IMPORTS[spec["runtime"]])
        import_ns = clock() - t0
        t0 = clock()
        model = load_model(spec["path"], runtime=spec["runtime"], num_threads=threads)
        load_ns = clock() - t0

        def predict(xb: np.ndarray) -> np.ndarray:
            return model.predict(xb, batch_size=len(xb))["probabilities"]

    if os.environ.get(_CRASH_ENV) == Path(spec["path"]).name:
        os.abort()  # tests only: a native crash after loading, as a runtime's would be
    n = len(x)
    (first_ns,) = time_calls(lambda: predict(x[:1]), runs=1)
    ones = itertools.cycle([x[i : i + 1] for i in range(n)])  # real images, one a call
    latencies = time_calls(lambda: predict(next(ones)), runs=runs, warmup=warmup)
    xb = x[:batch]
    # Two untimed calls: the first calls at a new batch size resize and re-plan.
    batch_ns = time_calls(lambda: predict(xb), runs=repeats, warmup=2)
    p50, p99 = latency_ms(latencies, 50, 99)
    result = {
        "import_ms": _ms(import_ns),
        "load_ms": _ms(load_ns),
        "first_inference_ms": _ms(first_ns),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "throughput_ips": len(xb) / (float(np.median(batch_ns)) / 1e9),
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base_rss,
    }
    atomic_write_json(spec["out"], result)


def _load_app(path: str, runtime: str, threads: int | None) -> Any:
    """A function photo -> probabilities, called the way an app calls the file."""
    if runtime == "mediapipe":
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path),
                                                max_results=-1)
        classifier = vision.ImageClassifier.create_from_options(options)

        def classify(picture: np.ndarray) -> np.ndarray:
            image = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=np.ascontiguousarray(picture))
            categories = classifier.classify(image).classifications[0].categories
            scores = np.zeros(len(categories), np.float32)
            for c in categories:
                scores[c.index] = c.score
            return scores

        return classify
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def invoke(picture: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], picture[None].astype(inp["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0].copy()

    return invoke


def _environment() -> dict[str, Any]:
    versions = {}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": len(affinity(0)) if affinity else os.cpu_count(),
        "versions": versions,
    }
