"""Trust (issue 12): no data lost, no bad model through the gate, signed exports, one-line errors.

Each test names the case of the issue it covers. The tamper tests work on copies of the
session's ``exported_run`` (the real seed model and its five files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runs import rehash

from edgeport.errors import EXIT_INTERNAL, run_cli
from edgeport.export.verify import verify_export
from edgeport.fileio import MARKER_NAME, UnsafeReplaceError, atomic_dir, check_replaceable


def edgeport(*args: str, cwd: str | None = None, timeout: int = 600, **kw):
    return subprocess.run([sys.executable, "-m", "edgeport", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy(), cwd=cwd, **kw)


def one_line(res, code: int = 2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    # Progress bars may come first (they erase themselves on a terminal); the error is one line.
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("edgeport: error: "), res.stderr
    return lines[-1]


def copy_export(exported_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, symlinks=True)
    return run


# ---- never delete what edgeport did not write ------------------------------------------------

def test_force_refuses_a_user_folder_the_cwd_and_the_dataset(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(UnsafeReplaceError, match="not an edgeport run"):
        check_replaceable(user, kind="run")
    with pytest.raises(UnsafeReplaceError, match="current folder"):
        check_replaceable(Path.cwd(), kind="run")
    data = tmp_path / "photos"
    (data / "cats").mkdir(parents=True)
    (data / MARKER_NAME).write_text('{"kind": "run"}')  # even a marked folder holding the input
    with pytest.raises(UnsafeReplaceError, match="holds the input"):
        check_replaceable(data, kind="run", protect=(data / "cats",))
    with pytest.raises(UnsafeReplaceError, match="a file"):
        check_replaceable(user / "thesis.tex", kind="run")
    assert (user / "thesis.tex").read_text() == "years of work"


def test_force_replaces_only_a_marked_folder_and_leaves_no_temp(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out, marker="run") as tmp:
        (tmp / "a").write_text("1")
    assert (out / MARKER_NAME).is_file()
    with atomic_dir(out, overwrite=True, marker="run") as tmp:
        (tmp / "a").write_text("2")
    assert (out / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_cli_train_force_on_a_user_folder_is_one_line_and_keeps_it(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    line = one_line(edgeport("train", "--iterations", "5", "--out", str(user), "--force",
                             "--quiet"))
    assert "not an edgeport run" in line and "--out" in line
    assert (user / "notes.txt").read_text() == "keep me"
    line = one_line(edgeport("train", "--iterations", "5", "--out", ".", "--force", "--quiet",
                             cwd=str(user)))
    assert "current folder" in line


def test_stale_temp_folders_of_a_killed_process_are_removed_next_time(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".export.{dead}.abcd.tmp"
    stale.mkdir()
    (stale / "model.tflite").write_bytes(b"half")
    alive = tmp_path / f".export.{os.getpid()}.efgh.tmp"  # a running process: kept
    alive.mkdir()
    with atomic_dir(tmp_path / "export", marker="export") as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and alive.exists()


# ---- the error contract ---------------------------------------------------------------------

def test_run_cli_exit_codes(capsys):
    def boom():
        raise ZeroDivisionError("a bug")

    assert run_cli("edgeport", boom) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "--debug" in err

    def full():
        raise OSError(28, "No space left on device", "/mnt/x/model.tflite")

    assert run_cli("edgeport", full) == 2
    assert "disk is full" in capsys.readouterr().err

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli("edgeport", interrupted) == 130
    with pytest.raises(ZeroDivisionError):
        run_cli("edgeport", boom, debug=True)


def test_sigterm_is_143_and_never_swallowed(tmp_path):
    code = ("import os, signal, time\n"
            "from edgeport.errors import run_cli\n"
            "from edgeport.fileio import atomic_dir\n"
            "def body():\n"
            f"    with atomic_dir({str(tmp_path / 'out')!r}) as t:\n"
            "        (t / 'f').write_text('x')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(5)\n"
            "raise SystemExit(run_cli('edgeport', body))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 143, res.stderr
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no half-written output


@pytest.mark.parametrize("args, needle", [
    (["--iterations", "0"], "--iterations 0"),
    (["--seed", "-1"], "--seed -1"),
    (["--eval-every", "0"], "--eval-every 0"),
    (["--patience", "-1"], "--patience -1"),
    (["--learning-rate", "1e38"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_cli_numbers_are_validated_before_any_work(tmp_path, args, needle):
    line = one_line(edgeport("train", *args, "--out", str(tmp_path / "r"), "--quiet"))
    assert needle in line
    assert not (tmp_path / "r").exists()


def test_json_dir_and_verify_run_hint(exported_run, tmp_path):
    line = one_line(edgeport("parity", str(exported_run), "--json", str(tmp_path)))
    assert "is a folder" in line
    line = one_line(edgeport("verify", str(exported_run)))
    assert f"{exported_run / 'export'}" in line and "run directory" in line


def test_read_only_out_is_refused_before_training(readonly_dir):
    line = one_line(edgeport("train", "--iterations", "5", "--quiet", "--out",
                             str(readonly_dir / "run")))
    assert "cannot write" in line


def test_full_disk_export_is_one_line_and_leaves_no_temp(exported_run, small_disk):
    run = small_disk / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("export", "plots",
                                                                     "checkpoint"))
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 40_000))
    res = edgeport("export", str(run), "--formats", "float32,onnx")
    line = one_line(res)
    assert "disk is full" in line or "too large" in line
    assert not [p for p in run.iterdir() if p.name.startswith(".export.")]


# ---- training that diverges stops -----------------------------------------------------------

@pytest.mark.slow
def test_divergence_stops_with_iteration_loss_and_fix(tmp_path):
    line = one_line(edgeport("train", "--model", "mlp", "--optimizer", "sgd", "--iterations",
                             "20", "--learning-rate", "1e6", "--patience", "0",
                             "--eval-every", "1", "--out", str(tmp_path / "r"), "--quiet"))
    assert "diverged at iteration" in line and "smaller --learning-rate" in line
    assert not (tmp_path / "r").exists()


# ---- verify: tamper classes -----------------------------------------------------------------

def _failures(export: Path, **kw) -> str:
    rep = verify_export(export, **kw)
    assert not rep.passed
    return "\n".join(rep.failures)


def test_clean_export_verifies_and_says_its_guarantee(exported_run):
    rep = verify_export(exported_run / "export")
    assert rep.passed, rep.failures
    assert rep.guarantee.startswith("unsigned: integrity against accidents only")


def test_garbage_file_with_its_manifest_entry_removed(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    m = json.loads((export / "manifest.json").read_text())
    m["artifacts"] = [e for e in m["artifacts"] if e["file"] != "model_int8.tflite"]
    (export / "manifest.json").write_text(json.dumps(m))
    (export / "model_int8.tflite").write_bytes(b"garbage")
    assert "model_int8.tflite: extra file" in _failures(export)


def test_corner_speck_weight_patch_with_updated_sha_is_caught_by_probes(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    path = export / "model_float32.tflite"
    data = bytearray(path.read_bytes())
    # The softmax weight matrix is stored as float32 [10, 784] (or [784, 10]); find a
    # corner-pixel weight (pixel 0: always dark in MNIST) by its value and make it huge.
    from edgeport.export.formats import parse_formats
    from edgeport.export.golden import predict

    kind = next(k for k in parse_formats("float32"))
    x = np.zeros((1, 784), np.float32)
    x[0, 0] = 0.2  # a faint speck in the top-left corner
    base = predict(bytes(data), kind, x)["probabilities"]
    weights = np.frombuffer(bytes(data), dtype=np.uint8)
    patched = None
    for off in range(0, len(weights) - 4, 4):
        v = np.frombuffer(bytes(data[off:off + 4]), np.float32)[0]
        if not np.isfinite(v) or abs(v) < 1e-6:
            continue
        trial = bytearray(data)
        trial[off:off + 4] = np.float32(500.0).tobytes()
        try:
            p = predict(bytes(trial), kind, x)["probabilities"]
        except Exception:
            continue
        if np.isfinite(p).all() and p[0].argmax() != base[0].argmax():
            patched = trial
            break
    assert patched is not None
    path.write_bytes(bytes(patched))
    rehash(export, "model_float32.tflite")
    # The golden test images never light the corner: only the probes see the change.
    text = _failures(export)
    assert "probe max |Δp|" in text and "model_float32.tflite" in text


def test_extra_files_second_model_and_subfolder(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    (export / "evil.sh").write_text("rm -rf ~")
    shutil.copy(export / "model_float32.tflite", export / "model_float32_v2.tflite")
    (export / "sub").mkdir()
    text = _failures(export)
    assert "evil.sh: extra file" in text and "model_float32_v2.tflite: extra file" in text
    assert "sub/: extra folder" in text


def test_rewritten_labels_txt(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    (export / "labels.txt").write_text("".join(f"{c}\n" for c in "abcdefghij"))
    assert "labels.txt: sha256" in _failures(export)
    rehash(export, "labels.txt")  # and with the hash updated: labels differ from the manifest
    assert "labels.txt: its class names differ" in _failures(export)


@pytest.mark.parametrize("field, value", [
    ("labels", [str(9 - i) for i in range(10)]),
    ("input", {"normalization": "pixel / 127.5 - 1"}),
])
def test_edited_labels_or_normalization_in_manifest(exported_run, tmp_path, field, value):
    export = copy_export(exported_run, tmp_path) / "export"
    m = json.loads((export / "manifest.json").read_text())
    m[field] = value if field == "labels" else {**m["input"], **value}
    (export / "manifest.json").write_text(json.dumps(m))
    assert f"manifest.json {field!r} differs from the model's embedded metadata" in \
        _failures(export)


def test_forged_parity_json(exported_run, tmp_path):
    from edgeport.export.parity import check_parity

    run = copy_export(exported_run, tmp_path)
    report = check_parity(run, progress=False)
    assert report.passed and verify_export(run / "export").passed
    doc = json.loads((run / "export" / "parity.json").read_text())
    doc["results"][0]["agreement"] = 0.5  # a failing figure, still claiming a pass
    (run / "export" / "parity.json").write_text(json.dumps(doc))
    assert "claims a pass its own figures refute" in _failures(run / "export")
    doc = {"passed": True, "results": []}  # a verdict made up from nothing
    (run / "export" / "parity.json").write_text(json.dumps(doc))
    assert "parity.json" in _failures(run / "export")


def test_model_replaced_by_a_link(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    elsewhere = tmp_path / "elsewhere.tflite"
    shutil.move(export / "model_float16.tflite", elsewhere)
    (export / "model_float16.tflite").symlink_to(elsewhere)
    assert "model_float16.tflite: is a link" in _failures(export)


def test_verify_cli_exit_1_and_guarantee_line(exported_run, tmp_path):
    export = copy_export(exported_run, tmp_path) / "export"
    res = edgeport("verify", str(export))
    assert res.returncode == 0, res.stderr
    assert "guarantee: unsigned" in res.stdout
    (export / "evil.sh").write_text("x")
    assert edgeport("verify", str(export)).returncode == 1


# Signing tests (sign, verify --key/--chain, re-signing refusals): tests/test_signing.py.


# ---- the parity gate checks its oracle -------------------------------------------------------

def _reference(run: Path, probs=None, labels=None) -> None:
    with np.load(run / "reference.npz") as z:
        p, y = z["probabilities"].copy(), z["labels"].copy()
    np.savez(run / "reference.npz", probabilities=p if probs is None else probs(p),
             labels=y if labels is None else labels(y))


@pytest.mark.parametrize("probs, labels, needle", [
    (lambda p: np.where(np.arange(p.size).reshape(p.shape) == 5000, np.nan, p), None,
     "non-finite reference"),
    (lambda p: p[:, :9], None, "expected [N, 10]"),
    (None, lambda y: np.where(np.arange(len(y)) == 7, 12, y), "labels span"),
    (lambda p: np.roll(p, 1, axis=1), None, "not what"),
])
def test_broken_oracle_is_never_a_pass(exported_run, tmp_path, probs, labels, needle):
    from edgeport.export.oracle import OracleError
    from edgeport.export.parity import check_parity
    from edgeport.train.run_dir import RunDirError

    run = copy_export(exported_run, tmp_path)
    _reference(run, probs, labels)
    with pytest.raises((OracleError, RunDirError), match=None) as info:
        check_parity(run, progress=False)
    assert needle in str(info.value) or "test labels" in str(info.value)


def test_stale_export_from_another_saved_model_fails(exported_run, tmp_path):
    from edgeport.export.oracle import OracleError
    from edgeport.export.parity import check_parity

    run = copy_export(exported_run, tmp_path)
    m = json.loads((run / "export" / "manifest.json").read_text())
    m["saved_model_content_sha256"] = "0" * 64
    (run / "export" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OracleError, match="stale export"):
        check_parity(run, progress=False)


def test_content_hash_is_stable_across_identical_retrainings(tmp_path, mnist):
    from edgeport.train import fit, make_config
    from edgeport.train.run_dir import saved_model_content_sha256

    runs = [fit(make_config(recipe="seed", iterations=20), out_dir=tmp_path / f"r{i}",
                progress=False, dataset=mnist).run_dir for i in range(2)]
    a, b = (saved_model_content_sha256(r / "saved_model") for r in runs)
    assert a == b
    assert json.loads((runs[0] / "metrics.json").read_text())["saved_model_content_sha256"] == a


# ---- folder datasets never follow links out or count twice ------------------------------------

def test_folder_links_out_of_the_dataset_and_duplicates_are_skipped(tmp_path):
    from PIL import Image

    from edgeport.train.folder import _list_classes

    root = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(root / c / f"{i}.png")
    Image.new("L", (8, 8), 9).save(outside / "secret.png")
    (root / "a" / "out.png").symlink_to(outside / "secret.png")
    (root / "a" / "outdir").symlink_to(outside)
    (root / "b" / "twice.png").symlink_to(root / "b" / "0.png")
    (root / "b" / "loop").symlink_to(root)
    _, files, _ = _list_classes(root)
    names = sorted(p.relative_to(root).as_posix() for p, _ in files)
    assert names == ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png"]


def test_a_caught_ctrl_c_still_exits_130(capsys):
    import signal
    import time

    def body():
        try:  # a library that swallows the interrupt must not turn it into success
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
        except KeyboardInterrupt:
            pass
        return 0

    assert run_cli("edgeport", body) == 130


@pytest.mark.slow
def test_two_trainings_racing_for_one_out(tmp_path, mnist, monkeypatch):
    from edgeport.train import fit, make_config, trainer
    from edgeport.train.run_dir import RunDirError

    out = tmp_path / "run"
    original = trainer.train_model

    def the_other_one_finishes_first(*args, **kwargs):
        result = original(*args, **kwargs)
        out.mkdir()
        (out / "theirs.txt").write_text("the winner's run")
        return result

    monkeypatch.setattr(trainer, "train_model", the_other_one_finishes_first)
    with pytest.raises(RunDirError, match="appeared while this run trained"):
        fit(make_config(recipe="seed", iterations=5), out_dir=out, progress=False,
            dataset=mnist)
    assert (out / "theirs.txt").read_text() == "the winner's run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left


def test_demo_names_the_blank_picture(tmp_path):
    from PIL import Image

    from edgeport.errors import ImageError
    from edgeport.mobile_demo.preprocess import prepare_input

    blank = tmp_path / "blank.png"
    Image.new("L", (28, 28), 255).save(blank)
    spec = {"layout": "flat", "height": 28, "width": 28, "channels": 1, "preprocess": "mnist"}
    with pytest.raises(ImageError, match=r"blank\.png"):
        prepare_input([blank], spec)


def test_sigterm_during_export_force_exits_143_and_leaves_no_temp(exported_run, tmp_path):
    import signal
    import time

    run = copy_export(exported_run, tmp_path)
    before = (run / "export" / "manifest.json").read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "edgeport", "export", str(run), "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until the export is under way
        if any(p.name.startswith(".export.") and any(p.iterdir()) for p in run.iterdir()
               if p.is_dir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert not [p.name for p in run.iterdir() if p.name.startswith(".export.")]
    assert (run / "export" / "manifest.json").read_bytes() == before  # the old export intact
