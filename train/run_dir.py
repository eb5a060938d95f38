"""The run directory: the contract between the trainer, the exporter and the parity gate.

Layout (see docs/contracts.md)::

    RUN/saved_model/     serving_default: image [batch, ...] float32 -> probabilities, logits
    RUN/reference.npz    probabilities [N_test, K] float32, labels [N_test] int64
    RUN/metrics.json     dataset, model, accuracies, train_seconds, seed, config, input, history
    RUN/labels.txt       one class name per line
    RUN/plots/*.png      samples, weights, confusion_matrix, accuracy
    RUN/checkpoint/      best.index + best.data-*: the kept (best-validation) weights as a
                         tf.train.Checkpoint of the model, to fine-tune or inspect:
                         ``tf.train.Checkpoint(model=build_model(spec)).read(RUN/checkpoint/best)``

The whole folder is built under a temporary name and renamed into place, so a
run that is interrupted leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.errors import EdgeportError, LabelsFileError
from edgeport.fileio import atomic_dir, check_npz_size, check_replaceable, read_labels

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["RunDirError", "RunInfo", "check_writable", "input_desc", "load_run", "load_split",
           "probe_writable", "saved_model_content_sha256", "write_labels", "write_metrics",
           "write_reference", "write_run"]

# The most reference.npz's arrays may declare before they are loaded: MNIST's is 440 KB
# (10,000 x 10 probabilities and labels); 1 GB fits a million test images of 256 classes.
REFERENCE_MAX_BYTES = 1 << 30


class RunDirError(EdgeportError, ValueError):
    """A run directory is missing, incomplete, or already exists."""


@dataclass(frozen=True)
class RunInfo:
    """A run directory, read back and validated.

    ``reference_probabilities`` and ``reference_labels`` are ``None`` only when
    the run was loaded with ``need_reference=False`` (the exporter needs no oracle).
    """

    path: Path
    metrics: dict[str, Any]
    labels: tuple[str, ...]
    reference_probabilities: np.ndarray | None
    reference_labels: np.ndarray | None

    @property
    def saved_model(self) -> Path:
        return self.path / "saved_model"

    @property
    def input(self) -> dict[str, Any]:
        return self.metrics["input"]

    @property
    def dataset(self) -> str:
        return str(self.metrics["dataset"])

    @property
    def model(self) -> str:
        return str(self.metrics["model"])

    @property
    def seed(self) -> int:
        return int(self.metrics.get("seed", 0))


def saved_model_content_sha256(saved_model_dir: str | os.PathLike[str]) -> str:
    """A hash of what a SavedModel computes with: its variables and assets.

    Unlike a hash of every file, it is the same for two identical trainings with the
    same seed: ``saved_model.pb`` and ``fingerprint.pb`` carry per-process function
    names and ids, the variables do not. The graph itself is checked another way
    (the parity gate re-runs the SavedModel on a sample of the reference's images).
    Recorded as ``metrics.json["saved_model_content_sha256"]`` and in the manifest.
    """
    import hashlib

    root = Path(saved_model_dir)
    digest = hashlib.sha256(b"edgeport-saved-model-content-v1\0")
    files = sorted((p.relative_to(root).as_posix(), p) for sub in ("variables", "assets")
                   for p in (root / sub).rglob("*") if p.is_file())
    for rel, path in files:
        digest.update(rel.encode("utf-8") + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_writable(
    out_dir: str | os.PathLike[str],
    *,
    force: bool,
    protect: tuple[str | os.PathLike[str] | None, ...] = (),
) -> None:
    """Before any long work: refuse an existing ``out_dir`` (unless ``force`` and it is an
    edgeport run, see :func:`edgeport.fileio.check_replaceable`), and check its parent
    folder can really be written (read-only file system, permissions, a file in the way).

    Args:
        out_dir: the run directory to be written.
        force: replace an existing run.
        protect: folders that must never be replaced (the dataset).
    """
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not force:
        raise RunDirError(
            f"{out} already exists; expected a new folder. Fix: choose another --out, "
            "or pass --force to replace it"
        )
    if force:
        check_replaceable(out, kind="run", protect=protect)
    probe_writable(out.parent, flag="--out")


def probe_writable(folder: str | os.PathLike[str], *, flag: str) -> None:
    """Create and remove a temporary folder in ``folder`` (or its nearest existing parent).

    Raises:
        RunDirError: it cannot be written (read-only, permission, a file in the way).
    """
    import tempfile

    target = Path(folder).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise RunDirError(f"{flag}: {target} is a file; expected a folder to write into; "
                          f"fix: choose another {flag}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".edgeport-probe.", dir=target))
    except OSError as e:
        raise RunDirError(
            f"{flag}: cannot write into {target} ({e.strerror}); expected a writable folder; "
            f"fix: choose another {flag} or free space / fix the permissions"
        ) from None


def input_desc(layout: str, shape: tuple[int, int, int], preprocess: str) -> dict[str, Any]:
    """``metrics.json["input"]``: the SavedModel's ``image`` input, pixel values in [0, 1]."""
    h, w, c = shape
    return {"name": "image", "layout": layout, "height": h, "width": w, "channels": c,
            "dtype": "float32", "range": [0.0, 1.0], "normalization": "pixel / 255",
            "preprocess": preprocess}


def write_run(out_dir, *, cfg, ds, trained, force: bool = False) -> Path:
    """Save the SavedModel, the reference predictions, metrics, labels and plots."""
    import tensorflow as tf

    out = Path(out_dir)
    model, result = trained.model, trained.result
    layout, input_shape = trained.layout, trained.input_shape

    class Serving(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

        @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32,
                                                    name="image")])
        def serve(self, image):
            logits = self.model(image, training=False)
            return {"probabilities": tf.nn.softmax(logits), "logits": logits}

    serving = Serving(model)
    try:
        _write_run_folder(out, force=force, serving=serving, tf=tf, ds=ds, cfg=cfg,
                          model=model, result=result, trained=trained, layout=layout)
    except FileExistsError as e:
        if isinstance(e, EdgeportError):
            raise
        raise RunDirError(
            f"{out} appeared while this run trained (another `edgeport train --out {out}`?); "
            "expected a new folder; fix: choose another --out, or pass --force"
        ) from None
    return out


