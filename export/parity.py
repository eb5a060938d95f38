"""The parity gate: every exported file must reproduce the reference model on the test set.

Usage::

    from edgeport.export.parity import check_parity
    report = check_parity("runs/mnist")          # writes runs/mnist/export/parity.json
    print(report.passed, [r.failures for r in report.results])

For each artifact listed in ``RUN/export/manifest.json``, in order:

1. re-hash the file and compare size and SHA-256 with the manifest (a file
   changed since the export fails, with that reason);
2. load it with :func:`mobile_demo.runtime.load_model`, the code the device
   demo uses, and check it has a ``probabilities`` output;
3. run all test images (the real split the run was trained against, e.g. the
   10,000 MNIST test digits) and check the output shape against
   ``RUN/reference.npz``;
4. compare the values: accuracy, accuracy change, top-1 agreement with the
   reference, max and mean ``|p - p_ref|``, against the artifact's precision's
   row of :data:`export.thresholds.THRESHOLDS`.

Every failure is collected (one line per figure, e.g. ``agreement 98.70% < 99.00%``),
quantized files included; nothing is skipped. Bad input (no run, no export,
no reference, a file whose hash matches but that the runtime cannot load)
raises an :class:`~edgeport.errors.EdgeportError` instead (exit code 2).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError, ModelFileError
from edgeport.fileio import atomic_write_json

from .formats import ArtifactFormat, Precision
from .integrity import folder_problems
from .manifest import artifact_file_problems, file_sha256, read_manifest
from .oracle import check_oracle
from .thresholds import (
    THRESHOLDS,
    WEBGPU_SAMPLES,
    Thresholds,
    Tolerance,
    calibrated_bound,
    load_thresholds,
)

__all__ = [
    "PARITY_NAME",
    "ParityError",
    "ParityReport",
    "ParityResult",
    "check_parity",
    "read_parity",
    "runtime_for",
]

PARITY_NAME = "parity.json"
_TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tensorflow")


class ParityError(EdgeportError, ValueError):
    """The run has no export to check, or the export and the reference do not fit together."""


@dataclass(frozen=True)
class ParityResult:
    """One artifact's verdict.

    Attributes:
        artifact: the file name inside ``RUN/export``.
        format: its container format.
        precision: its numeric precision (selects the tolerance row).
        runtime: the runtime that ran it (``litert``, ``onnxruntime``, ...),
            ``None`` when it could not be loaded.
        accuracy: top-1 accuracy on the test set, ``None`` when it did not run.
        reference_accuracy: the reference model's accuracy on the same images.
        agreement: fraction of test images whose top-1 class equals the reference's.
        max_abs_diff: ``max |p - p_ref|`` over all images and classes.
        mean_abs_diff: ``mean |p - p_ref|``.
        passed: no failure.
        failures: one line per failed check, e.g. ``agreement 98.70% < 99.00%``.
        bytes: the file size.
        images: how many test images the row ran (all of the test split for plain and
            app rows; the first ``browser_samples`` for browser rows).
        max_abs_diff_bound: the ``max |Δp|`` bound the row was gated by; ``None``: the
            figure is reported, not gated (int8 files, app models).
        bound_source: where the bound came from: ``table``, or e.g.
            ``4 x float16 simulation 5.7e-03`` (:func:`export.thresholds.calibrated_bound`).
        near_ties: top-1 changes on images the reference itself decides by less than twice
            the row's ``max |Δp|`` bound (``top1 - top2 <= 2 x bound``): a file within the
            bound may flip those, so the agreement gate does not count them (0 for rows
            without a bound). ``agreement`` still counts every change.
        gpu_ready: WebGPU rows only (``None`` elsewhere): LiteRT.js ran the file on
            WebGPU within the thresholds (``True``), or not (``False``, reason in ``note``).
        note: why a WebGPU row is "not GPU-ready" (LiteRT.js's message, or the figures
            outside the thresholds); such a row passes unless the manifest claims WebGPU
            support for the file.
    """

    artifact: str
    format: ArtifactFormat
    precision: Precision
    runtime: str | None
    accuracy: float | None
    reference_accuracy: float
    agreement: float | None
    max_abs_diff: float | None
    mean_abs_diff: float | None
    passed: bool
    failures: tuple[str, ...]
    bytes: int
    images: int | None = None
    max_abs_diff_bound: float | None = None
    bound_source: str = ""
    near_ties: int = 0
    gpu_ready: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL``, or ``not GPU-ready`` (a passing WebGPU row that did not run)."""
        return row_verdict(self.passed, self.gpu_ready)

    @property
    def accuracy_change(self) -> float | None:
        """``accuracy - reference_accuracy`` (negative: the file is worse)."""
        return None if self.accuracy is None else self.accuracy - self.reference_accuracy

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``parity.json`` (``gpu_ready``/``note`` on WebGPU rows)."""
        gpu = {} if self.gpu_ready is None else {"gpu_ready": self.gpu_ready, "note": self.note}
        return {
            "artifact": self.artifact,
            "format": self.format.value,
            "precision": self.precision.value,
            "runtime": self.runtime,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "agreement": self.agreement,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "passed": self.passed,
            "failures": list(self.failures),
            "bytes": self.bytes,
            "images": self.images,
            "max_abs_diff_bound": self.max_abs_diff_bound,
            "bound_source": self.bound_source,
            "near_ties": self.near_ties,
            **gpu,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParityResult:
        """Read back one entry of ``parity.json``."""
        return cls(
            artifact=str(d["artifact"]),
            format=ArtifactFormat(d["format"]),
            precision=Precision(d["precision"]),
            runtime=d["runtime"],
            accuracy=d["accuracy"],
            reference_accuracy=float(d["reference_accuracy"]),
            agreement=d["agreement"],
            max_abs_diff=d["max_abs_diff"],
            mean_abs_diff=d["mean_abs_diff"],
            passed=bool(d["passed"]),
            failures=tuple(str(f) for f in d["failures"]),
            bytes=int(d["bytes"]),
            images=None if d.get("images") is None else int(d["images"]),
            max_abs_diff_bound=d.get("max_abs_diff_bound"),
            bound_source=str(d.get("bound_source") or ""),
            near_ties=int(d.get("near_ties") or 0),
            gpu_ready=None if d.get("gpu_ready") is None else bool(d["gpu_ready"]),
            note=str(d.get("note") or ""),
        )


@dataclass(frozen=True)
class ParityReport:
    """The gate's verdict over every artifact of an export.

    Attributes:
        passed: every artifact passed (and there was at least one).
        results: one :class:`ParityResult` per artifact, in manifest order.
        not_produced: formats an imported model could not be converted to, with the
            reason (``manifest.json["not_produced"]``); shown, not gated.
        problems: why the export folder itself was refused (a file ``manifest.json``
            does not list, ...: :func:`export.integrity.folder_problems`, the check
            ``verify`` makes); no row runs then.
        calibration: the float16 simulation the bounds came from, keyed by the
            SavedModel's content hash (``{"saved_model_content_sha256", "images",
            "float16_simulated_max_abs_diff"}``); empty when nothing was calibrated.
    """

    passed: bool
    results: tuple[ParityResult, ...]
    manifest_sha256: str | None = None  # the manifest.json this verdict is about
    not_produced: tuple[dict[str, str], ...] = ()
    problems: tuple[str, ...] = ()
    calibration: Mapping[str, Any] | None = None

    @property
    def files(self) -> int:
        """How many distinct files the rows cover (a file may have several runtimes)."""
        return len({r.artifact for r in self.results})

    @property
    def failures(self) -> list[str]:
        """Every failure as ``"<artifact>: <reason>"``, one per line, then the folder's."""
        return [f"{r.artifact}: {f}" for r in self.results for f in r.failures] + list(
            self.problems)

    def to_dict(self) -> dict[str, Any]:
        """``{"passed": bool, "results": [...]}``, the content of ``parity.json``."""
        d: dict[str, Any] = {"passed": self.passed,
                             "results": [r.to_dict() for r in self.results]}
        if self.not_produced:
            d["not_produced"] = [dict(n) for n in self.not_produced]
        if self.manifest_sha256 is not None:
            d["manifest_sha256"] = self.manifest_sha256
        if self.problems:
            d["problems"] = list(self.problems)
        if self.calibration:
            d["calibration"] = dict(self.calibration)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParityReport:
        """Read back the content of ``parity.json``."""
        return cls(
            passed=bool(d["passed"]),
            results=tuple(ParityResult.from_dict(r) for r in d["results"]),
            manifest_sha256=d.get("manifest_sha256"),
            not_produced=tuple(dict(n) for n in d.get("not_produced", ())),
            problems=tuple(str(p) for p in d.get("problems", ())),
            calibration=dict(d["calibration"]) if isinstance(d.get("calibration"), Mapping)
            else None,
        )


