"""Export a trained run to every mobile format: the dispatcher over the per-format modules.

Usage::

    from edgeport.export import export_model
    result = export_model("runs/mnist", formats="all", force=True)
    print(result.to_dict())

Reads ``RUN/saved_model``, ``RUN/metrics.json`` and ``RUN/labels.txt``, writes
the TFLite and ONNX files, ``labels.txt``, ``golden.npz`` and
``manifest.json`` into a temporary folder inside RUN, checks them, and only
then moves the folder to ``RUN/export`` in one rename (docs/contracts.md).
``parity.json`` is added later by the parity gate.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.fileio import atomic_dir, atomic_write_bytes, atomic_write_text, check_replaceable
from edgeport.train.data import balanced_sample
from edgeport.train.run_dir import RunDirError, RunInfo, load_run, probe_writable

from .app import claims_webgpu
from .errors import ExportError, ExportExistsError
from .formats import ArtifactFormat, ArtifactKind, Precision, parse_formats
from .golden import (
    DEFAULT_GOLDEN_SAMPLES,
    GOLDEN_NAME,
    make_golden,
    structured_probes,
    write_golden,
)
from .manifest import (
    artifact_entry,
    build_manifest,
    gpu_readiness,
    support_files_entry,
    verify_manifest,
    write_manifest,
)
from .metadata import build_metadata
from .model_card import write_model_card
from .onnx import DEFAULT_OPSET
from .serving import Serving

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "ArtifactInfo",
    "ExportResult",
    "SplitLoader",
    "balanced_sample",
    "export_model",
]

DEFAULT_CALIBRATION_SAMPLES = 500
EXPORT_DIR_NAME = "export"

SplitLoader = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""``loader("train" | "test") -> (x float32 [N, ...] in [0, 1], model layout; labels [N])``."""


@dataclass(frozen=True)
class ArtifactInfo:
    """One written model file.

    Attributes:
        file: its name inside ``RUN/export``.
        format: ``tflite`` or ``onnx``.
        precision: its numeric precision.
        bytes: its size.
        sha256: the hex SHA-256 of its bytes.
        seconds: time spent converting, checking and writing it.
    """

    file: str
    format: ArtifactFormat
    precision: Precision
    bytes: int
    sha256: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their string values)."""
        return {
            "file": self.file,
            "format": self.format.value,
            "precision": self.precision.value,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        export_dir: the final ``RUN/export`` folder.
        artifacts: the model files, in the order of the artifact table.
        seconds: wall time of the whole export.
        not_produced: imported models only: ``{"file", "format", "precision",
            "reason"}`` for each requested format the model cannot be converted to
            (also ``manifest.json["not_produced"]``).
    """

    export_dir: Path
    artifacts: tuple[ArtifactInfo, ...]
    seconds: float
    not_produced: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "export_dir": str(self.export_dir),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "seconds": round(self.seconds, 3),
            "not_produced": [dict(n) for n in self.not_produced],
        }


