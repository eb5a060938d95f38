"""The training loop: compiled steps, the seed's evaluation schedule, early stopping.

Usage (library)::

    from edgeport.train import fit, make_config
    result = fit(make_config(model="softmax", recipe="seed"), out_dir="runs/mnist")
    result.test_accuracy   # ~0.92 after the seed's 1,000 iterations
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import DatasetError, EdgeportError

from .config import MAX_EVALUATIONS, TrainConfig
from .data import Dataset, load_dataset, to_model_input

__all__ = ["DivergedError", "TrainResult", "TrainedModel", "check_finite", "fit", "train_model"]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: figures, the history, and where it was written."""

    run_dir: Path | None
    dataset: str
    model: str
    test_accuracy: float
    validation_accuracy: float
    train_seconds: float
    iterations: int
    best_iteration: int
    history: tuple[dict[str, float], ...]
    confusion_matrix: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir) if self.run_dir else None
        d["history"] = list(self.history)
        d["confusion_matrix"] = [list(r) for r in self.confusion_matrix]
        return d


@dataclass(frozen=True)
class TrainedModel:
    """What :func:`train_model` produced, before anything is written.

    Attributes:
        model: the trained Keras model (its best-validation weights when ``patience`` is set).
        result: the figures; ``run_dir`` is ``None`` until :func:`fit` writes the run.
        layout: the model input layout, ``flat`` or ``nhwc``.
        input_shape: one sample's input shape, e.g. ``(784,)`` or ``(28, 28, 1)``.
        test_pred: the predicted class of every test image (for the plots).
    """

    model: Any
    result: TrainResult
    layout: str
    input_shape: tuple[int, ...]
    test_pred: np.ndarray


