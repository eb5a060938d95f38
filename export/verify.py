"""Verify an export folder on its own: hashes against the manifest, golden vectors replayed.

Usage::

    from edgeport.export.verify import verify_export
    report = verify_export("runs/mnist/export")   # also works on a copy on a device
    print(report.passed, report.failures)

Needs no dataset and no TensorFlow, only the folder and a runtime: it is the
check to run after copying ``RUN/export`` anywhere. For each artifact in
``manifest.json``:

1. the file exists and its size and SHA-256 match the manifest (before anything is
   loaded: a file that differs is never parsed or run);
2. it loads with :func:`mobile_demo.runtime.load_model` and its embedded
   metadata names the manifest's precision;
3. on ``golden.npz["inputs"]`` it reproduces ``golden.npz["<stem>__probabilities"]``
   (recorded by the exporter's own interpreters) within the precision's
   ``golden_atol`` from :data:`export.thresholds.THRESHOLDS`.

When the run directory the manifest names is still there, its SavedModel
must also hash to ``saved_model_sha256`` (else the export is stale). Every
failure is collected; the report fails on any.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError, ModelFileError
from edgeport.fileio import read_npz
from edgeport.train.run_dir import saved_model_content_sha256

from .formats import ArtifactFormat, Precision
from .golden import GOLDEN_MAX_BYTES, GOLDEN_NAME
from .integrity import (
    GUARANTEE_SIGNED,
    GUARANTEE_UNSIGNED,
    SIGNATURE_NAME,
    folder_problems,
    parity_problems,
)
from .manifest import artifact_file_problems, read_manifest, saved_model_sha256
from .parity import runtime_for
from .thresholds import THRESHOLDS, Thresholds, load_thresholds

__all__ = ["VerifyError", "VerifyReport", "VerifyResult", "verify_export"]


class VerifyError(EdgeportError, ValueError):
    """The export folder or its ``golden.npz`` is missing or unreadable."""


@dataclass(frozen=True)
class VerifyResult:
    """One artifact's verification.

    Attributes:
        artifact: the file name.
        format: its container format.
        precision: its precision (selects ``golden_atol``).
        runtime: the runtime that ran it, ``None`` when it did not load.
        bytes: the file size (0 when missing).
        sha256_ok: size and SHA-256 match the manifest.
        max_abs_diff: ``max |p - p_golden|`` over the golden vectors, ``None`` if not run.
        atol: the allowed maximum.
        passed: no failure.
        failures: one line per failed check.
    """

    artifact: str
    format: ArtifactFormat
    precision: Precision
    runtime: str | None
    bytes: int
    sha256_ok: bool
    max_abs_diff: float | None
    atol: float
    passed: bool
    failures: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "artifact": self.artifact,
            "format": self.format.value,
            "precision": self.precision.value,
            "runtime": self.runtime,
            "bytes": self.bytes,
            "sha256_ok": self.sha256_ok,
            "max_abs_diff": self.max_abs_diff,
            "atol": self.atol,
            "passed": self.passed,
            "failures": list(self.failures),
        }


@dataclass(frozen=True)
class VerifyReport:
    """The verdict over an export folder.

    Attributes:
        passed: every artifact passed, and no folder-level problem.
        export_dir: the folder checked.
        golden_count: how many golden vectors were replayed.
        results: one :class:`VerifyResult` per manifest entry.
        problems: folder-level failures (e.g. the SavedModel changed since the export).
    """

    passed: bool
    export_dir: Path
    golden_count: int
    results: tuple[VerifyResult, ...]
    problems: tuple[str, ...] = ()
    guarantee: str = ""

    @property
    def failures(self) -> list[str]:
        """Every failure as one line: ``"<artifact>: <reason>"``, then the folder's problems."""
        return [f"{r.artifact}: {f}" for r in self.results for f in r.failures] + list(
            self.problems
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "passed": self.passed,
            "export_dir": str(self.export_dir),
            "golden_count": self.golden_count,
            "results": [r.to_dict() for r in self.results],
            "problems": list(self.problems),
            "guarantee": self.guarantee,
        }


