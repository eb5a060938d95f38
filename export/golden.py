"""Write ``golden.npz``: a few test images and every artifact's output on them.

Usage::

    from edgeport.export.golden import make_golden, write_golden
    arrays = make_golden(export_dir, kinds, inputs=x_test[:32], labels=y_test[:32])
    write_golden(export_dir / "golden.npz", arrays)

The outputs are computed here with the converters' own interpreters (LiteRT,
ONNX Runtime), driven directly rather than through ``mobile_demo.runtime.Model``
(its batching, reshaping and signature handling), so that the device runtime's
tests can use ``golden.npz`` as an oracle. Integer inputs and outputs go through
the one quantize/dequantize, :func:`mobile_demo.runtime.quantize` and
:func:`~mobile_demo.runtime.dequantize` (TFLite's own arithmetic, tested against it).
Quantized outputs are stored dequantized.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeport.fileio import atomic_write_bytes
from edgeport.mobile_demo.runtime import dequantize, quantize, signature_names

from .formats import ArtifactFormat, ArtifactKind
from .serving import INPUT_NAME, OUTPUT_NAMES

__all__ = ["DEFAULT_GOLDEN_SAMPLES", "GOLDEN_MAX_BYTES", "GOLDEN_NAME", "make_golden", "predict",
           "structured_probes", "write_golden"]

DEFAULT_GOLDEN_SAMPLES = 32
GOLDEN_NAME = "golden.npz"
# The most golden.npz's arrays may declare before `edgeport verify` loads them (issue 18: a
# 2.7 MB file expanded to 2.7 GB). An MNIST export's golden.npz holds about 1 MB: 32 images,
# the probes, the app pictures and every artifact's outputs.
GOLDEN_MAX_BYTES = 256 << 20


def predict(model: bytes, kind: ArtifactKind, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run one artifact on a batch and return its dequantized float32 outputs.

    Args:
        model: the artifact's bytes.
        kind: its row of the artifact table.
        x: float32 images in [0, 1] in the model input layout, ``[N, ...]``.

    Returns:
        ``{"probabilities": [N, K], "logits": [N, K]}``, float32.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kind.format is ArtifactFormat.ONNX:
        from .onnx import make_session

        values = make_session(model).run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return {
            n: np.asarray(v, dtype=np.float32) for n, v in zip(OUTPUT_NAMES, values, strict=True)
        }

    from .tflite import make_interpreter

    interpreter = make_interpreter(model)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = detail["quantization"]
        interpreter.set_tensor(detail["index"], quantize(x, scale, zero_point, dtype))
    else:
        interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    _, names = signature_names(interpreter)  # other converters name tensors generically
    out = {}
    for d in interpreter.get_output_details():
        y = interpreter.get_tensor(d["index"])
        if np.dtype(d["dtype"]).kind in "iu":
            y = dequantize(y, *d["quantization"])
        out[names.get(d["index"], d["name"])] = np.asarray(y, dtype=np.float32)
    return out


def structured_probes(input_shape: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """Inputs that light every input pixel in several combinations (``golden.npz["probes"]``).

    Test images leave some pixels always dark (MNIST's corners): a weight on such a
    pixel can be changed without moving any test output. The probes are: all dark,
    all bright, for each bit ``k`` of the pixel index the pixels whose index has bit
    ``k`` set (and the complement), and four seeded uniform-noise images. Every pixel
    is bright in about half of them, and no two pixels are bright in exactly the same
    ones, so a change to any single input weight moves some probe's output.

    Args:
        input_shape: the model input without the batch dimension.
        seed: seeds the noise images.

    Returns:
        float32 ``[P, *input_shape]`` in [0, 1].
    """
    shape = tuple(int(d) for d in input_shape)
    d = int(np.prod(shape))
    index = np.arange(d)
    rows = [np.zeros(d), np.ones(d)]
    for k in range(max(1, int(np.ceil(np.log2(d))))):
        bit = ((index >> k) & 1).astype(np.float64)
        rows += [bit, 1.0 - bit]
    rng = np.random.default_rng(seed)
    rows += list(rng.uniform(0.0, 1.0, size=(4, d)))
    return np.stack(rows).astype(np.float32).reshape(len(rows), *shape)


def make_golden(
    export_dir: str | os.PathLike[str],
    kinds: Sequence[ArtifactKind],
    *,
    inputs: np.ndarray,
    labels: np.ndarray,
    probes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Compute the golden arrays for the artifacts already written in ``export_dir``.

    Args:
        export_dir: the folder holding the artifact files.
        kinds: the artifacts to run.
        inputs: float32 ``[G, ...]`` test images in [0, 1], model input layout.
        labels: int64 ``[G]`` their labels.
        probes: float32 ``[P, ...]`` from :func:`structured_probes`, replayed too.

    Returns:
        ``{"inputs", "labels", "<stem>__probabilities", ...}``, plus ``"probes"`` and
        ``"<stem>__probe_probabilities"`` when ``probes`` is given.
    """
    arrays = {
        "inputs": np.ascontiguousarray(inputs, dtype=np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    for kind in kinds:
        data = (Path(export_dir) / kind.file).read_bytes()
        arrays[f"{kind.stem}__probabilities"] = predict(data, kind, arrays["inputs"])[
            "probabilities"
        ]
        if probes is not None:
            arrays[f"{kind.stem}__probe_probabilities"] = predict(data, kind, probes)[
                "probabilities"]
    if probes is not None:
        arrays["probes"] = np.ascontiguousarray(probes, dtype=np.float32)
    return arrays


def write_golden(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` atomically (no pickles inside)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
