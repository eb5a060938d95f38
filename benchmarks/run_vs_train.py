"""`edgeport run` (train, export all formats, the full parity gate) against `edgeport train`.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/run_vs_train.py \\
        [--rounds 3] [--json FILE] [-- TRAIN OPTIONS]      # e.g. -- --model cnn

Each command is a new process, as a user types it, with the same train options
(default: the quickstart's softmax), ``--out`` a temporary folder and ``--force``.
One untimed ``edgeport run`` first (it fills the gate cache, :mod:`export.gate_cache`,
and the disk cache for TensorFlow's files, for both commands alike). Then ``--rounds``
rounds, the order rotating from round to round so that a burst of load on a shared
machine hits every command alike, of:

* ``edgeport train``;
* ``edgeport run`` with the gate cache as a user has it after one run (warm);
* ``edgeport run`` with ``EDGEPORT_CACHE`` set to a new empty folder (cold: what the
  very first run on a machine pays).

Medians are reported, with the export's own seconds (the line ``exported N files ...
in X s``) and the ratios run / train. Target (issue 22): ``edgeport run`` in at most
twice the wall time of ``edgeport train``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Target, edgeport_cli, finish, load_average, machine, table

TARGET_RATIO = 2.0
_EXPORTED = re.compile(r"exported \d+ files to .* in ([0-9.]+) s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (medians)")
    ap.add_argument("--json", metavar="FILE", help="also write the section as JSON "
                    "(run_all.py reads it)")
    ap.add_argument("train_options", nargs="*", help="after --: options for both commands")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit(f"error: --rounds {args.rounds}; expected a positive integer")
    opts = list(args.train_options)
    base = dict(os.environ)
    times: dict[str, list[float]] = {"train": [], "run": [], "run_cold": []}
    exports: dict[str, list[float]] = {"run": [], "run_cold": []}
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="edgeport-run-vs-train-") as tmp_name:
        tmp = Path(tmp_name)
        common = ["--force", "--no-progress", *opts]
        commands = {
            "train": (["train", "--out", str(tmp / "t"), *common], base),
            "run": (["run", "--out", str(tmp / "r"), *common], base),
        }
        print("warm-up: edgeport run (untimed)", file=sys.stderr, flush=True)
        edgeport_cli(commands["run"][0], base)
        names = ["train", "run", "run_cold"]
        for r in range(args.rounds):
            for name in names[r % 3:] + names[: r % 3]:
                if name == "run_cold":
                    cold = tmp / f"cache-{r}"  # a new, empty gate cache
                    cmd, env = commands["run"][0], {**base, "EDGEPORT_CACHE": str(cold)}
                else:
                    cmd, env = commands[name]
                seconds, out = edgeport_cli(cmd, env)
                times[name].append(seconds)
                if name in exports and (m := _EXPORTED.search(out)):
                    exports[name].append(float(m.group(1)))
                print(f"round {r + 1}/{args.rounds}: {name} {seconds:.1f} s", file=sys.stderr,
                      flush=True)

    med = statistics.median
    train = med(times["train"])
    rows = []
    for name, what in (("train", "`edgeport train`"),
                       ("run", "`edgeport run`, gate cache warm"),
                       ("run_cold", "`edgeport run`, gate cache empty")):
        ex = f"{med(exports[name]):.1f}" if exports.get(name) else "-"
        rows.append([what, f"{med(times[name]):.1f}", ex, f"{med(times[name]) / train:.2f}",
                     ", ".join(f"{s:.1f}" for s in times[name])])
    ratio, cold_ratio = med(times["run"]) / train, med(times["run_cold"]) / train
    options = " ".join(opts) or "(defaults: softmax, seed recipe)"
    lines = [
        f"machine: {machine()}; load average {load_start} at the start, {load_average()} at "
        f"the end; {time.strftime('%Y-%m-%d')}; train options {options}; medians of "
        f"{args.rounds} interleaved rounds, each command a new process",
        "",
        table(["command", "median s", "of it export s", "/ train", "all rounds s"], rows),
    ]
    export_s = med(exports["run"]) if exports["run"] else float("nan")
    rest = med(times["run"]) - train - export_s
    target = Target(
        name="run_vs_train",
        goal=f"`edgeport run` in at most {TARGET_RATIO:g}x the wall time of `edgeport train`",
        measured=f"{ratio:.2f}x with the gate cache warm, {cold_ratio:.2f}x empty",
        met=ratio <= TARGET_RATIO,
        why=(f"`edgeport run` = train ({train:.1f} s) + export ({export_s:.1f} s, nearly all "
             "of it converting and int8-calibrating the two app models) + the gate "
             f"(about {rest:.1f} s here: mostly the app models on 11,000 pictures in LiteRT and "
             "MediaPipe, four runs side by side on the cores; the cache takes the empty "
             "frames and the numpy oracle's preprocessing out of it)."),
    )
    finish("\n".join(lines), [target], args.json)


if __name__ == "__main__":
    main()
