"""The artifact kinds the exporter writes, and parsing of ``--formats``.

Usage::

    from edgeport.export.formats import parse_formats
    kinds = parse_formats("float32,int8,onnx")   # -> (ArtifactKind, ...)

One row per file in ``RUN/export/`` (docs/contracts.md): the token accepted by
``--formats``, the file name, the container format and the numeric precision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .errors import FormatError

__all__ = [
    "ARTIFACT_KINDS",
    "FORMAT_TOKENS",
    "ArtifactFormat",
    "ArtifactKind",
    "Precision",
    "kind_for_file",
    "parse_formats",
]


class Precision(str, Enum):
    """Numeric precision of an exported model's weights and activations."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"  # float16 weights, float32 compute and I/O
    DYNAMIC_INT8 = "dynamic_int8"  # int8 weights, activations quantized on the fly, float I/O
    INT8 = "int8"  # full-integer: uint8 input and outputs, int8 inside


class ArtifactFormat(str, Enum):
    """Container format of an exported file."""

    TFLITE = "tflite"
    ONNX = "onnx"


@dataclass(frozen=True)
class ArtifactKind:
    """One exportable file.

    Attributes:
        token: the name ``--formats`` accepts (``"int8"``, ``"onnx"``).
        file: the file name inside ``RUN/export/``.
        format: the container format.
        precision: the numeric precision.
    """

    token: str
    file: str
    format: ArtifactFormat
    precision: Precision

    @property
    def stem(self) -> str:
        """The file name without its suffix, as used for ``golden.npz`` keys."""
        return self.file.rsplit(".", 1)[0]


ARTIFACT_KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind("float32", "model_float32.tflite", ArtifactFormat.TFLITE, Precision.FLOAT32),
    ArtifactKind("float16", "model_float16.tflite", ArtifactFormat.TFLITE, Precision.FLOAT16),
    ArtifactKind(
        "dynamic_int8", "model_dynamic_int8.tflite", ArtifactFormat.TFLITE, Precision.DYNAMIC_INT8
    ),
    ArtifactKind("int8", "model_int8.tflite", ArtifactFormat.TFLITE, Precision.INT8),
    ArtifactKind("onnx", "model.onnx", ArtifactFormat.ONNX, Precision.FLOAT32),
)
FORMAT_TOKENS: tuple[str, ...] = tuple(k.token for k in ARTIFACT_KINDS)
_BY_TOKEN = {k.token: k for k in ARTIFACT_KINDS}


def parse_formats(spec: str | Iterable[str | ArtifactKind]) -> tuple[ArtifactKind, ...]:
    """Turn ``"all"`` or a comma-separated list of tokens into artifact kinds.

    Args:
        spec: ``"all"``, a string such as ``"float32,int8,onnx"``, or an iterable
            of tokens / :class:`ArtifactKind`. Case and spaces are ignored;
            duplicates are dropped.

    Returns:
        The kinds in the canonical order of :data:`ARTIFACT_KINDS`.

    Raises:
        FormatError: an unknown token, or nothing selected.
    """
    allowed = ", ".join(FORMAT_TOKENS)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, ArtifactKind):
            chosen.add(item.token)
            continue
        token = str(item).strip().lower()
        if token == "all":
            chosen.update(FORMAT_TOKENS)
        elif token in _BY_TOKEN:
            chosen.add(token)
        elif token:
            raise FormatError(
                f"--formats: unknown format {token!r} in {_show(spec, items)}; expected 'all' or a "
                f"comma-separated list of: {allowed}; fix: e.g. --formats float32,int8,onnx"
            )
    if not chosen:
        raise FormatError(
            f"--formats: {_show(spec, items)} selects no format; expected 'all' or a "
            f"comma-separated list of: {allowed}; fix: e.g. --formats all"
        )
    return tuple(k for k in ARTIFACT_KINDS if k.token in chosen)


def kind_for_file(file: str) -> ArtifactKind:
    """The artifact kind whose file name is ``file``.

    Raises:
        FormatError: ``file`` is not one of the exported file names.
    """
    for kind in ARTIFACT_KINDS:
        if kind.file == file:
            return kind
    names = ", ".join(k.file for k in ARTIFACT_KINDS)
    raise FormatError(f"{file!r} is not an edgeport artifact; expected one of: {names}")


def _show(spec: object, items: list[str | ArtifactKind]) -> str:
    if isinstance(spec, str):
        return repr(spec)
    return repr(",".join(i.token if isinstance(i, ArtifactKind) else str(i) for i in items))
