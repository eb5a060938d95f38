"""Build, write, read and verify ``RUN/export/manifest.json`` (docs/contracts.md).

Usage::

    from edgeport.export.manifest import verify_manifest
    problems = verify_manifest("RUN/export")   # [] when every file matches

Every artifact entry is read back from the written file with the runtime that
will execute it (LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``), so the
tensor names, shapes, dtypes and quantization parameters in the manifest are
what a device sees, not what the exporter intended.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from edgeport.fileio import atomic_write_json
from edgeport.train.run_dir import saved_model_content_sha256

from .errors import ManifestError
from .formats import ArtifactFormat, ArtifactKind

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "artifact_entry",
    "build_manifest",
    "edgeport_version",
    "file_sha256",
    "gpu_readiness",
    "read_manifest",
    "repair_problems",
    "saved_model_sha256",
    "tool_versions",
    "verify_manifest",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def saved_model_sha256(saved_model_dir: str | os.PathLike[str]) -> str:
    """A hash over every file of a SavedModel folder.

    For each file, in the order of its sorted POSIX relative path, the hash
    takes the UTF-8 path, a NUL byte, the size as 8 little-endian bytes, and
    the contents; so renaming, moving or editing any file changes it, and the
    folder's location and timestamps do not.

    Args:
        saved_model_dir: the ``RUN/saved_model`` folder.

    Returns:
        The hex digest.
    """
    root = Path(saved_model_dir)
    digest = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    for rel, path in files:
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def edgeport_version() -> str:
    """The installed edgeport version, else the one in the checkout's ``pyproject.toml``."""
    try:
        return importlib_metadata.version("edgeport")
    except importlib_metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', _read_text(pyproject))
        return match.group(1) if match else "0+unknown"