def verify_export(
    export_dir: str | os.PathLike[str],
    *,
    runtime: str = "auto",
    thresholds: Thresholds | str | os.PathLike[str] | None = None,
    public_key: str | os.PathLike[str] | None = None,
    certificate_chain: tuple[str | os.PathLike[str], ...] | None = None,
) -> VerifyReport:
    """Re-hash every artifact and replay the golden vectors.

    Args:
        export_dir: the export folder (``RUN/export``, or a copy of it).
        runtime: ``auto`` or a runtime name, applied as in
            :func:`export.parity.check_parity` (TFLite runtimes to ``.tflite``,
            ``onnxruntime`` to ``.onnx``).
        thresholds: a tolerance table or the path of an override file; ``None``
            uses :data:`~export.thresholds.THRESHOLDS`.
        public_key: check ``model.sig`` against this public key (PEM).
        certificate_chain: check ``model.sig`` against these CA certificates (PEM)
            instead (the certificate form of ``edgeport sign``).

    Returns:
        The verdict; ``passed`` is False on any mismatch, with the reasons.

    Raises:
        VerifyError: the folder or ``golden.npz`` is missing or unreadable.
        ManifestError: ``manifest.json`` is missing or not an edgeport manifest.
        RuntimeNotFoundError: the runtime for a file is not installed.
        ThresholdsError: ``thresholds`` is a path to a bad file.
    """
    export_dir = Path(export_dir)
    _check_export_dir(export_dir)
    table = (load_thresholds(thresholds) if isinstance(thresholds, (str, os.PathLike))
             else thresholds or THRESHOLDS)
    manifest = read_manifest(export_dir)
    golden = _read_golden(export_dir / GOLDEN_NAME, manifest)
    inputs = golden["inputs"] if golden is not None else ()
    # Before the replay, so an unusable --key/--chain or model.sig stops at once (exit 2).
    signature_problems: list[str] = []
    guarantee = _check_signature(export_dir, signature_problems, public_key=public_key,
                                 certificate_chain=certificate_chain)
    results = tuple(
        _verify_artifact(export_dir, entry, golden, table=table, runtime=runtime,
                         manifest=manifest)
        for entry in manifest["artifacts"]
    )
    problems = folder_problems(export_dir, manifest) + parity_problems(export_dir, manifest,
                                                                       table)
    problems += signature_problems
    if not results:
        problems.append("manifest.json lists no artifacts; expected at least one model file")
    problems += _saved_model_problems(manifest)
    return VerifyReport(
        passed=all(r.passed for r in results) and not problems,
        export_dir=export_dir,
        golden_count=len(inputs),
        results=results,
        problems=tuple(problems),
        guarantee=guarantee,
    )


def _check_export_dir(export_dir: Path) -> None:
    """Refuse a path that is not an export folder (a run directory gets its own fix)."""
    if not export_dir.is_dir():
        raise VerifyError(
            f"{export_dir}: not a folder; expected an export folder (RUN/export) from "
            "`edgeport export`; fix: check the path"
        )
    if not (export_dir / "manifest.json").exists() and (export_dir / "export").is_dir():
        raise VerifyError(
            f"{export_dir} is a run directory; expected its export folder; "
            f"fix: `edgeport verify {export_dir / 'export'}`"
        )


def _check_signature(
    export_dir: Path, problems: list[str], *, public_key: str | os.PathLike[str] | None,
    certificate_chain: tuple[str | os.PathLike[str], ...] | None,
) -> str:
    """Check ``model.sig`` when a key or chain is given (its problems go to ``problems``);
    return the guarantee sentence of the report."""
    if public_key is not None or certificate_chain is not None:
        from .signing import verify_signature

        problems += verify_signature(export_dir, public_key=public_key,
                                     certificate_chain=certificate_chain)
        return GUARANTEE_SIGNED if not problems else "signature check failed"
    if (export_dir / SIGNATURE_NAME).exists():
        return (f"{SIGNATURE_NAME} present but not checked: " + GUARANTEE_UNSIGNED
                .replace("sign with `edgeport sign RUN/export --key KEY`",
                         "pass --key PUBLIC_KEY (or --chain CA_CERT) to check the "
                         "signature"))
    return GUARANTEE_UNSIGNED


def _saved_model_problems(manifest: Mapping[str, Any]) -> list[str]:
    """A problem when the run's SavedModel, if still there, changed since the export."""
    run = manifest.get("run")
    saved_model = Path(str(run)) / "saved_model" if run else None
    if saved_model is not None and saved_model.is_dir():
        if _saved_model_changed(saved_model, manifest):
            return [
                f"{saved_model}: changed since the export (saved_model_sha256 differs); "
                "fix: re-run `edgeport export RUN --force`"
            ]
    return []


