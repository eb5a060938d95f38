"""Run every peer benchmark on one run and write benchmarks/RESULTS.md.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/run_all.py [--run RUN]
        [--out benchmarks/RESULTS.md] [--cold-repeats 5] [--export-repeats 3]
        [--train-repeats 3] [--ratio-rounds 3] [--skip-training-bench]

    EDGEPORT_DEVICE_PYTHON=.venv-device/bin/python   the TensorFlow-free venv for cold_start.py
                                                     (default .venv-device, else /tmp/devvenv)

Without ``--run`` it trains the seed recipe (the tutorial's softmax
regression: SGD 0.5, 1,000 steps of 100) into a temporary folder with
``edgeport run`` (train, export all five formats, parity); with ``--run`` it
uses that exported run as it is. Then it runs, each in its own process,
``inference_vs_numpy.py``, ``cold_start.py``, ``size.py``,
``export_parity_time.py``, ``app_model.py`` (each with ``--run``; ``--app-run CNN_RUN``
adds a run to app_model.py), ``run_vs_train.py`` (``edgeport run`` against ``edgeport
train``, ``--ratio-rounds`` rounds), ``models.py`` and ``train_vs_sklearn.py``,
and writes their tables, the targets met or missed with the reasons, the
date, the machine and the package versions into RESULTS.md. ``make bench``
runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, device_python, load_average, machine, table

HERE = Path(__file__).resolve().parent
# (script, section title); each takes --run RUN and --json FILE.
SECTIONS = (
    ("inference_vs_numpy.py", "Batch-1 inference latency against a numpy floor and TensorFlow"),
    ("cold_start.py", "Cold start: process start to first prediction"),
    ("size.py", "File size against the parameter bytes"),
    ("export_parity_time.py", "Export and parity time"),
    ("app_model.py", "A photo to probabilities: the app model against the numpy path"),
)
VERSIONS = ("tensorflow", "ai-edge-litert", "onnxruntime", "tf2onnx", "onnx", "numpy",
            "scikit-learn")


def run_script(script: str, args: list[str]) -> tuple[int, str]:
    """Run ``benchmarks/SCRIPT ARGS`` (stderr to the terminal); ``(exit code, stdout)``."""
    print(f"\n=== {script} {' '.join(args)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], cwd=REPO,
                          stdout=subprocess.PIPE, text=True, check=False)
    print(proc.stdout, end="", flush=True)
    print(f"=== {script}: exit code {proc.returncode} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return proc.returncode, proc.stdout


def versions() -> str:
    """Package versions of the main venv and the device venv."""
    found = []
    for dist in VERSIONS:
        try:
            found.append(f"{dist} {importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    text = f"Python {sys.version.split()[0]}, " + ", ".join(found)
    dev = device_python()
    if dev is not None:
        probe = ("import sys, numpy, importlib.util; "
                 "from importlib.metadata import version as v; "
                 "print(sys.version.split()[0], 'tflite-runtime', v('tflite-runtime'), "
                 "'numpy', numpy.__version__, importlib.util.find_spec('tensorflow') is None)")
        out = subprocess.run([str(dev), "-c", probe], capture_output=True, text=True,
                             check=False).stdout.split()
        if len(out) == 6:
            tf = "no TensorFlow" if out[5] == "True" else "TensorFlow installed too"
            text += (f"; device venv (`{dev}`): Python {out[0]}, {out[1]} {out[2]}, "
                     f"{out[3]} {out[4]}, {tf}")
    return text


def prepare_run(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The exported run to measure and its parity table (trains one without ``--run``)."""
    env = dict(os.environ)
    if args.run:
        run = Path(args.run).resolve()
        if not (run / "export" / "manifest.json").is_file():
            sys.exit(f"error: {run}/export/manifest.json not found; expected an exported run; "
                     f"fix: `edgeport export {run}` first, or leave out --run")
        cmd = [sys.executable, "-m", "edgeport", "parity", str(run)]
    else:
        run = tmp / "seed-run"
        cmd = [sys.executable, "-m", "edgeport", "run", "--recipe", "seed", "--out", str(run),
               "--quiet"]
    print(f"=== {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                          check=False)
    lines = proc.stdout.rstrip().splitlines()
    # The last table of the output is the parity gate's (after the export table).
    starts = [i for i, line in enumerate(lines) if line.startswith("artifact ")]
    if proc.returncode not in (0, 1) or not starts:  # 1: a file failed parity; still measured
        sys.exit(f"error: `edgeport {' '.join(cmd[3:])}` failed with exit code "
                 f"{proc.returncode}; see the messages above")
    return run, "\n".join(lines[starts[-1]:])


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", metavar="RUN", help="an exported run (default: train the seed "
                    "recipe into a temporary folder)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the results file")
    ap.add_argument("--app-run", action="append", default=[], metavar="RUN",
                    help="another exported digit run for app_model.py (e.g. the cnn's)")
    ap.add_argument("--cold-repeats", type=int, default=5, help="cold_start.py rounds")
    ap.add_argument("--export-repeats", type=int, default=3, help="export_parity_time.py runs")
    ap.add_argument("--train-repeats", type=int, default=3, help="train_vs_sklearn.py runs")
    ap.add_argument("--ratio-rounds", type=int, default=3, help="run_vs_train.py rounds")
    ap.add_argument("--skip-training-bench", action="store_true",
                    help="leave out train_vs_sklearn.py and models.py (minutes on a small "
                         "machine)")
    return ap.parse_args()


class Sections:
    """The Markdown sections, the targets they measured and the scripts that failed."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.targets: list[dict] = []
        self.failed: list[str] = []

    def add_json(self, script: str, title: str, command: str, args: list[str],
                 out_json: Path) -> None:
        """Run a script that writes ``--json``; keep its Markdown and targets."""
        code, _ = run_script(script, [*args, "--json", str(out_json)])
        if code != 0 or not out_json.is_file():
            self.failed.append(script)
            self.sections.append(f"## {title}\n\n`{script}` failed (exit code {code}); see "
                                 "its messages on the terminal.\n")
            return
        doc = json.loads(out_json.read_text(encoding="utf-8"))
        self.targets += doc["targets"]
        self.sections.append(f"## {title}\n\n`{command}`\n\n{doc['markdown'].strip()}\n")

    def add_stdout(self, script: str, title: str, command: str, args: list[str]) -> None:
        """Run a script that prints its section."""
        code, out = run_script(script, args)
        if code != 0:
            self.failed.append(script)
            self.sections.append(f"## {title}\n\n`{script}` failed (exit code {code}).\n")
            return
        self.sections.append(f"## {title}\n\n`{command}`\n\n{out.strip()}\n")


def _results_text(args: argparse.Namespace, s: Sections, *, started: str, load_start: str,
                  minutes: float, metrics: dict, parity_table: str) -> str:
    source = (f"`{args.run}`" if args.run else
              "the seed recipe trained for this report (`edgeport run --recipe seed`)")
    summary = table(
        ["target (from the issue)", "measured", "verdict"],
        [[t["goal"], t["measured"], "met" if t["met"] else "**missed**"] for t in s.targets],
    )
    return "\n".join([
        "# edgeport benchmarks",
        "",
        f"Generated by `benchmarks/run_all.py` on {started} in {minutes:.1f} min.",
        "",
        f"- Machine: {machine()}.",
        f"- Load average (1/5/15 min) at the start: {load_start}; at the end: "
        f"{load_average()}. The machine was shared with other jobs, so absolute times are "
        "noisy: every figure is a median (latencies: p50), and every ratio compares two "
        "figures measured in the same script run, interleaved where the script says so.",
        f"- Versions: {versions()}.",
        f"- Run: {source}: {metrics.get('model', '?')} on {metrics.get('dataset', '?')}, "
        f"recipe {metrics.get('recipe', '?')}, seed {metrics.get('seed', '?')}, test accuracy "
        f"{metrics.get('test_accuracy', 0):.2%}.",
        "",
        "## Targets",
        "",
        summary,
        "",
        "Why each target is met or missed: the paragraph under each section's tables.",
        "",
        "Parity of the measured files against the reference (`edgeport parity`):",
        "",
        "```",
        parity_table,
        "```",
        "",
        *s.sections,
        REPRODUCE,
    ]) + "\n"


REPRODUCE = "\n".join([
    "## Reproduce",
    "",
    "```sh",
    "make bench        # = the next line, with .venv and .venv-device built first",
    "EDGEPORT_DATA=../shared/data EDGEPORT_DEVICE_PYTHON=.venv-device/bin/python \\",
    "    .venv/bin/python benchmarks/run_all.py",
    "# or one script on an exported run:",
    "EDGEPORT_DATA=../shared/data .venv/bin/edgeport run --out runs/bench",
    "EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/inference_vs_numpy.py "
    "--run runs/bench",
    ".venv/bin/python benchmarks/cold_start.py --run runs/bench",
    ".venv/bin/python benchmarks/size.py --run runs/bench",
    "EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/export_parity_time.py "
    "--run runs/bench",
    "EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/train_vs_sklearn.py",
    "EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/run_vs_train.py",
    "```",
])


def main() -> None:
    args = _parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    t_start = time.perf_counter()
    extra = {"cold_start.py": ["--repeats", str(args.cold_repeats)],
             "export_parity_time.py": ["--repeats", str(args.export_repeats)],
             "app_model.py": [arg for run in args.app_run for arg in ("--run", run)]}
    s = Sections()
    with tempfile.TemporaryDirectory(prefix="edgeport-bench-all-") as tmp_name:
        tmp = Path(tmp_name)
        run, parity_table = prepare_run(args, tmp)
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        for script, title in SECTIONS:
            s.add_json(script, title, f"benchmarks/{script} --run RUN",
                       ["--run", str(run), *extra.get(script, [])], tmp / f"{script}.json")
        s.add_json("run_vs_train.py", "`edgeport run` against `edgeport train`",
                   f"benchmarks/run_vs_train.py --rounds {args.ratio_rounds}",
                   ["--rounds", str(args.ratio_rounds)], tmp / "run_vs_train.json")
        if not args.skip_training_bench:
            s.add_json("models.py", "Every model on MNIST: accuracy, training time, parity",
                       "benchmarks/models.py", [], tmp / "models.json")
            s.add_stdout("train_vs_sklearn.py", "Training speed against scikit-learn",
                         f"benchmarks/train_vs_sklearn.py --repeats {args.train_repeats}",
                         ["--repeats", str(args.train_repeats)])
    minutes = (time.perf_counter() - t_start) / 60
    text = _results_text(args, s, started=started, load_start=load_start, minutes=minutes,
                         metrics=metrics, parity_table=parity_table)
    failed = s.failed
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"\nwrote {args.out}", file=sys.stderr)
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed; their sections in {args.out} say so")


if __name__ == "__main__":
    main()
