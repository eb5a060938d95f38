"""Training beyond one device with TensorFlow's own ``tf.distribute`` engine.

``--strategy mirrored`` replicates the model on every local GPU
(``MirroredStrategy``); ``--strategy multi-worker`` spans processes or machines
described by ``TF_CONFIG`` (``MultiWorkerMirroredStrategy``), e.g. two workers
on one host::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 0}}' edgeport train --strategy multi-worker ...

Every worker computes the same global batch indices (same seed), takes its
replica's share of each batch, and the gradients are averaged across replicas
with ``strategy.reduce`` before the same update is applied everywhere. Only
the chief (worker 0) writes the run directory.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["is_chief", "make_distributed_steps", "make_strategy"]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``default``, ``mirrored`` or ``multi-worker``."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        from mobile_demo.errors import EdgeportError

        if "TF_CONFIG" not in os.environ:
            raise EdgeportError(
                "--strategy multi-worker needs TF_CONFIG, which is not set; expected JSON like "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}} on each worker'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy={name!r}")


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process a worker other than worker 0."""
    cfg = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = cfg.get("task", {})
    return task.get("type", "worker") in ("chief", "worker") and (
        task.get("type") == "chief" or (int(task.get("index", 0)) == 0
        and "chief" not in cfg.get("cluster", {}))
    )


def make_distributed_steps(strategy, model, opt, loss_fn, x_train, y_train, batch_input):
    """A ``run_steps(idx_block, step0)`` that runs each step under ``strategy.run``.

    One compiled step per call (collectives inside a graph loop are avoided on
    purpose: every worker must issue the same collectives in the same order).
    """
    mean = tf.distribute.ReduceOp.MEAN

    @tf.function
    def one_step(idx, step):
        xb = batch_input(tf.gather(x_train, idx))
        yb = tf.gather(y_train, idx)

        def replica_fn(xb, yb):
            ctx = tf.distribute.get_replica_context()
            n = ctx.num_replicas_in_sync
            r = ctx.replica_id_in_sync_group
            xl, yl = xb[r::n], yb[r::n]  # this replica's share of the global batch
            with tf.GradientTape() as tape:
                loss = loss_fn(xl, yl, step)
            return loss, tape.gradient(loss, model.weights)

        loss, grads = strategy.run(replica_fn, args=(xb, yb))
        grads = [strategy.reduce(mean, g, axis=None) for g in grads]
        opt.apply(grads, model.weights)
        return strategy.reduce(mean, loss, axis=None)

    def run_steps(idx_block, step0):
        loss = None
        for i in range(int(idx_block.shape[0])):
            loss = one_step(idx_block[i], step0 + i)
        return loss

    return run_steps
