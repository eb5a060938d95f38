"""Cold start: process start to first prediction, device demo against a TensorFlow load.

Usage::

    .venv/bin/python benchmarks/cold_start.py --run RUN [--repeats 5] [--model model_int8.tflite]

    EDGEPORT_DEVICE_PYTHON=.venv-device/bin/python   the TensorFlow-free venv (tflite-runtime);
                                                     default .venv-device, else /tmp/devvenv

Each command is a fresh process on one real test image (a PNG written from
``golden.npz``), timed with ``time.perf_counter_ns`` from just before the
process is spawned until its first line of output, which it prints once the
prediction is made, and until it exits:

* ``python -m edgeport.mobile_demo MODEL IMAGE --json`` (``edgeport-demo``) in the
  device venv: numpy, Pillow and tflite-runtime, no TensorFlow;
* the same in the main venv, where the demo picks LiteRT;
* a script in the main venv that imports TensorFlow, loads
  ``RUN/saved_model`` and calls ``serving_default`` on the same image, after
  the same preprocessing (``mobile_demo.preprocess.prepare_input``);
* for context, a bare interpreter start (``python -c pass``) and
  ``import tensorflow`` alone.

The commands are interleaved: each round runs every command once, and one
untimed round goes first, so every command starts with the files in the OS
page cache (a warm-cache cold start: a new process, not a rebooted machine).
Medians of ``--repeats`` rounds; ratios against the device demo.

Target (the issue): the device cold start at least 5x faster than the TensorFlow load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    REPO,
    Target,
    add_run_argument,
    device_python,
    finish,
    load_average,
    machine,
    read_manifest,
    table,
)

TARGET_RATIO = 5.0
BARE = "device venv: python -c pass (interpreter start only)"

# What a TensorFlow user writes: import, load the SavedModel, predict one picture.
TF_SCRIPT = """
import json, sys
import tensorflow as tf
from edgeport.mobile_demo.preprocess import prepare_input
saved_model, image, desc = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
fn = tf.saved_model.load(saved_model).signatures["serving_default"]
probs = fn(image=tf.constant(prepare_input([image], desc)))["probabilities"].numpy()[0]
print(json.dumps({"runtime": "tensorflow", "label": int(probs.argmax()),
                  "probability": float(probs.max())}))
"""


def write_image(export_dir: Path, desc: dict, out: Path) -> int:
    """Save the first golden test image as a PNG; returns its true label."""
    from PIL import Image

    with np.load(export_dir / "golden.npz", allow_pickle=False) as z:
        x, label = z["inputs"][0], int(z["labels"][0])
    h, w, c = int(desc["height"]), int(desc["width"]), int(desc["channels"])
    pixels = np.rint(np.asarray(x).reshape(h, w, c) * 255).astype(np.uint8)
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(out)
    return label


def time_command(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """``(seconds to the first output line, seconds to exit, stdout)``; raises on failure."""
    with tempfile.TemporaryFile(mode="w+") as err:  # a file: a chatty stderr cannot block
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO,
                                text=True)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        t_first = time.perf_counter_ns()
        rest = proc.stdout.read()
        proc.wait()
        t_exit = time.perf_counter_ns()
        proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            tail = (err.read().strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {tail}")
    return (t_first - t0) / 1e9, (t_exit - t0) / 1e9, first + rest


def label_of(stdout: str) -> str:
    """``label (runtime)`` from the demo's ``--json`` output or the TF script's line."""
    doc = json.loads(stdout)
    if "predictions" in doc:
        return f"{doc['predictions'][0]['label']} ({doc['runtime']})"
    return f"{doc['label']} ({doc['runtime']})"


DEV_KEY = "device venv: edgeport-demo (tflite-runtime)"
LITERT_KEY = "main venv: edgeport-demo (LiteRT)"
TF_IMPORT_KEY = "main venv: import tensorflow only"
TF_KEY = "main venv: TensorFlow SavedModel load + predict"


def _commands(dev: Path | None, model: Path, image: Path, saved_model: Path,
              input_desc: dict) -> dict[str, list[str]]:
    """The commands to time, by row name."""
    main_py = sys.executable
    commands: dict[str, list[str]] = {}
    if dev is not None:
        commands[BARE] = [str(dev), "-c", "pass"]
        commands[DEV_KEY] = [str(dev), "-m", "edgeport.mobile_demo", str(model), str(image),
                             "--json"]
    else:
        print("warning: no device venv (set EDGEPORT_DEVICE_PYTHON or `make device-venv`); "
              "measuring the main venv only", file=sys.stderr)
    commands[LITERT_KEY] = [main_py, "-m", "edgeport.mobile_demo", str(model), str(image),
                            "--json"]
    commands[TF_IMPORT_KEY] = [main_py, "-c", "import tensorflow; print('imported')"]
    commands[TF_KEY] = [main_py, "-c", TF_SCRIPT, str(saved_model), str(image),
                        json.dumps(input_desc)]
    return commands


def _rounds(commands: dict[str, list[str]], env: dict[str, str], repeats: int
            ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    """Seconds to the first prediction and to exit per command, and each one's answer."""
    first: dict[str, list[float]] = {k: [] for k in commands}
    exit_: dict[str, list[float]] = {k: [] for k in commands}
    labels: dict[str, str] = {}
    for r in range(repeats + 1):  # round 0 warms the page cache and is not counted
        print(f"round {r}/{repeats}{' (warm-up)' if r == 0 else ''}", file=sys.stderr)
        for name, cmd in commands.items():
            t_first, t_exit, out = time_command(cmd, env)
            if r:
                first[name].append(t_first)
                exit_[name].append(t_exit)
            if out.lstrip().startswith("{"):
                labels[name] = label_of(out)
    return first, exit_, labels


