"""The classifiers: the seed's softmax regression, an MLP, and the classic MNIST CNN.

Plain ``tf.Module``s with explicitly created variables, so that initialisation
is seeded and bit-reproducible, the variables are created under whatever
``tf.distribute`` strategy scope is active, and the SavedModel signature is
exactly the one the exporter expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .config import MODELS

__all__ = ["MODELS", "Classifier", "ModelSpec", "build_model", "input_layout"]


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the architecture, input geometry and classes."""

    kind: str
    height: int
    width: int
    channels: int
    num_classes: int
    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.2
    filters: tuple[int, int] = (32, 64)
    dense: int = 128


def input_layout(kind: str) -> str:
    """``flat`` for softmax and mlp (``[N, H*W*C]``), ``nhwc`` for cnn."""
    return "nhwc" if kind == "cnn" else "flat"


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class Classifier(tf.Module):
    """``__call__(x, training=False, seed=None) -> logits``; ``x`` in the model's layout."""

    def __init__(self, spec: ModelSpec, *, seed: int = 0) -> None:
        super().__init__(name=spec.kind)
        self.spec = spec
        rng = np.random.default_rng(seed)
        d = spec.height * spec.width * spec.channels
        k = spec.num_classes
        self._layers: list[tuple[str, tf.Variable, tf.Variable]] = []
        if spec.kind == "softmax":
            # The seed initialises W and b to zero (so every class scores 0 and accuracy
            # before training is the frequency of class 0 predictions: 9.8 % on MNIST).
            self._add("dense", np.zeros((d, k), np.float32), np.zeros((k,), np.float32))
        elif spec.kind == "mlp":
            fan_in = d
            for width in spec.hidden:
                self._add("dense", _glorot(rng, (fan_in, width), fan_in, width),
                          np.zeros((width,), np.float32))
                fan_in = width
            self._add("dense", _glorot(rng, (fan_in, k), fan_in, k), np.zeros((k,), np.float32))
        elif spec.kind == "cnn":
            c_in = spec.channels
            for f in spec.filters:
                self._add("conv", _glorot(rng, (3, 3, c_in, f), 9 * c_in, 9 * f),
                          np.zeros((f,), np.float32))
                c_in = f
            h, w = spec.height, spec.width
            for _ in spec.filters:
                h, w = (h + 1) // 2, (w + 1) // 2
            flat = h * w * c_in
            self._add("dense", _glorot(rng, (flat, spec.dense), flat, spec.dense),
                      np.zeros((spec.dense,), np.float32))
            self._add("dense", _glorot(rng, (spec.dense, k), spec.dense, k),
                      np.zeros((k,), np.float32))
        else:
            raise ValueError(f"model={spec.kind!r}; expected one of {', '.join(MODELS)}")
        self.weights = [v for _, w, b in self._layers for v in (w, b)]

    def _add(self, kind: str, w: np.ndarray, b: np.ndarray) -> None:
        i = len(self._layers)
        self._layers.append((kind, tf.Variable(w, name=f"w{i}"), tf.Variable(b, name=f"b{i}")))

    def _dropout(self, x: tf.Tensor, training: bool, seed: tf.Tensor | None, i: int) -> tf.Tensor:
        if not training or self.spec.dropout <= 0 or seed is None:
            return x
        rate = self.spec.dropout
        # Stateless dropout: the mask depends only on (seed, step, layer), so training
        # replays exactly; ``seed`` is the pair [run seed, step], folded with the layer.
        layer_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
        keep = tf.random.stateless_uniform(tf.shape(x), seed=layer_seed) >= rate
        return tf.where(keep, x / (1.0 - rate), tf.zeros_like(x))

    def __call__(self, x: tf.Tensor, training: bool = False, seed: tf.Tensor | None = None):
        n = len(self._layers)
        for i, (kind, w, b) in enumerate(self._layers):
            last = i == n - 1
            if kind == "conv":
                x = tf.nn.relu(tf.nn.conv2d(x, w, strides=1, padding="SAME") + b)
                x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME")
                continue
            if x.shape.rank != 2:
                x = tf.reshape(x, [tf.shape(x)[0], -1])
            x = tf.matmul(x, w) + b
            if not last:
                x = self._dropout(tf.nn.relu(x), training, seed, i)
        return x


def build_model(spec: ModelSpec, *, seed: int = 0) -> Classifier:
    """Create a :class:`Classifier` with seeded initial weights."""
    return Classifier(spec, seed=seed)
