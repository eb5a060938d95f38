"""Training speed: `edgeport train --model cnn` against a plain Keras ``model.fit``.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/train_vs_fit.py [--rounds 2]
        [--target 0.992] [--trainers edgeport,keras-fit,keras-fit-epoch] [--json FILE]

Both sides get the same data (``train.data.load_dataset``: 55,000 / 5,000 / 10,000 MNIST),
the same network with the same initial weights (``train.models.build_model``: conv32,
conv64, dense128 with dropout 0.2, copied into Keras layers), the same optimizer (Adam,
learning rate 0.003, cosine decay to 0 over the run), batches of 128, 4 epochs, seed 0, and
the same evaluation schedule (test and validation accuracy at iterations 0, 1, 2, 5, 10 and
every half epoch, with the recipe's patience of 4 evaluations). Keras evaluates through a
callback (``on_train_batch_end``), so its loop is stock ``fit``. ``keras-fit-epoch`` is the
same ``fit`` evaluating once per epoch instead, as a plain Keras script usually does: fewer
evaluations, so a coarser time to the target.

Each training runs in its own process (TensorFlow import and data loading excluded from the
times), edgeport and Keras alternating round by round, so load on a shared machine hits
both. Reported per side, medians over the rounds: seconds from the start of training (model
built, first step traced) to the first evaluation at or above ``--target`` test accuracy;
total wall of the training call; seconds inside optimizer steps only; final test accuracy.
The ratios are Keras / edgeport (above 1: edgeport faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Target, finish, load_average, machine, table

# keras-fit evaluates at edgeport's points (the loop against the loop); keras-fit-epoch
# evaluates once per epoch, as a plain fit with a callback usually does.
TRAINERS = ("edgeport", "keras-fit", "keras-fit-epoch")


def _first_at(evals: list[tuple[float, float]], target: float) -> float | None:
    """Seconds of the first ``(seconds, test accuracy)`` evaluation at or above ``target``."""
    return next((s for s, acc in evals if acc >= target), None)


def run_edgeport() -> dict:
    """`edgeport train --model cnn` (its default recipe) through the library, timed."""
    from edgeport.train import load_dataset, make_config
    from edgeport.train import trainer as trainer_mod

    ds = load_dataset("mnist", progress=False)
    cfg = make_config(model="cnn")
    evals: list[tuple[float, float]] = []
    accuracies = trainer_mod._accuracies
    t0 = 0.0

    def timed_accuracies(*args, **kwargs):
        out = accuracies(*args, **kwargs)
        evals.append((time.perf_counter() - t0, out[0]))
        return out

    trainer_mod._accuracies = timed_accuracies  # records when each evaluation finished
    t0 = time.perf_counter()
    trained = trainer_mod.train_model(cfg, ds, progress=False)
    wall = time.perf_counter() - t0
    res = trained.result
    return {"trainer": "edgeport", "wall": wall, "step_seconds": res.train_seconds,
            "evals": evals[: len(res.history)], "iterations": res.iterations,
            "test_accuracy": res.test_accuracy}


def run_keras_fit(per_epoch: bool = False) -> dict:
    """The same network, optimizer, batch, epochs and schedule with Keras ``Model.fit``.

    ``per_epoch``: evaluate after each epoch (and before the first step) instead of at
    edgeport's points; the patience is then counted in epochs (the recipe's 4).
    """
    import numpy as np
    import tensorflow as tf

    from edgeport.train import load_dataset, make_config
    from edgeport.train.data import to_model_input
    from edgeport.train.models import ModelSpec, build_model
    from edgeport.train.trainer import _eval_points

    keras = tf.keras
    ds = load_dataset("mnist", progress=False)
    cfg = make_config(model="cnn")
    n_train = len(ds.y_train)
    steps_per_epoch = -(-n_train // cfg.batch_size)  # fit keeps the last partial batch
    epochs = int(cfg.epochs)
    total = steps_per_epoch * epochs
    # edgeport's schedule on its own step count (it drops the partial batch): the same
    # evaluation points within a step or two.
    points = [p for p in _eval_points(cfg, cfg.check_fits(n_train), n_train // cfg.batch_size)
              if p <= total]
    if per_epoch:
        points = [steps_per_epoch * e for e in range(1, epochs + 1)]
    x_train = to_model_input(ds.x_train, "nhwc")
    x_val, x_test = to_model_input(ds.x_val, "nhwc"), to_model_input(ds.x_test, "nhwc")
    keras.utils.set_random_seed(cfg.seed)

    evals: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    h, w, c = ds.image_shape
    spec = ModelSpec(kind="cnn", height=h, width=w, channels=c, num_classes=ds.num_classes,
                     dropout=cfg.dropout)
    init = [v.numpy() for v in build_model(spec, seed=cfg.seed).weights]
    model = keras.Sequential([
        keras.Input((h, w, c)),
        keras.layers.Conv2D(spec.filters[0], 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Conv2D(spec.filters[1], 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(spec.dense, activation="relu"),
        keras.layers.Dropout(cfg.dropout),
        keras.layers.Dense(ds.num_classes),
    ])
    model.set_weights(init)  # edgeport's seeded initial weights, layer for layer
    lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    model.compile(optimizer=keras.optimizers.Adam(lr, epsilon=1e-7),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    @tf.function(reduce_retracing=True)
    def logits_of(x):
        return model(x, training=False)

    def accuracy(x, y) -> float:
        pred = np.concatenate([logits_of(x[i : i + 2000]).numpy().argmax(1)
                               for i in range(0, len(x), 2000)])
        return float(np.mean(pred == y))

    class Schedule(keras.callbacks.Callback):
        """Test and validation accuracy at edgeport's points; its patience rule."""

        def __init__(self) -> None:
            super().__init__()
            self.done, self.best, self.since_best = 0, (-1.0, 0, None), 0
            self.eval_seconds = 0.0

        def evaluate(self, step: int) -> None:
            e0 = time.perf_counter()
            test_acc, val_acc = accuracy(x_test, ds.y_test), accuracy(x_val, ds.y_val)
            evals.append((time.perf_counter() - t0, test_acc))
            if val_acc > self.best[0]:
                self.best, self.since_best = (val_acc, step, model.get_weights()), 0
            elif step > 0:
                self.since_best += 1
                if cfg.patience and self.since_best >= cfg.patience:
                    self.model.stop_training = True
            self.eval_seconds += time.perf_counter() - e0

        def on_train_begin(self, logs=None) -> None:
            self.evaluate(0)

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.done += 1
            if self.done in points:
                self.evaluate(self.done)

    schedule = Schedule()
    fit_start = time.perf_counter()
    model.fit(x_train, ds.y_train, batch_size=cfg.batch_size, epochs=epochs, shuffle=True,
              callbacks=[schedule], verbose=0)
    fit_end = time.perf_counter()
    if schedule.best[2] is not None and schedule.best[1] != schedule.done:
        model.set_weights(schedule.best[2])
    test_acc = accuracy(x_test, ds.y_test)
    wall = time.perf_counter() - t0
    # step seconds: fit's wall minus the callback's evaluations
    return {"trainer": "keras-fit-epoch" if per_epoch else "keras-fit", "wall": wall,
            "step_seconds": (fit_end - fit_start) - schedule.eval_seconds,
            "evals": evals, "iterations": schedule.done, "test_accuracy": test_acc}