def _saved_model_changed(saved_model: Path, manifest: Mapping[str, Any]) -> bool:
    content = manifest.get("saved_model_content_sha256")
    if content is not None:  # stable across identical retrainings
        return saved_model_content_sha256(saved_model) != content
    return saved_model_sha256(saved_model) != manifest.get("saved_model_sha256")


def _read_golden(path: Path, manifest: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The golden arrays; ``None`` when the file differs from its manifest hash (not loaded:
    :func:`folder_problems` reports the difference, and no vector is replayed)."""
    fix = "re-run `edgeport export RUN --force`"
    if not path.is_file():
        raise VerifyError(f"{path}: not found; expected the export's golden vectors; {fix}")
    files = manifest.get("files")
    entry = files.get(GOLDEN_NAME) if isinstance(files, Mapping) else None
    if isinstance(entry, Mapping) and artifact_file_problems(path, entry):
        return None  # hash first: a changed golden.npz could declare gigabytes of arrays
    arrays = read_npz(path, max_bytes=GOLDEN_MAX_BYTES, error=VerifyError, fix=f"fix: {fix}")
    inputs = arrays.get("inputs")
    if inputs is None or inputs.ndim < 2 or len(inputs) == 0:
        raise VerifyError(
            f"{path}: no 'inputs' array [G, ...] (keys: {', '.join(sorted(arrays))}); "
            f"expected golden inputs and '<stem>__probabilities' per artifact; {fix}"
        )
    for key in ("inputs", "probes"):
        a = arrays.get(key)
        if a is None:
            continue
        if a.dtype != np.float32 or a.ndim < 2 or not np.isfinite(a).all() or (
                a.size and (a.min() < 0 or a.max() > 1)):
            raise VerifyError(
                f"{path}: {key!r} is {a.dtype} {list(a.shape)}; expected finite float32 "
                f"[G, ...] pixel values in [0, 1]; {fix}")
    for key, a in arrays.items():
        if key.endswith("probabilities") and (a.ndim != 2 or a.dtype.kind != "f"):
            raise VerifyError(f"{path}: {key!r} is {a.dtype} {list(a.shape)}; expected "
                              f"float [G, K]; {fix}")
    return arrays


_NOT_REPLAYED = f"not replayed: {GOLDEN_NAME} differs from manifest.json, so it was not loaded"


def _verify_artifact(
    export_dir: Path,
    entry: Mapping[str, Any],
    golden: Mapping[str, np.ndarray] | None,
    *,
    table: Thresholds,
    runtime: str,
    manifest: Mapping[str, Any] | None = None,
) -> VerifyResult:
    from edgeport.mobile_demo.runtime import load_model

    if entry.get("family") == "app":  # a picture-in model: replays golden["app_pictures"]
        from .app_checks import verify_app_artifact

        if golden is None:
            result = verify_app_artifact(export_dir, entry, {})
            return result if not result.sha256_ok else replace(
                result, passed=False, failures=(_NOT_REPLAYED,))
        return verify_app_artifact(export_dir, entry, golden)
    name = str(entry.get("file", ""))
    fmt, precision = _entry_kind(export_dir, entry, name)
    atol = table.get(precision, THRESHOLDS[precision]).golden_atol
    path = export_dir / name
    failures: list[str] = []
    size = path.stat().st_size if path.is_file() else 0
    figures: dict[str, Any] = {"runtime": None, "max_abs_diff": None, "sha256_ok": False}

    def result() -> VerifyResult:
        return VerifyResult(
            artifact=name, format=fmt, precision=precision, bytes=size, atol=atol,
            passed=not failures, failures=tuple(failures), **figures,
        )

    failures += artifact_file_problems(path, entry)
    figures["sha256_ok"] = not failures
    if failures:  # hash first: a file that is not the exported one is never parsed or run
        return result()
    if golden is None:
        failures.append(_NOT_REPLAYED)
        return result()
    try:
        model = load_model(path, runtime=runtime_for(fmt, runtime))
    except ModelFileError as e:
        failures.append(f"cannot load: {e}")
        return result()
    figures["runtime"] = model.runtime
    plain = entry.get("family", "plain") == "plain"
    failures += _metadata_failures(model, precision, manifest if plain else None)
    stem = name.rsplit('.', 1)[0]
    if plain:
        failures += _probe_failures(model, golden, stem, atol=atol)
    golden_failures, figures["max_abs_diff"] = _golden_failures(model, golden, stem, atol=atol)
    failures += golden_failures
    return result()


def _entry_kind(
    export_dir: Path, entry: Mapping[str, Any], name: str
) -> tuple[ArtifactFormat, Precision]:
    """The manifest entry's format and precision, or a VerifyError naming the allowed ones."""
    try:
        return ArtifactFormat(entry.get("format")), Precision(entry.get("precision"))
    except ValueError:
        raise VerifyError(
            f"{export_dir / 'manifest.json'}: entry {name!r} has format {entry.get('format')!r} "
            f"and precision {entry.get('precision')!r}; expected one of "
            f"{[f.value for f in ArtifactFormat]} and {[p.value for p in Precision]}; "
            "fix: re-run `edgeport export RUN --force`"
        ) from None


def _metadata_failures(
    model: Any, precision: Precision, manifest: Mapping[str, Any] | None
) -> list[str]:
    """The embedded metadata against the manifest entry (precision) and, for a plain
    file, against ``manifest`` (labels, input)."""
    failures = []
    meta_precision = model.metadata.get("precision")
    if meta_precision != precision.value:
        failures.append(
            f"embedded metadata precision {meta_precision!r} != manifest {precision.value!r}"
        )
    if manifest is not None:
        # The model files are hashed: their embedded labels and input description are the
        # truth an edited manifest.json (labels, normalization) is measured against.
        for field in ("labels", "input"):
            if field in model.metadata and model.metadata[field] != manifest.get(field):
                failures.append(f"manifest.json {field!r} differs from the model's embedded "
                                "metadata (manifest.json was edited)")
    return failures


def _probe_failures(
    model: Any, golden: Mapping[str, np.ndarray], stem: str, *, atol: float
) -> list[str]:
    """Replay the structured probes, or say that an older export has none."""
    if "probes" in golden:
        return _replay(model, golden["probes"], golden.get(f"{stem}__probe_probabilities"),
                       atol=atol, what="probe")
    return [f"{GOLDEN_NAME} has no structured probes (an older export): weights "
            "on pixels the golden images never light are unchecked; fix: re-run "
            "`edgeport export RUN --force`"]


def _golden_failures(
    model: Any, golden: Mapping[str, np.ndarray], stem: str, *, atol: float
) -> tuple[list[str], float | None]:
    """Replay the golden images: the failures and the largest |Δp| (``None`` if not compared)."""
    key = f"{stem}__probabilities"
    expected = golden.get(key)
    if expected is None:
        return [f"{GOLDEN_NAME} has no {key!r}; expected one array per artifact"], None
    if "probabilities" not in [o.name for o in model.outputs]:
        return [
            f"no 'probabilities' output (outputs: {', '.join(o.name for o in model.outputs)})"
        ], None
    probs = model.predict(golden["inputs"])["probabilities"]
    if probs.shape != expected.shape:
        return [f"probabilities shape {list(probs.shape)} != golden "
                f"{list(expected.shape)}"], None
    if not (np.isfinite(probs).all() and np.isfinite(expected).all()):
        return ["non-finite values (NaN or inf) in the output or the golden array"], None
    diff = float(np.max(np.abs(probs.astype(np.float64) - expected.astype(np.float64))))
    if diff > atol:
        worst = int(np.argmax(np.abs(probs - expected).max(axis=1)))
        return [f"golden max |Δp| {diff:.1e} > {atol:.1e} (worst: golden vector {worst})"], diff
    return [], diff


def _replay(model, inputs: np.ndarray, expected: np.ndarray | None, *, atol: float,
            what: str) -> list[str]:
    """Failures of one model on recorded inputs against its recorded outputs."""
    if expected is None:
        return [f"{GOLDEN_NAME} has no {what} outputs for this file; expected one array per "
                "artifact"]
    try:
        probs = model.predict(inputs)["probabilities"]
    except (EdgeportError, ValueError) as e:
        return [f"cannot run the {what} inputs: {e}"]
    if probs.shape != expected.shape:
        return [f"{what} probabilities shape {list(probs.shape)} != golden "
                f"{list(expected.shape)}"]
    if not (np.isfinite(probs).all() and np.isfinite(expected).all()):
        return [f"non-finite {what} outputs (NaN or inf)"]
    diff = np.abs(probs.astype(np.float64) - expected.astype(np.float64)).max(axis=1)
    if float(diff.max()) > atol:
        return [f"{what} max |Δp| {float(diff.max()):.1e} > {atol:.1e} (worst: {what} "
                f"{int(np.argmax(diff))}): the model differs from the one exported"]
    return []
