"""The app models for the browser tests (issue 10's exporter, ``app_models=True``).

Usage (from a test)::

    from _webmodels import ensure_app_model
    ensure_app_model(run_dir)      # re-exports RUN with model_app_{float32,int8}.tflite if missing

The page runs these in LiteRT.js (input ``[1, S, S, 3]`` RGB 0-255, the digit
preprocessing inside the graph, listed in ``manifest.json`` with ``"family": "app"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

APP_FILE = "model_app_float32.tflite"
APP_INT8_FILE = "model_app_int8.tflite"


def ensure_app_model(run_dir: str | os.PathLike[str]) -> Path:
    """Re-export ``run_dir`` with the app models unless its manifest lists them already.

    Returns:
        The export folder.
    """
    from edgeport.export import export_model

    export_dir = Path(run_dir) / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
    if not any(a.get("family") == "app" for a in manifest["artifacts"]):
        export_model(run_dir, formats="all", app_models=True, force=True, progress=False)
    return export_dir
