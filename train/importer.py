"""Bring your own model: turn a Keras or SavedModel image classifier into an edgeport run.

Usage::

    edgeport import model.keras --dataset photos/ --out runs/mine [--normalize 0-1]
    edgeport export runs/mine && edgeport parity runs/mine

    from edgeport.train.importer import import_model
    result = import_model("model.keras", dataset="photos/", out_dir="runs/mine")

MODEL is a Keras 3 ``.keras`` file, a legacy ``.h5`` file Keras 3 can read, or a
SavedModel folder with a serving signature. The importer

1. picks the image input (``[batch, H, W, C]`` with C = 1 or 3, ``[batch, H, W]``,
   or ``[batch, D]`` with D = H*W or 3*H*W of a square picture) and the
   classification output (``[batch, K]``); ``input``/``output``/``signature``
   choose when there are several;
2. loads the dataset at the model's input size and channels (MNIST,
   Fashion-MNIST, digits, or a folder of class sub-folders) and checks that the
   class count equals K;
3. wraps the model so the run's SavedModel follows docs/contracts.md: its
   ``serving_default`` takes ``image`` pixel values in [0, 1] and applies the
   model's own normalization inside, ``x = (255 * image - mean) / std``, then returns
   ``probabilities`` and ``logits``. Whether the model outputs probabilities
   (every row non-negative and summing to 1) or logits is detected on the test
   split: logits get a softmax; probabilities get ``logits = log(max(p, 1e-6))``,
   whose softmax gives them back;
4. measures the accuracy on a sample of the test split under every preset
   normalization and warns when the chosen one is near chance while another is
   clearly better, naming the flag that fixes it;
5. writes the run directory with the trainer's own writers
   (:func:`train.run_dir.write_reference`, ``write_labels``, ``write_metrics``):
   ``saved_model/``, ``reference.npz`` (the user's model on the test split),
   ``metrics.json`` (with an ``import`` section), ``labels.txt`` and two plots.

Normalization presets, in pixel units (0-255), like TFLite's metadata:
``0-1`` (mean 0, std 255), ``-1-1`` (mean 127.5, std 127.5), ``imagenet``
(mean 123.675/116.28/103.53, std 58.395/57.12/57.375) and ``none`` (mean 0,
std 1: the model takes raw 0-255 pixels and normalizes itself, e.g. with a
``Rescaling`` layer or Keras Applications' ``include_preprocessing``). The default
is ``none`` when a ``Rescaling`` or ``Normalization`` layer sits inside a Keras
model, else ``0-1``.

int8 calibration: the exporter draws it from the training split
(``metrics.json["calibration_split"]``). A dataset without a training split
(a folder given with ``split=(0, 0, 1)``) falls back to the validation split,
then to the test split, and says so: the int8 file is then calibrated on
pictures the gate also scores, which flatters int8 a little.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import DatasetError, EdgeportError, InputShapeError, ModelFileError

__all__ = [
    "NORMALIZATIONS",
    "IOOpsError",
    "ImportResult",
    "ModelFitError",
    "NonFiniteModelError",
    "Normalization",
    "import_model",
    "make_normalization",
]

CHECK_SAMPLES = 256  # test images scored under every normalization preset
# logits = log(max(p, PROB_EPS)) for a model that outputs probabilities. Not smaller: the
# float16 file stores this constant as float16, whose smallest subnormal is 6e-8 (1e-12 -> 0).
PROB_EPS = 1e-6
_SUM_ATOL = 1e-3  # rows of a softmax output sum to 1 within float32 rounding


class ModelFitError(EdgeportError, ValueError):
    """The model does not fit the data: not an image classifier, or another class count."""


class NonFiniteModelError(ModelFitError):
    """The model's weights, or its outputs on the test split, hold NaN or infinite values."""


class IOOpsError(ModelFitError):
    """The model's serving function reads or writes files, or the network (``--allow-io-ops``)."""


@dataclass(frozen=True)
class Normalization:
    """What the user's model expects: ``x = (pixel - mean) / std`` with pixel in 0..255.

    Attributes:
        name: a preset name (``0-1``, ``-1-1``, ``imagenet``, ``none``) or ``custom``.
        mean: one value, or one per channel, in pixel units.
        std: likewise.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std),
                "formula": "(pixel - mean) / std, pixel in 0..255"}


NORMALIZATIONS: dict[str, Normalization] = {
    "0-1": Normalization("0-1", (0.0,), (255.0,)),
    "-1-1": Normalization("-1-1", (127.5,), (127.5,)),
    "imagenet": Normalization("imagenet", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "none": Normalization("none", (0.0,), (1.0,)),
}


def make_normalization(
    name: str | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Normalization | None:
    """A preset by name, or a custom ``mean``/``std`` (pixel units); ``None`` for the default.

    Raises:
        ModelFitError: unknown preset, both a preset and mean/std, only one of mean
            and std, or a std that is not positive.
    """
    if mean is None and std is None:
        if name is None:
            return None
        if name not in NORMALIZATIONS:
            raise ModelFitError(
                f"--normalize {name!r}; expected one of {', '.join(NORMALIZATIONS)}, or "
                "--mean/--std in pixel units (0-255)"
            )
        return NORMALIZATIONS[name]
    if name is not None:
        raise ModelFitError(
            f"--normalize {name} together with --mean/--std; expected one of them; fix: drop one"
        )
    if mean is None or std is None:
        raise ModelFitError("--mean and --std go together; fix: give both, e.g. --mean 127.5 "
                            "--std 127.5")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    bad = [s for s in std if not (s > 0 and math.isfinite(s))]
    if bad or not all(math.isfinite(m) for m in mean) or len(mean) not in (1, 3) \
            or len(std) not in (1, 3):
        raise ModelFitError(
            f"--mean {list(mean)} --std {list(std)}; expected 1 or 3 finite values each, std > 0 "
            "(pixel units, e.g. --mean 127.5 --std 127.5 for [-1, 1])"
        )
    return Normalization("custom", mean, std)


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_model` found and wrote.

    Attributes:
        run_dir: the run directory.
        source: the model path as given.
        format: ``keras``, ``h5`` or ``saved_model``.
        signature: the SavedModel signature used (``None`` for Keras files).
        input_name: the chosen input; ``output_name``: the chosen output.
        input_shape: the model's input shape without the batch, e.g. ``(96, 96, 3)``.
        layout: ``nhwc`` or ``flat`` (the run's ``image`` input).
        num_classes: K.
        normalization: what the wrapped model applies to ``255 * image``.
        normalization_source: ``flag``, or why the default was chosen.
        output_kind: ``probabilities`` or ``logits``.
        test_accuracy: the reference accuracy on the whole test split.
        accuracy_by_normalization: accuracy on a test sample under each preset.
        calibration_split: where the exporter draws int8 calibration images from.
        warnings: every warning printed.
        io_ops: the file-system/network/Python op types found (``--allow-io-ops``).
    """

    run_dir: Path
    source: str
    format: str
    signature: str | None
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    layout: str
    num_classes: int
    normalization: Normalization
    normalization_source: str
    output_kind: str
    test_accuracy: float
    accuracy_by_normalization: dict[str, float]
    calibration_split: str
    warnings: tuple[str, ...]
    io_ops: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d["input_shape"] = list(self.input_shape)
        d["normalization"] = self.normalization.to_dict()
        d["warnings"] = list(self.warnings)
        d["io_ops"] = list(self.io_ops)
        return d


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int | None, ...]  # with the batch dimension
    dtype: str


