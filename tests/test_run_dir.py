"""The run-directory contract the exporter and the parity gate rely on (docs/contracts.md)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgeport.train.run_dir import RunDirError, load_run, load_split


def test_run_directory_contract(seed_run):
    run = seed_run.run_dir
    info = load_run(run)
    m = info.metrics
    for key in ("dataset", "model", "test_accuracy", "validation_accuracy", "train_seconds",
                "seed", "history", "input", "config"):
        assert key in m, key
    assert [h["iteration"] for h in m["history"]][:1] == [0]
    assert m["input"] == {"name": "image", "layout": "flat", "height": 28, "width": 28,
                          "channels": 1, "dtype": "float32", "range": [0.0, 1.0],
                          "normalization": "pixel / 255", "preprocess": "mnist"}
    assert info.labels == tuple("0123456789")
    with np.load(run / "reference.npz", allow_pickle=False) as z:
        assert z["probabilities"].shape == (10000, 10) and z["probabilities"].dtype == np.float32
        assert z["labels"].shape == (10000,)
        # Each row is a probability distribution (float32 rounding: 1e-5).
        np.testing.assert_allclose(z["probabilities"].sum(1), 1.0, atol=1e-5)
    # The reference predictions are the model's: accuracy matches the trainer's figure.
    ref_acc = float(np.mean(info.reference_probabilities.argmax(1) == info.reference_labels))
    assert ref_acc == pytest.approx(m["test_accuracy"], abs=1e-4)  # 1 image in 10,000
    for png in ("samples", "weights", "confusion_matrix", "accuracy"):
        with Image.open(run / "plots" / f"{png}.png") as im:
            assert im.format == "PNG" and min(im.size) > 200


def test_saved_model_signature(seed_run):
    import tensorflow as tf

    fn = tf.saved_model.load(str(seed_run.run_dir / "saved_model")).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert list(kwargs) == ["image"]
    assert kwargs["image"].shape.as_list() == [None, 784] and kwargs["image"].dtype == tf.float32
    assert sorted(fn.structured_outputs) == ["logits", "probabilities"]
    for n in (1, 3):  # dynamic batch
        out = fn(image=tf.zeros([n, 784]))
        assert out["probabilities"].shape == (n, 10)


def test_load_split_returns_the_test_set(seed_run):
    x, y = load_split(seed_run.run_dir, "test")
    assert x.shape == (10000, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(y, load_run(seed_run.run_dir).reference_labels)


@pytest.mark.parametrize("remove", ["saved_model", "reference.npz", "metrics.json"])
def test_incomplete_run_is_refused_with_the_fix(tmp_path, seed_run, remove):
    run = tmp_path / "run"
    shutil.copytree(seed_run.run_dir, run)
    target = run / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(RunDirError, match=r"missing .*edgeport train --out "):
        load_run(run)


def test_pickled_reference_is_refused(tmp_path, seed_run):
    run = tmp_path / "run"
    shutil.copytree(seed_run.run_dir, run)
    np.savez(run / "reference.npz", probabilities=np.array([{"a": 1}], dtype=object),
             labels=np.zeros(1))
    with pytest.raises(RunDirError, match="unreadable without pickle"):
        load_run(run)


def test_missing_run(tmp_path):
    with pytest.raises(RunDirError, match=r"run directory .* does not exist"):
        load_run(tmp_path / "nope")


def test_metrics_json_is_plain_json(seed_run):
    m = json.loads((seed_run.run_dir / "metrics.json").read_text())
    assert m["config"]["learning_rate"] == pytest.approx(0.5, abs=0)  # stored verbatim
    assert m["config"]["batch_size"] == 100


def test_a_reference_declaring_huge_arrays_is_refused_before_loading(tmp_path, seed_run):
    # Issue 18: npz headers declaring (1e11, 784) shapes exited 70. The .npy headers are
    # read first (edgeport.fileio.check_npz_size): one line, exit 2, nothing loaded.
    import io
    import zipfile

    run = tmp_path / "run"
    shutil.copytree(seed_run.run_dir, run)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 784)})
    with zipfile.ZipFile(run / "reference.npz", "w") as z:
        z.writestr("probabilities.npy", head.getvalue() + bytes(64))
        z.writestr("labels.npy", head.getvalue())
    with pytest.raises(RunDirError, match=r"reference\.npz: its arrays declare 598,144,531 MB "
                       r"\(largest 'probabilities' \[100000000000, 784\] float32\); expected "
                       r"at most 1,024 MB; nothing was loaded; fix: ") as e:
        load_run(run)
    assert e.value.exit_code == 2
