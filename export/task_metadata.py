"""Write the standard TFLite model metadata (``TFLITE_METADATA``) of an image classifier.

Usage::

    from edgeport.export.task_metadata import add_task_metadata
    data = add_task_metadata(model_bytes, name="edgeport cnn mnist", labels=labels,
                             uint8_input=False, mean=0.0, std=1.0)

What MediaPipe Tasks, the TFLite Task Library and ML Kit read, built the way
their metadata writers build it (mediapipe
``tasks/python/metadata/metadata_writers/image_classifier.py`` and
``metadata.py``'s ``MetadataPopulator``): a ``ModelMetadata`` table (name,
description, version, author, license, ``min_parser_version``) with one
subgraph whose input is ``ImageProperties`` RGB + ``NormalizationOptions`` +
``Stats`` and whose output is a probability ``FeatureProperties`` tensor with
stats [0, 1] and a ``TENSOR_AXIS_LABELS`` file. The table is a FlatBuffer with
identifier ``M001`` stored in the ``Model.metadata`` entry ``TFLITE_METADATA``;
the label file is packed into a zip archive appended after the model (what
``MetadataPopulator`` does with ``zipfile`` mode "a"), stored uncompressed with a
fixed timestamp so the bytes are deterministic. Both schemas are generated
code: the TFLite one from ``ai_edge_litert``, the metadata one vendored in
``mobile_demo``. mediapipe's writers themselves cannot be imported with numpy 2
(``No module named 'mediapipe.tasks.cc'``), so only their schema is reused.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np

from edgeport import __version__
from edgeport.mobile_demo import metadata_schema_py_generated as meta_fb
from edgeport.mobile_demo.tflite_meta import TFLITE_METADATA_KEY, tflite_schema

__all__ = ["LABEL_FILE", "MIN_PARSER_VERSION", "add_task_metadata"]

LABEL_FILE = "labels.txt"
# Every field written here exists since metadata schema 1.0.0 (metadata_schema.fbs history).
MIN_PARSER_VERSION = "1.0.0"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: a fixed stamp keeps exports byte-stable


def _input_metadata(*, uint8_input: bool, mean: float, std: float) -> meta_fb.TensorMetadataT:
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "image"
    tensor.description = "RGB picture, pixel values 0-255 (uint8, or float32 as given)."
    content = meta_fb.ContentT()
    content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    content.contentProperties = meta_fb.ImagePropertiesT()
    content.contentProperties.colorSpace = meta_fb.ColorSpaceType.RGB
    tensor.content = content
    norm = meta_fb.ProcessUnitT()
    norm.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
    norm.options = meta_fb.NormalizationOptionsT()
    norm.options.mean = [mean]
    norm.options.std = [std]
    tensor.processUnits = [norm]
    stats = meta_fb.StatsT()
    # As the writers: uint8 spans 0..255; float spans the normalized pixel range.
    stats.min = [0.0] if uint8_input else [(0.0 - mean) / std]
    stats.max = [255.0] if uint8_input else [(255.0 - mean) / std]
    tensor.stats = stats
    return tensor


def _output_metadata() -> meta_fb.TensorMetadataT:
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "probability"
    tensor.description = "Probabilities of the labels respectively."
    content = meta_fb.ContentT()
    content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    content.contentProperties = meta_fb.FeaturePropertiesT()
    tensor.content = content
    stats = meta_fb.StatsT()
    stats.min, stats.max = [0.0], [1.0]
    tensor.stats = stats
    labels = meta_fb.AssociatedFileT()
    labels.name = LABEL_FILE
    labels.description = "Labels for categories that the model can recognize."
    labels.type = meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    tensor.associatedFiles = [labels]
    return tensor


def _metadata_buffer(*, name: str, uint8_input: bool, mean: float, std: float) -> bytes:
    model = meta_fb.ModelMetadataT()
    model.name = name
    model.description = (
        "Identify the most prominent object in the image from a set of categories; "
        "the preprocessing (grayscale, MNIST-style crop and centring for digits) is in the graph."
    )
    model.version = __version__
    model.author = "edgeport"
    model.license = "Apache-2.0"
    model.minParserVersion = MIN_PARSER_VERSION
    sub = meta_fb.SubGraphMetadataT()
    sub.inputTensorMetadata = [_input_metadata(uint8_input=uint8_input, mean=mean, std=std)]
    sub.outputTensorMetadata = [_output_metadata()]
    model.subgraphMetadata = [sub]
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")
    return bytes(builder.Output())


def add_task_metadata(
    model: bytes,
    *,
    name: str,
    labels: Sequence[str],
    uint8_input: bool,
    mean: float,
    std: float,
) -> bytes:
    """Add ``TFLITE_METADATA`` and the packed label file to a single-input classifier.

    Args:
        model: a ``.tflite`` flatbuffer (its other metadata entries are kept).
        name: the model name clients display.
        labels: the class names in output order, packed as ``labels.txt``.
        uint8_input: whether the input tensor is uint8 (sets the input stats).
        mean: ``NormalizationOptions.mean`` (one value for all channels).
        std: ``NormalizationOptions.std``.

    Returns:
        The flatbuffer with the new entry, followed by the zip holding ``labels.txt``.
    """
    schema = tflite_schema()
    obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    raw = _metadata_buffer(name=name, uint8_input=uint8_input, mean=mean, std=std)
    buffer.data = np.frombuffer(raw, dtype=np.uint8)
    obj.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA_KEY
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = [m for m in obj.metadata or [] if _name(m) != TFLITE_METADATA_KEY] + [entry]
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(obj.Pack(builder), b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:
        info = zipfile.ZipInfo(LABEL_FILE, date_time=_ZIP_TIME)
        archive.writestr(info, "".join(f"{label}\n" for label in labels))
    return out.getvalue()


def _name(entry: object) -> str:
    value = getattr(entry, "name", b"")
    return value.decode() if isinstance(value, bytes) else str(value)