@dataclass(frozen=True)
class _UserModel:
    """A loaded model, whatever its file format: its tensors and how to call it."""

    format: str
    owner: Any  # the trackable that owns the variables (saved with the wrapper)
    inputs: tuple[_Tensor, ...]
    outputs: tuple[_Tensor, ...]
    signature: str | None
    normalizes_itself: bool  # a Rescaling / Normalization layer inside
    call: Callable[[Any, str], Any]  # call(x, output_name) -> tensor


def import_model(
    model_path: str | os.PathLike[str],
    *,
    dataset: str,
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    labels_file: str | os.PathLike[str] | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    signature: str | None = None,
    normalization: Normalization | None = None,
    image_size: int | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    force_normalize: bool = False,
    allow_io_ops: bool = False,
) -> ImportResult:
    """Write a run directory (docs/contracts.md) for a user's image classifier.

    Args:
        model_path: a ``.keras`` file, a legacy ``.h5`` file, or a SavedModel folder.
        dataset: ``mnist``, ``fashion-mnist``, ``digits`` or a folder of class sub-folders.
        out_dir: the run directory to write.
        data_dir: where the IDX files are (see :func:`train.data.load_dataset`).
        labels_file: class names, one per line, in the model's output order;
            default: the folder names or the dataset's names.
        input_name, output_name: choose the model's input / output by name.
        signature: the SavedModel signature (default ``serving_default``, or the only one).
        normalization: what the model expects (:func:`make_normalization`);
            ``None`` picks the default described in the module docstring.
        image_size: the picture size for a model whose input size is dynamic.
        split: folder datasets: train, validation, test fractions.
        seed: seeds the folder split and the sample of the normalization check.
        force: replace an existing ``out_dir``.
        progress: show progress bars and the folder summary.
        force_normalize: write the run even when ``normalization`` scores near chance
            and another preset clearly does better (by default that is a ModelFitError).
        allow_io_ops: run a model whose serving function reads or writes files or the
            network (``ReadFile``, ``WriteFile``, ``PyFunc``...; see :data:`IO_OP_KINDS`),
            with a warning; without it such a model is refused before it runs.

    Returns:
        What was chosen, measured and written.

    Raises:
        ModelFileError: the file is missing, corrupt or not a model.
        ModelFitError: not an image classifier, ambiguous input/output, or a
            class count different from the dataset's or the labels file's.
        InputShapeError: the dataset's pictures do not fit the model's input.
        DatasetError: the dataset cannot be loaded.
        NonFiniteModelError: a weight is NaN or infinite (checked before the model runs),
            or the outputs on the test split are (e.g. overflow from huge weights).
        IOOpsError: the serving function has file-system, network or Python ops and
            ``allow_io_ops`` is false (checked before the model runs).
        RunDirError: ``out_dir`` exists and ``force`` is false.
    """
    from .run_dir import check_writable

    _check_image_size(image_size)
    check_writable(out_dir, force=force,
                   protect=(model_path, dataset if os.path.isdir(str(dataset)) else None))
    user = load_user_model(model_path, signature=signature)
    _check_weights(user, model_path)
    inp = _choose(user.inputs, input_name, "input", _image_score, model_path)
    h, w, c, layout = _image_geometry(inp, model_path, image_size)
    ds = _load_data(dataset, data_dir=data_dir, size=(h, w, c), seed=seed, split=split,
                    progress=progress)
    out = _choose_output(user, output_name, ds.num_classes, model_path)
    num_classes = _check_output(out, model_path)
    names = _class_names(ds, labels_file, num_classes, model_path)

    from .data import to_model_input

    x_test = to_model_input(ds.x_test, layout)
    normalization, norm_source = _resolve_normalization(normalization, user, c, model_path)
    forward = _forward(user, out.name, (h, w, c), inp.shape, inp.dtype)
    warnings: list[str] = []
    # Before the model first runs: its graph, nested functions included.
    io_ops = find_io_ops(forward, normalization, tuple(x_test.shape[1:]))
    if io_ops:  # refused, or said before the model runs on any picture
        warnings.append(_check_io_ops(io_ops, model_path, allowed=allow_io_ops))
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    printed = len(warnings)
    sample = _sample(ds.y_test, seed)
    by_norm = _accuracy_by_normalization(forward, normalization, x_test[sample],
                                         ds.y_test[sample])
    warnings += _normalization_warnings(by_norm, normalization, num_classes, norm_source,
                                        len(sample), force=force_normalize)
    probe = np.asarray(forward(x_test[sample[:64]], normalization))
    kind = _output_kind(probe)
    calibration, why = _calibration_split(ds)
    if why:
        warnings.append(why)
    run, accuracy = _write(
        out_dir, force=force, user=user, forward=forward, normalization=normalization,
        kind=kind, layout=layout, ds=ds, names=names, x_test=x_test,
        input_shape=tuple(x_test.shape[1:]),
        record=_import_record(model_path, user, inp, out, kind=kind,
                              normalization=normalization, norm_source=norm_source,
                              by_norm=by_norm, sample_size=len(sample), warnings=warnings,
                              io_ops=io_ops),
        config={"dataset": str(dataset), "data_dir": None if data_dir is None else str(data_dir),
                "seed": int(seed), "image_size": h, "channels": c,
                "split": [float(s) for s in split], "stream": False},
        calibration=calibration, model_path=model_path, output_name=out.name,
    )
    # Printed once the outputs proved finite: a refused model gets its one error line only.
    for line in warnings[printed:]:
        print(f"warning: {line}", file=sys.stderr)
    return ImportResult(
        run_dir=run, source=str(model_path), format=user.format, signature=user.signature,
        input_name=inp.name, output_name=out.name, input_shape=tuple(inp.shape[1:]),
        layout=layout, num_classes=num_classes, normalization=normalization,
        normalization_source=norm_source, output_kind=kind, test_accuracy=accuracy,
        accuracy_by_normalization=by_norm, calibration_split=calibration,
        warnings=tuple(warnings), io_ops=tuple(op.op for op in io_ops),
    )