def _write_run_folder(out: Path, *, force: bool, serving, tf, ds, cfg, model, result, trained,
                      layout: str) -> None:
    from . import plots
    from .data import to_model_input

    with atomic_dir(out, overwrite=force, marker="run") as tmp:
        probs = write_reference(tmp, serving, serving.serve,
                                x_test=to_model_input(ds.x_test, layout), y_test=ds.y_test)
        # The weights as trained (already the best-validation ones when patience is set),
        # without optimizer state: a few MB at most, written once.
        tf.train.Checkpoint(model=model).write(str(tmp / "checkpoint" / "best"))
        write_labels(tmp, ds.class_names)
        metrics = {
            "dataset": ds.name,
            "model": cfg.model,
            "recipe": cfg.recipe,
            "seed": cfg.seed,
            "test_accuracy": result.test_accuracy,
            "reference_accuracy": float(np.mean(probs.argmax(1) == ds.y_test)),
            "validation_accuracy": result.validation_accuracy,
            "train_seconds": result.train_seconds,
            "iterations": result.iterations,
            "best_iteration": result.best_iteration,
            "history": list(result.history),
            "confusion_matrix": [list(r) for r in result.confusion_matrix],
            "input": input_desc(layout, ds.image_shape, ds.preprocess),
            "split": ds.split,
            "checkpoint": "checkpoint/best",
            "saved_model_content_sha256": saved_model_content_sha256(tmp / "saved_model"),
            "config": cfg.to_dict(),
            "versions": {"tensorflow": tf.__version__, "numpy": np.__version__},
        }
        write_metrics(tmp, metrics)
        plots.write_all(tmp / "plots", ds=ds, model=model, result=result, layout=layout,
                        test_pred=trained.test_pred)


def write_reference(tmp: Path, module: Any, signature: Any, *, x_test: np.ndarray,
                    y_test: np.ndarray) -> np.ndarray:
    """Save ``module`` as ``tmp/saved_model`` and its test predictions as ``tmp/reference.npz``.

    The parity oracle comes from the SavedModel as written, reloaded: what is
    exported is exactly what the reference numbers describe.

    Args:
        tmp: the run folder being built (inside :func:`edgeport.fileio.atomic_dir`).
        module: the ``tf.Module`` owning the variables.
        signature: its ``tf.function`` taking ``image`` and returning
            ``probabilities`` and ``logits``, saved as ``serving_default``.
        x_test: the test images in model input layout, float32 in [0, 1].
        y_test: their labels.

    Returns:
        The reference probabilities ``[N_test, K]``.
    """
    import tensorflow as tf

    tf.saved_model.save(module, str(tmp / "saved_model"),
                        signatures={"serving_default": signature})
    fn = tf.saved_model.load(str(tmp / "saved_model")).signatures["serving_default"]
    probs = np.concatenate([fn(image=tf.constant(x_test[i : i + 2000]))["probabilities"]
                            .numpy() for i in range(0, len(x_test), 2000)])
    np.savez(tmp / "reference.npz", probabilities=probs.astype(np.float32),
             labels=np.asarray(y_test).astype(np.int64))
    return probs


