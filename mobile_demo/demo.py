"""The demo's work, without the command line: classify, evaluate, time a model.

Usage::

    from edgeport.mobile_demo import load_model
    from edgeport.mobile_demo.demo import classify, evaluate
    model = load_model("RUN/export/model_int8.tflite")
    for p in classify(model, ["seven.jpg"]):
        print(p.label, p.probability)
    print(evaluate(model, "samples/").accuracy)

Each function returns a frozen result with ``to_dict()`` for JSON;
:mod:`mobile_demo.cli` only parses arguments and prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import DatasetError, InputShapeError, LimitError, ModelFileError
from edgeport.fileio import read_labels

from .preprocess import (
    IMAGE_SUFFIXES,
    answers_none,
    labels_with_none,
    prepare_digits,
    with_none,
)
from .runtime import Model, load_model
from .timing import latency_ms, time_calls

__all__ = [
    "MAX_RUNS",
    "EvalResult",
    "ModelTiming",
    "Prediction",
    "check_runs",
    "classify",
    "evaluate",
    "find_images",
    "label_from_path",
    "probabilities",
    "resolve_labels",
    "time_model",
]

Progress = Callable[[int, int], None]
_CHUNK = 256  # pictures decoded per model call: bounds memory on large folders


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one picture.

    Attributes:
        file: the picture (its path, or ``<image N>`` for in-memory pictures).
        label: the most probable class name.
        index: the most probable class index.
        probability: its probability.
        top_k: ``(label, probability)`` pairs, most probable first.
    """

    file: str
    label: str
    index: int
    probability: float
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k],
        }


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and confusion matrix over a folder of labelled pictures.

    Attributes:
        accuracy: fraction of pictures whose predicted label is the true one.
        count: number of pictures.
        confusion_matrix: ``[true][predicted]`` counts, in ``labels`` order.
        labels: the model's class names.
        runtime: the runtime that ran the model.
    """

    accuracy: float
    count: int
    confusion_matrix: tuple[tuple[int, ...], ...]
    labels: tuple[str, ...]
    runtime: str

    def to_dict(self) -> dict[str, Any]:
        """``{"accuracy", "count", "confusion_matrix", "labels", "runtime"}``."""
        return {
            "accuracy": self.accuracy,
            "count": self.count,
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "labels": list(self.labels),
            "runtime": self.runtime,
        }

    def confusion_text(self) -> str:
        """The confusion matrix as aligned text: rows are true labels, columns predicted."""
        cells = [str(v) for row in self.confusion_matrix for v in row]
        width = max(len(s) for s in [*self.labels, *cells, "1"])
        head = max(len(s) for s in self.labels)
        lines = [" " * head + " " + " ".join(lab.rjust(width) for lab in self.labels)]
        for lab, row in zip(self.labels, self.confusion_matrix, strict=True):
            lines.append(lab.rjust(head) + " " + " ".join(str(v).rjust(width) for v in row))
        return "\n".join(lines)


@dataclass(frozen=True)
class ModelTiming:
    """Timings of one model file on this machine, in milliseconds.

    Attributes:
        model: the model file.
        runtime: the runtime that ran it.
        load_ms: :func:`~mobile_demo.runtime.load_model` wall time.
        first_inference_ms: the first batch-1 ``predict`` (allocation included).
        p50_ms: median batch-1 latency after warm-up.
        p99_ms: 99th percentile batch-1 latency.
        mean_ms: mean batch-1 latency.
        runs: number of timed runs.
        warmup: untimed runs before them.
    """

    model: str
    runtime: str
    load_ms: float
    first_inference_ms: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    runs: int
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def resolve_labels(model: Model, labels_file: str | os.PathLike[str] | None = None) -> list[str]:
    """Class names for ``model``: ``labels_file`` when given, else ``model.labels``, else indices.

    Raises:
        ModelFileError: the number of names differs from the model's number of classes.
    """
    labels = read_labels(labels_file) if labels_file is not None else model.labels
    k = _num_classes(model)
    if labels is None:
        return [str(i) for i in range(k)] if k > 0 else []
    if k > 0 and len(labels) != k:
        source = labels_file if labels_file is not None else "the model's labels"
        raise ModelFileError(
            f"{source}: {len(labels)} class names for a model with {k} outputs; "
            "pass the labels file that belongs to this model"
        )
    return list(labels)


def _num_classes(model: Model) -> int:
    spec = _scores_spec(model)
    return spec.shape[-1] if spec.shape and spec.shape[-1] > 0 else -1


def _scores_spec(model: Model) -> Any:
    by_name = {o.name: o for o in model.outputs}
    return by_name.get("probabilities") or by_name.get("logits") or model.outputs[0]


def probabilities(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities from a model's outputs.

    Uses ``probabilities`` when present, else a softmax of ``logits``, else the
    first output (softmaxed unless its rows already look like probabilities).
    """
    if "probabilities" in outputs:
        return outputs["probabilities"]
    scores = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    scores = scores.reshape(len(scores), -1).astype(np.float64)
    if "logits" not in outputs and np.all(scores >= 0) and np.allclose(scores.sum(1), 1, atol=1e-3):
        return scores.astype(np.float32)
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (recursively, sorted) into picture files; files are kept as given.

    Inside folders only known picture suffixes count and hidden files are
    skipped; a file named directly is kept whatever its suffix (reading it
    later reports what is wrong with it).

    Raises:
        DatasetError: a folder holds no pictures.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not inside:
                raise DatasetError(
                    f"{p}: no pictures found ({', '.join(IMAGE_SUFFIXES)}); "
                    "point at a folder of images"
                )
            found.extend(inside)
        else:
            found.append(p)
    return found