def run_one(trainer: str) -> None:
    """Child process: train once with ``trainer``, print one JSON line."""
    from edgeport.train.tfenv import import_tensorflow

    import_tensorflow()
    out = (run_edgeport() if trainer == "edgeport"
           else run_keras_fit(per_epoch=trainer == "keras-fit-epoch"))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="trainings per side (median)")
    ap.add_argument("--target", type=float, default=0.992, help="test accuracy to reach")
    ap.add_argument("--json", metavar="FILE", help="also write the section and verdicts as JSON")
    ap.add_argument("--trainers", default=",".join(TRAINERS),
                    help=f"comma-separated, edgeport first (default: {','.join(TRAINERS)})")
    ap.add_argument("--one", choices=TRAINERS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one)
        return
    if args.rounds < 1:
        sys.exit(f"error: --rounds {args.rounds}; expected 1 or more; fix: --rounds 2")
    trainers = tuple(t.strip() for t in args.trainers.split(",") if t.strip())
    if trainers[:1] != ("edgeport",) or len(trainers) < 2 or set(trainers) - set(TRAINERS):
        sys.exit(f"error: --trainers {args.trainers}; expected edgeport then one or more of "
                 f"keras-fit, keras-fit-epoch; fix: --trainers {','.join(TRAINERS)}")

    runs: dict[str, list[dict]] = {t: [] for t in trainers}
    loads = [load_average()]
    for r in range(args.rounds):
        order = trainers if r % 2 == 0 else trainers[::-1]
        for trainer in order:
            proc = subprocess.run([sys.executable, __file__, "--one", trainer],
                                  stdout=subprocess.PIPE, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"error: the {trainer} training exited {proc.returncode}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["to_target"] = _first_at(res["evals"], args.target)
            runs[trainer].append(res)
            print(f"round {r + 1} {trainer}: to {args.target:.1%} "
                  f"{res['to_target'] if res['to_target'] is None else round(res['to_target'], 1)}"
                  f" s, wall {res['wall']:.1f} s, steps {res['step_seconds']:.1f} s, "
                  f"{res['iterations']} iterations, test {res['test_accuracy']:.4f}",
                  file=sys.stderr, flush=True)
        loads.append(load_average())

    def med(trainer: str, key: str) -> float | None:
        vals = [r[key] for r in runs[trainer]]
        return None if any(v is None for v in vals) else statistics.median(vals)

    rows = []
    for trainer in trainers:
        to_t = med(trainer, "to_target")
        rows.append([trainer, "not reached" if to_t is None else f"{to_t:.1f}",
                     f"{med(trainer, 'wall'):.1f}", f"{med(trainer, 'step_seconds'):.1f}",
                     ", ".join(f"{r['test_accuracy']:.2%}" for r in runs[trainer]),
                     ", ".join(str(r["iterations"]) for r in runs[trainer])])
    e_t = med("edgeport", "to_target")
    ratios, targets = [], []
    for k in trainers[1:]:
        k_t = med(k, "to_target")
        wall_ratio = med(k, "wall") / med("edgeport", "wall")
        t_ratio = k_t / e_t if e_t and k_t else None
        t_text = "n/a" if t_ratio is None else f"{t_ratio:.2f}x"
        ratios.append(f"{k} / edgeport: wall {wall_ratio:.2f}x, to {args.target:.1%} {t_text}")
        targets += [
            Target(f"train-no-slower-{k}", f"edgeport cnn no slower than {k} (wall)",
                   f"{k} / edgeport {wall_ratio:.2f}x", wall_ratio >= 1.0,
                   "Same network, initial weights, optimizer, batch and epochs."),
            Target(f"train-to-target-{k}", f"edgeport at least 1.5x faster than {k} to "
                   f"{args.target:.1%}", t_text, t_ratio is not None and t_ratio >= 1.5,
                   "Seconds from the start of training to the first evaluation at the target."),
        ]
    md = (f"machine: {machine()}; load averages (1/5/15 min) before and after each round: "
          f"{'; '.join(loads)}; medians of {args.rounds} trainings per side, interleaved; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
          + table(["trainer (cnn recipe: Adam 0.003 cosine, batch 128, 4 epochs, seed 0)",
                   f"s to {args.target:.1%} test", "wall s", "step s", "test accuracy",
                   "iterations"], rows)
          + "\n\n" + "; ".join(ratios) + "\n")
    finish(md, targets, args.json)


if __name__ == "__main__":
    main()
