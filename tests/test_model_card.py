"""export/model_card.py: every export carries MODEL_CARD.md, filled in by parity, verified."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeport.export.manifest import file_sha256
from edgeport.export.model_card import MODEL_CARD_NAME, render_model_card
from edgeport.export.verify import verify_export


def test_export_time_card_has_the_contract_and_no_figures():
    manifest = {"edgeport_version": "0.2.0", "labels": ["0", "1"],
                "input": {"name": "image", "layout": "flat", "height": 28, "width": 28,
                          "channels": 1, "dtype": "float32", "range": [0.0, 1.0],
                          "normalization": "pixel / 255", "preprocess": "mnist"},
                "artifacts": [{"file": "model_float32.tflite", "format": "tflite",
                               "precision": "float32", "bytes": 2048, "sha256": "ab" * 32}]}
    metrics = {"dataset": "mnist", "model": "softmax", "recipe": "seed", "seed": 0,
               "iterations": 20, "test_accuracy": 0.85,
               "split": {"train": 55000, "validation": 5000, "test": 10000}}
    text = render_model_card(manifest, metrics)
    for heading in ("## Model", "## Data", "## Labels", "## Input contract", "## Files",
                    "## Thresholds", "## Known limits", "## How to verify this folder"):
        assert heading in text
    assert "| model_float32.tflite | tflite | float32 | 2.0 KB |" in text
    assert "not proven" in text and "no \"no digit\"" in text
    assert render_model_card(manifest, metrics) == text  # deterministic: no timings yet


@pytest.mark.slow
def test_card_after_edgeport_run_is_listed_filled_and_verified(cnn_run, tmp_path):
    export = cnn_run / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    entry = manifest["files"][MODEL_CARD_NAME]
    assert entry["sha256"] == file_sha256(export / MODEL_CARD_NAME)
    text = (export / MODEL_CARD_NAME).read_text()
    assert "# Model card: mnist cnn" in text
    assert "Parity gate: every file passed." in text
    for a in manifest["artifacts"]:  # each file with its figures and a latency
        row = next(line for line in text.splitlines() if line.startswith(f"| {a['file']} |"))
        assert "%" in row and " ms |" in row and row.endswith("| PASS |")
    # What an empty frame gets: the app models answer `none` (the rule in their graph).
    assert "`model_app_int8.tflite` answers `none` (100%)" in text
    assert "answer `none` when the frame holds no digit" in text
    parity = json.loads((export / "parity.json").read_text())
    assert parity["manifest_sha256"] == file_sha256(export / "manifest.json")
    assert verify_export(export).passed

    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    card = copy / MODEL_CARD_NAME
    card.write_text(card.read_text().replace("every file passed", "every file passed!!"))
    rep = verify_export(copy)
    assert not rep.passed
    assert any(p.startswith(f"{MODEL_CARD_NAME}: ") and "sha256" in p for p in rep.problems)