def _predict_batch(
    model: Model,
    items: Sequence[Any],
    *,
    preprocess: bool,
    progress: Progress | None,
    done: int,
    total: int,
    names: Sequence[str],
) -> np.ndarray:
    x, found = prepare_digits(items, model.input_desc, preprocess=preprocess)
    probs = probabilities(model.predict(x))
    if answers_none(model.input_desc, preprocess=preprocess):
        # A frame with no digit is answered `none`, as the app models answer it.
        probs = with_none(probs, found, names)
    if progress is not None:
        progress(done + len(items), total)
    return probs


def _all_probabilities(
    model: Model, items: Sequence[Any], *, preprocess: bool, progress: Progress | None,
    names: Sequence[str],
) -> np.ndarray:
    """Every picture's answers; a digit model's gain a ``none`` column (see ``_answer_names``)."""
    parts = [
        _predict_batch(
            model,
            items[i : i + _CHUNK],
            preprocess=preprocess,
            progress=progress,
            done=i,
            total=len(items),
            names=names,
        )
        for i in range(0, len(items), _CHUNK)
    ]
    if not parts:
        return np.zeros((0, len(_answer_names(model, names, preprocess))), dtype=np.float32)
    return np.concatenate(parts)


def _answer_names(model: Model, names: Sequence[str], preprocess: bool) -> list[str]:
    """The class names of the answers: a digit model's labels and ``none`` (no digit found)."""
    if answers_none(model.input_desc, preprocess=preprocess):
        return labels_with_none(names)
    return list(names)


def classify(
    model: Model,
    images: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    top_k: int = 3,
    preprocess: bool = True,
    progress: Progress | None = None,
) -> list[Prediction]:
    """Predict the class of each picture.

    Args:
        model: a loaded model.
        images: picture paths, PIL images or arrays.
        labels: class names (default: :func:`resolve_labels`).
        top_k: how many ``(label, probability)`` pairs to keep per picture.
        preprocess: run the model's preprocessing (the MNIST digit pipeline
            for digit models); ``False`` only converts and resizes.
        progress: called as ``progress(done, total)`` after each chunk.

    Returns:
        One :class:`Prediction` per picture, in order.

    Raises:
        ImageError: a picture is missing or unreadable (a digit model answers ``none``
            to a picture that holds no digit).
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k}; expected a positive integer")
    given = list(labels) if labels is not None else resolve_labels(model)
    probs = _all_probabilities(model, images, preprocess=preprocess, progress=progress,
                               names=given)
    names = _answer_names(model, given, preprocess)
    if probs.shape[1] != len(names):
        raise ModelFileError(
            f"{model.path}: {probs.shape[1]} outputs but {len(names)} class names; "
            "pass the labels that belong to this model"
        )
    out = []
    for i, (item, row) in enumerate(zip(images, probs, strict=True)):
        order = np.argsort(-row, kind="stable")[:top_k]
        best = int(order[0])
        file = str(item) if isinstance(item, (str, os.PathLike)) else f"<image {i}>"
        out.append(
            Prediction(
                file=file,
                label=names[best],
                index=best,
                probability=float(row[best]),
                top_k=tuple((names[int(j)], float(row[int(j)])) for j in order),
            )
        )
    return out


def label_from_path(path: Path, root: Path) -> str:
    """The true label of a picture in an evaluation folder.

    ``root/7/x.png`` is a ``7`` (sub-folder name); ``root/7_0001.png`` is a ``7``
    (file name up to the first underscore).

    Raises:
        DatasetError: a file directly in ``root`` has no underscore in its name.
    """
    rel = path.relative_to(root)
    if len(rel.parts) > 1:
        return rel.parts[0]
    if "_" not in path.stem:
        raise DatasetError(
            f"{path}: cannot tell the label; expected {root}/<label>/{path.name} "
            f"or {root}/<label>_{path.name}"
        )
    return path.stem.split("_", 1)[0]


def evaluate(
    model: Model,
    directory: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    preprocess: bool = True,
    progress: Progress | None = None,
) -> EvalResult:
    """Accuracy and confusion matrix over a folder of labelled pictures.

    Args:
        model: a loaded model.
        directory: pictures as ``DIR/<label>/x.png`` or ``DIR/<label>_x.png``.
        labels: class names (default: :func:`resolve_labels`).
        preprocess: as in :func:`classify`.
        progress: called as ``progress(done, total)``.

    Raises:
        DatasetError: the folder is missing or empty, or a label is not one of the model's.
        ImageError: a picture is unreadable.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected a folder of labelled pictures")
    given = list(labels) if labels is not None else resolve_labels(model)
    names = _answer_names(model, given, preprocess)
    files = find_images([root])
    index = {name: i for i, name in enumerate(names)}
    truth = []
    for f in files:
        lab = label_from_path(f, root)
        if lab not in index:
            raise DatasetError(
                f"{f}: label {lab!r} is not one of the model's labels "
                f"({', '.join(names[:20])}{', ...' if len(names) > 20 else ''}); "
                "rename the folder or file"
            )
        truth.append(index[lab])
    probs = _all_probabilities(model, files, preprocess=preprocess, progress=progress,
                               names=given)
    pred = probs.argmax(axis=1)
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(truth), pred), 1)
    count = len(files)
    return EvalResult(
        accuracy=float(np.trace(cm) / count),
        count=count,
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in cm),
        labels=tuple(names),
        runtime=model.runtime,
    )


