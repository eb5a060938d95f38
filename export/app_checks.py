"""Parity and golden checks for app models (``"family": "app"`` in manifest.json).

Usage::

    rows = check_app_parity(run_info, export_dir, entries, x_test, labels)   # parity rows
    result = verify_app_artifact(export_dir, entry, golden)                 # golden replay

The oracle of an app model is the reference SavedModel fed with
:func:`edgeport.mobile_demo.preprocess.preprocess_digit` (or ``preprocess_resize``)
applied to the same RGB picture (:func:`export.app.render_pictures` of each test
image). Each app file is run through LiteRT and, when ``mediapipe`` is installed,
through MediaPipe Tasks' ``ImageClassifier`` (runtime ``mediapipe``): one parity
row per (artifact, runtime). Tolerances: :data:`export.thresholds.APP_THRESHOLDS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.mobile_demo.preprocess import NONE_LABEL

from .app import GOLDEN_PICTURES, app_labels, app_size, predict_app, render_pictures
from .formats import ArtifactFormat, Precision
from .manifest import artifact_file_problems
from .thresholds import APP_EMPTY_FRAMES, APP_THRESHOLDS, NO_DIGIT, Tolerance, none_failures

__all__ = [
    "app_oracle",
    "cached_oracle_inputs",
    "check_app_parity",
    "classify_mediapipe",
    "oracle_inputs",
    "verify_app_artifact",
]


def app_oracle(
    saved_model: str | os.PathLike[str], input: Mapping[str, Any], pictures: np.ndarray,
    labels: Sequence[str], *, prepared: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The reference probabilities for pictures put through the numpy preprocessing.

    For a digit model, over :func:`export.app.app_labels`: a picture in which
    ``find_digit`` finds no digit is answered ``none``, as the app graph answers it.
    ``prepared``: :func:`oracle_inputs` of ``pictures`` when the caller has it already
    (e.g. from the gate cache, :func:`cached_oracle_inputs`).
    """
    import tensorflow as tf

    from edgeport.mobile_demo.preprocess import with_none

    x, found = oracle_inputs(pictures, input) if prepared is None else prepared
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    out = [serve(image=tf.constant(x[i : i + 512]))["probabilities"].numpy()
           for i in range(0, len(x), 512)]  # x is float32 in the model's own layout
    probs = np.concatenate(out).astype(np.float32)
    return with_none(probs, found, labels) if input.get("preprocess") == "mnist" else probs


