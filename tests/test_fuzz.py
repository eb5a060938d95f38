"""Fuzz the files edgeport reads back: every mutation is accepted (and still right), or a
clean failure: exit 2 with one line, or exit 1 (a check failed). Never a traceback, never
exit 70, never a pass of a changed model.

Each case runs the real reader through :func:`edgeport.errors.run_cli`, the CLI's own
error contract, on a copy of the session's exported run. Example counts stay modest (2 cores).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeport.errors import run_cli

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def run(exported_run, tmp_path_factory):
    """A private copy, restored file by file after each example."""
    from edgeport.export.parity import check_parity

    dest = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(exported_run, dest)
    check_parity(dest, progress=False)  # parity.json too
    return dest


def call(func, capsys) -> tuple[int, str]:
    code = run_cli("edgeport", func)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, err)  # 70 would be a crash
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("edgeport: error: "), err
    return code, err


def mutate(doc, path: list, value):
    """``doc`` with the field at ``path`` (keys / indices) replaced by ``value``."""
    if not path:
        return value
    head, *rest = path
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    out[head] = mutate(out[head], rest, value)
    return out


def rehash(export: Path, name: str) -> None:
    m = json.loads((export / "manifest.json").read_text())
    data = (export / name).read_bytes()
    digest = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if name in m.get("files", {}):
        m["files"][name] = digest
    (export / "manifest.json").write_text(json.dumps(m))


def verify_code(export: Path, capsys) -> int:
    from edgeport.export.verify import verify_export

    return call(lambda: 0 if verify_export(export).passed else 1, capsys)[0]


MANIFEST_PATHS = [["artifacts"], ["artifacts", 0], ["artifacts", 0, "file"],
                  ["artifacts", 0, "bytes"], ["artifacts", 0, "sha256"],
                  ["artifacts", 0, "format"], ["artifacts", 0, "precision"], ["labels"],
                  ["labels", 3], ["input"], ["input", "normalization"], ["files"],
                  ["files", "golden.npz"], ["format_version"], ["run"],
                  ["saved_model_content_sha256"]]


@FUZZ
@given(path=st.sampled_from(MANIFEST_PATHS), value=JSON)
def test_manifest_fields(run, capsys, path, value):
    export = run / "export"
    original = (export / "manifest.json").read_bytes()
    doc = json.loads(original)
    try:
        changed = mutate(doc, path, value)
        (export / "manifest.json").write_text(json.dumps(changed))
        code = verify_code(export, capsys)
        if changed != doc and path[0] not in ("run", "saved_model_content_sha256"):
            assert code != 0, (path, value)
    finally:
        (export / "manifest.json").write_bytes(original)


@FUZZ
@given(text=st.text(max_size=60), rehashed=st.booleans())
def test_labels_txt(run, capsys, text, rehashed):
    export = run / "export"
    original = (export / "labels.txt").read_bytes()
    manifest = (export / "manifest.json").read_bytes()
    try:
        (export / "labels.txt").write_text(text, encoding="utf-8")
        if rehashed:  # the hostile case: the manifest updated to match
            rehash(export, "labels.txt")
        code = verify_code(export, capsys)
        if text.encode() != original:
            same = [n for n in text.splitlines() if n] == [n for n in original.decode()
                                                          .splitlines() if n]
            assert code != 0 or (rehashed and same)
    finally:
        (export / "labels.txt").write_bytes(original)
        (export / "manifest.json").write_bytes(manifest)


GOLDEN_EDITS = st.sampled_from(["drop", "nan", "shape", "dtype", "scale", "zero"])


@FUZZ
@given(key_index=st.integers(0, 30), edit=GOLDEN_EDITS, rehashed=st.booleans())
def test_golden_npz(run, capsys, key_index, edit, rehashed):
    export = run / "export"
    original = (export / "golden.npz").read_bytes()
    manifest = (export / "manifest.json").read_bytes()
    with np.load(io.BytesIO(original)) as z:
        arrays = {k: z[k] for k in z.files}
    key = sorted(arrays)[key_index % len(arrays)]
    a = arrays[key]
    if edit == "drop":
        del arrays[key]
    elif edit == "nan":
        arrays[key] = np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a) \
            if a.dtype.kind == "f" else a + 1
    elif edit == "shape":
        arrays[key] = a[:-1]
    elif edit == "dtype":
        arrays[key] = a.astype(np.float64 if a.dtype != np.float64 else np.int32)
    elif edit == "scale":
        arrays[key] = a * 2 if a.dtype.kind == "f" else a[::-1].copy()
    else:
        arrays[key] = np.zeros_like(a)
    try:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (export / "golden.npz").write_bytes(buf.getvalue())
        if rehashed:
            rehash(export, "golden.npz")
        code = verify_code(export, capsys)
        # golden "labels" are informational (the models are unchanged): any other edit fails
        if key != "labels" or not rehashed:
            assert code != 0, (key, edit, rehashed)
    finally:
        (export / "golden.npz").write_bytes(original)
        (export / "manifest.json").write_bytes(manifest)


METRICS_PATHS = [["dataset"], ["model"], ["seed"], ["input"], ["input", "layout"],
                 ["input", "height"], ["input", "channels"], ["config"],
                 ["config", "split"], ["config", "image_size"], ["config", "seed"],
                 ["config", "data_dir"], ["split"], ["history"]]


@FUZZ
@given(path=st.sampled_from(METRICS_PATHS), value=JSON)
def test_metrics_json(run, capsys, path, value):
    from edgeport.export.exporter import _check_input
    from edgeport.train.run_dir import load_run

    original = (run / "metrics.json").read_bytes()
    doc = json.loads(original)
    try:
        (run / "metrics.json").write_text(json.dumps(mutate(doc, path, value)))

        def body():
            info = load_run(run)
            _check_input(info, (784,), 10)
            return 0

        call(body, capsys)
    finally:
        (run / "metrics.json").write_bytes(original)


REF_EDITS = st.sampled_from(["nan", "inf", "negative", "shape", "labels_range", "labels_float",
                             "swap_rows", "roll", "int_probs", "empty"])


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edit=REF_EDITS, row=st.integers(0, 9999))
def test_reference_npz(run, capsys, edit, row, test_split):
    from edgeport.export.manifest import read_manifest
    from edgeport.export.oracle import check_oracle
    from edgeport.train.run_dir import load_run

    original = (run / "reference.npz").read_bytes()
    with np.load(io.BytesIO(original)) as z:
        p, y = z["probabilities"].copy(), z["labels"].copy()
    r = row % 256  # inside the oracle's re-run sample, so a plausible edit is caught too
    if edit == "nan":
        p[row, 0] = np.nan
    elif edit == "inf":
        p[row, 1] = np.inf
    elif edit == "negative":
        p[row] = -p[row]
    elif edit == "shape":
        p = p[:, :-1]
    elif edit == "labels_range":
        y[row] = 10 + row
    elif edit == "labels_float":
        y = y.astype(np.float64)
    elif edit == "swap_rows":
        p[[r, (r + 1) % 256]] = p[[(r + 1) % 256, r]]
    elif edit == "roll":
        p[r] = np.roll(p[r], 1)
    elif edit == "int_probs":
        p = (p * 100).astype(np.int32)
    else:
        p, y = p[:0], y[:0]
    x, labels = test_split
    try:
        np.savez(run / "reference.npz", probabilities=p, labels=y)
        code, _ = call(lambda: check_oracle(load_run(run), read_manifest(run / "export"),
                                            x=x, labels=labels), capsys)
        if not (edit == "swap_rows" and np.allclose(p[r], p[(r + 1) % 256], atol=1e-4)):
            assert code == 2, edit
    finally:
        (run / "reference.npz").write_bytes(original)


@pytest.fixture(scope="module")
def test_split(run):
    from edgeport.train.run_dir import load_split

    return load_split(run, "test")
