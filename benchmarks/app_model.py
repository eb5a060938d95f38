"""A photo's pixels to probabilities: the app model in LiteRT vs numpy preprocessing + plain model.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/app_model.py --run RUN \
        [--run CNN_RUN] [--pictures 50] [--runs 1000] [--rounds 10] [--json FILE]

Pictures: real MNIST test digits drawn as dark ink on light paper at 240 x 240
pixels (a phone crop, ``export.frames.digit_photos``). For each run, candidates
timed interleaved in one loop (``_common.interleaved_ns``, medians):

* ``numpy + Model.predict``: ``mobile_demo.preprocess.preprocess_digit`` on the
  240-px photo, then ``Model.predict`` on ``model_float32.tflite`` (what
  ``edgeport-demo`` does);
* ``app float32 (LiteRT)`` / ``app int8 (LiteRT)``: resize the photo to S x S
  (Pillow bilinear, what a client does), ``set_tensor`` + ``invoke`` +
  ``get_tensor`` on the app model;
* ``app ... (MediaPipe)``: MediaPipe Tasks ``ImageClassifier.classify`` on the
  240-px photo (batch 1; MediaPipe fits it to S x S itself, as in an app).

Target (issue 22): each app file in LiteRT at least 3x faster than numpy + predict
(softmax and cnn, float32 and int8), the resize included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import Target, finish, interleaved_ns, load_average, machine, read_manifest, table
from PIL import Image

APP_FILES = ("model_app_float32.tflite", "model_app_int8.tflite")
TARGET = 3.0


def _photos(n: int, side: int = 240) -> np.ndarray:
    from edgeport.export.frames import digit_photos  # the generator the tests use
    from edgeport.train.data import load_dataset

    x = load_dataset("mnist").x_test[:n].astype(np.float32) / 255.0
    return digit_photos(x, side, seed=1, light=False)


def _candidates(export_dir: Path, manifest: dict, photos: list[np.ndarray],
                closers: list) -> dict:
    """The timed functions of one run: numpy path first, then each app file."""
    from edgeport.export.app import app_size
    from edgeport.export.tflite import make_interpreter
    from edgeport.mobile_demo import load_model
    from edgeport.mobile_demo.preprocess import preprocess_digit

    s = app_size(manifest["input"])
    plain = load_model(export_dir / "model_float32.tflite")
    counter = {"i": 0}

    def next_index() -> int:
        counter["i"] = (counter["i"] + 1) % len(photos)
        return counter["i"]

    def numpy_path() -> object:
        return plain.predict(preprocess_digit(photos[next_index()])[None])["probabilities"]

    fns = {"numpy preprocess + Model.predict (model_float32)": numpy_path}
    for name in APP_FILES:
        it = make_interpreter((export_dir / name).read_bytes())
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]

        def lite(it=it, inp=inp, out=out) -> object:
            photo = Image.fromarray(photos[next_index()])
            picture = np.asarray(photo.resize((s, s), Image.Resampling.BILINEAR))
            it.set_tensor(inp["index"], picture[None].astype(inp["dtype"]))
            it.invoke()
            return it.get_tensor(out["index"])

        fns[f"{name} (LiteRT, incl. resize)"] = lite
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        print("mediapipe not installed: no MediaPipe rows", file=sys.stderr)
        return fns
    for name in APP_FILES:
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(export_dir / name)))
        classifier = vision.ImageClassifier.create_from_options(options)
        closers.append(classifier)

        def classify(classifier=classifier) -> object:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=photos[next_index()])
            return classifier.classify(image)  # MediaPipe fits the photo to S x S itself

        fns[f"{name} (MediaPipe ImageClassifier)"] = classify
    return fns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="RUN",
                    help="an exported digit run (repeat: e.g. the softmax and the cnn)")
    ap.add_argument("--json", metavar="FILE", help="also write the section as JSON")
    ap.add_argument("--pictures", type=int, default=50)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    photos = [np.ascontiguousarray(p) for p in _photos(args.pictures)]
    parts = [f"machine: {machine()}; load at the start {load_average()}; photo 240x240 RGB; "
             f"p50/p90 of {args.runs} calls per row, interleaved in {args.rounds} rounds"]
    targets: list[Target] = []
    for run in args.run:
        export_dir, manifest = read_manifest(run)
        closers: list = []
        fns = _candidates(export_dir, manifest, photos, closers)
        times = interleaved_ns(fns, runs=args.runs, warmup=20, rounds=args.rounds)
        for closer in closers:  # before interpreter shutdown, or MediaPipe complains
            closer.close()
        base = float(np.median(times[next(iter(fns))]))
        metrics = Path(run) / "metrics.json"
        model = json.loads(metrics.read_text()).get("model") if metrics.is_file() else None
        model = model or Path(run).name
        rows = [[name, f"{np.median(ns) / 1e3:.0f}", f"{np.percentile(ns, 90) / 1e3:.0f}",
                 f"{base / np.median(ns):.2f}x"] for name, ns in times.items()]
        parts.append(f"### {model} (`{run}`)\n\n" + table(
            ["path (one photo -> probabilities)", "median us", "p90 us", "speed-up"], rows))
        for name in APP_FILES:
            ratio = base / float(np.median(times[f"{name} (LiteRT, incl. resize)"]))
            mp_ns = times.get(f"{name} (MediaPipe ImageClassifier)")
            beside = (f"; MediaPipe {base / float(np.median(mp_ns)):.1f}x" if mp_ns is not None
                      else "")
            targets.append(Target(
                name=f"app_speed_{model}_{name}",
                goal=f"{model} {name} in LiteRT (resize included) >= {TARGET:.0f}x the numpy path",
                measured=f"{ratio:.1f}x{beside}", met=ratio >= TARGET,
                why="interleaved medians in one process (the load cancels out of the ratio)."))
    parts.append(f"load at the end {load_average()}")
    finish("\n\n".join(parts), targets, args.json)


if __name__ == "__main__":
    main()
