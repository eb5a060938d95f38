"""Export and parity time: all five formats, then the parity gate on the whole test split.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/export_parity_time.py --run RUN \\
        [--repeats 3]

Works on a copy of the run (``saved_model``, ``reference.npz``,
``metrics.json``, ``labels.txt`` in a temporary folder), so RUN's own export
is left alone. Two views, ``--repeats`` times each, medians reported:

* in process, TensorFlow already imported: :func:`export.export_model`
  (``formats="all"``: TFLite float32, float16, dynamic_int8, int8 with 500
  calibration images, and ONNX; plus golden vectors and the manifest) and
  :func:`export.parity.check_parity` (every file on every test image, 10,000
  for MNIST), with the per-file conversion times;
* the commands a user types, each a new process that imports TensorFlow:
  ``edgeport export RUN --force`` and ``edgeport parity RUN``.

Both include reading the dataset (the calibration images and the test split).

Target (the issue): export of all five formats plus parity on 10,000 images
takes seconds, not minutes (here: under 60 s for the two commands together).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Target,
    add_run_argument,
    edgeport_cli,
    finish,
    load_average,
    machine,
    table,
)

TARGET_SECONDS = 60.0
RUN_FILES = ("saved_model", "reference.npz", "metrics.json", "labels.txt")


def copy_run(run: Path, dest: Path) -> Path:
    """Copy what the exporter and the parity gate read from ``run`` into ``dest``."""
    dest.mkdir(parents=True)
    for name in RUN_FILES:
        src = run / name
        if not src.exists():
            sys.exit(f"error: {src} not found; expected a finished run; "
                     "fix: `edgeport train --out RUN` first")
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _in_process(run: Path, repeats: int) -> tuple[dict[str, list[float]],
                                                  dict[str, list[float]], bool]:
    """Seconds of reading the test split, ``export_model`` and ``check_parity``, per run."""
    from edgeport.export import export_model
    from edgeport.export.parity import check_parity
    from edgeport.train.run_dir import load_split

    steps: dict[str, list[float]] = {"read": [], "export": [], "parity": []}
    per_file: dict[str, list[float]] = {}
    passed = True
    for i in range(repeats):
        print(f"in process {i + 1}/{repeats}", file=sys.stderr)
        t0 = time.perf_counter()
        load_split(run, "test")
        steps["read"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = export_model(run, formats="all", force=True, progress=False)
        steps["export"].append(time.perf_counter() - t0)
        for a in result.artifacts:
            per_file.setdefault(a.file, []).append(a.seconds)
        t0 = time.perf_counter()
        report = check_parity(run, progress=False)
        steps["parity"].append(time.perf_counter() - t0)
        passed = passed and report.passed
    return steps, per_file, passed


def _target(steps: dict[str, list[float]], n_test: int, tf_import: float) -> Target:
    med = statistics.median
    export_s, parity_s, read_s = steps["export"], steps["parity"], steps["read"]
    cli_export, cli_parity = steps["cli_export"], steps["cli_parity"]
    total_cli = med(cli_export) + med(cli_parity)
    total_in = med(export_s) + med(parity_s)
    return Target(
        name="export_parity_time",
        goal="export of all five formats plus parity on 10,000 images takes seconds, not "
             "minutes",
        measured=f"{total_cli:.1f} s for the two commands ({med(cli_export):.1f} s + "
                 f"{med(cli_parity):.1f} s), {total_in:.1f} s in process",
        met=total_cli < TARGET_SECONDS and n_test >= 10_000,
        why=(f"In process the export takes {med(export_s):.1f} s for five files (each "
             "conversion runs the MLIR converter on a tiny graph and checks the result; the "
             "int8 one calibrates on 500 training images) and the gate "
             f"{med(parity_s):.1f} s for five files x {n_test:,} images, of which reading the "
             f"dataset is {med(read_s):.1f} s. A command adds "
             f"{med(cli_export) - med(export_s):.1f} s (export) and "
             f"{med(cli_parity) - med(parity_s):.1f} s (parity) to that: starting Python and "
             f"importing TensorFlow ({tf_import:.1f} s in this process)."),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from edgeport.train.tfenv import import_tensorflow

    import_tensorflow()
    tf_import = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="edgeport-export-time-") as tmp:
        run = copy_run(Path(args.run), Path(tmp) / "run")
        with np.load(run / "reference.npz", allow_pickle=False) as z:
            n_test = len(z["labels"])
        steps, per_file, passed = _in_process(run, args.repeats)
        env = dict(os.environ)
        steps["cli_export"], steps["cli_parity"] = [], []
        for i in range(args.repeats):
            print(f"commands {i + 1}/{args.repeats}", file=sys.stderr)
            steps["cli_export"].append(edgeport_cli(["export", str(run), "--force"], env)[0])
            steps["cli_parity"].append(edgeport_cli(["parity", str(run)], env)[0])

    med = statistics.median

    def row(what: str, key: str) -> list[str]:
        v = steps[key]
        return [what, f"{med(v):.2f}", f"{v[0]:.2f}", ", ".join(f"{s:.2f}" for s in v)]

    rows = [
        row("reading the dataset (`load_split(RUN, \"test\")`, part of both)", "read"),
        row("`export_model(formats=\"all\")` in process", "export"),
        row(f"`check_parity` on {n_test:,} images in process", "parity"),
        row("`edgeport export RUN --force` (new process)", "cli_export"),
        row(f"`edgeport parity RUN` on {n_test:,} images (new process)", "cli_parity"),
    ]
    file_rows = [[f"`{name}`", f"{med(s):.3f}"] for name, s in per_file.items()]
    lines = [
        f"machine: {machine()}; load average {load_average()}; {time.strftime('%Y-%m-%d')}; "
        f"medians of {args.repeats} runs; `import tensorflow` took {tf_import:.1f} s before "
        "the in-process runs",
        "",
        table(["step", "median s", "first s", "all runs s"], rows),
        "",
        "Per file inside `export_model` (convert, check against the contract, write; median s):",
        "",
        table(["file", "seconds"], file_rows),
        "",
        f"Parity verdict on every run: {'PASS' if passed else 'FAIL'}.",
    ]
    finish("\n".join(lines), [_target(steps, n_test, tf_import)], args.json)


if __name__ == "__main__":
    main()