def write_labels(tmp: Path, class_names: tuple[str, ...] | list[str]) -> None:
    """``tmp/labels.txt``: one class name per line."""
    (tmp / "labels.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")


def write_metrics(tmp: Path, metrics: dict[str, Any]) -> None:
    """``tmp/metrics.json``, indented."""
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def load_run(run_dir: str | os.PathLike[str], *, need_reference: bool = True) -> RunInfo:
    """Read and validate a run directory (docs/contracts.md).

    Args:
        run_dir: the folder ``edgeport train --out`` wrote.
        need_reference: also load ``reference.npz`` (the parity oracle).

    Raises:
        RunDirError: the folder or one of its required files is missing or malformed.
    """
    run = Path(run_dir).resolve()
    fix = f"fix: run `edgeport train --out {run}` first, or point at a finished run"
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist; expected a training run; {fix}")
    needs = ["saved_model/saved_model.pb", "metrics.json", "labels.txt"]
    for need in needs + (["reference.npz"] if need_reference else []):
        if not (run / need).is_file():
            raise RunDirError(f"{run}: missing {need}; expected a complete run directory; {fix}")
    mpath = run / "metrics.json"
    try:
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunDirError(f"{mpath}: not valid JSON ({e}); {fix}") from None
    missing = [k for k in ("dataset", "model", "input") if not isinstance(metrics, dict)
               or k not in metrics]
    if missing:
        raise RunDirError(f"{mpath}: missing {missing}; expected the trainer's metrics; {fix}")
    keys = ("name", "layout", "height", "width", "channels")
    spec = metrics["input"]
    if not isinstance(spec, dict) or any(k not in spec for k in keys):
        raise RunDirError(f"{mpath}: 'input' is {spec!r}, expected keys {list(keys)}; {fix}")
    _check_metrics_fields(mpath, metrics, fix)
    try:
        names = tuple(read_labels(run / "labels.txt"))
    except LabelsFileError as e:
        raise RunDirError(f"{e}; {fix}") from None
    probs = labels = None
    if need_reference:
        # Shapes first, from the .npy headers: a file declaring (1e11, 784) arrays is refused.
        check_npz_size(run / "reference.npz", max_bytes=REFERENCE_MAX_BYTES, error=RunDirError,
                       fix=fix)
        try:
            with np.load(run / "reference.npz", allow_pickle=False) as z:
                raw_probs, raw_labels = z["probabilities"], z["labels"]
                if raw_probs.dtype.kind != "f" or raw_labels.dtype.kind not in "iu":
                    raise ValueError(f"probabilities {raw_probs.dtype}, labels {raw_labels.dtype}"
                                     "; expected float and integer arrays")
                probs = np.asarray(raw_probs, dtype=np.float32)
                labels = np.asarray(raw_labels, dtype=np.int64)
        except (OSError, ValueError, KeyError) as e:
            raise RunDirError(
                f"{run / 'reference.npz'}: unreadable without pickle or missing arrays ({e}); "
                f"expected plain arrays 'probabilities' and 'labels'; {fix}"
            ) from None
        if probs.ndim != 2 or labels.shape != (probs.shape[0],):
            raise RunDirError(
                f"{run / 'reference.npz'}: probabilities {probs.shape} and labels "
                f"{labels.shape} do not match; expected [N, K] and [N]; {fix}"
            )
    return RunInfo(path=run, metrics=metrics, labels=names, reference_probabilities=probs,
                   reference_labels=labels)


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_metrics_fields(mpath: Path, metrics: dict[str, Any], fix: str) -> None:
    """Every field of metrics.json that edgeport reads has the type and range it needs."""
    spec = metrics["input"]
    checks = [
        ("input.layout", spec["layout"], spec["layout"] in ("flat", "nhwc"), "'flat' or 'nhwc'"),
        ("input.height", spec["height"], _is_int(spec["height"], 1, 4096), "an integer 1..4096"),
        ("input.width", spec["width"], _is_int(spec["width"], 1, 4096), "an integer 1..4096"),
        ("input.channels", spec["channels"], spec["channels"] in (1, 3)
         and not isinstance(spec["channels"], bool), "1 or 3"),
        ("dataset", metrics["dataset"], isinstance(metrics["dataset"], str), "a name"),
        ("model", metrics["model"], isinstance(metrics["model"], str), "a name"),
        ("seed", metrics.get("seed", 0), _is_int(metrics.get("seed", 0), 0, 2**32 - 1),
         "an integer 0..2**32-1"),
    ]
    cfg = metrics.get("config", {})
    checks.append(("config", cfg, isinstance(cfg, dict), "an object"))
    if isinstance(cfg, dict):
        split = cfg.get("split", [0.8, 0.1, 0.1])
        checks += [
            ("config.dataset", cfg.get("dataset"), cfg.get("dataset") is None
             or isinstance(cfg.get("dataset"), str), "a name"),
            ("config.data_dir", cfg.get("data_dir"), cfg.get("data_dir") is None
             or isinstance(cfg.get("data_dir"), str), "a folder or null"),
            ("config.seed", cfg.get("seed", 0), _is_int(cfg.get("seed", 0), 0, 2**32 - 1),
             "an integer 0..2**32-1"),
            ("config.image_size", cfg.get("image_size", 28),
             _is_int(cfg.get("image_size", 28), 8, 256), "an integer 8..256"),
            ("config.channels", cfg.get("channels", 1), cfg.get("channels", 1) in (1, 3)
             and not isinstance(cfg.get("channels", 1), bool), "1 or 3"),
            ("config.split", split, isinstance(split, list) and len(split) == 3
             and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                     for v in split), "three fractions"),
            ("config.stream", cfg.get("stream", False), isinstance(cfg.get("stream", False),
                                                                    bool), "true or false"),
        ]
    split_info = metrics.get("split")
    checks.append(("split", split_info, split_info is None or isinstance(split_info, dict),
                   "an object"))
    for name, value, ok, expected in checks:
        if not ok:
            raise RunDirError(f"{mpath}: {name} is {str(value)[:60]!r}; expected {expected}; "
                              f"{fix}")


