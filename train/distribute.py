"""Training beyond one device with TensorFlow's own ``tf.distribute`` engine.

``--strategy mirrored`` replicates the model on every local GPU
(``MirroredStrategy``; on a machine without a GPU it runs one replica on the
CPU, which trains the same model as ``default``). ``--strategy multi-worker``
spans processes or machines described by ``TF_CONFIG``
(``MultiWorkerMirroredStrategy``).

Running on a cluster
--------------------
Start the same command on every machine, each with its own ``TF_CONFIG``: the
same ``cluster`` list everywhere (``host:port`` of every worker, reachable from
all of them), and ``task.index`` = this worker's position in that list. Worker 0
is the chief: it alone writes ``--out``; the others train in lockstep and write
nothing. Every worker needs the dataset (same files, or the same folder and
``--seed``), and all of them must be started within a few minutes of each other
(they wait for one another at start-up)::

    # on host1
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        edgeport train --strategy multi-worker --model cnn --out runs/cnn
    # on host2: the same, with "index": 1

Two workers on one machine (ports 12345 and 12346 on 127.0.0.1) work the same
way; ``tests/test_distribute.py`` does exactly that. The global batch is
``--batch-size``: every worker draws the same batch indices (same seed), each
replica takes its share (``batch[r::n]``), the per-replica gradients are
averaged across all replicas with ``strategy.reduce`` (an all-reduce over the
network), and the same update is applied everywhere, so the model is the one a
single process would train, up to float summation order (and, for models with
dropout, the dropout masks, which are drawn per replica share). One compiled
step runs per call: every worker must issue the same collectives in the same
order, which a graph loop around collectives does not guarantee.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["is_chief", "make_distributed_steps", "make_distributed_stream_steps",
           "make_strategy"]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``default``, ``mirrored`` or ``multi-worker``.

    Create it before any other TensorFlow work in the process: the multi-worker
    strategy configures collective ops, which must happen at start-up.

    Raises:
        ConfigError: ``multi-worker`` without a valid ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy={name!r}; expected default, mirrored or multi-worker")


def _check_tf_config() -> dict:
    from .config import ConfigError

    example = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, '
               '"task": {"type": "worker", "index": 0}}')
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            f"--strategy multi-worker needs TF_CONFIG, which is not set; expected JSON like "
            f"{example} on each worker (see train/distribute.py)"
        )
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"TF_CONFIG={raw!r} is not valid ({type(e).__name__}: {e}); expected JSON like "
            f"{example}"
        ) from None
    n = len(workers) + len(cfg["cluster"].get("chief", []))
    if task.get("type") == "worker" and not 0 <= index < len(workers):
        raise ConfigError(
            f"TF_CONFIG task index {index} is outside the {len(workers)} workers listed; "
            f"expected 0..{len(workers) - 1}"
        )
    if n < 1:
        raise ConfigError(f"TF_CONFIG lists no workers; expected JSON like {example}")
    return cfg


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process a worker other than worker 0."""
    cfg = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = cfg.get("task", {})
    return task.get("type", "worker") in ("chief", "worker") and (
        task.get("type") == "chief" or (int(task.get("index", 0)) == 0
        and "chief" not in cfg.get("cluster", {}))
    )


def _one_step(strategy, model, opt, loss_fn):
    """A compiled ``one_step(xb, yb, step) -> loss`` on the global batch."""
    mean = tf.distribute.ReduceOp.MEAN

    @tf.function
    def one_step(xb, yb, step):
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

    return one_step


def make_distributed_steps(strategy, model, opt, loss_fn, x_train, y_train, batch_input):
    """A ``run_steps(idx_block, step0)`` that runs each step under ``strategy.run``.

    One compiled step per call (collectives inside a graph loop are avoided on
    purpose: every worker must issue the same collectives in the same order).
    """
    one_step = _one_step(strategy, model, opt, loss_fn)

    @tf.function
    def gather(idx):
        return batch_input(tf.gather(x_train, idx)), tf.gather(y_train, idx)

    def run_steps(idx_block, step0):
        loss = None
        for i in range(int(idx_block.shape[0])):
            xb, yb = gather(idx_block[i])
            loss = one_step(xb, yb, step0 + i)
        return loss

    return run_steps


def make_distributed_stream_steps(strategy, model, opt, loss_fn, iterator, batch_input):
    """``run_steps(n, step0)``: ``n`` steps on batches pulled from a ``tf.data`` iterator.

    Every worker runs the same seeded pipeline, so all of them see the same
    global batch, of which each replica takes its share (as above).
    """
    one_step = _one_step(strategy, model, opt, loss_fn)

    def run_steps(n: int, step0: int):
        loss = None
        for i in range(int(n)):
            xb, yb = next(iterator)
            loss = one_step(batch_input(xb), yb, tf.constant(step0 + i, tf.int64))
        return loss

    return run_steps
