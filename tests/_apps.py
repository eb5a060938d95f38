"""App models against edgeport-demo on photos: the bar of issue 10, one implementation.

edgeport-demo's side is ``model_float32.tflite`` through ``mobile_demo``'s own
preprocessing (``prepare_input``: the digit pipeline or a plain resize); the app
side is MediaPipe Tasks' ``ImageClassifier`` given the same photo, at whatever size
it has (MediaPipe fits it to the model's S x S input itself).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Issue 10's bar: the same top-1 as edgeport-demo on at least 98 % of the photos, and an
# accuracy within 2 points of edgeport-demo's.
MIN_AGREEMENT = 0.98
MAX_ACCURACY_GAP = 0.02


@dataclass(frozen=True)
class PhotoAgreement:
    """One app model on photos: how often it picks edgeport-demo's class, and accuracies."""

    file: str
    agreement: float
    accuracy: float
    demo_accuracy: float

    @property
    def passed(self) -> bool:
        return (self.agreement >= MIN_AGREEMENT
                and abs(self.accuracy - self.demo_accuracy) <= MAX_ACCURACY_GAP)


def photo_agreement(export_dir: Path, photos: Sequence[np.ndarray],
                    labels: np.ndarray) -> list[PhotoAgreement]:
    """Every app model of ``export_dir`` (MediaPipe) against edgeport-demo on ``photos``.

    Args:
        export_dir: an export folder with ``model_float32.tflite`` and the app models.
        photos: uint8 RGB ``[H, W, 3]`` pictures (any sizes).
        labels: their true classes.
    """
    from edgeport.export.app import APP_KINDS
    from edgeport.export.app_checks import classify_mediapipe
    from edgeport.mobile_demo import load_model
    from edgeport.mobile_demo.preprocess import answers_none, prepare_digits, with_none

    manifest = json.loads((export_dir / "manifest.json").read_text())
    plain = load_model(export_dir / "model_float32.tflite")
    x, found = prepare_digits(list(photos), plain.input_desc)
    demo = plain.predict(x)["probabilities"]
    if answers_none(plain.input_desc):  # edgeport-demo answers `none` where the app does
        demo = with_none(demo, found, manifest["labels"])
    demo_top = demo.argmax(1)
    rows = []
    for kind in APP_KINDS:
        names = next(e for e in manifest["artifacts"] if e["file"] == kind.file).get(
            "labels", manifest["labels"])
        top = classify_mediapipe(export_dir / kind.file, photos, names).argmax(1)
        rows.append(PhotoAgreement(
            file=kind.file,
            agreement=float(np.mean(top == demo_top)),
            accuracy=float(np.mean(top == labels)),
            demo_accuracy=float(np.mean(demo_top == labels)),
        ))
    return rows