def _choose_output(user: _UserModel, output_name: str | None, num_classes: int,
                   model_path: Any) -> _Tensor:
    """The classifier output: by name, else the only one as wide as the class count, else
    the best-scoring one."""
    if len(user.outputs) > 1 and output_name is None:
        # Several outputs: the one as wide as the class count is the classifier.
        wide = [t for t in user.outputs if len(t.shape) == 2 and t.shape[1] == num_classes]
        return wide[0] if len(wide) == 1 else _choose(user.outputs, None, "output",
                                                      _output_score, model_path)
    return _choose(user.outputs, output_name, "output", _output_score, model_path)


def _accuracy_by_normalization(forward: Callable, normalization: Normalization,
                               x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy on the sample under every preset (and ``normalization`` when custom)."""
    return {n.name: _accuracy(forward, n, x, y)
            for n in (*NORMALIZATIONS.values(),
                      *([normalization] if normalization.name == "custom" else []))}


def _import_record(model_path: Any, user: _UserModel, inp: _Tensor, out: _Tensor, *, kind: str,
                   normalization: Normalization, norm_source: str, by_norm: dict[str, float],
                   sample_size: int, warnings: list[str],
                   io_ops: Sequence[IOOp] = ()) -> dict[str, Any]:
    """``metrics.json["import"]`` (without the test accuracy): what was chosen and measured."""
    return {
        "source": str(Path(model_path).resolve()), "format": user.format,
        "signature": user.signature, "input": inp.name,
        "input_shape": [d for d in inp.shape[1:]], "output": out.name,
        "output_kind": kind, "normalization": normalization.to_dict(),
        "normalization_source": norm_source,
        "accuracy_by_normalization": {"sample": sample_size, **by_norm},
        "warnings": warnings,
        "io_ops": [op.to_dict() for op in io_ops],
    }


# --- 1. Reading the model -------------------------------------------------------------


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and not 8 <= image_size <= 1024:
        # Each picture of the dataset is resized to this and held as float32 (issue 18).
        raise InputShapeError(
            f"image_size={image_size}; expected 8..1024 pixels a side (1024x1024x3 float32 is "
            "12 MB a picture); fix: pass the size the model was trained at, e.g. image_size=224")


def check_model_path(path: str | os.PathLike[str], *, image_size: int | None = None) -> None:
    """The checks that need no TensorFlow: the CLI runs them before importing it.

    Raises:
        InputShapeError: ``image_size`` outside 8..1024 (checked first, before the path).
        ModelFileError: missing, a folder without ``saved_model.pb``, or a file whose
            suffix is not ``.keras``/``.h5``/``.hdf5`` (e.g. a picture given as MODEL).
    """
    _check_image_size(image_size)
    p = Path(path)
    expected = ("expected a Keras 3 .keras file, a legacy .h5 file or a SavedModel folder "
                "(with saved_model.pb)")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelFileError(f"{p}: a folder without saved_model.pb; {expected}")
        return
    if not p.is_file():
        raise ModelFileError(f"{p}: no such file or folder; {expected}")
    if p.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(f"{p}: suffix {p.suffix or '(none)'!r}; {expected}")


def load_user_model(path: str | os.PathLike[str], *, signature: str | None = None) -> _UserModel:
    """Load a ``.keras`` / ``.h5`` file or a SavedModel folder.

    Raises:
        ModelFileError: missing, unknown kind, or unreadable.
    """
    p = Path(path)
    check_model_path(p)
    if p.is_dir():
        return _load_saved_model(p, signature)
    suffix = p.suffix.lower()
    if signature is not None:
        raise ModelFileError(f"--signature {signature} given for {p.name}; signatures exist only "
                             "in SavedModel folders; fix: drop --signature")
    return _load_keras(p, "keras" if suffix == ".keras" else "h5")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(e).__name__)


def _load_keras(p: Path, fmt: str) -> _UserModel:
    import keras

    how = ("model.save('model.keras')" if fmt == "keras" else "Keras 2 model.save('model.h5')")
    try:
        model = keras.saving.load_model(str(p), compile=False)
    except Exception as e:  # keras raises ValueError, OSError, zipfile/h5py errors...
        raise ModelFileError(
            f"{p}: cannot be read as a {fmt} model ({type(e).__name__}: {_first_line(e)}); "
            f"expected a file written by {how}; fix: re-save the model with Keras 3, or export "
            "it as a SavedModel folder"
        ) from None
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = []
    if not inputs or not outputs:
        raise ModelFileError(
            f"{p}: the model has no known inputs/outputs (a subclassed model never called); "
            "expected a functional or Sequential model; fix: build it with keras.Input(...) "
            "and save it again"
        )

    def tensor(t: Any, i: int, kind: str) -> _Tensor:
        # The layer that made the tensor names it best ("predictions", not "keras_tensor_376").
        layer = getattr(getattr(t, "_keras_history", None), "operation", None)
        name = getattr(layer, "name", None) or getattr(t, "name", None) or f"{kind}_{i}"
        dtype = getattr(t, "dtype", None) or "float32"
        dtype = getattr(dtype, "name", dtype)  # a tf.DType or keras' string
        return _Tensor(name, tuple(None if d is None else int(d) for d in t.shape), dtype)

    ins = tuple(tensor(t, i, "input") for i, t in enumerate(inputs))
    outs = tuple(tensor(t, i, "output") for i, t in enumerate(outputs))
    if len(ins) > 1:
        raise ModelFitError(
            f"{p}: the model has {len(ins)} inputs ({', '.join(t.name for t in ins)}); expected "
            "one image input; fix: save a model that takes only the picture"
        )
    sub: dict[str, Any] = {}

    def call(x: Any, output: str) -> Any:
        if len(outs) == 1:
            return model(x, training=False)
        if output not in sub:  # a model over just the chosen output
            i = [t.name for t in outs].index(output)
            sub[output] = keras.Model(model.inputs, model.outputs[i])
        return sub[output](x, training=False)

    return _UserModel(format=fmt, owner=model, inputs=ins, outputs=outs, signature=None,
                      normalizes_itself=_has_normalizing_layer(model), call=call)


def _has_normalizing_layer(model: Any) -> bool:
    import keras

    kinds = (keras.layers.Rescaling, keras.layers.Normalization)
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if isinstance(layer, kinds):
            return True
        stack.extend(getattr(layer, "layers", []))
    return False


def _load_saved_model(p: Path, signature: str | None) -> _UserModel:
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(p))
    except Exception as e:  # TF raises many unrelated types for a damaged SavedModel
        raise ModelFileError(
            f"{p}: cannot load the SavedModel ({type(e).__name__}: {_first_line(e)}); expected "
            "a folder written by tf.saved_model.save or model.export(); fix: save it again"
        ) from None
    sigs = dict(getattr(obj, "signatures", {}) or {})
    if not sigs:
        raise ModelFileError(f"{p}: the SavedModel has no signatures; expected a serving "
                             "signature; fix: save it with signatures= or model.export()")
    if signature is None:
        signature = "serving_default" if "serving_default" in sigs else (
            next(iter(sigs)) if len(sigs) == 1 else None)
        if signature is None:
            raise ModelFitError(f"{p}: signatures {sorted(sigs)} and none is serving_default; "
                                "fix: pass --signature NAME")
    if signature not in sigs:
        raise ModelFitError(f"--signature {signature!r}; {p} has {sorted(sigs)}; fix: pass one "
                            "of those")
    fn = sigs[signature]
    _, spec = fn.structured_input_signature

    def tensor(name: str, s: Any) -> _Tensor:
        shape = tuple(s.shape.as_list()) if s.shape.rank is not None else ()
        return _Tensor(name, shape, s.dtype.name)

    ins = tuple(tensor(n, s) for n, s in sorted(spec.items()))
    outs = tuple(tensor(n, s) for n, s in sorted(fn.structured_outputs.items()))
    if len(ins) != 1:
        raise ModelFitError(
            f"{p}: signature {signature!r} has {len(ins)} inputs "
            f"({', '.join(t.name for t in ins)}); expected one image input; fix: export a "
            "signature that takes only the picture, or pass --signature"
        )
    name = ins[0].name

    def call(x: Any, output: str) -> Any:
        return fn(**{name: x})[output]

    return _UserModel(format="saved_model", owner=obj, inputs=ins, outputs=outs,
                      signature=signature, normalizes_itself=False, call=call)


# --- 2. Choosing the input and output ---------------------------------------------------


def _image_score(t: _Tensor) -> int:
    shape = t.shape
    if len(shape) == 4 and shape[3] in (1, 3):
        return 3
    if len(shape) == 3:
        return 2
    if len(shape) == 2 and shape[1] is not None and _flat_side(shape[1]) is not None:
        return 1
    return 0


def _output_score(t: _Tensor) -> int:
    return 1 if len(t.shape) == 2 and t.shape[1] is not None else 0


def _choose(tensors: Sequence[_Tensor], name: str | None, what: str,
            score: Callable[[_Tensor], int], path: Any) -> _Tensor:
    listed = ", ".join(f"{t.name} {_shape(t.shape)}" for t in tensors)
    if name is not None:
        for t in tensors:
            if t.name == name:
                return t
        raise ModelFitError(f"--{what} {name!r}; the model's {what}s are {listed}; fix: pass "
                            "one of those names")
    best = max(score(t) for t in tensors)
    top = [t for t in tensors if score(t) == best]
    if best == 0:
        kind = ("an image input [batch, H, W, C] with C = 1 or 3, [batch, H, W] or [batch, D] "
                "with D = H*W or 3*H*W" if what == "input" else "a class-score output [batch, K]")
        raise ModelFitError(f"{path}: not an image classifier: its {what}s are {listed}; "
                            f"expected {kind}; fix: import an image classification model")
    if len(top) > 1:
        raise ModelFitError(f"{path}: {len(top)} candidate {what}s ({listed}); expected one; "
                            f"fix: pass --{what} NAME")
    return top[0]


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _flat_side(d: int) -> tuple[int, int] | None:
    """``(side, channels)`` of a flat input of ``d`` values: a square gray or RGB picture."""
    for c in (1, 3):
        side = math.isqrt(d // c)
        if d % c == 0 and side * side * c == d and side >= 8:
            return side, c
    return None


def _image_geometry(t: _Tensor, path: Any, image_size: int | None) -> tuple[int, int, int, str]:
    """``(H, W, C, layout)`` of the chosen input."""
    shape = t.shape
    if len(shape) == 2:
        side, c = _flat_side(int(shape[1]))  # type: ignore[misc]
        h = w = side
        layout = "flat"
    else:
        h, w = shape[1], shape[2]
        c = shape[3] if len(shape) == 4 else 1
        layout = "nhwc"
        if h is None or w is None:
            if image_size is None:
                raise InputShapeError(
                    f"{path}: input {t.name} {_shape(shape)} has no fixed picture size; "
                    "expected H and W in the model; fix: pass --image-size N"
                )
            h = h or image_size
            w = w or image_size
    if image_size is not None and (h, w) != (image_size, image_size):
        raise InputShapeError(
            f"--image-size {image_size}, but the model's input {t.name} is {h}x{w}; expected "
            "the model's own size; fix: drop --image-size"
        )
    return int(h), int(w), int(c), layout


def _check_output(t: _Tensor, path: Any) -> int:
    if len(t.shape) != 2 or t.shape[1] is None or t.shape[1] < 2:
        raise ModelFitError(
            f"{path}: output {t.name} is {_shape(t.shape)}; expected class scores [batch, K] with "
            "K >= 2; fix: import a classifier (a one-unit sigmoid needs a two-unit softmax head)"
        )
    return int(t.shape[1])


# --- 3. The data --------------------------------------------------------------------------


def _load_data(dataset: str, *, data_dir: Any, size: tuple[int, int, int], seed: int,
               split: Sequence[float], progress: bool):
    from .data import load_dataset

    h, w, c = size
    folder = Path(dataset).expanduser().is_dir()
    if folder and h != w:
        raise InputShapeError(
            f"the model takes {h}x{w} pictures; a folder dataset is resized to squares; "
            "expected H == W; fix: import a model with a square input"
        )
    if folder and not (len(split) == 3 and abs(sum(split) - 1) < 1e-6
                       and all(0 <= s <= 1 for s in split) and split[2] > 0):
        raise DatasetError(f"--split {','.join(map(str, split))}; expected three fractions "
                           "summing to 1 with a test share > 0, e.g. 0.8,0.1,0.1 or 0,0,1")
    ds = load_dataset(dataset, data_dir=data_dir, seed=seed, progress=progress, image_size=h,
                      channels=c, split=tuple(split), verbose=progress)
    if ds.image_shape != (h, w, c):
        dh, dw, dc = ds.image_shape
        what = "channels" if (dh, dw) == (h, w) else "size"
        raise InputShapeError(
            f"dataset {ds.name} has {dh}x{dw}x{dc} pictures but the model takes {h}x{w}x{c} "
            f"({what} differ); expected data of the model's input size and channels; fix: "
            "import a model trained on this data, or use a folder dataset (resized to the "
            "model's size and channels)"
        )
    if len(ds.y_test) == 0:
        raise DatasetError(f"dataset {ds.name}: the test split is empty; expected test pictures "
                           "for the reference predictions; fix: add pictures or change --split")
    return ds


def _class_names(ds, labels_file: Any, num_classes: int, path: Any) -> tuple[str, ...]:
    names = tuple(ds.class_names)
    source = f"dataset {ds.name}"
    if labels_file is not None:
        try:
            text = Path(labels_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"--labels {labels_file}: unreadable ({_first_line(e)}); expected "
                               "a UTF-8 text file, one class name per line") from None
        given = tuple(line.strip() for line in text.splitlines() if line.strip())
        if len(given) != len(names):
            raise ModelFitError(
                f"--labels {labels_file} has {len(given)} names but {source} has {len(names)} "
                "classes; expected one name per class, in label order; fix the file"
            )
        names, source = given, f"--labels {labels_file}"
    if len(names) != num_classes:
        raise ModelFitError(
            f"{path} outputs {num_classes} classes but {source} has {len(names)}; expected the "
            "same count; fix: import the model trained on this dataset, or a dataset with "
            f"{num_classes} classes"
        )
    return names


def _resolve_normalization(norm: Normalization | None, user: _UserModel, channels: int,
                           path: Any) -> tuple[Normalization, str]:
    """The normalization to wrap in, and why: ``flag``, or the default's reason."""
    if norm is None:
        if user.normalizes_itself:
            return NORMALIZATIONS["none"], ("default: the model has a Rescaling/Normalization "
                                            "layer, so it takes raw 0-255 pixels")
        return NORMALIZATIONS["0-1"], "default: pixel values scaled to [0, 1]"
    if channels == 1 and norm.name == "custom" and len(norm.mean) + len(norm.std) > 2:
        raise ModelFitError(
            f"--mean/--std give 3 values but {path} takes 1-channel pictures; expected one "
            "value each; fix: pass e.g. --mean 127.5 --std 127.5"
        )
    return norm, "flag"


def _sample(y: np.ndarray, seed: int) -> np.ndarray:
    from .data import balanced_sample

    return balanced_sample(y, min(CHECK_SAMPLES, len(y)), seed=seed)


def _calibration_split(ds) -> tuple[str, str | None]:
    if len(ds.y_train):
        return "train", None
    fallback = "validation" if len(ds.y_val) else "test"
    return fallback, (
        f"dataset {ds.name} has no training split; the int8 model will be calibrated on the "
        f"{fallback} split (which the parity gate also scores); fix: give training pictures, "
        "e.g. --split 0.8,0.1,0.1"
    )


# --- 4. Calling the model, wrapped ---------------------------------------------------------


def _forward(user: _UserModel, output: str, size: tuple[int, int, int],
             model_shape: tuple[int | None, ...], dtype: str) -> Callable:
    """``forward(image01, normalization) -> the chosen raw output`` (a TF function of tensors)."""
    import tensorflow as tf

    h, w, c = size

    def forward(image: Any, norm: Normalization) -> Any:
        x = tf.convert_to_tensor(image, tf.float32)
        x = tf.reshape(x, [-1, h, w, c])
        # A grayscale model under a per-channel preset (imagenet) gets the channel average.
        mean = tf.constant([np.mean(norm.mean)] if c == 1 else norm.mean, tf.float32)
        std = tf.constant([np.mean(norm.std)] if c == 1 else norm.std, tf.float32)
        x = (x * 255.0 - mean) / std
        if len(model_shape) == 2:
            x = tf.reshape(x, [-1, h * w * c])
        elif len(model_shape) == 3:
            x = tf.reshape(x, [-1, h, w])
        if dtype != "float32":  # e.g. a uint8 or float16 input: the model's own dtype
            target = tf.as_dtype(dtype)
            x = tf.cast(tf.round(x) if target.is_integer else x, target)
        y = user.call(x, output)
        return tf.cast(y, tf.float32)

    return forward


def _accuracy(forward: Callable, norm: Normalization, x: np.ndarray, y: np.ndarray) -> float:
    scores = np.concatenate([np.asarray(forward(x[i : i + 64], norm))
                             for i in range(0, len(x), 64)])
    return round(float(np.mean(scores.argmax(1) == y)), 4)


def _output_kind(scores: np.ndarray) -> str:
    """``probabilities`` when every row is non-negative and sums to 1, else ``logits``."""
    rows = scores.astype(np.float64)
    if rows.min() >= -1e-6 and np.allclose(rows.sum(1), 1.0, atol=_SUM_ATOL):
        return "probabilities"
    return "logits"


def _normalization_warnings(by_norm: dict[str, float], chosen: Normalization, k: int,
                            source: str, n: int = CHECK_SAMPLES, *,
                            force: bool = True) -> list[str]:
    """A warning when the chosen normalization scores near chance and another does not.

    "Clearly better" is 20 points and at least two of the ``n`` sample pictures: on a
    handful of test pictures one picture is no evidence.

    Raises:
        ModelFitError: another preset clearly does better and ``force`` is false: a run
            that answers near chance is not written (``--force-normalize`` keeps it).
    """
    chance = 1.0 / k
    acc = by_norm[chosen.name]
    if acc >= chance + 0.2 * (1 - chance):
        return []
    best = max(by_norm, key=by_norm.__getitem__)
    how = "the default" if source.startswith("default") else f"--normalize {chosen.name}"
    if chosen.name == "custom":
        how = "--mean/--std"
    if by_norm[best] >= acc + max(0.2, 2 / max(n, 1) - 1e-9):
        line = (f"accuracy {acc:.1%} under {how} is near chance ({chance:.1%}); under "
                f"--normalize {best} it is {by_norm[best]:.1%}: the model likely expects "
                f"that; fix: pass --normalize {best}")
        if not force:
            raise ModelFitError(f"{line} (or --force-normalize to write the run anyway)")
        return [line]
    return [f"accuracy {acc:.1%} under {how} is near chance ({chance:.1%}) and no preset does "
            "clearly better; expected a model trained on this data; fix: check the dataset, "
            "the class order (--labels) and the normalization (--mean/--std)"]


def _write(out_dir: Any, *, force: bool, user: _UserModel, forward: Callable,
           normalization: Normalization, kind: str, layout: str, ds, names: tuple[str, ...],
           x_test: np.ndarray, input_shape: tuple[int, ...], record: dict[str, Any],
           config: dict[str, Any], calibration: str, model_path: Any,
           output_name: str) -> tuple[Path, float]:
    from edgeport.fileio import atomic_dir

    from . import plots
    from .run_dir import write_labels, write_metrics, write_reference

    module = _serving_module(user, forward, normalization, kind, input_shape)
    out = Path(out_dir)
    with atomic_dir(out, overwrite=force, marker="run") as tmp:
        probs = write_reference(tmp, module, module.serve, x_test=x_test, y_test=ds.y_test)
        _check_outputs(probs, model_path, output_name)
        pred = probs.argmax(1)
        accuracy = float(np.mean(pred == ds.y_test))
        val_acc = _validation_accuracy(module.serve, ds, layout)
        cm = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(cm, (ds.y_test, pred), 1)
        write_labels(tmp, names)
        write_metrics(tmp, _import_metrics(ds, layout, accuracy=accuracy, val_acc=val_acc,
                                           cm=cm, record=record, config=config,
                                           calibration=calibration))
        (tmp / "plots").mkdir()
        plots.samples(tmp / "plots" / "samples.png", ds.x_test, ds.y_test, pred, list(names))
        plots.confusion(tmp / "plots" / "confusion_matrix.png", cm, list(names))
    return out, accuracy


def _serving_module(user: _UserModel, forward: Callable, normalization: Normalization,
                    kind: str, input_shape: tuple[int, ...]) -> Any:
    """The ``tf.Module`` saved as the run's SavedModel, owning the user's variables."""
    import tensorflow as tf

    class Imported(tf.Module):
        """serving_default(image in [0, 1]) -> probabilities, logits; the model's own
        normalization and output activation inside."""

        def __init__(self, owner: Any):
            super().__init__()
            self.user_model = owner

        @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32,
                                                    name="image")], autograph=False)
        def serve(self, image):
            y = forward(image, normalization)
            if kind == "probabilities":
                return {"probabilities": y, "logits": tf.math.log(tf.maximum(y, PROB_EPS))}
            return {"probabilities": tf.nn.softmax(y), "logits": y}

    return Imported(user.owner)


