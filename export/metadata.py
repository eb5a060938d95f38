"""The JSON metadata document every exported model carries (docs/contracts.md).

Usage::

    doc = build_metadata(labels=labels, input=metrics["input"], precision=Precision.INT8,
                         dataset="mnist", model="softmax")
    payload = encode_metadata(doc)   # UTF-8 bytes, key-sorted, byte-stable

TFLite files hold ``payload`` in a ``Model.metadata`` entry named ``"edgeport"``,
ONNX files in ``metadata_props["edgeport"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .formats import Precision

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "build_metadata", "decode_metadata", "encode_metadata"]

METADATA_KEY = "edgeport"
FORMAT_VERSION = 1


def build_metadata(
    *,
    labels: Sequence[str],
    input: Mapping[str, Any],
    precision: Precision,
    dataset: str,
    model: str,
) -> dict[str, Any]:
    """Assemble the metadata document for one artifact.

    Args:
        labels: the class names, in output order.
        input: ``metrics.json["input"]``, copied verbatim.
        precision: the artifact's precision.
        dataset: ``metrics.json["dataset"]``.
        model: ``metrics.json["model"]``.

    Returns:
        The document as a plain dict.
    """
    return {
        "format_version": FORMAT_VERSION,
        "labels": list(labels),
        "input": dict(input),
        "precision": Precision(precision).value,
        "dataset": dataset,
        "model": model,
    }


def encode_metadata(doc: Mapping[str, Any]) -> bytes:
    """Serialize ``doc`` as UTF-8 JSON with sorted keys, so equal documents give equal bytes."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def decode_metadata(payload: bytes | str) -> dict[str, Any]:
    """Parse a metadata payload back into a dict (the inverse of :func:`encode_metadata`)."""
    text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    return json.loads(text)