def export_model(
    run_dir: str | os.PathLike[str],
    *,
    formats: str | Iterable[str | ArtifactKind] = "all",
    opset: int = DEFAULT_OPSET,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    golden_samples: int = DEFAULT_GOLDEN_SAMPLES,
    force: bool = False,
    seed: int | None = None,
    progress: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    load_split: SplitLoader | None = None,
    app_models: bool | None = None,
    repair: bool = False,
) -> ExportResult:
    """Export ``RUN/saved_model`` to ``RUN/export`` in the chosen formats.

    Args:
        run_dir: the run directory written by ``edgeport train``.
        formats: ``"all"`` or tokens from ``float32, float16, dynamic_int8, int8, onnx``.
        opset: the ONNX opset.
        calibration_samples: class-balanced training images that calibrate
            the ``int8`` model.
        golden_samples: class-balanced test images stored in ``golden.npz``.
        force: replace an existing ``RUN/export``.
        repair: when ``model_int8.tflite`` misses its parity thresholds on the test set,
            keep the fewest layers float that make it pass (:func:`export.explain.repair_int8`);
            the manifest entry records it under ``"repair"``.
        seed: picks the calibration and golden images; ``None`` uses the
            run's ``metrics.json["seed"]``.
        progress: show a progress bar on stderr.
        data_dir: where the dataset lives (passed to ``train.run_dir.load_split``).
        load_split: ``loader(split) -> (x, labels)`` giving float32 images in
            [0, 1] in the model input layout; default ``train.run_dir.load_split``.
        app_models: also write ``model_app_float32.tflite`` and ``model_app_int8.tflite``
            (RGB picture in, preprocessing in the graph; :mod:`export.app`) and, with
            ONNX, ``model.ort`` (:mod:`export.ort`); ``None``: when ``formats="all"``.

    Returns:
        What was written.

    Raises:
        RunDirError: the run directory is incomplete or inconsistent.
        FormatError: ``formats`` names an unknown format.
        ExportExistsError: ``RUN/export`` exists and ``force`` is false.
        ExportError: a conversion failed or produced a file that breaks the contract.
    """
    from edgeport.progress import progress_bar as tqdm

    from .serving import load_serving

    started = time.perf_counter()
    kinds = parse_formats(formats)
    if app_models is None:
        app_models = isinstance(formats, str) and formats.strip().lower() == "all"
    run = load_run(run_dir, need_reference=False)
    export_dir = run.path / EXPORT_DIR_NAME
    needs_calibration = app_models or any(k.precision is Precision.INT8 for k in kinds)
    _check_request(run, export_dir, force=force, needs_calibration=needs_calibration,
                   calibration_samples=calibration_samples, golden_samples=golden_samples)
    seed = run.seed if seed is None else int(seed)
    loader = load_split or _default_loader(run.path, data_dir,
                                           calibration_samples=calibration_samples, seed=seed,
                                           calibration_split=_calibration_split(run))

    serving = load_serving(run.saved_model)
    _check_input(run, serving.input_shape, serving.num_classes)
    images = _load_images(loader, run, serving.input_shape, needs_calibration=needs_calibration,
                          calibration_samples=calibration_samples,
                          golden_samples=golden_samples, seed=seed)
    job = _ExportJob(run=run, serving=serving, images=images, opset=opset, seed=seed,
                     loader=loader if repair else None)
    written = _Written()
    # Every file it writes: the table's, model.ort and the two app models, then golden+manifest.
    app_files = (2 + any(k.format is ArtifactFormat.ONNX for k in kinds)
                 if app_models else 0)
    bar = tqdm(
        total=len(kinds) + app_files + 1,
        desc="export",
        unit="file",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    try:
        with atomic_dir(export_dir, overwrite=force, marker="export") as tmp:
            kinds = _write_artifacts(tmp, job, kinds, written, bar)
            app_golden = _write_app_files(tmp, job, written, bar) if app_models else {}
            bar.set_description(f"export {GOLDEN_NAME}, manifest.json")
            _write_support_files(tmp, job, kinds, written, app_golden)
            bar.update(1)
    except FileExistsError as e:  # another export landed while this one ran
        if isinstance(e, ExportExistsError):
            raise
        raise _exists(export_dir) from None
    finally:
        bar.close()
    return ExportResult(
        export_dir=export_dir, artifacts=tuple(written.infos),
        seconds=time.perf_counter() - started, not_produced=tuple(written.not_produced),
    )


@dataclass(frozen=True)
class _Images:
    """The images an export needs, in the model input layout, pixels in [0, 1]."""

    calibration: np.ndarray | None  # None when no int8 model is made
    golden_x: np.ndarray
    golden_y: np.ndarray


@dataclass(frozen=True)
class _ExportJob:
    """What every step of one export reads: the run, its serving model and the images."""

    run: RunInfo
    serving: Serving
    images: _Images
    opset: int
    seed: int
    loader: SplitLoader | None = None  # set with --repair: the test split re-gates int8


@dataclass(frozen=True)
class _Written:
    """What an export has written so far; the steps append to these lists."""

    infos: list[ArtifactInfo] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # manifest entries, read back
    not_produced: list[dict[str, str]] = field(default_factory=list)  # imported models only


def _check_request(
    run: RunInfo, export_dir: Path, *, force: bool, needs_calibration: bool,
    calibration_samples: int, golden_samples: int,
) -> None:
    """Refuse an export that cannot land: existing folder, unwritable run, bad sample counts."""
    if (export_dir.exists() or export_dir.is_symlink()) and not force:
        raise _exists(export_dir)
    if force:  # only a folder edgeport exported is ever replaced
        check_replaceable(export_dir, kind="export", flag=f"--force {EXPORT_DIR_NAME}")
    probe_writable(run.path, flag="RUN")
    if needs_calibration and calibration_samples <= 0:
        raise ExportError(
            f"calibration_samples={calibration_samples}, expected > 0 for the int8 model; "
            "fix: pass --calibration-samples 500 or leave int8 out of --formats"
        )
    if golden_samples <= 0:
        raise ExportError(f"golden_samples={golden_samples}, expected > 0; fix: pass e.g. 32")


def _load_images(
    loader: SplitLoader, run: RunInfo, input_shape: tuple[int, ...], *, needs_calibration: bool,
    calibration_samples: int, golden_samples: int, seed: int,
) -> _Images:
    """The class-balanced calibration (training) and golden (test) samples."""
    calibration = None
    if needs_calibration:
        x_train, y_train = _load(loader, "train", input_shape, len(run.labels))
        calibration = x_train[balanced_sample(y_train, calibration_samples, seed=seed)]
        del x_train, y_train
    x_test, y_test = _load(loader, "test", input_shape, len(run.labels))
    golden_idx = balanced_sample(y_test, golden_samples, seed=seed)
    return _Images(calibration=calibration, golden_x=x_test[golden_idx],
                   golden_y=y_test[golden_idx])


def _write_artifacts(
    tmp: Path, job: _ExportJob, kinds: list[ArtifactKind], written: _Written, bar: Any
) -> list[ArtifactKind]:
    """Convert and write each file of the artifact table; return the kinds that were made."""
    for kind in kinds:
        bar.set_description(f"export {kind.file}")
        t0 = time.perf_counter()
        try:
            data = _convert(job, kind)
        except ExportError as e:
            # A trained run converts to every format (a failure is a bug); an
            # imported model may hold an op a format lacks (e.g. no int8 kernel):
            # the other files are still made and the reason is recorded.
            if "import" not in job.run.metrics:
                raise
            written.not_produced.append({"file": kind.file, "format": kind.format.value,
                                         "precision": kind.precision.value,
                                         "reason": _why_not(kind, e)})
            bar.update(1)
            continue
        repaired = None
        if job.loader is not None and kind.precision is Precision.INT8:
            bar.set_description(f"export {kind.file} (repair)")
            data, repaired = _repair(job, kind, data)
        atomic_write_bytes(tmp / kind.file, data)
        entry = artifact_entry(tmp / kind.file, kind)
        if repaired is not None:
            entry["repair"] = repaired
        written.infos.append(
            ArtifactInfo(
                file=kind.file,
                format=kind.format,
                precision=kind.precision,
                bytes=entry["bytes"],
                sha256=entry["sha256"],
                seconds=time.perf_counter() - t0,
            )
        )
        written.entries.append(entry)
        bar.update(1)
    if not written.infos:
        raise ExportError(
            "no format could be produced: "
            + "; ".join(f"{n['file']}: {n['reason']}" for n in written.not_produced)
        )
    made = {a.file for a in written.infos}
    return [k for k in kinds if k.file in made]


def _convert(job: _ExportJob, kind: ArtifactKind) -> bytes:
    """One file of the artifact table, as bytes, its metadata embedded."""
    from .onnx import convert_onnx
    from .tflite import convert_tflite

    run = job.run
    doc = build_metadata(
        labels=run.labels,
        input=run.input,
        precision=kind.precision,
        dataset=run.dataset,
        model=run.model,
    )
    if kind.format is ArtifactFormat.TFLITE:
        return convert_tflite(
            job.serving,
            precision=kind.precision,
            metadata=doc,
            calibration_images=job.images.calibration,
        )
    return convert_onnx(job.serving, metadata=doc, opset=job.opset)


def _repair(job: _ExportJob, kind: ArtifactKind, data: bytes) -> tuple[bytes, dict | None]:
    """``--repair``: the int8 file, re-quantized with layers kept float if it misses the gate.

    Returns the bytes to write and the manifest's ``"repair"`` record (``None`` when the
    file already passes). A failed repair keeps the original file and says why on stderr.
    """
    from .explain import Int8Requantizer, rank_layers, repair_int8, thresholds_gate
    from .tflite import check_tflite, integer_only_problems

    assert job.loader is not None
    run = load_run(job.run.path)  # with reference.npz: the gate's reference
    x, y = _load(job.loader, "test", job.serving.input_shape, len(run.labels))
    gate = thresholds_gate(x, y, run.reference_probabilities, kind.precision)
    if not gate(data):
        return data, None
    doc = build_metadata(labels=run.labels, input=run.input, precision=kind.precision,
                         dataset=run.dataset, model=run.model)
    requantizer = Int8Requantizer(job.serving, calibration_images=job.images.calibration,
                                  metadata=doc)
    pick = balanced_sample(y, min(500, len(y)), seed=job.seed)
    ranking = [name for name, _ in rank_layers(requantizer, x[pick], y[pick])]
    result = repair_int8(requantizer, ranking, gate=gate, size_before=len(data))
    if not result.passed or result.model is None:
        print(f"{kind.file}: {result.reason}", file=sys.stderr)
        return data, result.to_manifest()
    # The kept layers run in float between the uint8 input and outputs: the I/O contract
    # holds, the integer-only check does not apply to them (docs/contracts.md, repair).
    allowed = set(integer_only_problems(result.model))
    problems = [p for p in check_tflite(result.model, precision=kind.precision,
                                        input_shape=job.serving.input_shape)
                if p not in allowed]
    if problems:
        raise ExportError(f"repaired {kind.file} breaks the export contract: "
                          f"{'; '.join(problems)}")
    print(f"{kind.file}: repaired: {', '.join(result.kept_float)} float "
          f"({result.size_before / 1000:.1f} -> {result.size_after / 1000:.1f} KB)",
          file=sys.stderr)
    return result.model, result.to_manifest()


def _write_app_files(
    tmp: Path, job: _ExportJob, written: _Written, bar: Any
) -> dict[str, np.ndarray]:
    """``model.ort`` (with ONNX) and the two app models; return the app models' golden arrays."""
    from .app import write_app_models
    from .ort import write_ort

    onnx_entry = next((e for e in written.entries if e["file"] == "model.onnx"), None)
    if onnx_entry is not None:  # ONNX Runtime Mobile: model.ort + ops
        bar.set_description("export model.ort")
        t0 = time.perf_counter()
        written.entries.append(write_ort(tmp, onnx_entry))
        written.infos.append(_app_info(written.entries[-1], 2 * (time.perf_counter() - t0)))
        bar.update(1)
    app_golden: dict[str, np.ndarray] = {}
    bar.set_description("export app models")
    t0 = time.perf_counter()
    try:
        app_entries, app_golden = write_app_models(
            tmp, job.serving, job.run, golden_inputs=job.images.golden_x,
            calibration=job.images.calibration,
        )
    except ExportError as e:  # as above: only an imported model may lack them
        if "import" not in job.run.metrics:
            raise
        app_entries = []
        written.not_produced.append({"file": "model_app_*.tflite", "format": "tflite",
                                     "precision": "float32, int8", "reason": str(e)})
    written.entries.extend(app_entries)
    written.infos.extend(_app_info(e, time.perf_counter() - t0) for e in app_entries)
    bar.update(2)
    return app_golden


def _write_support_files(
    tmp: Path, job: _ExportJob, kinds: list[ArtifactKind], written: _Written,
    app_golden: dict[str, np.ndarray],
) -> None:
    """``labels.txt``, ``golden.npz`` and ``manifest.json``, then the manifest self-check."""
    run = job.run
    atomic_write_text(tmp / "labels.txt", "".join(f"{label}\n" for label in run.labels))
    golden = make_golden(tmp, kinds, inputs=job.images.golden_x, labels=job.images.golden_y,
                         probes=structured_probes(job.serving.input_shape, seed=job.seed))
    write_golden(tmp / GOLDEN_NAME, {**golden, **app_golden})
    for entry in written.entries:  # what a phone's GPU / NPU path can run, as measured here
        entry["gpu"] = gpu_readiness(tmp / entry["file"], entry,
                                     claims_webgpu=claims_webgpu(entry["file"], run.input))
    manifest = build_manifest(
        run_dir=run.path, labels=run.labels, input=run.input, artifacts=written.entries
    )
    write_model_card(tmp, manifest, run.metrics)  # listed in manifest["files"] just below
    manifest.update(support_files_entry(tmp))
    if written.not_produced:
        manifest["not_produced"] = written.not_produced
    write_manifest(tmp, manifest)
    problems = verify_manifest(tmp)
    if problems:
        raise ExportError(
            f"the export failed its own manifest check: {'; '.join(problems)}"
        )


def _app_info(entry: dict[str, Any], seconds: float) -> ArtifactInfo:
    """The ArtifactInfo of a file written beside the artifact table (app models, model.ort)."""
    return ArtifactInfo(
        file=entry["file"],
        format=ArtifactFormat(entry["format"]),
        precision=Precision(entry["precision"]),
        bytes=entry["bytes"],
        sha256=entry["sha256"],
        seconds=seconds / 2,  # both app models were built together
    )


def _why_not(kind: ArtifactKind, error: ExportError) -> str:
    """The conversion error, led by the ops that have no int8 kernel when that is the cause."""
    import re

    reason = str(error)
    ops = sorted(set(re.findall(r"op \d+ (\w+) has FLOAT", reason)) - {"QUANTIZE", "DEQUANTIZE"})
    if kind.precision is Precision.INT8 and ops:
        return (f"no int8 kernel for {', '.join(ops)} (the converter left them in float32, "
                f"so the file would not be integer-only); {reason}")
    return reason


def _exists(export_dir: Path) -> ExportExistsError:
    return ExportExistsError(
        f"{export_dir} already exists; expected no previous export; fix: pass --force "
        "(force=True) to replace it"
    )


def _calibration_split(run: RunInfo) -> str:
    """Where int8 calibration images come from: ``train``, unless the run records a fallback.

    An imported model's dataset may have no training split (``edgeport import --split
    0,0,1``); ``metrics.json["calibration_split"]`` then names ``validation`` or ``test``.
    """
    split = run.metrics.get("calibration_split", "train")
    if split not in ("train", "validation", "test"):
        raise RunDirError(f"metrics.json calibration_split {split!r}; expected train, "
                          "validation or test; fix: re-run `edgeport import`")
    return split


def _default_loader(
    run_dir: Path, data_dir: str | os.PathLike[str] | None, *, calibration_samples: int, seed: int,
    calibration_split: str = "train",
) -> SplitLoader:
    from edgeport.train.run_dir import load_split

    def loader(split: str) -> tuple[np.ndarray, np.ndarray]:
        # Of the training split only the calibration sample is decoded: a streamed folder
        # dataset need not fit in memory. The test split is read whole (golden vectors).
        sample = calibration_samples if split == "train" else None
        if split == "train" and calibration_split != "train":
            split, sample = calibration_split, None  # small splits: sampled by the caller
        return load_split(run_dir, split, data_dir=data_dir, sample=sample, sample_seed=seed)

    return loader


def _load(
    loader: SplitLoader, split: str, input_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    x, labels = loader(split)
    x = np.asarray(x)
    labels = np.asarray(labels).astype(np.int64)
    expected = f"float32 [N, {', '.join(map(str, input_shape))}] in [0, 1]"
    fix = "load the split in the model input layout, pixels divided by 255"
    if x.dtype != np.float32 or x.shape[1:] != tuple(input_shape) or len(x) == 0:
        raise RunDirError(
            f"{split} split: images {x.dtype} {list(x.shape)}, expected {expected}; {fix}"
        )
    if len(labels) != len(x):
        raise RunDirError(f"{split} split: {len(x)} images but {len(labels)} labels; {fix}")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise RunDirError(
            f"{split} split: pixels span [{lo:g}, {hi:g}], expected {expected}; {fix}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise RunDirError(
            f"{split} split: labels span [{labels.min()}, {labels.max()}], expected "
            f"[0, {num_classes - 1}]; fix: use the dataset the run was trained on"
        )
    return x, labels


def _check_input(run: RunInfo, input_shape: tuple[int, ...], num_classes: int) -> None:
    spec = run.input
    h, w, c = int(spec["height"]), int(spec["width"]), int(spec["channels"])
    layout = spec["layout"]
    expected = {"flat": (h * w * c,), "nhwc": (h, w, c)}.get(layout)
    fix = "re-run `edgeport train` so metrics.json and the SavedModel agree"
    if expected is None:
        raise RunDirError(f"metrics.json input layout {layout!r}, expected 'flat' or 'nhwc'; {fix}")
    if tuple(input_shape) != expected:
        raise RunDirError(
            f"SavedModel input shape [None, {', '.join(map(str, input_shape))}] does not match "
            f"metrics.json input {layout} {h}x{w}x{c} (expected [None, "
            f"{', '.join(map(str, expected))}]); {fix}"
        )
    if num_classes != len(run.labels):
        raise RunDirError(
            f"labels.txt has {len(run.labels)} classes but the model outputs {num_classes}; {fix}"
        )