def _validation_accuracy(fn: Callable, ds, layout: str) -> float | None:
    """Accuracy of the serving function on the validation split; ``None`` without one."""
    import tensorflow as tf

    from .data import to_model_input

    if not len(ds.y_val):
        return None
    val = np.concatenate([fn(tf.constant(v))["probabilities"].numpy() for v in
                          np.array_split(to_model_input(ds.x_val, layout),
                                         max(1, len(ds.y_val) // 1000))])
    return float(np.mean(val.argmax(1) == ds.y_val))


def _import_metrics(ds, layout: str, *, accuracy: float, val_acc: float | None, cm: np.ndarray,
                    record: dict[str, Any], config: dict[str, Any],
                    calibration: str) -> dict[str, Any]:
    """``metrics.json`` of an imported model: no training, the import record inside."""
    import tensorflow as tf

    from .run_dir import input_desc

    return {
        "dataset": ds.name,
        "model": f"imported:{Path(record['source']).name}",
        "recipe": None,
        "seed": config["seed"],
        "test_accuracy": accuracy,
        "reference_accuracy": accuracy,
        "validation_accuracy": val_acc,
        "train_seconds": 0.0,
        "iterations": 0,
        "best_iteration": 0,
        "history": [],
        "confusion_matrix": cm.tolist(),
        "input": input_desc(layout, ds.image_shape, ds.preprocess),
        "split": ds.split,
        "checkpoint": None,
        "calibration_split": calibration,
        "config": config,
        "import": {**record, "test_accuracy": accuracy},
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__},
    }


# --- 5. What the model holds and does: finite weights and outputs, no file/network ops ---


def _check_weights(user: _UserModel, path: Any) -> None:
    """Refuse NaN/infinite weights, before the model runs on any picture.

    Raises:
        NonFiniteModelError: names the first bad variable and how many values are bad.
    """
    bad: list[tuple[str, int, int]] = []
    for name, value in _named_variables(user):
        if not np.issubdtype(value.dtype, np.floating):
            continue
        nan = int(np.isnan(value).sum())
        inf = int(np.isinf(value).sum())
        if nan or inf:
            bad.append((name, nan, inf))
    if not bad:
        return
    name, nan, inf = bad[0]
    what = " and ".join(part for part in (f"{nan} NaN" if nan else "",
                                          f"{inf} infinite" if inf else "") if part)
    more = f" (and {len(bad) - 1} more variables)" if len(bad) > 1 else ""
    raise NonFiniteModelError(
        f"{path}: {name} has {what} values{more}; expected finite weights; fix: retrain or "
        "fix the checkpoint"
    )


def _named_variables(user: _UserModel) -> list[tuple[str, np.ndarray]]:
    """``(name, value)`` of every variable the model owns: Keras paths (``dense_1/kernel``),
    else the SavedModel attribute path, else the variable's own name."""
    owner = user.owner
    weights = getattr(owner, "weights", None)
    if user.format != "saved_model" and weights is not None:
        return [(_strip_scope(getattr(v, "path", None) or v.name), np.asarray(v))
                for v in weights]
    import tensorflow as tf

    found: dict[int, tuple[str, Any]] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", owner)]
    while stack and len(seen) < 100_000:  # attribute paths of the loaded objects
        prefix, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, tf.Variable):
            found.setdefault(id(obj), (prefix or obj.name, obj))
            continue
        children = getattr(obj, "_trackable_children", None)
        try:
            items = children().items() if callable(children) else ()
        except Exception:  # a child that cannot be listed names nothing
            items = ()
        for key, child in items:
            if key not in ("signatures", "_self_saveable_object_factories"):
                stack.append((f"{prefix}/{key}" if prefix else str(key), child))
    fn_vars: list[Any] = []
    if user.signature is not None:
        fn_vars = list(getattr(owner.signatures[user.signature], "variables", ()))
    for v in fn_vars:
        found.setdefault(id(v), (v.name, v))
    return [(_strip_scope(name), v.numpy()) for name, v in found.values()]


def _strip_scope(name: str) -> str:
    """``sequential/dense_1/kernel:0`` -> ``dense_1/kernel``: the layer and the weight."""
    name = name.removesuffix(":0")
    parts = name.split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else name


def _check_outputs(probs: np.ndarray, path: Any, output: str) -> None:
    """Refuse a model whose probabilities on the test split are not finite (e.g. 1e38 weights
    overflow to inf, whose softmax is NaN)."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise NonFiniteModelError(
            f"{path}: output {output} is non-finite (NaN or inf) on {int(bad.sum())} of "
            f"{len(probs)} test images (first: test image {first}); expected finite class "
            "scores; fix: check the weights for huge values that overflow float32, and the "
            "normalization (--normalize), or retrain"
        )


# Op types that reach outside the process: files, the network, or Python code. Matched by
# name or by the pattern after it (ReadFile, WholeFileReaderV2, TFRecordDataset, SaveV2...).
IO_OP_KINDS: dict[str, str] = {
    "PyFunc": "runs Python code", "PyFuncStateless": "runs Python code",
    "EagerPyFunc": "runs Python code", "ImmutableConst": "maps a file",
}
_IO_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"File|Reader|Record|CSVDataset|Sql|LMDB|Snapshot|^Save|^Restore|^Load|Checkpoint"
     r"|^Write|SummaryWriter|^ImportEvent|^Debug|Vocab", "reads or writes files"),
    (r"Rpc|DataService|RegisterDataset|^Collective|^_?(Host)?(Send|Recv)$|^Nccl",
     "talks to the network or other processes"),
    (r"PyFunc", "runs Python code"),
)
_QUIET_STREAMS = ("stderr", "stdout", "log(info)", "log(warning)", "log(error)")


@dataclass(frozen=True)
class IOOp:
    """An op that reaches outside the process: its type, node, function and what it does."""

    op: str
    node: str
    function: str | None
    does: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f" in {self.function}" if self.function else ""
        return f"{self.op} (node {self.node}{where}; {self.does})"


def io_op_kind(op: str, attrs: Any = None) -> str | None:
    """What an op type does outside the process, or ``None`` for a pure tensor op."""
    import re

    if op == "PrintV2":  # prints to stderr, unless output_stream names a file
        stream = attrs["output_stream"].s.decode() if attrs and "output_stream" in attrs else ""
        return None if stream in ("", *_QUIET_STREAMS) else "writes files"
    if op in IO_OP_KINDS:
        return IO_OP_KINDS[op] or None
    for pattern, does in _IO_PATTERNS:
        if re.search(pattern, op):
            return does
    return None


def find_io_ops(forward: Callable, normalization: Normalization,
                input_shape: tuple[int, ...]) -> tuple[IOOp, ...]:
    """The file-system, network and Python ops of the wrapped model, found without running it.

    The forward pass is traced (not run) to a graph; its nodes and every function of its
    library (the SavedModel's serving function, its nested functions, loop bodies...) are
    read.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *input_shape], tf.float32)
    graph = tf.function(lambda x: forward(x, normalization),
                        autograph=False).get_concrete_function(spec).graph.as_graph_def()
    found: list[IOOp] = []
    for node in graph.node:
        does = io_op_kind(node.op, node.attr)
        if does:
            found.append(IOOp(node.op, node.name, None, does))
    for fn in graph.library.function:
        for node in fn.node_def:
            does = io_op_kind(node.op, node.attr)
            if does:
                found.append(IOOp(node.op, node.name, fn.signature.name, does))
    return tuple(found)


def _check_io_ops(ops: Sequence[IOOp], path: Any, *, allowed: bool) -> str:
    """The warning line for ``--allow-io-ops``; without it, the refusal.

    Raises:
        IOOpsError: ``allowed`` is false.
    """
    listed = ", ".join(str(op) for op in ops[:3]) + (
        f" and {len(ops) - 3} more" if len(ops) > 3 else "")
    if not allowed:
        raise IOOpsError(
            f"{path}: the model's serving function has {len(ops)} op(s) that reach outside "
            f"the model: {listed}; expected pure tensor ops (a SavedModel is a program: run, "
            "it would read or write files on this machine); fix: re-export the model without "
            "them, or pass --allow-io-ops if you trust it (it then runs with your permissions, "
            "in import, export and parity)"
        )
    return (f"--allow-io-ops: {path} is a program that reaches outside the model when run "
            f"(files, network or Python): {listed}; it runs with your permissions")


# --- Command line ---------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, ...]:
    import argparse

    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected numbers like 127.5 or "
                                         "123.7,116.3,103.5") from None


