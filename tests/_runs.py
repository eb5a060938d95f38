"""Build a contract-conforming run directory without the trainer (a test helper).

Usage (from a test or a shell)::

    from _runs import build_softmax_run, load_mnist   # tests/ is on sys.path under pytest
    run_dir = build_softmax_run(tmp_path / "run")

The run holds an MNIST softmax regression ``logits = x W + b`` fitted by a few
hundred full-batch gradient steps in float64 numpy on a seeded subset of the
training split, so its weights are deterministic and non-trivial (about 90%
test accuracy). Everything follows ``docs/contracts.md``: ``saved_model/`` with
a ``serving_default`` signature (``image`` float32 ``[batch, 784]`` ->
``probabilities``, ``logits``), ``reference.npz``, ``metrics.json`` and
``labels.txt``. When the trainer lands, swap this for ``train`` and keep the
tests.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeport.train.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

__all__ = [
    "MNIST_INPUT",
    "build_softmax_run",
    "copy_run",
    "data_dir",
    "load_mnist",
    "rehash",
    "shared_export",
]

MNIST_INPUT = {
    "name": "image",
    "layout": "flat",
    "height": 28,
    "width": 28,
    "channels": 1,
    "dtype": "float32",
    "range": [0.0, 1.0],
    "normalization": "pixel / 255",
    "preprocess": "mnist",
}

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def data_dir() -> Path:
    """The MNIST folder: ``$EDGEPORT_DATA/mnist``, default ``../shared/data`` from the repo."""
    root = os.environ.get("EDGEPORT_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return (base / "mnist").resolve()


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split in the flat model layout.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(x, labels)``: float32 ``[N, 784]`` in [0, 1] and int64 ``[N]``.
    """
    images_name, labels_name = _FILES[split]
    images = read_idx(data_dir() / images_name, expect_magic=IMAGES_MAGIC)
    labels = read_idx(data_dir() / labels_name, expect_magic=LABELS_MAGIC)
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def _fit_softmax(x: np.ndarray, y: np.ndarray, *, steps: int, lr: float) -> tuple[np.ndarray, ...]:
    """Full-batch gradient descent on the cross-entropy, float64 for reproducibility."""
    x64 = x.astype(np.float64)
    onehot = np.eye(10)[y]
    w = np.zeros((x.shape[1], 10))
    b = np.zeros(10)
    for _ in range(steps):
        z = x64 @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x64)
        w -= lr * (x64.T @ g)
        b -= lr * g.sum(axis=0)
    return w.astype(np.float32), b.astype(np.float32)


def build_softmax_run(
    run_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    train_samples: int = 6000,
    steps: int = 200,
) -> Path:
    """Write a run directory holding a fitted MNIST softmax regression.

    Args:
        run_dir: the folder to create (its parent must be writable).
        seed: picks the training subset.
        train_samples: how many training images the fit sees.
        steps: full-batch gradient steps (learning rate 0.5).

    Returns:
        The run directory.
    """
    import tensorflow as tf

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_train), size=train_samples, replace=False))
    w, b = _fit_softmax(x_train[idx], y_train[idx], steps=steps, lr=0.5)

    class Softmax(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="softmax")
            self.w = tf.Variable(w, name="w")
            self.b = tf.Variable(b, name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="image")])
        def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = tf.matmul(image, self.w) + self.b
            return {"probabilities": tf.nn.softmax(logits), "logits": logits}

    module = Softmax()
    tf.saved_model.save(
        module, str(run_dir / "saved_model"), signatures={"serving_default": module.serve}
    )
    serving = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    probs = serving(image=tf.constant(x_test))["probabilities"].numpy().astype(np.float32)
    accuracy = float((probs.argmax(axis=1) == y_test).mean())

    buf = io.BytesIO()
    np.savez(buf, probabilities=probs, labels=y_test)
    atomic_write_bytes(run_dir / "reference.npz", buf.getvalue())
    atomic_write_text(run_dir / "labels.txt", "".join(f"{k}\n" for k in range(10)))
    atomic_write_json(
        run_dir / "metrics.json",
        {
            "dataset": "mnist",
            "model": "softmax",
            "test_accuracy": accuracy,
            "validation_accuracy": accuracy,
            "train_seconds": 0.0,
            "seed": seed,
            "config": {"train_samples": train_samples, "steps": steps, "learning_rate": 0.5},
            "input": MNIST_INPUT,
            "history": [
                {"iteration": 0, "test_accuracy": 0.1},
                {"iteration": 1, "test_accuracy": 0.1},
                {"iteration": 10, "test_accuracy": accuracy},
                {"iteration": steps, "test_accuracy": accuracy},
            ],
        },
    )
    return run_dir


_SHARED: dict[str, Path] = {}


def shared_export(tmp_path_factory: Any) -> Path:
    """One run, built and exported to every format once per test session.

    Every ``tests/test_export_*.py`` module asks for it through its own fixture;
    the cache lives here so the three modules share one export. Treat the
    returned run directory as read-only (use :func:`copy_run` to modify).

    Args:
        tmp_path_factory: pytest's session-scoped ``tmp_path_factory``.

    Returns:
        The run directory, with ``export/`` written.
    """
    if "run" not in _SHARED:
        from edgeport.export import export_model

        run = build_softmax_run(tmp_path_factory.mktemp("export_run") / "run")
        export_model(run, formats="all", load_split=load_mnist, progress=False)
        _SHARED["run"] = run
    return _SHARED["run"]


def copy_run(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy a run directory without its ``export/`` folder (same SavedModel bytes)."""
    dest = Path(dest)
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("export", ".export.*"))
    return dest


def rehash(export_dir: Path, name: str) -> None:
    """Edit manifest.json so its entries for ``name`` match the file as it is now (what a
    hostile user who can write the folder does after changing a file)."""
    import hashlib
    import json

    data = (export_dir / name).read_bytes()
    now = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path = export_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["artifacts"]:
        if entry["file"] == name:
            entry.update(now)
    if name in manifest.get("files", {}):
        manifest["files"][name] = now
    path.write_text(json.dumps(manifest))
