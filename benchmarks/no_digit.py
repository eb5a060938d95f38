"""The `none` answer, measured: empty frames and digit photos through MediaPipe and edgeport-demo.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/no_digit.py --run RUN \\
        [--frames 1000] [--photos 1000] [--size 240]

Frames and photos are generated (``export.frames``; nothing is stored): ``--frames``
empty frames of paper (blank, gradient, texture, speck, shadow, ruled, finger,
vignette, in turn) and ``--photos`` real MNIST test digits photographed on paper (evenly
lit, or ``--light gradient``), all ``--size`` px square (MediaPipe fits them to the app
model's S x S itself, as it does with a camera frame). For each app model, MediaPipe Tasks'
``ImageClassifier`` with default options gives the top category; edgeport-demo's side is
``model_float32.tflite`` through ``mobile_demo``'s numpy pipeline
(``prepare_digits`` + ``with_none``). Issue 20's bar: ``none`` on >= 95 % of the frames
for every app model, <= 2 % of the digit photos, accuracy within 1 point of edgeport-demo
without the rule, and edgeport-demo agreeing with MediaPipe on the frames.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import add_run_argument, load_average, machine, read_manifest, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--size", type=int, default=240)
    ap.add_argument("--light", choices=("even", "gradient"), default="even",
                    help="digit photos on evenly lit paper (the tests' photos) or lit by a "
                    "gradient up to 50 %% darker")
    args = ap.parse_args()
    export_dir, manifest = read_manifest(args.run)

    from edgeport.export.app import APP_KINDS
    from edgeport.export.app_checks import classify_mediapipe
    from edgeport.export.frames import EMPTY_KINDS, digit_photos, empty_frames
    from edgeport.mobile_demo import load_model
    from edgeport.mobile_demo.preprocess import prepare_digits, with_none
    from edgeport.train.data import load_dataset

    labels = manifest["labels"]
    none = len(labels)
    frames, kinds = empty_frames(args.frames, args.size, seed=20)
    data = load_dataset("mnist")
    y = data.y_test[: args.photos]
    photos = digit_photos(data.x_test[: args.photos].astype(np.float32) / 255.0, args.size,
                          seed=21, light=args.light == "gradient")
    plain = load_model(export_dir / "model_float32.tflite")

    def demo(pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, found = prepare_digits(list(pictures), plain.input_desc)
        probs = plain.predict(x)["probabilities"]
        return with_none(probs, found, labels).argmax(1), probs.argmax(1)

    demo_frames, _ = demo(frames)
    demo_photos, demo_raw = demo(photos)
    # Without the rule: every photo through the digit pipeline (what edgeport-demo answered before).
    rows = [["edgeport-demo (numpy + model_float32)", f"{np.mean(demo_frames == none):.2%}",
             f"{np.mean(demo_photos == none):.2%}", f"{np.mean(demo_photos == y):.2%}",
             f"{np.mean(demo_raw == y):.2%}", "-", "-"]]
    per_kind = {}
    for kind in APP_KINDS:
        entry = next(e for e in manifest["artifacts"] if e["file"] == kind.file)
        names = entry.get("labels", labels)
        top_frames = classify_mediapipe(export_dir / kind.file, frames, names).argmax(1)
        top_photos = classify_mediapipe(export_dir / kind.file, photos, names).argmax(1)
        per_kind[kind.file] = {
            k: float(np.mean(top_frames[[i for i, kk in enumerate(kinds) if kk == k]] == none))
            for k in EMPTY_KINDS}
        rows.append([f"{kind.file} (MediaPipe)", f"{np.mean(top_frames == none):.2%}",
                     f"{np.mean(top_photos == none):.2%}", f"{np.mean(top_photos == y):.2%}", "-",
                     f"{np.mean(top_frames == demo_frames):.2%}",
                     f"{np.mean(top_photos == demo_photos):.2%}"])
    print(f"machine: {machine()}; load {load_average()}; {args.frames} empty frames, "
          f"{args.photos} digit photos ({args.light} light), {args.size} px; "
          f"run {manifest.get('run')}")
    print(table(["path", "none on empty frames", "none on digit photos", "photo accuracy",
                 "accuracy without the rule", "agree w/ demo (frames)",
                 "agree w/ demo (photos)"], rows))
    print("none rate per kind of frame:", json.dumps(per_kind, indent=1))


if __name__ == "__main__":
    main()
