"""A photo's pixels to probabilities: the app model in LiteRT vs numpy preprocessing + plain model.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/app_model.py --run RUN \
        [--pictures 50] [--runs 2000] [--rounds 10]

Pictures: real MNIST test digits drawn as dark ink on light paper at 240 x 240
pixels (a phone crop), generated here. Candidates, timed interleaved in one run
(``_common.interleaved_ns``, medians):

* ``numpy + Model.predict``: ``mobile_demo.preprocess.preprocess_digit`` on the
  240-px photo, then ``Model.predict`` on ``model_float32.tflite`` (what
  ``edgeport-demo`` does);
* ``app float32 (LiteRT)`` / ``app int8 (LiteRT)``: resize the photo to S x S
  (Pillow bilinear, what a client does), ``set_tensor`` + ``invoke`` +
  ``get_tensor`` on the app model;
* ``app ... (MediaPipe)``: MediaPipe Tasks ``ImageClassifier.classify`` on the
  240-px photo (batch 1; MediaPipe fits it to S x S itself, as in an app).

Target (issue 10): the app model in LiteRT at least 2x faster than numpy + predict.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import add_run_argument, interleaved_ns, load_average, machine, read_manifest, table
from PIL import Image


def _photos(n: int, side: int = 240) -> np.ndarray:
    from edgeport.export.frames import digit_photos  # the generator the tests use
    from edgeport.train.data import load_dataset

    x = load_dataset("mnist").x_test[:n].astype(np.float32) / 255.0
    return digit_photos(x, side, seed=1, light=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--pictures", type=int, default=50)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    export_dir, manifest = read_manifest(args.run)

    from edgeport.export.app import app_size
    from edgeport.export.tflite import make_interpreter
    from edgeport.mobile_demo import load_model
    from edgeport.mobile_demo.preprocess import preprocess_digit

    s = app_size(manifest["input"])
    photos = [np.ascontiguousarray(p) for p in _photos(args.pictures)]
    plain = load_model(export_dir / "model_float32.tflite")
    counter = {"i": 0}

    def next_index() -> int:
        counter["i"] = (counter["i"] + 1) % len(photos)
        return counter["i"]

    def numpy_path() -> object:
        return plain.predict(preprocess_digit(photos[next_index()])[None])["probabilities"]

    fns = {"numpy preprocess + Model.predict (model_float32)": numpy_path}
    for name in ("model_app_float32.tflite", "model_app_int8.tflite"):
        it = make_interpreter((export_dir / name).read_bytes())
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]

        def lite(it=it, inp=inp, out=out) -> object:
            i = next_index()
            photo = np.asarray(Image.fromarray(photos[i]).resize((s, s), Image.Resampling.BILINEAR))
            it.set_tensor(inp["index"], photo[None].astype(inp["dtype"]))
            it.invoke()
            return it.get_tensor(out["index"])

        fns[f"{name} (LiteRT, incl. resize)"] = lite
    classifiers: list = []
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        for name in ("model_app_float32.tflite", "model_app_int8.tflite"):
            options = vision.ImageClassifierOptions(
                base_options=BaseOptions(model_asset_path=str(export_dir / name))
            )
            classifier = vision.ImageClassifier.create_from_options(options)
            classifiers.append(classifier)

            def classify(classifier=classifier) -> object:
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=photos[next_index()])
                return classifier.classify(image)  # MediaPipe fits the photo to S x S itself

            fns[f"{name} (MediaPipe ImageClassifier)"] = classify
    except ImportError:
        print("mediapipe not installed: no MediaPipe rows", file=sys.stderr)

    times = interleaved_ns(fns, runs=args.runs, warmup=20, rounds=args.rounds)
    base = float(np.median(times[next(iter(fns))]))
    rows = [
        [name, f"{np.median(ns) / 1e3:.0f}", f"{np.percentile(ns, 90) / 1e3:.0f}",
         f"{base / np.median(ns):.2f}x"]
        for name, ns in times.items()
    ]
    print(f"machine: {machine()}; load {load_average()}; photo 240x240 RGB, S = {s}")
    print(table(["path (one photo -> probabilities)", "median us", "p90 us", "speed-up"], rows))
    for classifier in classifiers:  # before interpreter shutdown, or MediaPipe complains
        classifier.close()


if __name__ == "__main__":
    main()