def check_parity(
    run_dir: str | os.PathLike[str],
    *,
    thresholds: Thresholds | str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    runtime: str = "auto",
    batch_size: int = 1000,
    progress: bool = True,
    browser: bool = False,
    browser_samples: int = 1000,
    webgpu_samples: int = WEBGPU_SAMPLES,
) -> ParityReport:
    """Check every file of ``RUN/export`` against ``RUN/reference.npz`` on the test split.

    Writes ``RUN/export/parity.json`` (atomically) whatever the verdict.

    The folder must hold exactly what ``manifest.json`` lists (the check ``verify``
    makes, :func:`export.integrity.folder_problems`): otherwise the report fails
    with ``problems`` and no row runs. float16 rows are gated on
    ``max |Δp| <= max(table, K x the model's float16 simulation)``
    (:func:`export.oracle.float16_simulation`, computed once per SavedModel and kept
    in ``parity.json["calibration"]``).

    Args:
        run_dir: the run directory (``RUN``), holding ``reference.npz`` and ``export/``.
        thresholds: a tolerance table (e.g. from :func:`~export.thresholds.load_thresholds`),
            or the path of a JSON override file; ``None`` uses
            :data:`~export.thresholds.THRESHOLDS`.
        data_dir: where the dataset lives, if not where the run found it.
        runtime: ``auto``, or a runtime name for :func:`mobile_demo.runtime.load_model`;
            a TFLite runtime (``litert``, ``tflite-runtime``, ``tensorflow``) applies to
            the ``.tflite`` files and ``onnxruntime`` to ``.onnx``; the other format
            uses ``auto``.
        batch_size: test images per runtime call.
        progress: show a progress bar per artifact on stderr.
        browser: also run the phone page's runtimes in headless Chromium
            (:func:`export.browser.browser_parity`: rows ``litert.js (chromium)``,
            ``onnxruntime-web (chromium)`` and ``litert.js webgpu (chromium)``) on
            ``browser_samples`` test images.
        browser_samples: test images per browser row (the first ones of the split).
        webgpu_samples: of those, the images per WebGPU row (default
            :data:`~export.thresholds.WEBGPU_SAMPLES`).

    Returns:
        The verdict, one result per artifact in manifest order.

    Raises:
        RunDirError: the run directory, ``reference.npz`` or the test split is
            missing or does not match.
        ParityError: ``RUN/export`` is missing or lists no artifact, or the
            reference does not cover the test split.
        ManifestError: ``manifest.json`` is missing or not an edgeport manifest.
        ModelFileError: a file whose hash matches the manifest cannot be loaded.
        RuntimeNotFoundError: the runtime for a file is not installed.
        ThresholdsError: ``thresholds`` is a path to a bad file.
        BrowserError: ``browser`` and Chromium or Playwright is missing.
    """
    from edgeport.progress import progress_bar as tqdm
    from edgeport.train.run_dir import load_run

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected a positive integer")
    table = _resolve_thresholds(thresholds)
    info = load_run(run_dir)
    export_dir = info.path / "export"
    manifest = _read_export(info.path, export_dir)
    problems = folder_problems(export_dir, manifest)
    if problems:  # judge the folder a user ships, not a list: refuse before the slow part
        fix = (f"fix: make {export_dir} exactly what `edgeport export` wrote (move the "
               f"extra file out, or re-run `edgeport export {info.path} --force`)")
        report = ParityReport(passed=False, results=(),
                              manifest_sha256=file_sha256(export_dir / "manifest.json"),
                              problems=tuple(f"{export_dir.name}/{p}; {fix}" for p in problems))
        atomic_write_json(export_dir / PARITY_NAME, report.to_dict())
        return report
    app_entries = [e for e in manifest["artifacts"] if e.get("family") == "app"]
    entries = [e for e in manifest["artifacts"] if e.get("family") != "app"]
    reference = info.reference_probabilities
    x, labels = _test_split(info, data_dir, len(reference))
    check_oracle(info, manifest, x=x, labels=labels)  # the oracle itself is checked first
    ref_top = reference.argmax(axis=1)
    reference_accuracy = float(np.mean(ref_top == labels))
    calibration = _calibration(info, export_dir, entries, table, x=x, batch_size=batch_size)
    simulated = (calibration or {}).get("float16_simulated_max_abs_diff")

    results: list[ParityResult] = []
    bar = tqdm(entries, desc="parity", unit="file", file=sys.stderr, disable=not progress,
               leave=False)
    try:
        for entry in bar:
            bar.set_description(f"parity {entry.get('file', '?')}")
            results.append(
                _check_artifact(
                    export_dir,
                    entry,
                    x=x,
                    labels=labels,
                    reference=reference,
                    ref_top=ref_top,
                    reference_accuracy=reference_accuracy,
                    table=table,
                    runtime=runtime,
                    batch_size=batch_size,
                    float16_simulated=simulated,
                )
            )
    finally:
        bar.close()
    if app_entries:  # picture-in models: the oracle is the numpy preprocessing (app_checks)
        from .app_checks import check_app_parity

        results += check_app_parity(info, export_dir, app_entries, x=x, labels=labels,
                                    progress=progress)
    if browser:
        from .browser import browser_parity

        results += browser_parity(info.path, thresholds=table, samples=browser_samples,
                                  webgpu_samples=webgpu_samples, split=(x, labels),
                                  progress=progress)
    from .model_card import fill_model_card

    # The card's figures, then its manifest entry, before the manifest hash parity.json keeps.
    fill_model_card(export_dir, info.metrics, results, table)
    report = ParityReport(
        passed=bool(results) and all(r.passed for r in results), results=tuple(results),
        manifest_sha256=file_sha256(export_dir / "manifest.json"),
        not_produced=tuple(dict(n) for n in manifest.get("not_produced", ())),
        calibration=calibration,
    )
    atomic_write_json(export_dir / PARITY_NAME, report.to_dict())
    return report