def tool_versions() -> dict[str, str]:
    """Versions of the converters and numpy, as recorded in the manifest."""
    import numpy
    import tensorflow

    versions = {"tensorflow": tensorflow.__version__, "numpy": numpy.__version__}
    for name in ("tf2onnx", "onnx"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return dict(sorted(versions.items()))


def artifact_entry(path: str | os.PathLike[str], kind: ArtifactKind) -> dict[str, Any]:
    """Describe one written artifact by reading the file back.

    Args:
        path: the artifact file.
        kind: its row of the artifact table.

    Returns:
        ``{"file", "format", "precision", "bytes", "sha256", "inputs", "outputs", "ops"}``.
    """
    data = Path(path).read_bytes()
    if kind.format is ArtifactFormat.TFLITE:
        from .tflite import tflite_ops, tflite_tensor_details

        inputs, outputs = tflite_tensor_details(data)
        ops = tflite_ops(data)
    else:
        from .onnx import onnx_ops, onnx_tensor_details

        inputs, outputs = onnx_tensor_details(data)
        ops = onnx_ops(data)
    return {
        "file": kind.file,
        "format": kind.format.value,
        "precision": kind.precision.value,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": inputs,
        "outputs": outputs,
        "ops": ops,
        "family": "plain",  # export.app writes "app" for the picture-in models
    }


WEBGPU_MEASURED = ("not measured at export: `edgeport parity RUN --browser` runs it in "
                   "LiteRT.js on WebGPU (rows \"litert.js webgpu (chromium)\" of parity.json)")
WEBGPU_NOT_RUN = ("not run: edgeport's WebGPU rows cover the app models and the float32 / "
                  "float16 files")
_ORT_EPS = (("nnapi", None), ("coreml_neuralnetwork", "coreml_supported_neuralnetwork_ops.md"),
            ("coreml_mlprogram", "coreml_supported_mlprogram_ops.md"))


def gpu_readiness(path: str | os.PathLike[str], entry: Mapping[str, Any], *,
                  claims_webgpu: bool = False) -> dict[str, Any]:
    """The manifest entry's ``"gpu"`` record: what a phone's accelerator path can run.

    - ``.tflite``: the export cannot run a browser, so ``{"webgpu": "not measured at
      export: ..."}``; the parity gate's WebGPU rows hold the measurement. With
      ``claims_webgpu`` (a graph written for LiteRT's GPU delegate: see
      :func:`edgeport.export.app.claims_webgpu`) the record adds ``"claims_webgpu": true``
      and the gate's WebGPU row fails unless LiteRT.js runs every op on WebGPU within the
      thresholds.
    - ``model.onnx``: ONNX Runtime's mobile usability check
      (:mod:`onnxruntime.tools.mobile_helpers.usability_checker`, what
      ``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` prints) for NNAPI,
      Core ML NeuralNetwork and Core ML MLProgram: nodes, supported nodes, partitions,
      unsupported ops and its verdict, as the file is (dynamic batch) and with fixed shapes.
    - ``model.ort``: points to ``model.onnx``'s record (the same graph).

    No timing and no machine fact: the record is a function of the file and the
    onnxruntime version (``versions`` in the manifest does not list it; the check's
    op tables ship with onnxruntime).
    """
    name = str(entry.get("file", ""))
    if entry.get("format") == ArtifactFormat.TFLITE.value:
        float_file = entry.get("precision") in ("float32", "float16")
        record: dict[str, Any] = {
            "webgpu": WEBGPU_MEASURED if entry.get("family") == "app" or float_file
            else WEBGPU_NOT_RUN}
        if claims_webgpu:
            record["claims_webgpu"] = True
        return record
    if not name.endswith(".onnx"):
        return {"ort_mobile": "the graph of model.onnx: see its \"gpu\" record"}
    return {"ort_mobile_usability": ort_mobile_usability(path)}


def ort_mobile_usability(path: str | os.PathLike[str]) -> dict[str, Any]:
    """ONNX Runtime's mobile usability check of an ``.onnx`` file, per execution provider."""
    import logging
    import tempfile

    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "model.onnx"
        # As the checker does: ORT's basic optimizations first (what a session runs).
        optimize_model(Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    if not model.graph.value_info:
        # Every intermediate value is a graph output (a two-node graph): the checker wants
        # value_info for the fixed-size test, and the outputs' shapes are exactly that.
        model.graph.value_info.extend(model.graph.output)
    dynamic, _ = checker.check_shapes(model.graph)
    result: dict[str, Any] = {"dynamic_inputs": sorted(i.name for i in dynamic)}
    for ep, ops_file in _ORT_EPS:
        def check(fixed: bool, ops_file: str | None = ops_file) -> Any:
            if ops_file is None:
                return checker.check_nnapi_partitions(model, require_fixed_input_sizes=fixed)
            return checker.check_coreml_partitions(model, fixed, ops_file)

        as_is = check(True)
        fixed = check(False)
        result[ep] = {
            "nodes": as_is.num_nodes,
            "supported_nodes": as_is.num_supported_nodes,
            "partitions": as_is.num_partitions,
            "unsupported_ops": sorted(as_is.unsupported_ops),
            "nodes_unsupported_due_to_dynamic_shape": as_is.nodes_unsupported_due_to_dynamic_input,
            "verdict": as_is.suitability().name.lower(),
            "verdict_with_fixed_shapes": fixed.suitability().name.lower(),
        }
    return result


def build_manifest(
    *,
    run_dir: str | os.PathLike[str],
    labels: Sequence[str],
    input: Mapping[str, Any],
    artifacts: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Assemble the manifest document.

    Args:
        run_dir: the run directory; its absolute path is recorded and its
            ``saved_model/`` is hashed.
        labels: the class names.
        input: ``metrics.json["input"]``.
        artifacts: entries from :func:`artifact_entry`, in table order.

    Returns:
        The manifest as a plain dict.
    """
    run_dir = Path(run_dir).resolve()
    return {
        "format_version": FORMAT_VERSION,
        "edgeport_version": edgeport_version(),
        "run": str(run_dir),
        "saved_model_sha256": saved_model_sha256(run_dir / "saved_model"),
        "saved_model_content_sha256": saved_model_content_sha256(run_dir / "saved_model"),
        "versions": tool_versions(),
        "labels": list(labels),
        "input": dict(input),
        "artifacts": [dict(a) for a in artifacts],
    }


SUPPORT_FILES = ("labels.txt", "golden.npz", "required_operators.config", "MODEL_CARD.md")
"""Files of an export besides the models that ``manifest.json["files"]`` hashes (
ONNX Runtime Mobile's reduced-build operator list only when ``model.ort`` was made;
``MODEL_CARD.md``, export.model_card, rewritten with its figures by the parity gate)."""


def support_files_entry(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"files": {name: {"bytes", "sha256"}}}`` for the :data:`SUPPORT_FILES` present.

    ``edgeport verify`` checks them like the models, so a rewritten ``labels.txt``
    or replaced golden vectors are caught.
    """
    root = Path(export_dir)
    files = {}
    for name in SUPPORT_FILES:
        if (root / name).is_file():
            files[name] = {"bytes": (root / name).stat().st_size,
                           "sha256": file_sha256(root / name)}
    return {"files": files}


def write_manifest(export_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (indented, sorted keys) and return its path."""
    return atomic_write_json(Path(export_dir) / MANIFEST_NAME, dict(manifest))


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``export_dir/manifest.json``.

    Raises:
        ManifestError: the file is missing, is not JSON, or is not an edgeport manifest.
    """
    path = Path(export_dir) / MANIFEST_NAME
    fix = "re-run `edgeport export RUN --force`"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found; expected an export folder; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable ({e}); expected JSON; {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        raise ManifestError(f"{path}: no 'artifacts' list; expected an edgeport manifest; {fix}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}; "
            f"{fix}"
        )
    _check_fields(path, doc, fix)
    return doc


def _check_fields(path: Path, doc: Mapping[str, Any], fix: str) -> None:
    """Every field edgeport reads has the type it expects (else one ManifestError line)."""

    def bad(where: str, value: Any, expected: str) -> ManifestError:
        return ManifestError(f"{path}: {where} is {str(value)[:80]!r}; expected {expected}; "
                             f"{fix}")

    for i, e in enumerate(doc["artifacts"]):
        if not isinstance(e, dict):
            raise bad(f"artifacts[{i}]", e, "an object")
        if not isinstance(e.get("file"), str) or not e["file"]:
            raise bad(f"artifacts[{i}].file", e.get("file"), "a file name")
        size = e.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"artifacts[{i}].bytes", size, "a size in bytes")
        if not isinstance(e.get("sha256"), str):
            raise bad(f"artifacts[{i}].sha256", e.get("sha256"), "a hex SHA-256")
    labels = doc.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise bad("labels", labels, "a list of class names")
    for key in ("input", "files", "versions"):
        if key in doc and not isinstance(doc[key], dict):
            raise bad(key, doc[key], "an object")
    for name, e in (doc.get("files") or {}).items():
        if not isinstance(e, dict) or not isinstance(e.get("sha256"), str):
            raise bad(f"files[{name!r}]", e, "{bytes, sha256}")
    for key in ("run", "saved_model_sha256", "saved_model_content_sha256"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise bad(key, doc[key], "a string")


def artifact_file_problems(path: Path, entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with one artifact file against its manifest entry (empty: nothing).

    The file must exist and have the manifest's size and SHA-256; used by
    :func:`verify_manifest`, the parity gate and ``edgeport verify`` alike.
    """
    if not path.is_file():
        return ["file missing: listed in manifest.json but not in the export folder"]
    problems = []
    size = path.stat().st_size
    if size != entry.get("bytes"):
        problems.append(f"size {size} bytes != manifest {entry.get('bytes')} bytes")
    digest = file_sha256(path)
    if digest != entry.get("sha256"):
        problems.append(
            f"sha256 {digest[:12]}... != manifest {str(entry.get('sha256'))[:12]}... "
            "(the file changed since the export)"
        )
    return problems


def verify_manifest(export_dir: str | os.PathLike[str]) -> list[str]:
    """Check every file the manifest lists against its recorded size and hash.

    Also reports a SavedModel that changed since the export (when the run
    directory is still where the manifest says).

    Args:
        export_dir: the ``RUN/export`` folder.

    Returns:
        One line per problem (missing file, size or sha256 mismatch, stale
        export, unreadable manifest); empty when everything matches.
    """
    export_dir = Path(export_dir)
    try:
        manifest = read_manifest(export_dir)
    except ManifestError as e:
        return [str(e)]
    problems = []
    for entry in manifest["artifacts"]:
        name = str(entry.get("file", "")) or "<unnamed entry>"
        problems += [f"{name}: {p}" for p in artifact_file_problems(export_dir / name, entry)]
        problems += [f"{name}: {p}" for p in repair_problems(entry)]
    saved_model = Path(str(manifest.get("run", ""))) / "saved_model"
    if manifest.get("run") and saved_model.is_dir():
        if saved_model_sha256(saved_model) != manifest.get("saved_model_sha256"):
            problems.append(
                f"{saved_model}: changed since the export; re-run `edgeport export RUN --force`"
            )
    return problems


def repair_problems(entry: Mapping[str, Any]) -> list[str]:
    """Check an artifact entry's ``"repair"`` record (``edgeport export --repair``).

    ``{"kept_float": [layer, ...], "passed": bool, "reason": str, "size_before": int,
    "size_after": int | None}``; a passed repair's ``size_after`` is the file's ``bytes``.
    """
    repair = entry.get("repair")
    if repair is None:
        return []
    fix = "re-run `edgeport export RUN --repair --force`"
    if not isinstance(repair, Mapping):
        return [f"repair record is {type(repair).__name__}, expected an object; fix: {fix}"]
    kept = repair.get("kept_float")
    if not isinstance(kept, list) or not all(isinstance(k, str) for k in kept):
        return [f"repair kept_float {kept!r}, expected a list of layer names; fix: {fix}"]
    if not isinstance(repair.get("passed"), bool) or not isinstance(repair.get("reason"), str):
        return [f"repair record lacks passed (bool) or reason (text); fix: {fix}"]
    if repair["passed"] and (not kept or repair.get("size_after") != entry.get("bytes")):
        return [f"repair size_after {repair.get('size_after')} with {len(kept)} kept layers, "
                f"expected the file's {entry.get('bytes')} bytes and >= 1 layer; fix: {fix}"]
    return []


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
