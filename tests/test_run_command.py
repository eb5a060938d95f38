"""`edgeport run` (train -> export -> parity) end to end on Fashion-MNIST-layout files.

There is no copy of Fashion-MNIST here, so the test writes the four files in its
exact IDX layout (learnable class patterns, so quantized files agree with the
reference) and registers their md5 values in place of Zalando's published ones;
the loader, the md5 check and every later stage are the real ones.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _idxfiles import write_idx_dataset

from edgeport.export.cli import main
from edgeport.train.data import DATASETS


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class k: a bright band at rows 2k..2k+5 over faint noise; easy to learn for any model."""
    x = rng.integers(0, 40, (len(labels), 28, 28))
    for i, k in enumerate(labels):
        x[i, 2 * k + 2 : 2 * k + 6, 4:24] = 230
    return x


@pytest.fixture
def fashion_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    y_train, y_test = np.arange(5600) % 10, np.arange(200) % 10
    folder = tmp_path / "data" / "fashion-mnist"
    md5 = write_idx_dataset(folder, _images(y_train, rng), y_train, _images(y_test, rng), y_test)
    spec = dataclasses.replace(DATASETS["fashion-mnist"], mirrors=(), md5=md5)
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    monkeypatch.setenv("EDGEPORT_DATA", str(tmp_path / "data"))
    return folder


@pytest.mark.parametrize("model", ["softmax", "mlp", "cnn"])
def test_run_fashion_mnist_end_to_end(fashion_files, tmp_path, capsys, model):
    out = tmp_path / "run"
    code = main(["run", "--dataset", "fashion-mnist", "--model", model, "--iterations", "60",
                 "--eval-every", "30", "--calibration-samples", "200", "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    parity = json.loads((out / "export" / "parity.json").read_text())
    # five files + model.ort + two app models through LiteRT and MediaPipe
    assert parity["passed"] and len(parity["results"]) == 10, parity
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "fashion-mnist" and m["test_accuracy"] >= 0.9  # bands are easy
    assert (out / "export" / "labels.txt").read_text().splitlines()[0] == "T-shirt/top"
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["input"]["layout"] == ("nhwc" if model == "cnn" else "flat")
    assert "parity PASS: 10/10" in captured.out
