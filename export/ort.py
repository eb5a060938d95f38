"""ONNX Runtime Mobile: ``model.ort`` and the operator list for a reduced ORT build.

Usage::

    from edgeport.export.ort import write_ort
    entry = write_ort(export_dir, onnx_entry)   # writes model.ort, required_operators.config

Runs ONNX Runtime's own converter (``python -m
onnxruntime.tools.convert_onnx_models_to_ort``, optimization style ``Fixed``) on a
copy of ``model.onnx`` in a temporary folder, because the tool writes next to its
input, then moves its two outputs into the export folder. ``model.ort`` gets a
manifest entry (format ``onnx``: ONNX Runtime loads it like ``model.onnx``), so
the parity gate, ``edgeport verify`` and the golden vectors (the same
``model__probabilities`` as ``model.onnx``: it is the same graph) cover it.
``required_operators.config`` is what ``build.py --include_ops_by_config`` takes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeport.fileio import atomic_write_bytes, atomic_write_text

from .errors import ExportError

__all__ = ["ORT_CONFIG", "ORT_FILE", "write_ort"]

ORT_FILE = "model.ort"
ORT_CONFIG = "required_operators.config"


def write_ort(export_dir: Path, onnx_entry: Mapping[str, Any]) -> dict[str, Any]:
    """Convert ``export_dir/model.onnx`` to ``model.ort`` + ``required_operators.config``.

    Args:
        export_dir: the (temporary) export folder holding ``model.onnx``.
        onnx_entry: the manifest entry of ``model.onnx`` (its tensors are copied).

    Returns:
        The manifest entry of ``model.ort``.

    Raises:
        ExportError: the converter failed.
    """
    with tempfile.TemporaryDirectory(prefix="edgeport-ort-") as tmp:
        work = Path(tmp)
        (work / "model.onnx").write_bytes((export_dir / "model.onnx").read_bytes())
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime.tools.convert_onnx_models_to_ort",
                str(work),
                "--optimization_style",
                "Fixed",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0 or not (work / ORT_FILE).is_file():
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(
                f"ONNX Runtime's ORT converter failed ({last}); expected model.ort from "
                "model.onnx; fix: install onnxruntime>=1.22 or export without onnx"
            )
        data = (work / ORT_FILE).read_bytes()
        # The tool records its input's absolute (temporary) path: keep only the name.
        config = "".join(
            f"# - {ORT_FILE}\n" if line.startswith("# - ") else f"{line}\n"
            for line in (work / ORT_CONFIG).read_text().splitlines()
        )
    atomic_write_bytes(export_dir / ORT_FILE, data)
    atomic_write_text(export_dir / ORT_CONFIG, config)
    ops = sorted({
        op
        for line in config.splitlines()
        if line and not line.startswith("#")
        for op in line.split(";")[-1].split(",")
    })
    return {
        **onnx_entry,
        "file": ORT_FILE,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "ops": ops,
    }
