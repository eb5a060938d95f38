"""Every model on real MNIST: accuracy, training time, and parity of all five files.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/models.py [--json FILE]

Runs ``edgeport run`` (train, export, parity) for the softmax regression (the
tutorial's recipe and ``--recipe best``), the mlp and the cnn, each with its
default recipe and seed 0, in a fresh process, and tabulates test accuracy,
training seconds (the optimizer steps, evaluation excluded), iterations, the
parity verdict of the five files, and the float32 and int8 file sizes.
Targets from the issues: softmax best >= 92.7 %, mlp >= 98 %, cnn >= 99.2 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, Target, finish, load_average, machine, table

RUNS = (  # (label, edgeport run arguments, accuracy target or None)
    ("softmax, seed recipe", ["--model", "softmax", "--recipe", "seed"], None),
    ("softmax, best recipe", ["--model", "softmax", "--recipe", "best"], 0.927),
    ("mlp (784-512-10, dropout 0.2)", ["--model", "mlp"], 0.98),
    ("cnn (2 x conv3x3+pool, dense 128)", ["--model", "cnn"], 0.992),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="write the section and targets as JSON")
    args = ap.parse_args()
    rows, targets = [], []
    with tempfile.TemporaryDirectory(prefix="edgeport-models-") as tmp:
        for label, extra, goal in RUNS:
            out = Path(tmp) / label.split()[0].strip(",") / extra[-1]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "edgeport", "run", *extra, "--out",
                                   str(out), "--quiet"], cwd=REPO, capture_output=True,
                                  text=True, check=False)
            wall = time.perf_counter() - t0
            print(f"{label}: exit {proc.returncode} in {wall:.0f} s", file=sys.stderr)
            if proc.returncode not in (0, 1):
                sys.exit(f"error: edgeport run {' '.join(extra)} failed:\n{proc.stderr}")
            m = json.loads((out / "metrics.json").read_text())
            parity = json.loads((out / "export" / "parity.json").read_text())
            passed = sum(r["passed"] for r in parity["results"])
            size = {r["artifact"]: r["bytes"] for r in parity["results"]}
            rows.append([label, f"{m['test_accuracy']:.2%}", f"{m['train_seconds']:.1f}",
                         m["iterations"], f"{passed}/{len(parity['results'])}",
                         f"{size['model_float32.tflite'] / 1024:.1f}",
                         f"{size['model_int8.tflite'] / 1024:.1f}", f"{wall:.0f}"])
            if goal is not None:
                acc = m["test_accuracy"]
                targets.append(Target(
                    name=f"accuracy {label}", goal=f"{label}: test accuracy >= {goal:.1%}",
                    measured=f"{acc:.2%} after {m['train_seconds']:.1f} s of training",
                    met=acc >= goal,
                    why="Seed 0, the model's default recipe; early stopping keeps the best "
                        "validation checkpoint (never chosen on test)."))
    md = (f"machine: {machine()}; load average {load_average()}; {time.strftime('%Y-%m-%d')}; "
          "each row one `edgeport run` in a fresh process, seed 0\n\n"
          + table(["model", "test accuracy", "train s", "iterations", "parity",
                   "float32 KB", "int8 KB", "run wall s"], rows))
    finish(md, targets, args.json)


if __name__ == "__main__":
    main()
