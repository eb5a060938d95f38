"""Tiny pictures and small real Keras architectures for the `edgeport import` tests.

``make_color_folder(root)`` writes a folder dataset (one sub-folder per class) of
small RGB PNGs: each picture is grey noise with a bright square whose colour is its
class, so a few training steps of any architecture separate the classes.
The ``build_*`` functions build (never download) and briefly train one
architecture each on that data, and return the Keras model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLORS = ((230, 40, 40), (40, 200, 40), (50, 80, 240))  # red, green, blue squares
CLASSES = ("red", "green", "blue")


def make_color_folder(root: Path, *, per_class: int = 30, size: int = 24, seed: int = 0) -> Path:
    """``root/<colour>/<i>.png``: grey noise with a coloured square of side size/2."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, color in zip(CLASSES, COLORS, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(60, 160, size=(size, size, 1)).repeat(3, axis=2)
            side = size // 2
            r, c = rng.integers(0, size - side, size=2)
            img[r : r + side, c : c + side] = np.array(color) + rng.integers(-20, 20, size=3)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def load_xy(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The training split as uint8 ``[N, size, size, 3]`` and labels, as the importer splits."""
    from edgeport.train.data import load_dataset

    ds = load_dataset(str(folder), image_size=size, channels=3, progress=False, verbose=False)
    return ds.x_train, ds.y_train


def _fit(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, logits: bool = False,
         lr: float = 0.01) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def build_bn_dropout(x: np.ndarray, y: np.ndarray) -> Any:
    """Sequential conv + BatchNormalization + Dropout, softmax output; takes pixel / 255."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    k = int(y.max()) + 1
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(), layers.Dropout(0.2),
        layers.GlobalAveragePooling2D(), layers.Dense(k, activation="softmax"),
    ])
    return _fit(model, x / 255.0, y, epochs=15)


def build_residual(x: np.ndarray, y: np.ndarray) -> Any:
    """Functional model with a residual (skip) connection; takes pixel / 127.5 - 1."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    k = int(y.max()) + 1
    inp = keras.Input(x.shape[1:], name="picture")
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    r = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = layers.Add()([h, r])
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(k, activation="softmax", name="scores")(h)
    model = keras.Model(inp, out)
    return _fit(model, x / 127.5 - 1.0, y, epochs=15)


def build_rescaling(x: np.ndarray, y: np.ndarray) -> Any:
    """A ``Rescaling(1/255)`` layer inside: the model takes raw 0-255 pixels."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    k = int(y.max()) + 1
    model = keras.Sequential([
        keras.Input(x.shape[1:]), layers.Rescaling(1.0 / 255),
        layers.Conv2D(8, 3, activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(k, activation="softmax"),
    ])
    return _fit(model, x.astype(np.float32), y, epochs=15)


def build_logits(x: np.ndarray, y: np.ndarray) -> Any:
    """A model whose output is logits (no softmax), trained with ``from_logits=True``."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    k = int(y.max()) + 1
    model = keras.Sequential([
        keras.Input(x.shape[1:]), layers.Conv2D(8, 3, activation="relu"),
        layers.GlobalAveragePooling2D(), layers.Dense(k),
    ])
    return _fit(model, x / 255.0, y, epochs=15, logits=True)


def build_mobilenet_v3_small(x: np.ndarray, y: np.ndarray, **options: Any) -> Any:
    """``keras.applications.MobileNetV3Small(weights=None)``, its own preprocessing inside."""
    import keras

    keras.utils.set_random_seed(0)
    k = int(y.max()) + 1
    model = keras.applications.MobileNetV3Small(
        input_shape=x.shape[1:], weights=None, classes=k, include_preprocessing=True,
        **options)
    # Its BatchNormalization layers average with momentum 0.999, too slow for a few dozen
    # steps: at 0.5 the moving statistics follow, so inference predictions are not constant.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    return _fit(model, x.astype(np.float32), y, epochs=4, lr=0.002)