def oracle_inputs(pictures: np.ndarray | Sequence[np.ndarray],
                  input: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's preprocessing of ``pictures``: ``(x, found)`` as
    :func:`mobile_demo.preprocess.prepare_digits` returns them.

    edgeport-demo's own batch step (the digit rule, then the pipeline, or a plain
    resize), with the preprocessing the app graph was built for.
    """
    from edgeport.mobile_demo.preprocess import prepare_digits

    digit = input.get("preprocess") == "mnist"
    return prepare_digits(list(pictures), {**input, "preprocess": "mnist" if digit
                                           else "resize"})


SPOT_CHECKS = 8  # cached items re-computed on every hit, at random, and compared exactly


def cached_oracle_inputs(pictures: np.ndarray,
                         input: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`oracle_inputs`, read from the gate cache (:mod:`export.gate_cache`) when it
    holds them for these exact pictures, input description and preprocessing code.

    On a hit, :data:`SPOT_CHECKS` random pictures are preprocessed again and must give
    the cached values bit for bit; otherwise the whole entry is recomputed and replaced.
    """
    from edgeport.mobile_demo import preprocess

    from .gate_cache import cached_arrays, content_key, source_sha256

    key = content_key("oracle-inputs", pictures, dict(input), source_sha256([preprocess]))

    def compute() -> dict[str, np.ndarray]:
        x, found = oracle_inputs(pictures, input)
        return {"x": x, "found": found}

    def same(arrays: Mapping[str, np.ndarray]) -> bool:
        x, found = arrays.get("x"), arrays.get("found")
        if x is None or found is None or len(x) != len(pictures) or len(found) != len(x):
            return False
        picks = np.random.default_rng().choice(len(pictures), min(SPOT_CHECKS, len(pictures)),
                                               replace=False)
        x2, found2 = oracle_inputs(pictures[picks], input)
        return bool(np.array_equal(x2, x[picks]) and np.array_equal(found2, found[picks]))

    arrays = cached_arrays("oracle-inputs", key, compute, check=same)
    return arrays["x"], arrays["found"]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def classify_mediapipe(
    path: str | os.PathLike[str], pictures: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[str],
) -> np.ndarray:
    """Scores of every label from MediaPipe Tasks' ImageClassifier, one picture at a time.

    ``pictures`` are uint8 RGB ``[H, W, 3]``, of any size: MediaPipe fits each to the
    model's input itself, as it does with a camera frame.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    index = {label: i for i, label in enumerate(labels)}
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=len(labels)
    )
    rows = np.zeros((len(pictures), len(labels)), np.float32)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, picture in enumerate(pictures):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(picture))
            for category in classifier.classify(image).classifications[0].categories:
                if category.category_name not in index:
                    raise ValueError(
                        f"label {category.category_name!r} of the packed labels.txt is not one "
                        "of the run's labels; expected the run's labels.txt; re-export"
                    )
                rows[i, index[category.category_name]] = category.score
    return rows


def check_app_parity(
    info: Any,
    export_dir: Path,
    entries: Sequence[Mapping[str, Any]],
    *,
    x: np.ndarray,
    labels: np.ndarray,
    progress: bool = False,
    empty_frames: int = APP_EMPTY_FRAMES,
) -> list[Any]:
    """One :class:`~export.parity.ParityResult` per (app file, runtime).

    LiteRT's ``invoke`` and MediaPipe's task graph run outside Python's lock, so the
    (file, runtime) runs go side by side in threads, beside the oracle's numpy
    preprocessing: 1.9x faster on 2 cores, the same rows. ``progress`` shows a bar on
    stderr that moves as each run (and the oracle) finishes.
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from edgeport.progress import progress_bar as tqdm

    digits = render_pictures(x, info.input)
    frames = _empty_frames(info.input, empty_frames)
    pictures = np.concatenate([digits, frames]) if len(frames) else digits
    names = app_labels(info.labels, info.input)
    jobs = [(entry, runtime) for entry in entries for runtime in _app_runtimes()]
    bar = tqdm(total=len(jobs) + 1, desc=f"parity app models ({len(pictures)} pictures)",
               unit="run", file=sys.stderr, disable=not progress, leave=False)
    with bar, ThreadPoolExecutor(max_workers=max(1, min(len(jobs), _cores()))) as pool:
        runs = [pool.submit(_run_app, export_dir / str(entry["file"]), runtime, pictures, names)
                for entry, runtime in jobs]
        for run in runs:
            run.add_done_callback(lambda _: bar.update())
        oracle = app_oracle(info.saved_model, info.input, pictures, info.labels,
                            prepared=cached_oracle_inputs(pictures, info.input))
        bar.update()
        outputs = [run.result() for run in runs]
    n = len(digits)
    refs = [_reference(digits, oracle[:n], labels, names)]
    if len(frames):  # every frame's true answer is `none`
        refs.append(_reference(frames, oracle[n:], np.full(len(frames), names.index(NONE_LABEL)),
                               names, suffix=NO_DIGIT))
    file_problems = {str(e["file"]): artifact_file_problems(export_dir / str(e["file"]), e)
                     for e in entries}  # hashed once per file, shared by its runtimes
    rows = []
    for ref in refs:
        start = 0 if not ref.suffix else n
        for (entry, runtime), (probs, error) in zip(jobs, outputs, strict=True):
            name = str(entry["file"])
            precision = Precision(entry["precision"])
            problems = file_problems[name] + ([error] if error else [])
            part = None if probs is None else probs[start : start + len(ref.labels)]
            rows.append(_app_row(name, export_dir / name, precision, APP_THRESHOLDS[precision],
                                 runtime, problems, ref, part))
    return rows


def _empty_frames(input: Mapping[str, Any], n: int) -> np.ndarray:
    """The generated frames with no digit of the ``(no digit)`` rows (digit models only),
    from the gate cache when it holds them (the first few are generated again and
    compared on every hit: the generator draws them in order)."""
    if input.get("preprocess") != "mnist" or n < 1:
        return np.zeros((0, 1, 1, 3), np.uint8)
    from . import frames as frames_module
    from .gate_cache import cached_arrays, content_key, source_sha256

    size, seed = app_size(input), 1

    def same(arrays: Mapping[str, np.ndarray]) -> bool:
        got = arrays.get("frames")
        head = frames_module.empty_frames(min(SPOT_CHECKS, n), size, seed=seed)[0]
        return (got is not None and got.shape == (n, size, size, 3)
                and np.array_equal(got[: len(head)], head))

    key = content_key("empty-frames", {"n": n, "size": size, "seed": seed},
                      source_sha256([frames_module]))
    return cached_arrays(
        "empty-frames", key,
        lambda: {"frames": frames_module.empty_frames(n, size, seed=seed)[0]}, check=same,
    )["frames"]