def _calibration(info: Any, export_dir: Path, entries: list[Mapping[str, Any]],
                 table: Thresholds, *, x: np.ndarray,
                 batch_size: int) -> dict[str, Any] | None:
    """The float16 simulation for this SavedModel: from parity.json when it was made for
    the same SavedModel and images, else computed (once) now. ``None``: no float16 row
    gated on max |Δp|."""
    from edgeport.train.run_dir import saved_model_content_sha256

    from .oracle import float16_simulation

    tol = table.get(Precision.FLOAT16, THRESHOLDS[Precision.FLOAT16])
    if tol.max_abs_diff is None or not any(
            e.get("precision") == Precision.FLOAT16.value for e in entries):
        return None
    content = saved_model_content_sha256(info.saved_model)
    try:
        old = json.loads((export_dir / PARITY_NAME).read_text(encoding="utf-8"))["calibration"]
        if (old["saved_model_content_sha256"] == content and old["images"] == len(x)
                and isinstance(old["float16_simulated_max_abs_diff"], float)):
            return dict(old)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        pass
    return {"saved_model_content_sha256": content, "images": len(x),
            "float16_simulated_max_abs_diff": float16_simulation(info, x,
                                                                 batch_size=batch_size)}


def _read_export(run: Path, export_dir: Path) -> dict[str, Any]:
    """The export's manifest, which must list at least one plain model file."""
    if not export_dir.is_dir():
        raise ParityError(
            f"{export_dir}: no export folder; expected the output of `edgeport export`; "
            f"fix: run `edgeport export {run}` first"
        )
    manifest = read_manifest(export_dir)
    if not [e for e in manifest["artifacts"] if e.get("family") != "app"]:
        raise ParityError(
            f"{export_dir / 'manifest.json'}: lists no artifacts; expected at least one model "
            f"file; fix: run `edgeport export {run} --force`"
        )
    return manifest