def _eval_points(cfg: TrainConfig, total: int, steps_per_epoch: int) -> list[int]:
    """Iterations after which the test (and validation) accuracy is measured.

    Always 0, 1, 10 and the last (the seed's figures); in between every
    ``eval_every`` iterations (default: 100 points for the linear model,
    every half epoch for the deeper ones, which cost more to evaluate).
    """
    every = cfg.eval_every
    if every is None:
        every = max(1, total // 100) if cfg.model == "softmax" else max(1, steps_per_epoch // 2)
        every = max(every, -(-total // MAX_EVALUATIONS))  # a million epochs: not 2e6 points
    pts = {0, total} | {p for p in (1, 2, 5, 10) if p <= total}
    pts |= set(range(every, total, every))
    return sorted(pts)


class _BatchIndices:
    """Batch indices made on the fly: a fresh seeded permutation per epoch, consecutive batches.

    ``block(start, stop)`` gives the ``[stop - start, batch]`` indices of steps
    ``start .. stop - 1``; only the current epoch's permutation is held, so memory stays
    O(training split) whatever ``--iterations`` is (issue 18: 10**12 iterations used to
    build every index up front). Steps must be asked for in order, as training does.
    """

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if not 1 <= batch <= n:
            raise ValueError(f"batch={batch}; expected 1..{n} (the training split size)")
        self.n, self.batch = n, batch
        self.per_epoch = n // batch
        self._rng = np.random.default_rng(seed)
        self._epoch = -1
        self._perm = np.empty((0, batch), dtype=np.int32)

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        if epoch < self._epoch:
            raise ValueError(f"epoch {epoch} was already passed; batches are made in order")
        while self._epoch < epoch:  # one permutation per epoch, drawn in order
            perm = self._rng.permutation(self.n)[: self.per_epoch * self.batch]
            self._perm = perm.reshape(self.per_epoch, self.batch).astype(np.int32)
            self._epoch += 1
        return self._perm

    def block(self, start: int, stop: int) -> np.ndarray:
        parts = []
        step = start
        while step < stop:
            epoch, offset = divmod(step, self.per_epoch)
            take = min(stop - step, self.per_epoch - offset)
            parts.append(self._epoch_batches(epoch)[offset : offset + take])
            step += take
        if not parts:
            return np.empty((0, self.batch), dtype=np.int32)
        return np.concatenate(parts)


def _batch_indices(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """``[steps, batch]`` indices of :class:`_BatchIndices`, all at once (for tests)."""
    return _BatchIndices(n, batch, seed).block(0, steps)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def train_model(cfg: TrainConfig, ds: Dataset, *, progress: bool = True) -> TrainedModel:
    """Train on ``ds`` and return the model with its figures; writes nothing (see :func:`fit`)."""
    import tensorflow as tf

    from .distribute import make_strategy
    from .models import ModelSpec, build_model, input_layout
    from .optim import make_optimizer

    n_train = len(ds.y_train)
    total = cfg.check_fits(n_train)  # before any work: a batch over the split is refused
    # The strategy first: multi-worker must configure collective ops before any other op.
    strategy = make_strategy(cfg.strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()

    layout = input_layout(cfg.model)
    h, w, c = ds.image_shape
    spec = ModelSpec(kind=cfg.model, height=h, width=w, channels=c, num_classes=ds.num_classes,
                     hidden=tuple(cfg.hidden), dropout=cfg.dropout)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    points = _eval_points(cfg, total, steps_per_epoch)

    with strategy.scope():
        model = build_model(spec, seed=cfg.seed)
        opt = make_optimizer(cfg.optimizer, cfg.learning_rate, schedule=cfg.schedule,
                             total_steps=total, variables=model.weights)

    x_train = tf.constant(ds.x_train)
    y_train = tf.constant(ds.y_train)
    x_val = tf.constant(to_model_input(ds.x_val, layout))
    x_test = tf.constant(to_model_input(ds.x_test, layout))
    input_shape = x_test.shape[1:]
    training = _Training(cfg=cfg, ds=ds, strategy=strategy, model=model, opt=opt,
                         input_shape=tuple(input_shape))
    advance, cache_dir = _make_advance(training, x_train, y_train, total)
    skipped_before = len(ds.split.get("skipped", ())) if isinstance(ds.split, dict) else 0
    predict = _predictor(model)
    try:
        schedule = _run_schedule(
            training, advance, points, lambda: _accuracies(predict, x_test, x_val, ds)[:2],
            steps_per_epoch=steps_per_epoch, total=total, progress=progress)
    finally:
        if cache_dir is not None:
            cache_dir.cleanup()
    _warn_skipped(ds, skipped_before)

    best_iteration = _restore_best(cfg, model, schedule)
    test_acc, val_acc, test_pred = _accuracies(predict, x_test, x_val, ds)
    cm = _confusion(ds.y_test, test_pred, ds.num_classes)
    result = TrainResult(
        run_dir=None, dataset=ds.name, model=cfg.model, test_accuracy=test_acc,
        validation_accuracy=val_acc, train_seconds=round(schedule.train_seconds, 4),
        iterations=schedule.done, best_iteration=best_iteration,
        history=tuple(schedule.history),
        confusion_matrix=tuple(tuple(int(v) for v in r) for r in cm),
    )
    return TrainedModel(model=model, result=result, layout=layout,
                        input_shape=tuple(input_shape), test_pred=test_pred)


@dataclass(frozen=True)
class _Training:
    """The model being trained and what its optimizer steps read."""

    cfg: TrainConfig
    ds: Dataset
    strategy: Any  # a tf.distribute.Strategy
    model: Any  # the Keras model
    opt: Any  # its optimizer
    input_shape: tuple[int, ...]  # one sample in the model input layout


@dataclass(frozen=True)
class _Schedule:
    """Where the evaluation schedule stopped, and the best validation checkpoint on it."""

    history: list[dict[str, float]]
    done: int  # optimizer steps run
    train_seconds: float  # time inside the optimizer steps only
    best_iteration: int
    best_weights: list[np.ndarray]


def _make_advance(training: _Training, x_train: Any, y_train: Any, total: int):
    """``advance(start, stop)`` running optimizer steps ``start .. stop - 1``, and the cache
    folder of a streamed dataset (``None`` in memory)."""
    import tensorflow as tf

    cfg, model, opt = training.cfg, training.model, training.opt
    input_shape = training.input_shape
    indices = None if cfg.stream else _BatchIndices(len(training.ds.y_train), cfg.batch_size,
                                                    cfg.seed)
    seed = tf.constant(cfg.seed, tf.int64)

    def loss_fn(xb, yb, step):
        logits = model(xb, training=True, seed=tf.stack([seed, step]))
        # Mean cross-entropy on the logits: the seed's loss, in its numerically stable form.
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))

    def batch_input(xb_uint8):
        xb = tf.cast(xb_uint8, tf.float32) / 255.0
        return tf.reshape(xb, [-1, *input_shape])

    if cfg.stream:
        return _stream_steps(cfg, training.ds, training.strategy, model, opt, loss_fn,
                             batch_input)
    if cfg.strategy == "default":

        @tf.function(reduce_retracing=True)
        def run_steps(idx_block, step0):
            loss = tf.constant(0.0)
            for i in tf.range(tf.shape(idx_block)[0]):
                b = idx_block[i]
                xb = batch_input(tf.gather(x_train, b))
                yb = tf.gather(y_train, b)
                step = step0 + tf.cast(i, tf.int64)
                with tf.GradientTape() as tape:
                    loss = loss_fn(xb, yb, step)
                grads = tape.gradient(loss, model.weights)
                opt.apply(grads, model.weights)
            return loss
    else:
        from .distribute import make_distributed_steps

        run_steps = make_distributed_steps(
            training.strategy, model, opt, loss_fn, x_train, y_train, batch_input)

    # Indices go to the graph in chunks of about 4 MB: 10**7 steps between two evaluations
    # must not build a 4 GB index block.
    chunk = max(1, (1 << 20) // cfg.batch_size)

    def advance(start: int, stop: int):
        """Run optimizer steps ``start .. stop - 1`` (in-memory batches); the last loss."""
        loss = None
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            loss = run_steps(tf.constant(indices.block(a, b)), tf.constant(a, tf.int64))
        return loss

    return advance, None


def _predictor(model: Any):
    """``predict(x) -> logits`` in inference mode, 2,000 images at a time."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def logits_of(x):
        return model(x, training=False)

    def predict(x: tf.Tensor, batch: int = 2000) -> np.ndarray:
        return np.concatenate([logits_of(x[i : i + batch]).numpy()
                               for i in range(0, int(x.shape[0]), batch)])

    return predict


def _accuracies(predict, x_test: Any, x_val: Any, ds: Dataset) -> tuple[float, float, np.ndarray]:
    """Test accuracy, validation accuracy (0 without a validation split), test predictions."""
    test_pred = predict(x_test).argmax(1)
    test_acc = float(np.mean(test_pred == ds.y_test))
    val_acc = float(np.mean(predict(x_val).argmax(1) == ds.y_val)) if len(ds.y_val) else 0.0
    return test_acc, val_acc, test_pred


def _run_schedule(
    training: _Training, advance, points: list[int], evaluate, *, steps_per_epoch: int,
    total: int, progress: bool,
) -> _Schedule:
    """Train up to each point of ``points`` and evaluate there; stop early on ``patience``."""
    cfg, model = training.cfg, training.model
    history: list[dict[str, float]] = []
    best = (-1.0, 0, [v.numpy() for v in model.weights])
    since_best = 0
    train_seconds = 0.0
    done = 0
    bar = None
    if progress:
        from edgeport.progress import progress_bar as tqdm

        bar = tqdm(total=total, unit="it", desc=f"train {cfg.model}", file=sys.stderr,
                   dynamic_ncols=True)
    try:
        for p in points:
            if p > done:
                t0 = time.perf_counter()
                loss = advance(done, p)
                train_seconds += time.perf_counter() - t0
                check_finite(model, loss, iteration=p, learning_rate=cfg.learning_rate)
                if bar is not None:
                    bar.update(p - done)
                done = p
            test_acc, val_acc = evaluate()
            history.append({"iteration": p, "epoch": round(p / steps_per_epoch, 3),
                            "test_accuracy": test_acc, "validation_accuracy": val_acc})
            if bar is not None:
                bar.set_postfix(test=f"{test_acc:.4f}", val=f"{val_acc:.4f}")
            if val_acc > best[0]:
                best = (val_acc, p, [v.numpy() for v in model.weights])
                since_best = 0
            elif p > 0:
                since_best += 1
                if cfg.patience and since_best >= cfg.patience:
                    if bar is not None:
                        bar.write(f"early stop at iteration {p}: validation accuracy has not "
                                  f"improved for {since_best} evaluations (best {best[0]:.4f} "
                                  f"at {best[1]})")
                    break
    finally:
        if bar is not None:
            bar.close()
    return _Schedule(history=history, done=done, train_seconds=train_seconds,
                     best_iteration=best[1], best_weights=best[2])


def _restore_best(cfg: TrainConfig, model: Any, schedule: _Schedule) -> int:
    """Give ``model`` its best-validation weights when ``patience`` is set; their iteration.

    Deeper models keep their best checkpoint (by validation accuracy, never test);
    the seed's softmax recipe is reported exactly as trained, like the tutorial.
    """
    if cfg.patience and schedule.best_iteration != schedule.done:
        for v, value in zip(model.weights, schedule.best_weights, strict=True):
            v.assign(value)
        return schedule.best_iteration
    return schedule.done


def _warn_skipped(ds: Dataset, skipped_before: int) -> None:
    """Name on stderr the training files a streamed dataset failed to decode while training."""
    dropped = ds.split.get("skipped", ())[skipped_before:] if isinstance(ds.split, dict) else ()
    if dropped:
        print(f"warning: {len(dropped)} training files could not be decoded and were left "
              "out: " + "; ".join(f"{d['file']}: {d['reason']}" for d in dropped[:5]),
              file=sys.stderr)


class DivergedError(EdgeportError, ArithmeticError):
    """Training diverged: the loss or the weights are no longer finite numbers."""


def check_finite(model, loss, *, iteration: int, learning_rate: float) -> None:
    """Stop a run whose loss or weights became NaN or infinite (nothing is written).

    Raises:
        DivergedError: with the iteration, the loss and the fix.
    """
    value = float(np.asarray(loss)) if loss is not None else 0.0
    bad = [v.name for v in model.weights if not np.isfinite(v.numpy()).all()]
    if math.isfinite(value) and not bad:
        return
    what = f"weights {', '.join(bad[:3])} are not finite" if bad else "the loss is not finite"
    raise DivergedError(
        f"training diverged at iteration {iteration}: loss {value:g}, {what}; expected finite "
        f"numbers; fix: use a smaller --learning-rate (now {learning_rate:g}, try "
        f"{learning_rate / 10:g})"
    )


def _stream_steps(cfg: TrainConfig, ds: Dataset, strategy, model, opt, loss_fn, batch_input):
    """``advance(start, stop)`` fed by the ``tf.data`` training stream, and its cache folder.

    The batches come from :func:`train.folder.train_batches` (decode in parallel,
    cache to a file in a temporary folder, seeded shuffle, batch, prefetch); the
    step loop pulls them from the iterator inside one ``tf.function`` per
    evaluation interval, like the in-memory path gathers them by index.
    """
    import tempfile

    import tensorflow as tf

    from .folder import train_batches

    cache_dir = tempfile.TemporaryDirectory(prefix="edgeport-cache-")
    batches = train_batches(ds, batch_size=cfg.batch_size, seed=cfg.seed,
                            cache_dir=cache_dir.name)
    iterator = iter(batches)

    if cfg.strategy != "default":
        from .distribute import make_distributed_stream_steps

        run = make_distributed_stream_steps(strategy, model, opt, loss_fn, iterator, batch_input)

        def advance(start: int, stop: int) -> None:
            run(stop - start, start)

        return advance, cache_dir

    @tf.function(reduce_retracing=True)
    def run_stream_steps(n, step0):
        loss = tf.constant(0.0)
        for i in tf.range(n):
            xb_uint8, yb = next(iterator)
            xb = batch_input(xb_uint8)
            step = step0 + i
            with tf.GradientTape() as tape:
                loss = loss_fn(xb, yb, step)
            grads = tape.gradient(loss, model.weights)
            opt.apply(grads, model.weights)
        return loss

    def advance(start: int, stop: int):
        try:
            return run_stream_steps(tf.constant(stop - start, tf.int64),
                                    tf.constant(start, tf.int64))
        except tf.errors.OutOfRangeError:
            raise DatasetError(
                f"{ds.name}: the training stream produced no images (every training file "
                "failed to decode); expected readable pictures. Fix: check the skipped files "
                "listed above"
            ) from None

    return advance, cache_dir


def fit(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Load the data, train, and write the run directory (see docs/contracts.md).

    Args:
        cfg: the options (see :func:`train.make_config`).
        out_dir: where to write the run; ``None`` trains without writing.
        force: replace an existing ``out_dir``.
        progress: show progress bars.
        dataset: an already loaded dataset (skips loading ``cfg.dataset``).

    Raises:
        DatasetError: the data cannot be loaded.
        RunDirError: ``out_dir`` exists and ``force`` is false.
    """
    from edgeport.fileio import check_utf8_path

    from .run_dir import RunDirError, check_writable, write_run

    if out_dir is not None:
        check_utf8_path(out_dir, RunDirError, flag="--out")  # before training, not after
        data_folder = cfg.dataset if os.path.isdir(cfg.dataset) else None
        check_writable(out_dir, force=force, protect=(data_folder, cfg.data_dir))
    ds = dataset if dataset is not None else load_dataset(
        cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed, progress=progress,
        image_size=cfg.image_size, channels=cfg.channels, split=cfg.split, stream=cfg.stream,
    )
    trained = train_model(cfg, ds, progress=progress)
    if out_dir is None:
        return trained.result
    run = write_run(out_dir, cfg=cfg, ds=ds, trained=trained, force=force)
    return replace(trained.result, run_dir=run)
