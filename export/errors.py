"""The errors the exporter raises, all members of the edgeport family.

Each message says what was received, what was expected, and how to fix it, in
one line; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

from edgeport.errors import EdgeportError
from edgeport.train.run_dir import (
    RunDirError,  # one class for a bad run directory, wherever it is met
)

__all__ = ["ExportError", "ExportExistsError", "FormatError", "ManifestError", "RunDirError"]


class ExportError(EdgeportError, RuntimeError):
    """A converter failed, or wrote a file that breaks the export contract."""


class FormatError(EdgeportError, ValueError):
    """A ``--formats`` value names no known artifact kind."""


class ExportExistsError(EdgeportError, FileExistsError):
    """``RUN/export`` already exists and ``force`` was not given."""


class ManifestError(EdgeportError, ValueError):
    """``manifest.json`` is missing, unreadable, or not an edgeport manifest."""