def _test_split(info: Any, data_dir: str | os.PathLike[str] | None,
                rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels, which ``reference.npz`` (``rows`` rows) must cover."""
    from edgeport.train.run_dir import load_split

    x, labels = load_split(info, "test", data_dir=data_dir)
    if len(x) != rows:
        raise ParityError(
            f"{info.path / 'reference.npz'}: {rows} reference rows for {len(x)} test "
            "images; expected one row per test image; fix: re-run `edgeport train`"
        )
    return x, np.asarray(labels, dtype=np.int64)


def read_parity(export_dir: str | os.PathLike[str]) -> ParityReport | None:
    """Read ``export_dir/parity.json``; ``None`` when it is missing or not a parity report."""
    path = Path(export_dir) / PARITY_NAME
    try:
        return ParityReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _resolve_thresholds(thresholds: Thresholds | str | os.PathLike[str] | None) -> Thresholds:
    if thresholds is None:
        return THRESHOLDS
    if isinstance(thresholds, (str, os.PathLike)):
        return load_thresholds(thresholds)
    return thresholds


def runtime_for(fmt: ArtifactFormat, runtime: str) -> str:
    """The runtime to load a file of ``fmt`` with, when the caller asked for ``runtime``.

    A TFLite runtime name applies to ``.tflite`` files and ``onnxruntime`` to
    ``.onnx``; the other format falls back to ``auto``, so one ``--runtime``
    option can cover a whole export folder.
    """
    if fmt is ArtifactFormat.ONNX and runtime in _TFLITE_RUNTIMES:
        return "auto"
    if fmt is ArtifactFormat.TFLITE and runtime == "onnxruntime":
        return "auto"
    return runtime


def _kind(export_dir: Path, entry: Mapping[str, Any]) -> tuple[str, ArtifactFormat, Precision]:
    name = str(entry.get("file", ""))
    try:
        return name, ArtifactFormat(entry.get("format")), Precision(entry.get("precision"))
    except ValueError:
        raise ParityError(
            f"{export_dir / 'manifest.json'}: entry {name!r} has format "
            f"{entry.get('format')!r} and precision {entry.get('precision')!r}; expected one of "
            f"{[f.value for f in ArtifactFormat]} and {[p.value for p in Precision]}; "
            "fix: re-run `edgeport export RUN --force`"
        ) from None


def _check_artifact(
    export_dir: Path,
    entry: Mapping[str, Any],
    *,
    x: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    ref_top: np.ndarray,
    reference_accuracy: float,
    table: Thresholds,
    runtime: str,
    batch_size: int,
    float16_simulated: float | None = None,
) -> ParityResult:
    from edgeport.mobile_demo.runtime import load_model

    name, fmt, precision = _kind(export_dir, entry)
    tol = table.get(precision, THRESHOLDS[precision])
    bound, source = calibrated_bound(
        tol.max_abs_diff, float16_simulated if precision is Precision.FLOAT16 else None)
    tol = replace(tol, max_abs_diff=bound)
    path = export_dir / name
    failures: list[str] = []

    def result(**figures: Any) -> ParityResult:
        base = {"runtime": None, "accuracy": None, "agreement": None, "max_abs_diff": None,
                "mean_abs_diff": None}
        return ParityResult(
            artifact=name, format=fmt, precision=precision,
            reference_accuracy=reference_accuracy, passed=not failures,
            failures=tuple(failures), bytes=size, images=len(x), max_abs_diff_bound=bound,
            bound_source=source, **{**base, **figures},
        )

    # 1. The file is the one the manifest describes.
    failures += artifact_file_problems(path, entry)
    if not path.is_file():
        size = int(entry.get("bytes") or 0)
        return result()
    size = path.stat().st_size
    # 2. It loads with the device runtime and answers with probabilities.
    try:
        model = load_model(path, runtime=runtime_for(fmt, runtime))
    except ModelFileError as e:
        if not failures:  # an untouched file that will not load is a broken export: bad input
            raise
        failures.append(f"cannot load: {e}")
        return result()
    meta_precision = model.metadata.get("precision")
    if meta_precision is not None and meta_precision != precision.value:
        failures.append(
            f"embedded metadata precision {meta_precision!r} != manifest {precision.value!r}"
        )
    names = [o.name for o in model.outputs]
    if "probabilities" not in names:
        failures.append(f"no 'probabilities' output (outputs: {', '.join(names)})")
        return result(runtime=model.runtime)
    probs = model.predict(x, batch_size=batch_size)["probabilities"]
    # 3. Shapes, then 4. values.
    if probs.shape != reference.shape:
        failures.append(
            f"probabilities shape {list(probs.shape)} != reference {list(reference.shape)}"
        )
        return result(runtime=model.runtime)
    top = probs.argmax(axis=1)
    accuracy = float(np.mean(top == labels))
    flips = int(np.count_nonzero(top != ref_top))
    agreement = 1.0 - flips / len(top)
    near = near_ties(reference, top, ref_top, bound)
    finite = np.isfinite(probs)
    max_diff = mean_diff = None
    if not finite.all():
        failures.append(f"probabilities: {int((~finite).sum())} non-finite values (NaN or inf)")
    else:
        diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
        max_diff, mean_diff = float(diff.max()), float(diff.mean())
    failures.extend(
        _gate(tol, accuracy=accuracy, reference_accuracy=reference_accuracy,
              agreement=agreement, flips=flips, n=len(top), max_diff=max_diff, near_ties=near)
    )
    return result(runtime=model.runtime, accuracy=accuracy, agreement=agreement,
                  max_abs_diff=max_diff, mean_abs_diff=mean_diff, near_ties=near)


def row_verdict(passed: bool, gpu_ready: bool | None) -> str:
    """A parity row's verdict word (``ParityResult.verdict``; also for ``parity.json`` rows)."""
    if passed and gpu_ready is False:
        return "not GPU-ready"
    return "PASS" if passed else "FAIL"


def near_ties(reference: np.ndarray, top: np.ndarray, ref_top: np.ndarray,
              bound: float | None) -> int:
    """Top-1 changes on images whose reference margin (top1 - top2) is at most 2 x ``bound``.

    A file whose every probability is within ``bound`` of the reference can change the
    top-1 class only where the reference's two best classes are that close: such a change
    is a tie the bound allows, not a disagreement (a user's model with many close calls,
    e.g. exact ties between two logits, was failed by float32 rounding). None without a
    bound (int8 and app rows are gated on decisions).
    """
    if bound is None:
        return 0
    flipped = top != ref_top
    if not flipped.any():
        return 0
    best2 = np.sort(reference[flipped].astype(np.float64), axis=1)[:, -2:]
    return int(np.count_nonzero(best2[:, 1] - best2[:, 0] <= 2.0 * bound))


def _gate(
    tol: Tolerance,
    *,
    accuracy: float,
    reference_accuracy: float,
    agreement: float,
    flips: int,
    n: int,
    max_diff: float | None,
    near_ties: int = 0,
) -> list[str]:
    """One line per figure outside its tolerance (``near_ties``: see :func:`near_ties`)."""
    failures = []
    # `not <=`: a NaN figure fails instead of slipping through (NaN > x is false).
    if max_diff is not None and tol.max_abs_diff is not None and not max_diff <= tol.max_abs_diff:
        failures.append(f"max |Δp| {max_diff:.1e} > {tol.max_abs_diff:.1e}")
    decided = agreement + near_ties / n if n else agreement
    if not decided >= tol.min_agreement - 1e-12:
        ties = f", {near_ties} of them near-ties" if near_ties else ""
        failures.append(
            f"agreement {agreement:.2%} < {tol.min_agreement:.2%} "
            f"({flips} of {n} top-1 classes differ from the reference{ties})"
        )
    drop = reference_accuracy - accuracy
    # 1e-12: accuracies are counts / N, so 0.9136 - 0.9086 must not read as above 0.005.
    if tol.max_accuracy_drop is not None and not drop <= tol.max_accuracy_drop + 1e-12:
        failures.append(
            f"accuracy drop {drop * 100:.2f} pts > {tol.max_accuracy_drop * 100:.2f} pts "
            f"({reference_accuracy:.2%} -> {accuracy:.2%})"
        )
    return failures
