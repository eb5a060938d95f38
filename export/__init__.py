"""edgeport's exporter: a trained run's SavedModel to TFLite and ONNX files.

Usage::

    from edgeport.export import benchmark, check_parity, export_model, verify_export
    result = export_model("runs/mnist", formats="all")     # -> ExportResult
    report = check_parity("runs/mnist")                    # -> ParityReport (report.passed)
    verify_export("runs/mnist/export")                     # -> VerifyReport
    benchmark("runs/mnist", runs=200)                      # -> BenchReport

See docs/contracts.md for the files it writes into ``RUN/export``. Importing
this package does not import TensorFlow; the functions do when they need it.
"""

from .bench import BenchReport, benchmark
from .errors import ExportError, ExportExistsError, FormatError, ManifestError, RunDirError
from .exporter import ArtifactInfo, ExportResult, export_model
from .formats import ArtifactFormat, Precision, parse_formats
from .manifest import verify_manifest
from .parity import ParityError, ParityReport, ParityResult, check_parity
from .thresholds import THRESHOLDS, ThresholdsError, Tolerance, load_thresholds
from .verify import VerifyReport, verify_export

__all__ = [
    "THRESHOLDS",
    "ArtifactFormat",
    "ArtifactInfo",
    "BenchReport",
    "ExportError",
    "ExportExistsError",
    "ExportResult",
    "FormatError",
    "ManifestError",
    "ParityError",
    "ParityReport",
    "ParityResult",
    "Precision",
    "RunDirError",
    "ThresholdsError",
    "Tolerance",
    "VerifyReport",
    "benchmark",
    "check_parity",
    "export_model",
    "load_thresholds",
    "parse_formats",
    "verify_export",
    "verify_manifest",
]
