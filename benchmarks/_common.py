"""Helpers shared by the benchmark scripts: medians, the machine description, a table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.bench import device_python as bench_device_python
from edgeport.mobile_demo.timing import time_calls

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """``N cores, CPU model, OS`` for the results file."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}"


def load_average() -> str:
    """The 1/5/15-minute load averages, to show how busy the machine was (``?`` if unknown)."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    """Run ``fn`` ``repeats`` times; returns (median seconds, all seconds, last result)."""
    results: list[object] = []
    ns = time_calls(lambda: results.append(fn()), runs=repeats)
    seconds = [float(v) / 1e9 for v in ns]
    return statistics.median(seconds), seconds, results[-1]


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def interleaved_ns(
    fns: dict[str, Callable[[], object]], *, runs: int, warmup: int, rounds: int
) -> dict[str, np.ndarray]:
    """Time every function ``runs`` times with the one timing loop, interleaved.

    The calls are split into ``rounds``; in each round every function gets
    ``warmup`` untimed calls, then its share of the timed ones, and the order
    rotates from round to round. On a machine shared with other jobs a burst
    of load then hits all the candidates alike instead of one of them, so the
    ratios between their medians stay meaningful.

    Returns:
        Per name, the ``runs`` call durations in nanoseconds.
    """
    names = list(fns)
    per_round = [runs // rounds + (i < runs % rounds) for i in range(rounds)]
    out = {n: np.empty(runs, dtype=np.int64) for n in names}
    filled = dict.fromkeys(names, 0)
    for r, count in enumerate(per_round):
        if count == 0:
            continue
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = filled[name]
            out[name][start : start + count] = time_calls(fns[name], runs=count, warmup=warmup)
            filled[name] += count
    return out


def us(ns: np.ndarray, q: float = 50) -> float:
    """The ``q``-th percentile of nanosecond durations, in microseconds."""
    return float(np.percentile(ns, q)) / 1e3


def add_run_argument(ap: Any) -> None:
    """``--run RUN``: an exported run directory (``edgeport run --out RUN``)."""
    ap.add_argument("--run", required=True, metavar="RUN",
                    help="run directory with export/ (from `edgeport run --out RUN`, or "
                         "`edgeport train --out RUN` then `edgeport export RUN`)")
    ap.add_argument("--json", metavar="FILE",
                    help="also write the Markdown section and the target verdicts as JSON "
                         "(run_all.py reads it)")


def read_manifest(run: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``(RUN/export, manifest)``; exits with a one-line error when RUN is not exported."""
    export_dir = Path(run) / "export"
    path = export_dir / "manifest.json"
    if not path.is_file():
        sys.exit(f"error: {path} not found; expected an exported run; "
                 f"fix: `edgeport export {run}` (or `edgeport run --out {run}`)")
    return export_dir, json.loads(path.read_text(encoding="utf-8"))


def device_python() -> Path | None:
    """The TensorFlow-free device venv's Python (``$EDGEPORT_DEVICE_PYTHON``, else
    ``.venv-device/bin/python`` from ``make device-venv``); ``None`` when there is none.

    The one lookup is :func:`edgeport.export.bench.device_python`.
    """
    found = bench_device_python(REPO / ".venv-device" / "bin" / "python")
    return Path(found) if found else None


@dataclass(frozen=True)
class Target:
    """One target from the issue and what this run measured against it."""

    name: str
    goal: str
    measured: str
    met: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def line(self) -> str:
        """``**Target** goal: measured -> met/MISSED. why`` for the Markdown section."""
        verdict = "met" if self.met else "MISSED"
        return f"**Target: {self.goal}** measured {self.measured}: **{verdict}**. {self.why}"


def finish(markdown: str, targets: list[Target], json_path: str | None) -> None:
    """Print the section (tables, then one paragraph per target) and write ``--json``."""
    text = markdown.rstrip() + "\n"
    if targets:
        text += "\n" + "\n\n".join(t.line() for t in targets) + "\n"
    print(text)
    if json_path:
        doc = {"markdown": text, "targets": [t.to_dict() for t in targets]}
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def edgeport_cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``python -m edgeport ARGS`` (the ``edgeport`` console script) and its
    stdout; exits with a one-line error unless the command succeeds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeport", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        sys.exit(f"error: edgeport {' '.join(args)} failed (exit {proc.returncode}): {tail}")
    return seconds, proc.stdout
