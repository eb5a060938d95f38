"""edgeport's exporter: a trained run's SavedModel to TFLite and ONNX files.

Usage::

    from export import export_model
    result = export_model("runs/mnist", formats="all")

See docs/contracts.md for the files it writes into ``RUN/export``.
"""

from .errors import ExportError, ExportExistsError, FormatError, ManifestError, RunDirError
from .exporter import ArtifactInfo, ExportResult, export_model
from .formats import ArtifactFormat, Precision, parse_formats
from .manifest import verify_manifest

__all__ = [
    "ArtifactFormat",
    "ArtifactInfo",
    "ExportError",
    "ExportExistsError",
    "ExportResult",
    "FormatError",
    "ManifestError",
    "Precision",
    "RunDirError",
    "export_model",
    "parse_formats",
    "verify_manifest",
]