def load_split(
    run_dir: str | os.PathLike[str] | RunInfo,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    sample: int | None = None,
    sample_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The run's ``train``, ``validation`` or ``test`` images in model input layout.

    Re-loads the dataset the run was trained on with the run's own options,
    so the exporter's calibration data and the parity gate's test set are the
    ones the trainer used.

    Args:
        run_dir: the run (or its :class:`RunInfo`).
        split: ``train``, ``validation`` or ``test``.
        data_dir: where the dataset files are, if not where the run found them.
        progress: show progress bars.
        sample: return only a class-balanced sample of this many images
            (:func:`train.data.balanced_sample` with ``sample_seed``). For a run
            trained with ``--stream`` only the sampled training files are decoded.
        sample_seed: the seed of that sample.

    Returns:
        ``(x float32 in [0, 1], labels int64)``.
    """
    from .data import to_model_input

    info = run_dir if isinstance(run_dir, RunInfo) else load_run(run_dir)
    ds = _reload_dataset(info, split, data_dir=data_dir, progress=progress)
    x, y = _split_arrays(ds, split, sample=sample, sample_seed=sample_seed)
    if split == "test" and not np.array_equal(y, info.reference_labels):
        raise RunDirError(
            f"{info.path}: the test labels of dataset {ds.name!r} differ from reference.npz; "
            "expected the data the run was trained on. Fix: pass the same data_dir"
        )
    return to_model_input(x, info.input["layout"]), y


def _reload_dataset(
    info: RunInfo, split: str, *, data_dir: str | os.PathLike[str] | None, progress: bool
) -> Dataset:
    """The run's dataset, loaded with the options in ``metrics.json["config"]``."""
    from .data import load_dataset

    cfg = info.metrics.get("config", {})
    name = info.metrics["dataset"] if not cfg.get("dataset") else cfg["dataset"]
    root = (info.metrics.get("split") or {}).get("root")
    if root and Path(root).is_dir() and not Path(name).is_dir():
        name = root  # a folder dataset given as a relative path, read from elsewhere
    return load_dataset(
        name,
        data_dir=data_dir if data_dir is not None else cfg.get("data_dir"),
        seed=int(cfg.get("seed", 0)),
        progress=progress,
        image_size=int(cfg.get("image_size", 28)),
        channels=int(cfg.get("channels", 1)),
        split=tuple(cfg.get("split", (0.8, 0.1, 0.1))),
        stream=bool(cfg.get("stream", False)) and split == "train",
        verbose=False,
    )


def _split_arrays(
    ds: Dataset, split: str, *, sample: int | None, sample_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 pixels, labels)`` of one split, or of its class-balanced sample."""
    from .data import balanced_sample

    arrays = {"train": (ds.x_train, ds.y_train), "validation": (ds.x_val, ds.y_val),
              "test": (ds.x_test, ds.y_test)}
    if split not in arrays:
        raise ValueError(f"split={split!r}; expected train, validation or test")
    x, y = arrays[split]
    if split == "train" and ds.train_source is not None:  # streamed: the files are on disk
        from .folder import decode_sample

        idx = balanced_sample(y, sample if sample is not None else len(y), seed=sample_seed)
        return decode_sample(ds.train_source, idx)
    if sample is not None:
        idx = balanced_sample(y, sample, seed=sample_seed)
        return x[idx], y[idx]
    return x, y