# Batch-1 percentiles settle within a few hundred runs; 100,000 runs of a 1 ms model take
# 100 s, and each run keeps one 8-byte time (issue 18: --runs 10**12 ran out of memory).
MAX_RUNS = 100_000


def check_runs(runs: int) -> None:
    """Refuse more than :data:`MAX_RUNS` timed runs (``edgeport-demo --bench``, ``edgeport bench``).

    Raises:
        LimitError: ``runs`` is over :data:`MAX_RUNS`.
    """
    if runs > MAX_RUNS:
        raise LimitError(
            f"runs={runs}; expected at most {MAX_RUNS} (p50/p99 settle within a few hundred "
            "runs); fix: pass runs=1000")


def time_model(
    path: str | os.PathLike[str],
    *,
    runtime: str = "auto",
    runs: int = 200,
    warmup: int = 10,
    num_threads: int | None = None,
    seed: int = 0,
) -> ModelTiming:
    """Time loading and batch-1 inference of one model file (``edgeport-demo --bench``).

    Latency is :meth:`Model.predict` on one sample (quantizing and dequantizing
    included, as an app pays for them), measured by
    :func:`~mobile_demo.timing.time_calls` after ``warmup`` untimed runs.
    ``edgeport bench`` measures a whole run directory with the same loop.

    Args:
        path: the model file.
        runtime: as in :func:`~mobile_demo.runtime.load_model`.
        runs: timed runs.
        warmup: untimed runs before them.
        num_threads: CPU threads for the runtime.
        seed: seed of the random input pixels.

    Raises:
        ModelFileError, RuntimeNotFoundError: as :func:`load_model`.
        InputShapeError: the model's input has dynamic sizes besides the batch.
        ValueError: ``runs < 1`` or ``warmup < 0``.
        LimitError: ``runs`` over :data:`MAX_RUNS`, or as :func:`load_model`.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs={runs}, warmup={warmup}; expected runs >= 1 and warmup >= 0")
    check_runs(runs)
    t0 = time.perf_counter_ns()
    model = load_model(path, runtime=runtime, num_threads=num_threads)
    load_ns = time.perf_counter_ns() - t0
    sample = model.input.shape[1:]
    if any(d < 1 for d in sample):
        raise InputShapeError(
            f"{model.path}: input shape {list(model.input.shape)} has dynamic sizes besides "
            "the batch; expected a fixed image size to time"
        )
    x = np.random.default_rng(seed).random((1, *sample), dtype=np.float32)
    (first_ns,) = time_calls(lambda: model.predict(x), runs=1)
    ns = time_calls(lambda: model.predict(x), runs=runs, warmup=warmup)
    p50, p99 = latency_ms(ns, 50, 99)
    return ModelTiming(
        model=str(model.path),
        runtime=model.runtime,
        load_ms=load_ns / 1e6,
        first_inference_ms=first_ns / 1e6,
        p50_ms=p50,
        p99_ms=p99,
        mean_ms=float(ns.mean()) / 1e6,
        runs=runs,
        warmup=warmup,
    )