def _target(med: dict[str, float], med_exit: dict[str, float], ref_key: str) -> Target:
    ratio = med[TF_KEY] / med[ref_key]
    tf_import = med[TF_IMPORT_KEY]
    which = "device venv (tflite-runtime)" if ref_key == DEV_KEY else "main venv (LiteRT)"
    rest = med[TF_KEY] - tf_import
    rest_text = (f"loading the SavedModel (restoring it, tracing the signature) and the first "
                 f"call add {rest:.1f} s" if rest > 0.1 * med[TF_KEY] else
                 "loading the SavedModel and the first call add little on top (within the "
                 "noise of the import)")
    bare = med.get(BARE)
    bare_text = "" if bare is None else f" (a bare interpreter start is {bare * 1e3:.0f} ms)"
    why = (f"The demo in the {which} reaches its prediction in {med[ref_key] * 1e3:.0f} ms"
           f"{bare_text}: numpy, Pillow "
           "and a runtime of a few MB, then a file of a few KB. The TensorFlow path takes "
           f"{med[TF_KEY]:.1f} s: `import tensorflow` alone takes {tf_import:.1f} s (hundreds of "
           f"MB of shared libraries, op and kernel registration), {rest_text}; TensorFlow also "
           f"needs {med_exit[TF_KEY] - med[TF_KEY]:.1f} s more to exit.")
    if LITERT_KEY in med and ref_key == DEV_KEY:
        lit = med[LITERT_KEY]
        why += (f" With LiteRT in the main venv the demo takes {lit * 1e3:.0f} ms "
                f"({med[TF_KEY] / lit:.0f}x faster than TensorFlow).")
    return Target(
        name="cold_start",
        goal="device cold start (process start to first prediction) at least 5x faster than "
             "the TensorFlow load",
        measured=f"{med[ref_key] * 1e3:.0f} ms against {med[TF_KEY] * 1e3:.0f} ms: "
                 f"{ratio:.1f}x faster",
        met=ratio >= TARGET_RATIO,
        why=why,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    ap.add_argument("--model", default="model_int8.tflite", help="file in RUN/export to run")
    args = ap.parse_args()

    export_dir, manifest = read_manifest(args.run)
    model = export_dir / args.model
    if not model.is_file():
        sys.exit(f"error: {model} not found; expected one of "
                 f"{[a['file'] for a in manifest['artifacts']]}")
    saved_model = (Path(args.run) / "saved_model").resolve()
    dev = device_python()
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the first line must leave the child when it is printed
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgeport-cold-") as tmp:
        image = Path(tmp) / "digit.png"
        truth = write_image(export_dir, manifest["input"], image)
        commands = _commands(dev, model, image, saved_model, manifest["input"])
        first, exit_, labels = _rounds(commands, env, args.repeats)

    med = {k: statistics.median(v) for k, v in first.items()}
    med_exit = {k: statistics.median(v) for k, v in exit_.items()}
    ref_key = DEV_KEY if DEV_KEY in med else LITERT_KEY
    rows = [[name, f"{med[name] * 1e3:.0f}", f"{min(first[name]) * 1e3:.0f}",
             f"{med_exit[name] * 1e3:.0f}", f"{med[name] / med[ref_key]:.1f}x",
             labels.get(name, "-")] for name in commands]
    lines = [
        f"machine: {machine()}; load average {load_average()}; {time.strftime('%Y-%m-%d')}; "
        f"medians of {args.repeats} interleaved rounds after one warm-up round; "
        f"model `{args.model}`; one {manifest['input']['height']}x"
        f"{manifest['input']['width']} test image (true label {truth})",
        "",
        table(["command", "start to first prediction ms (median)", "min ms",
               "start to exit ms", "vs device demo", "predicted (runtime)"], rows),
        "",
        f"device venv: `{dev or 'not found'}`; main venv: `{sys.executable}`.",
    ]
    finish("\n".join(lines), [_target(med, med_exit, ref_key)], args.json)


if __name__ == "__main__":
    main()
