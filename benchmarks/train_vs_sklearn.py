"""Training speed: edgeport's softmax recipes against scikit-learn's LogisticRegression.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/train_vs_sklearn.py [--repeats 3]

Same 55,000 / 10,000 MNIST split for everyone. edgeport's time is its training
steps (compiled loop, evaluation excluded); scikit-learn's is ``fit`` (lbfgs,
multinomial, its defaults except ``max_iter``). Prints median seconds, test
accuracy and the ratio against scikit-learn measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="edgeport runs per recipe (median)")
    ap.add_argument("--sklearn-max-iter", type=int, default=200)
    args = ap.parse_args()

    from edgeport.train.tfenv import import_tensorflow

    import_tensorflow()
    from edgeport.train import load_dataset, make_config
    from edgeport.train.data import to_model_input
    from edgeport.train.trainer import train_model

    ds = load_dataset("mnist", progress=False)
    rows, results = [], {}
    for recipe in ("seed", "best"):
        secs, accs = [], []
        for _ in range(args.repeats):
            res = train_model(make_config(recipe=recipe), ds, progress=False).result
            secs.append(res.train_seconds)
            accs.append(res.test_accuracy)
        results[recipe] = (float(np.median(secs)), accs[-1])
        print(f"edgeport {recipe}: {secs} s, accuracy {accs[-1]:.4f}", file=sys.stderr)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_tr, x_te = to_model_input(ds.x_train, "flat"), to_model_input(ds.x_test, "flat")
    clf = LogisticRegression(max_iter=args.sklearn_max_iter)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, ds.y_train)
    sk_secs = time.perf_counter() - t0
    sk_acc = float(np.mean(clf.predict(x_te) == ds.y_test))
    print(f"scikit-learn lbfgs: {sk_secs:.2f} s, accuracy {sk_acc:.4f}", file=sys.stderr)

    for name, (s, a) in [("edgeport softmax, seed recipe (SGD 0.5, 1,000 x 100)",
                          results["seed"]),
                         ("edgeport softmax, best recipe (Adam, cosine, 10 epochs)",
                          results["best"]),
                         (f"scikit-learn LogisticRegression (lbfgs, max_iter="
                          f"{args.sklearn_max_iter})", (sk_secs, sk_acc))]:
        rows.append([name, f"{s:.2f}", f"{a:.2%}", f"{sk_secs / s:.1f}x"])
    print(f"\nmachine: {machine()}; edgeport medians of {args.repeats} runs; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print(table(["trainer", "train s", "test accuracy", "speed-up vs scikit-learn"], rows))


if __name__ == "__main__":
    main()
