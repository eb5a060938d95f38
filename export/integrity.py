"""What ``edgeport verify`` checks about an export folder besides each model's own replay.

Usage::

    from edgeport.export.integrity import folder_problems, parity_problems
    problems = folder_problems(export_dir, manifest)   # [] when the folder is exactly right

1. **Completeness**: the folder holds exactly what ``manifest.json`` lists (its
   ``artifacts`` and ``files``) plus ``manifest.json``, ``parity.json``, the
   signature and edgeport's marker: no extra file, no sub-folder, no link (a link
   could point at a file elsewhere that changes behind the manifest's back).
2. **Support files**: ``labels.txt`` and ``golden.npz`` match their sizes and
   SHA-256 in ``manifest.json["files"]``; ``labels.txt`` says what ``manifest.json``
   ``labels`` says.
3. **parity.json** (when present) belongs to this export: it lists exactly the
   manifest's artifacts, its verdict follows from its own figures under the
   thresholds, and it names this manifest's hash.

Without a signature all of this protects against accidents (a truncated copy, a
stray file, a stale export), not against someone who can rewrite
``manifest.json`` consistently: that is what ``edgeport sign`` adds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeport.fileio import MARKER_NAME

from .manifest import MANIFEST_NAME, artifact_file_problems, file_sha256

__all__ = [
    "GUARANTEE_SIGNED",
    "GUARANTEE_UNSIGNED",
    "SIGNATURE_NAME",
    "folder_problems",
    "listed_files",
    "parity_problems",
]

SIGNATURE_NAME = "model.sig"
PARITY_NAME = "parity.json"
GUARANTEE_UNSIGNED = (
    "unsigned: integrity against accidents only (a consistent rewrite of manifest.json "
    "would not be noticed); sign with `edgeport sign RUN/export --key KEY`"
)
GUARANTEE_SIGNED = (
    "signed: every file is exactly what the key's holder signed (OpenSSF model-signing)"
)


def listed_files(manifest: Mapping[str, Any]) -> list[str]:
    """Every file name ``manifest.json`` vouches for: the artifacts, then ``files``."""
    names = [str(e.get("file", "")) for e in manifest.get("artifacts", [])
             if isinstance(e, Mapping)]
    files = manifest.get("files")
    if isinstance(files, Mapping):
        names += [str(n) for n in files]
    return names


def folder_problems(export_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> list[str]:
    """Extra, missing, linked or changed files (one line each); empty when all is exact."""
    root = Path(export_dir)
    problems: list[str] = []
    listed = listed_files(manifest)
    for name in listed:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            problems.append(f"manifest.json lists {name!r}; expected a plain file name")
        elif (root / name).is_symlink():
            problems.append(f"{name}: is a link ({os.readlink(root / name)}); expected the "
                            "file itself (a link can change behind the manifest's back)")
    allowed = set(listed) | {MANIFEST_NAME, PARITY_NAME, SIGNATURE_NAME, MARKER_NAME}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in sorted(dirnames):
            rel = (Path(dirpath) / d).relative_to(root).as_posix()
            problems.append(f"{rel}/: extra folder, not listed in manifest.json")
        dirnames[:] = []  # nothing below an extra folder matters more than the folder itself
        for f in sorted(filenames):
            path = Path(dirpath) / f
            if f not in allowed:
                problems.append(f"{f}: extra file, not listed in manifest.json")
            elif path.is_symlink() and f not in listed:
                problems.append(f"{f}: is a link; expected the file itself")
    files = manifest.get("files")
    if not isinstance(files, Mapping):
        problems.append("manifest.json has no 'files' table; labels.txt and golden.npz are "
                        "not hashed (an export from an older edgeport); fix: re-run "
                        "`edgeport export RUN --force`")
        files = {}
    for name, entry in files.items():
        if isinstance(entry, Mapping) and "/" not in str(name):
            problems += [f"{name}: {p}" for p in artifact_file_problems(root / str(name), entry)]
    labels_path = root / "labels.txt"
    if labels_path.is_file() and not labels_path.is_symlink():
        try:
            lines = [n for n in labels_path.read_text(encoding="utf-8").splitlines() if n]
        except (OSError, UnicodeDecodeError):
            lines = None
        if lines != list(manifest.get("labels", [])):
            problems.append("labels.txt: its class names differ from manifest.json 'labels'")
    return problems


def manifest_sha256(export_dir: str | os.PathLike[str]) -> str:
    """The SHA-256 of ``manifest.json`` (recorded in ``parity.json``)."""
    return file_sha256(Path(export_dir) / MANIFEST_NAME)


def parity_problems(
    export_dir: str | os.PathLike[str], manifest: Mapping[str, Any], table: Mapping[Any, Any]
) -> list[str]:
    """Why ``parity.json`` cannot be the gate's verdict on this export (empty: consistent)."""
    from dataclasses import replace

    from .formats import Precision
    from .parity import _gate
    from .thresholds import NO_DIGIT, calibrated_bound, none_failures

    path = Path(export_dir) / PARITY_NAME
    if not path.exists() and not path.is_symlink():
        return []
    if path.is_symlink():
        return ["parity.json: is a link; expected the gate's own file"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        results = doc["results"]
        passed = doc["passed"]
        if not isinstance(results, list) or not isinstance(passed, bool):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return ["parity.json: not a parity report; fix: re-run `edgeport parity RUN`"]
    problems = []
    recorded = doc.get("manifest_sha256")
    if recorded != manifest_sha256(export_dir):
        problems.append("parity.json: made for another manifest.json (manifest_sha256 differs "
                        "or is missing); fix: re-run `edgeport parity RUN`")
    names = [str(r.get("artifact")) if isinstance(r, Mapping) else "?" for r in results]
    artifacts = [str(e.get("file")) for e in manifest.get("artifacts", [])
                 if isinstance(e, Mapping)]
    # A file may have several rows (an app model through LiteRT and MediaPipe, browser rows).
    if sorted(set(names)) != sorted(set(artifacts)):
        problems.append(f"parity.json: covers {sorted(set(names))}, the manifest lists "
                        f"{sorted(set(artifacts))}")
    app_files = {str(e.get("file")) for e in manifest.get("artifacts", [])
                 if isinstance(e, Mapping) and e.get("family") == "app"}
    simulated = _float16_simulated(doc, manifest)
    verdicts = []
    for r in results:
        if not isinstance(r, Mapping):
            problems.append("parity.json: a result is not an object")
            continue
        if r.get("gpu_ready") is False and "webgpu" in str(r.get("runtime", "")):
            # A WebGPU row that did not run (or missed the thresholds) on a file that does
            # not claim GPU support: "not GPU-ready" is its verdict, not a gated figure.
            verdicts.append(bool(r.get("passed")) and not r.get("failures"))
            continue
        try:
            precision = Precision(r["precision"])
            row_table = _row_table(r, app_files, table)
            tol = row_table[precision]
            if precision is Precision.FLOAT16 and row_table is table and not _in_browser(r):
                # The bound the gate computed from its float16 simulation (table: the floor).
                tol = replace(tol, max_abs_diff=calibrated_bound(tol.max_abs_diff,
                                                                 simulated)[0])
            accuracy, ref = float(r["accuracy"]), float(r["reference_accuracy"])
            agreement = float(r["agreement"])
            max_diff = None if r.get("max_abs_diff") is None else float(r["max_abs_diff"])
            figures = [accuracy, ref, agreement] + ([max_diff] if max_diff is not None else [])
            if not all(math.isfinite(v) for v in figures):
                raise ValueError
            n = int(r.get("images") or 10_000)
            if n < 1:
                raise ValueError
            if str(r.get("runtime", "")).endswith(NO_DIGIT):  # `none` on empty frames
                gate = none_failures(accuracy, n)
            else:
                flips = round((1 - agreement) * n)
                near = int(r.get("near_ties") or 0)  # excused only under a max |Δp| bound
                if not 0 <= near <= flips or (near and r.get("max_abs_diff_bound") is None):
                    raise ValueError
                gate = _gate(tol, accuracy=accuracy, reference_accuracy=ref,
                             agreement=agreement, flips=flips, n=n, max_diff=max_diff,
                             near_ties=near)
            own = bool(r["passed"]) and not r.get("failures") and not gate
        except (KeyError, TypeError, ValueError):
            own = False
            if r.get("passed"):
                problems.append(f"parity.json: {r.get('artifact')}: claims a pass without "
                                "finite figures")
        else:
            if bool(r["passed"]) and gate:
                problems.append(f"parity.json: {r.get('artifact')}: claims a pass its own "
                                f"figures refute ({'; '.join(gate)})")
        verdicts.append(own)
    if passed != (bool(verdicts) and all(verdicts)):
        problems.append(f"parity.json: overall passed={passed} does not follow from its results")
    return problems


def _float16_simulated(doc: Mapping[str, Any], manifest: Mapping[str, Any]) -> float | None:
    """parity.json's float16 simulation, when it was made for the export's SavedModel."""
    calibration = doc.get("calibration")
    if not isinstance(calibration, Mapping):
        return None
    content = manifest.get("saved_model_content_sha256")
    value = calibration.get("float16_simulated_max_abs_diff")
    if content is None or calibration.get("saved_model_content_sha256") != content:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _in_browser(row: Mapping[str, Any]) -> bool:
    return "(chromium)" in str(row.get("runtime", ""))


def _row_table(row: Mapping[str, Any], app_files: set[str],
               table: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The tolerances a parity row was judged by: an app model's own rows (LiteRT, MediaPipe)
    by ``APP_THRESHOLDS`` (numpy vs in-graph preprocessing); browser rows, which compare the
    same file in the page and in Python, and plain files by ``table``."""
    from .thresholds import APP_THRESHOLDS

    in_browser = _in_browser(row)
    return APP_THRESHOLDS if str(row.get("artifact")) in app_files and not in_browser else table
