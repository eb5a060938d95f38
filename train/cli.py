"""edgeport train: the tutorial's softmax regression (and deeper models) on MNIST or your images.

Usage::

    edgeport train [--dataset mnist] [--model softmax] [--recipe seed|best] [--iterations 1000]
                   [--batch-size 100] [--learning-rate 0.5] [--optimizer sgd|adam] [--seed 0]
                   [--out RUN]
    edgeport train --dataset photos/ --model cnn --image-size 64 --channels 3 [--stream]
                   (your own images: one sub-folder per class; see train/folder.py)
    edgeport train --strategy multi-worker ...   (TF_CONFIG per worker; see train/distribute.py)
    python -m edgeport.train ...          (the same)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import MODELS, OPTIMIZERS, SCHEDULES, STRATEGIES

__all__ = ["add_train_arguments", "config_from_args", "default_out", "main", "run_train"]


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}; expected three fractions like 0.8,0.1,0.1") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}; expected three fractions like 0.8,0.1,0.1")
    return parts  # type: ignore[return-value]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options, shared by ``edgeport train`` and ``edgeport run``."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="mnist",
                   help="mnist, fashion-mnist, digits (offline), or a folder with one "
                        "sub-folder per class (default: mnist)")
    g.add_argument("--data-dir", help="folder holding the IDX files "
                   "(default: $EDGEPORT_DATA/<dataset>, else ~/.cache/edgeport/<dataset>)")
    g.add_argument("--image-size", type=int, help="folder datasets: model input size (28)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="folder datasets: 1 or 3 (1)")
    g.add_argument("--split", type=_split, help="folder datasets: train,val,test (0.8,0.1,0.1)")
    g.add_argument("--stream", action="store_true",
                   help="read the training split with a tf.data pipeline (decode in parallel, "
                        "cache to a temporary file) instead of holding it in memory: for "
                        "folders larger than memory; validation and test stay in memory")
    g = p.add_argument_group("model and optimisation (a recipe fills in what is not given)")
    g.add_argument("--model", default="softmax", choices=MODELS)
    g.add_argument("--recipe", help="softmax: seed (the tutorial, default) or best; "
                   "mlp/cnn: default")
    g.add_argument("--iterations", type=int, help="optimizer steps (seed recipe: 1000)")
    g.add_argument("--epochs", type=float, help="train for this many epochs instead")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    g.add_argument("--patience", type=int,
                   help="stop after this many evaluations without validation gain; "
                        "the best checkpoint is kept")
    g.add_argument("--eval-every", type=int, help="iterations between evaluations")
    g.add_argument("--dropout", type=float)
    g.add_argument("--strategy", choices=STRATEGIES,
                   help="tf.distribute strategy: default, mirrored (local GPUs), "
                        "multi-worker (TF_CONFIG)")
    g.add_argument("--seed", type=int, default=0, help="one seed for everything (default 0)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run directory (default: runs/<dataset>-<model>, numbered "
                   "if taken)")
    g.add_argument("--force", action="store_true", help="replace an existing --out")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    from .config import make_config

    return make_config(
        model=args.model, recipe=args.recipe, dataset=args.dataset, data_dir=args.data_dir,
        iterations=args.iterations, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, optimizer=args.optimizer, schedule=args.schedule,
        patience=args.patience, eval_every=args.eval_every, dropout=args.dropout,
        strategy=args.strategy, seed=args.seed, image_size=args.image_size,
        channels=args.channels, split=args.split,
        stream=True if getattr(args, "stream", False) else None,
    )


def default_out(dataset: str, model: str) -> Path:
    """``runs/<dataset>-<model>``, or ``...-2``, ``-3`` if taken (like Ultralytics' runs)."""
    stem = Path(dataset).name if os.path.isdir(dataset) else dataset
    base = Path("runs") / f"{stem}-{model}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run_train(args: argparse.Namespace):
    """Train from parsed arguments; prints the seed's figures and a summary. Returns the result."""
    cfg = config_from_args(args)
    if args.out:  # TensorFlow writes only UTF-8 paths: say so before it is even imported
        from edgeport.fileio import check_utf8_path

        from .config import ConfigError

        check_utf8_path(args.out, ConfigError, flag="--out")
    from .tfenv import import_tensorflow

    import_tensorflow()
    from edgeport.fileio import read_labels

    from .distribute import is_chief
    from .plots import confusion_text
    from .trainer import fit

    out = Path(args.out) if args.out else default_out(cfg.dataset, cfg.model)
    if cfg.strategy == "multi-worker" and not is_chief():
        out = None  # only the chief writes the run
    res = fit(cfg, out_dir=out, force=args.force, progress=not args.quiet)
    err = sys.stderr
    marks = {h["iteration"]: h["test_accuracy"] for h in res.history}
    seed_points = [p for p in (0, 1, 10, res.iterations) if p in marks]
    print("test accuracy by iteration: "
          + ", ".join(f"{p}: {marks[p]:.1%}" for p in dict.fromkeys(seed_points)), file=err)
    if res.run_dir is not None:
        names = read_labels(res.run_dir / "labels.txt")
        print("confusion matrix (test; rows true, columns predicted):", file=err)
        print(confusion_text(res.confusion_matrix, names), file=err)
    print(
        f"trained {cfg.model} on {res.dataset}: test accuracy {res.test_accuracy:.2%}, "
        f"validation {res.validation_accuracy:.2%}, {res.iterations} iterations in "
        f"{res.train_seconds:.2f} s" + (f" -> {res.run_dir}" if res.run_dir else ""),
    )
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeport.train``: the same as ``edgeport train``."""
    from edgeport.errors import run_cli

    p = argparse.ArgumentParser(prog="python -m edgeport.train",
                                description=__doc__.splitlines()[0])
    add_train_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.debug:
        os.environ["EDGEPORT_DEBUG"] = "1"
    return run_cli("train", lambda: run_train(args) and 0, debug=args.debug)
