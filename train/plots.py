"""The tutorial's pictures, as PNG files: samples, weights, confusion matrix, accuracy curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["confusion_text", "write_all"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)


def samples(path: Path, x_test: np.ndarray, y_test, pred, names) -> None:
    """A 3x3 grid of test images, true and predicted class under each (misses in red).

    A test split of fewer than 9 images fills the first rows; the empty cells stay blank.
    """
    plt = _plt()
    n = min(9, len(x_test))
    rows = max(1, -(-n // 3))
    fig, axes = plt.subplots(rows, 3, figsize=(5.2, 0.4 + 1.8 * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    for i, ax in enumerate(list(axes.flat)[:n]):
        img = x_test[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="binary")
        ok = pred[i] == y_test[i]
        ax.set_xlabel(f"true: {names[y_test[i]]}\npred: {names[pred[i]]}",
                      color="black" if ok else "red", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Test images: true and predicted class")
    _save(fig, path)


def weights(path: Path, model, shape, names) -> None:
    """The ten weight images (positive red, negative blue), as in the tutorial.

    For the softmax model these are the columns of W; for deeper models the
    first layer's units or filters.
    """
    plt = _plt()
    w = model.weights[0].numpy()
    h, wd, c = shape
    if w.ndim == 4:  # conv filters [kh, kw, c_in, c_out]
        imgs = [w[:, :, :, i].mean(axis=2) for i in range(min(10, w.shape[3]))]
        titles = [f"filter {i}" for i in range(len(imgs))]
    else:
        imgs = [w[:, i].reshape(h, wd, c).mean(axis=2) for i in range(min(10, w.shape[1]))]
        titles = ([f"class {names[i]}" for i in range(len(imgs))] if w.shape[1] == len(names)
                  else [f"unit {i}" for i in range(len(imgs))])
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    for ax, img, title in zip(axes.flat, imgs, titles, strict=False):
        lim = float(np.abs(img).max()) or 1.0
        im = ax.imshow(img, cmap="seismic", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(imgs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="weight (red +, blue -)")
    fig.suptitle("First-layer weights")
    _save(fig, path)


def confusion(path: Path, cm: np.ndarray, names) -> None:
    """Confusion matrix: rows true class, columns predicted, counts in the cells."""
    plt = _plt()
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.55 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > thresh else "black")
    acc = np.trace(cm) / max(1, cm.sum())
    ax.set_title(f"Confusion matrix (test accuracy {acc:.2%})")
    _save(fig, path)


def accuracy(path: Path, history) -> None:
    """Test (and validation) accuracy against iteration; the seed's checkpoints marked."""
    plt = _plt()
    it = np.array([h["iteration"] for h in history])
    test = np.array([h["test_accuracy"] for h in history])
    val = np.array([h.get("validation_accuracy", np.nan) for h in history])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(it, test, marker=".", label="test")
    if np.isfinite(val).any():
        ax.plot(it, val, marker=".", alpha=0.6, label="validation")
    for h in history:
        if h["iteration"] in (0, 1, 10) or h is history[-1]:
            ax.annotate(f"{h['test_accuracy']:.1%}", (h["iteration"], h["test_accuracy"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Accuracy during training")
    _save(fig, path)


def confusion_text(cm, names) -> str:
    """The confusion matrix as aligned text (rows true, columns predicted)."""
    cm = np.asarray(cm)
    width = max(5, *(len(n) for n in names), len(str(cm.max())) + 1)
    head = "true\\pred".ljust(width) + "".join(n[:width].rjust(width) for n in names)
    rows = [names[i][:width].ljust(width) + "".join(str(v).rjust(width) for v in cm[i])
            for i in range(len(names))]
    return "\n".join([head, *rows])


def write_all(folder: Path, *, ds, model, result, layout: str, test_pred) -> None:
    """Write samples.png, weights.png, confusion_matrix.png and accuracy.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(ds.class_names)
    samples(folder / "samples.png", ds.x_test, ds.y_test, test_pred, names)
    weights(folder / "weights.png", model, ds.image_shape, names)
    confusion(folder / "confusion_matrix.png", np.asarray(result.confusion_matrix), names)
    accuracy(folder / "accuracy.png", list(result.history))