def add_import_arguments(p: Any) -> None:
    """The options of ``edgeport import``."""
    from .cli import _split

    p.add_argument("model", help="a Keras 3 .keras file, a legacy .h5 file, or a SavedModel "
                   "folder")
    p.add_argument("--dataset", required=True,
                   help="mnist, fashion-mnist, digits, or a folder with one sub-folder per class")
    p.add_argument("--out", required=True, help="the run directory to write")
    p.add_argument("--data-dir", help="folder holding the IDX files (as for edgeport train)")
    p.add_argument("--labels", help="class names, one per line, in the model's output order "
                   "(default: the folder names or the dataset's)")
    p.add_argument("--input", help="the model input to feed pictures to (default: the only "
                   "image-shaped one)")
    p.add_argument("--output", help="the model output holding class scores (default: the only "
                   "[batch, K] one, or the one with K = class count)")
    p.add_argument("--signature", help="SavedModel signature (default: serving_default)")
    p.add_argument("--normalize", choices=tuple(NORMALIZATIONS),
                   help="what the model expects: 0-1 (pixel/255), -1-1 (pixel/127.5 - 1), "
                   "imagenet (torchvision mean/std), none (raw 0-255 pixels). Default: none "
                   "if the model has a Rescaling/Normalization layer, else 0-1; checked on "
                   "the test split")
    p.add_argument("--force-normalize", action="store_true",
                   help="write the run even if the normalization scores near chance while "
                   "another preset does clearly better (default: refuse, exit 2)")
    p.add_argument("--mean", type=_floats, help="custom normalization (pixel - mean) / std in "
                   "0-255 units: 1 value or 3 (R,G,B)")
    p.add_argument("--std", type=_floats, help="goes with --mean")
    p.add_argument("--image-size", type=int, help="picture size for a model whose input size is "
                   "not fixed")
    p.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1),
                   help="folder datasets: train,validation,test fractions (0.8,0.1,0.1; "
                   "0,0,1 = all pictures are test)")
    p.add_argument("--seed", type=int, default=0, help="seeds the folder split and samples (0)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--allow-io-ops", action="store_true",
                   help="import a model whose serving function reads/writes files or the "
                   "network (ReadFile, WriteFile, PyFunc...): it runs with your permissions. "
                   "Default: refuse it before it runs")


def run_import(args: Any) -> ImportResult:
    """``edgeport import`` from parsed arguments; prints what was chosen and measured."""
    res = import_model(
        args.model, dataset=args.dataset, out_dir=args.out, data_dir=args.data_dir,
        labels_file=args.labels, input_name=args.input, output_name=args.output,
        signature=args.signature,
        normalization=make_normalization(args.normalize, mean=args.mean, std=args.std),
        image_size=args.image_size, split=args.split, seed=args.seed, force=args.force,
        progress=not args.quiet, force_normalize=args.force_normalize,
        allow_io_ops=args.allow_io_ops,
    )
    n = res.normalization
    sig = f" signature {res.signature}," if res.signature else ""
    print(
        f"imported {res.format} model {res.source}:{sig} input {res.input_name} "
        f"{_shape((None, *res.input_shape))}, output {res.output_name} ({res.num_classes} "
        f"{res.output_kind}); normalization {n.name} (mean {list(n.mean)}, std {list(n.std)}; "
        f"{res.normalization_source}); test accuracy {res.test_accuracy:.2%}; int8 calibration "
        f"from the {res.calibration_split} split -> {res.run_dir}"
    )
    return res
