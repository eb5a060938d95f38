"""The parity gate checks its own oracle before it trusts it.

Usage::

    from edgeport.export.oracle import check_oracle
    check_oracle(run_info, manifest, x=x_test, labels=y_test)   # raises OracleError

``RUN/reference.npz`` is the truth every exported file is measured against, so
before the gate compares anything:

1. the reference probabilities are finite, shaped ``[N, K]`` with ``K`` the
   number of classes, each row a distribution (in [0, 1], summing to 1 within 1e-2); a NaN
   would silently switch the ``max |Δp|`` check off (``NaN > tol`` is false);
2. the labels are integers in ``[0, K)``;
3. the reference was computed by the SavedModel in the run: the content hash
   recorded in ``metrics.json`` matches, and the SavedModel, re-run on the first
   :data:`~export.thresholds.ORACLE_SAMPLE` test images, reproduces those rows
   within :data:`~export.thresholds.ORACLE_ATOL`;
4. the export was made from that same SavedModel (``manifest.json`` records its
   content hash, stable across identical retrainings).

Each failure raises :class:`OracleError` (exit code 2, one line with the fix):
a gate run against a broken oracle is never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.train.run_dir import RunInfo, saved_model_content_sha256

from .thresholds import ORACLE_ATOL, ORACLE_SAMPLE

__all__ = ["OracleError", "check_oracle", "float16_simulation"]


class OracleError(EdgeportError, ValueError):
    """``reference.npz`` or the export does not belong to the run's SavedModel."""


def check_oracle(
    info: RunInfo, manifest: Mapping[str, Any], *, x: np.ndarray, labels: np.ndarray
) -> None:
    """Raise :class:`OracleError` unless the reference and the export fit the run.

    Args:
        info: the run, loaded with its reference.
        manifest: ``RUN/export/manifest.json``.
        x: the test images in model input layout (float32 in [0, 1]).
        labels: the test labels the dataset gives.
    """
    ref_path = info.path / "reference.npz"
    retrain = f"fix: re-run `edgeport train --out {info.path} --force`"
    probs, ref_labels = info.reference_probabilities, info.reference_labels
    k = len(info.labels)
    if probs is None or ref_labels is None:
        raise OracleError(f"{ref_path}: not loaded; expected the reference; {retrain}")
    if probs.ndim != 2 or probs.shape[1] != k or len(probs) == 0:
        raise OracleError(f"{ref_path}: probabilities {list(probs.shape)}; expected "
                          f"[N, {k}] ({k} classes in labels.txt); {retrain}")
    bad = int(np.count_nonzero(~np.isfinite(probs)))
    if bad:
        raise OracleError(f"{ref_path}: {bad} non-finite reference probabilities (NaN or inf); "
                          f"expected finite numbers; {retrain}")
    sums = probs.astype(np.float64).sum(axis=1)
    if probs.min() < -1e-3 or probs.max() > 1 + 1e-3 or np.abs(sums - 1).max() > 1e-2:
        raise OracleError(f"{ref_path}: rows are not probability distributions (values in "
                          f"[{probs.min():g}, {probs.max():g}], row sums up to "
                          f"{np.abs(sums - 1).max():.1e} from 1); {retrain}")
    if ref_labels.min() < 0 or ref_labels.max() >= k:
        raise OracleError(f"{ref_path}: labels span [{ref_labels.min()}, {ref_labels.max()}]; "
                          f"expected [0, {k - 1}]; {retrain}")
    if not np.array_equal(ref_labels, np.asarray(labels, dtype=np.int64)):
        raise OracleError(f"{ref_path}: labels differ from the dataset's test labels; "
                          f"expected the data the run was trained on; {retrain}")
    content = saved_model_content_sha256(info.saved_model)
    recorded = info.metrics.get("saved_model_content_sha256")
    if recorded is not None and recorded != content:
        raise OracleError(f"{ref_path}: computed by another SavedModel (metrics.json "
                          f"saved_model_content_sha256 differs from {info.saved_model}); "
                          f"{retrain}")
    _rerun(info, x, probs, retrain)
    exported_from = manifest.get("saved_model_content_sha256")
    if exported_from is not None and exported_from != content:
        raise OracleError(f"{info.path / 'export'}: made from another SavedModel than "
                          f"{info.saved_model} (a stale export); fix: re-run "
                          f"`edgeport export {info.path} --force`")
    if exported_from is None:
        from .manifest import saved_model_sha256

        if manifest.get("saved_model_sha256") != saved_model_sha256(info.saved_model):
            raise OracleError(f"{info.path / 'export'}: made from another SavedModel than "
                              f"{info.saved_model} (a stale export); fix: re-run "
                              f"`edgeport export {info.path} --force`")


def _rerun(info: RunInfo, x: np.ndarray, probs: np.ndarray, retrain: str) -> None:
    import tensorflow as tf

    n = min(ORACLE_SAMPLE, len(x))
    fn = tf.saved_model.load(str(info.saved_model)).signatures["serving_default"]
    out = fn(image=tf.constant(np.ascontiguousarray(x[:n], dtype=np.float32)))
    ours = np.asarray(out["probabilities"].numpy(), dtype=np.float64)
    diff = float(np.max(np.abs(ours - probs[:n].astype(np.float64)))) if n else 0.0
    if not diff <= ORACLE_ATOL:  # NaN-safe: a NaN difference fails
        raise OracleError(f"{info.path / 'reference.npz'}: not what {info.saved_model} computes "
                          f"(max |Δp| {diff:.1e} > {ORACLE_ATOL:.0e} on the first {n} test "
                          f"images); expected the run's own reference; {retrain}")


def float16_simulation(info: RunInfo, x: np.ndarray, *, batch_size: int = 1000) -> float:
    """max |Δp| between the run's SavedModel and itself with its weights rounded to float16.

    The expected noise of a float16 file of this model: the test images ``x`` run
    through the SavedModel as saved, then again with every float32 variable the
    serving signature reads (kernels, biases, batch-norm statistics) rounded to
    float16 and back. Both runs are fresh, so a tampered ``reference.npz`` cannot
    widen the bound it is then judged by. The parity gate bounds the float16 rows by a
    multiple of this (:func:`export.thresholds.calibrated_bound`), never below the table.

    Args:
        info: the run.
        x: the test images in model input layout (float32 in [0, 1]).
        batch_size: images per call.

    Returns:
        The largest ``|p_float16 - p_float32|`` over all images and classes (NaN if
        either run gives one).
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(info.saved_model))  # owns the variables: keep it
    fn = loaded.signatures["serving_default"]

    def run() -> np.ndarray:
        out = [fn(image=tf.constant(np.ascontiguousarray(x[i : i + batch_size],
                                                         dtype=np.float32)))["probabilities"]
               .numpy().astype(np.float64) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 1))

    exact = run()
    for v in fn.variables:  # a freshly loaded copy: the run's files are not touched
        if v.dtype == tf.float32:
            v.assign(tf.cast(tf.cast(v, tf.float16), tf.float32))
    diff = np.abs(run() - exact)
    return float(diff.max()) if diff.size else 0.0