def _reference(pictures: np.ndarray, oracle: np.ndarray, labels: np.ndarray,
               names: Sequence[str], suffix: str = "") -> _AppReference:
    top = oracle.argmax(axis=1)
    return _AppReference(pictures=pictures, probabilities=oracle, top=top, labels=labels,
                         accuracy=float(np.mean(top == labels)), class_names=names,
                         suffix=suffix)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _AppReference:
    """The pictures the app files are scored on and the SavedModel's answers for them."""

    pictures: np.ndarray
    probabilities: np.ndarray  # the oracle's, float64 [N, K]
    top: np.ndarray  # the oracle's top class per picture
    labels: np.ndarray  # the true class per picture
    accuracy: float  # the oracle's accuracy
    class_names: Any  # the app model's labels (MediaPipe answers in names)
    suffix: str = ""  # NO_DIGIT for the rows on empty frames (accuracy = `none` rate)


def _app_runtimes() -> list[str]:
    """LiteRT always; MediaPipe's Image Classifier when it is installed."""
    runtimes = ["litert"]
    try:
        import mediapipe  # ruff: ignore[unused-import]

        runtimes.append("mediapipe")
    except ImportError:
        pass
    return runtimes


def _run_app(path: Path, runtime: str, pictures: np.ndarray,
             class_names: Sequence[str]) -> tuple[np.ndarray | None, str | None]:
    """One app file's probabilities on one runtime, or why it could not run."""
    if not path.is_file():
        return None, None  # artifact_file_problems names the missing file
    try:
        if runtime == "litert":
            # One thread each: the runs already share the cores side by side (measured:
            # LiteRT's default threads made a 2,000-picture run 1.4x slower, 2 threads 1.8x).
            return predict_app(path.read_bytes(), pictures, num_threads=1), None
        return classify_mediapipe(path, pictures, class_names), None
    except Exception as e:  # the clients raise RuntimeError, ValueError, KeyError...
        return None, f"{runtime} cannot run it: {_one_line(e)}"


def _app_row(name: str, path: Path, precision: Precision, tol: Tolerance, runtime: str,
             problems: list[str], ref: _AppReference, probs: np.ndarray | None) -> Any:
    """Gate one app file's answers on one runtime against the oracle."""
    from .parity import ParityResult, _gate

    failures = list(problems)
    figures: dict[str, Any] = {
        "accuracy": None,
        "agreement": None,
        "max_abs_diff": None,
        "mean_abs_diff": None,
    }
    if probs is not None:
        top = probs.argmax(axis=1)
        flips = int(np.count_nonzero(top != ref.top))
        diff = np.abs(probs.astype(np.float64) - ref.probabilities)
        figures = {
            "accuracy": float(np.mean(top == ref.labels)),
            "agreement": 1.0 - flips / len(top),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
        }
        failures += _gate(
            tol,
            accuracy=figures["accuracy"],
            reference_accuracy=ref.accuracy,
            agreement=figures["agreement"],
            flips=flips,
            n=len(top),
            max_diff=figures["max_abs_diff"],
        ) if not ref.suffix else none_failures(figures["accuracy"], len(top))
    return ParityResult(
        artifact=name,
        format=ArtifactFormat.TFLITE,
        precision=precision,
        runtime=runtime + ref.suffix,
        reference_accuracy=ref.accuracy,
        passed=not failures,
        failures=tuple(failures),
        bytes=path.stat().st_size if path.is_file() else 0,
        images=len(ref.labels),
        max_abs_diff_bound=tol.max_abs_diff,
        bound_source="app table" if tol.max_abs_diff is not None else "not gated",
        **figures,
    )


def verify_app_artifact(
    export_dir: Path, entry: Mapping[str, Any], golden: Mapping[str, np.ndarray]
) -> Any:
    """Replay ``golden.npz["app_pictures"]`` through an app file (a :class:`VerifyResult`)."""
    from .verify import VerifyResult

    name = str(entry["file"])
    precision = Precision(entry["precision"])
    atol = APP_THRESHOLDS[precision].golden_atol
    path = export_dir / name
    failures = artifact_file_problems(path, entry)
    figures: dict[str, Any] = {"runtime": None, "max_abs_diff": None, "sha256_ok": not failures}
    key = f"{name.rsplit('.', 1)[0]}__probabilities"
    if path.is_file() and not failures:
        if GOLDEN_PICTURES not in golden or key not in golden:
            failures.append(f"golden.npz has no {GOLDEN_PICTURES!r} / {key!r}; re-export")
        else:
            probs = predict_app(path.read_bytes(), golden[GOLDEN_PICTURES])
            diff = float(np.max(np.abs(probs.astype(np.float64) - golden[key])))
            figures.update(runtime="litert", max_abs_diff=diff)
            if diff > atol:
                failures.append(f"golden max |Δp| {diff:.1e} > {atol:.1e}")
    return VerifyResult(
        artifact=name,
        format=ArtifactFormat.TFLITE,
        precision=precision,
        bytes=path.stat().st_size if path.is_file() else 0,
        atol=atol,
        passed=not failures,
        failures=tuple(failures),
        **figures,
    )
