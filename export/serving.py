"""Load a run's SavedModel once and check its ``serving_default`` signature.

Usage::

    from edgeport.export.serving import load_serving
    serving = load_serving(run_dir / "saved_model")
    serving.function(image=x)  # {"probabilities": ..., "logits": ...}

Every converter starts from this one object so that each format sees the same
weights, and a signature that breaks docs/contracts.md is reported once, up
front, instead of as a converter stack trace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunDirError

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "SIGNATURE_KEY", "Serving", "load_serving"]

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits")  # in this order in every exported file


@dataclass(frozen=True)
class Serving:
    """A loaded ``serving_default`` signature.

    Attributes:
        saved_model_dir: where it was loaded from.
        module: the restored trackable; it owns the variables the function reads.
        function: the signature's concrete function, called as ``function(image=x)``.
        input_shape: the input shape without the batch dimension, e.g. ``(784,)``.
        num_classes: the width ``K`` of ``probabilities`` and ``logits``.
    """

    saved_model_dir: Path
    module: Any
    function: Any
    input_shape: tuple[int, ...]
    num_classes: int

    def input_spec(self) -> Any:
        """A ``tf.TensorSpec([None, ...], tf.float32, name="image")`` for the input."""
        import tensorflow as tf

        return tf.TensorSpec([None, *self.input_shape], tf.float32, name=INPUT_NAME)

    def as_tf_function(self) -> Any:
        """The signature as a ``tf.function`` returning ``{"probabilities", "logits"}`` only."""
        import tensorflow as tf

        function = self.function

        @tf.function(input_signature=[self.input_spec()])
        def serve(image: Any) -> dict[str, Any]:
            out = function(image=image)
            return {name: out[name] for name in OUTPUT_NAMES}

        return serve


def load_serving(saved_model_dir: str | os.PathLike[str]) -> Serving:
    """Load ``saved_model_dir`` and check its signature against the contract.

    Args:
        saved_model_dir: a SavedModel folder (``RUN/saved_model``).

    Returns:
        The loaded signature.

    Raises:
        RunDirError: the folder is missing or not a SavedModel, or the signature
            does not take ``image`` float32 ``[batch, ...]`` and return
            ``probabilities`` and ``logits`` float32 ``[batch, K]``.
    """
    import tensorflow as tf

    path = Path(saved_model_dir)
    fix = "re-run `edgeport train --out RUN` to write a SavedModel that follows docs/contracts.md"
    if not (path / "saved_model.pb").is_file():
        raise RunDirError(f"{path}: no saved_model.pb; expected a SavedModel folder; {fix}")
    try:
        module = tf.saved_model.load(str(path))
    except Exception as e:  # TF raises many unrelated types for a damaged SavedModel
        raise RunDirError(f"{path}: cannot load the SavedModel ({type(e).__name__}); {fix}") from e
    signatures = getattr(module, "signatures", {})
    if SIGNATURE_KEY not in signatures:
        raise RunDirError(
            f"{path}: signatures {sorted(signatures)}, expected {SIGNATURE_KEY!r}; {fix}"
        )
    function = signatures[SIGNATURE_KEY]
    _, inputs = function.structured_input_signature
    if set(inputs) != {INPUT_NAME}:
        raise RunDirError(f"{path}: signature inputs {sorted(inputs)}, expected ['image']; {fix}")
    spec = inputs[INPUT_NAME]
    shape = spec.shape.as_list()
    if spec.dtype != tf.float32 or len(shape) < 2 or shape[0] is not None or None in shape[1:]:
        raise RunDirError(
            f"{path}: input 'image' is {spec.dtype.name} {shape}, expected float32 "
            f"[None, D] or [None, H, W, C] with a dynamic batch; {fix}"
        )
    outputs = function.structured_outputs
    widths = set()
    for name in OUTPUT_NAMES:
        out = outputs.get(name)
        out_shape = out.shape.as_list() if out is not None else None
        if out is None or out.dtype != tf.float32 or out_shape is None or len(out_shape) != 2:
            raise RunDirError(
                f"{path}: signature outputs {sorted(outputs)}, expected 'probabilities' and "
                f"'logits' float32 [batch, K]; {fix}"
            )
        widths.add(out_shape[1])
    if len(widths) != 1 or None in widths:
        raise RunDirError(f"{path}: outputs have widths {sorted(map(str, widths))}; {fix}")
    return Serving(
        saved_model_dir=path,
        module=module,
        function=function,
        input_shape=tuple(int(d) for d in shape[1:]),
        num_classes=int(widths.pop()),
    )
