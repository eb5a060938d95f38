"""Gradient descent and Adam over plain ``tf.Variable``s, with a learning-rate schedule.

Small and explicit on purpose: the update rules are the textbook ones, every
slot variable is created next to its weight (so it lands on the same device
and under the same distribution strategy), and there is no hidden state that
could make two runs with the same seed differ.
"""

from __future__ import annotations

import math

import tensorflow as tf

from .config import OPTIMIZERS, SCHEDULES

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "make_optimizer"]


class Optimizer(tf.Module):
    """Base: holds the step counter and the schedule; subclasses define ``_update``."""

    def __init__(self, learning_rate: float, *, schedule: str, total_steps: int) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; expected one of {', '.join(SCHEDULES)}")
        self.learning_rate = float(learning_rate)
        self.schedule = schedule
        self.total_steps = max(1, int(total_steps))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    def current_lr(self) -> tf.Tensor:
        lr = tf.constant(self.learning_rate, tf.float32)
        if self.schedule == "cosine":
            t = tf.cast(self.step, tf.float32) / float(self.total_steps)
            lr = lr * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(t, 1.0)))
        return lr

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        lr = self.current_lr()
        self.step.assign_add(1)
        for i, (g, v) in enumerate(zip(grads, variables, strict=True)):
            self._update(i, g, v, lr)

    def _update(self, i: int, g: tf.Tensor, v: tf.Variable, lr: tf.Tensor) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """``v -= lr * g``: the seed's ``tf.train.GradientDescentOptimizer``."""

    def build(self, variables: list[tf.Variable]) -> SGD:
        return self

    def _update(self, i, g, v, lr):
        v.assign_sub(lr * g)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, beta1=0.9, beta2=0.999, eps=1e-7."""

    beta1, beta2, eps = 0.9, 0.999, 1e-7

    def build(self, variables: list[tf.Variable]) -> Adam:
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]
        return self

    def _update(self, i, g, v, lr):
        t = tf.cast(self.step, tf.float32)  # already incremented: t starts at 1
        m = self.m[i].assign(self.beta1 * self.m[i] + (1.0 - self.beta1) * g)
        s = self.v[i].assign(self.beta2 * self.v[i] + (1.0 - self.beta2) * tf.square(g))
        m_hat = m / (1.0 - tf.pow(self.beta1, t))
        s_hat = s / (1.0 - tf.pow(self.beta2, t))
        v.assign_sub(lr * m_hat / (tf.sqrt(s_hat) + self.eps))


def make_optimizer(
    name: str, learning_rate: float, *, schedule: str, total_steps: int, variables
) -> Optimizer:
    """Build and initialise an optimizer for ``variables``."""
    cls = {"sgd": SGD, "adam": Adam}.get(name)
    if cls is None:
        raise ValueError(f"optimizer={name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return cls(learning_rate, schedule=schedule, total_steps=total_steps).build(list(variables))
