"""export/baseline.py: `edgeport parity NEW --baseline OLD`, the release gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeport.export.baseline import BaselineError, Budget, parse_budget
from edgeport.export.cli import main

PLAIN = "float32,float16,dynamic_int8,int8,onnx"


# ---- budgets --------------------------------------------------------------------------------

def test_budget_defaults_and_spec(tmp_path):
    assert parse_budget(None) == Budget(0.1, 0.05, 0.10, None)
    b = parse_budget("accuracy=0.5, size=2%,latency=25%,agreement=1")
    assert (b.accuracy_points, b.size_fraction, b.latency_fraction, b.agreement_points) == (
        0.5, 0.02, 0.25, 1.0)
    f = tmp_path / "budget.json"
    f.write_text(json.dumps({"size": "1%"}))
    assert parse_budget(str(f)) == Budget(size_fraction=0.01)


@pytest.mark.parametrize(("spec", "match"), [
    ("accuracy=1%", r"accuracy='1%'; expected points"),
    ("size=5", r"size='5'; expected a percentage"),
    ("speed=5%", r"unknown key 'speed'"),
    ("latency", r"has no '='"),
    ("latency=-3%", r"expected a percentage"),
])
def test_bad_budget_is_one_line_with_the_fix(spec, match):
    with pytest.raises(BaselineError, match=match) as e:
        parse_budget(spec)
    assert "\n" not in str(e.value) and "accuracy=0.1,size=5%,latency=10%" in str(e.value)


# ---- the gate on real runs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def old_release(exported_run, tmp_path_factory):
    """The 1,000-iteration seed run, gated: the shipped release (a copy of its export)."""
    from edgeport.export.parity import check_parity

    assert check_parity(exported_run, progress=False).passed
    release = tmp_path_factory.mktemp("release") / "export"
    shutil.copytree(exported_run / "export", release)
    return release


@pytest.fixture(scope="module")
def worse_run(tmp_path_factory, mnist):
    """A 20-iteration softmax run (about 85 % instead of 91 %), exported: the regression."""
    from edgeport.export.exporter import export_model
    from edgeport.train import fit, make_config

    out = tmp_path_factory.mktemp("runs") / "worse"
    res = fit(make_config(recipe="seed", iterations=20), out_dir=out, progress=False,
              dataset=mnist)
    export_model(res.run_dir, formats=PLAIN, progress=False)
    return res.run_dir


@pytest.mark.slow
def test_a_worse_model_breaks_the_accuracy_budget(worse_run, old_release, capsys, tmp_path,
                                                  monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = main(["parity", str(worse_run), "--baseline", str(old_release)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "parity PASS" in out  # the file reproduces its own reference: only the gate fails
    breaches = [line for line in out.splitlines() if line.startswith("budget broken: ")]
    assert len(breaches) == 5, out
    for line in breaches:
        assert "accuracy" in line and "> budget 0.1 pts" in line
    assert "release gate: FAIL (5 budget(s) broken)" in out
    text = summary.read_text()  # the job summary gets both tables
    assert "| model_int8.tflite |" in text and "### edgeport release gate: FAIL" in text
    assert text.index("release gate") > text.index("model_int8.tflite")


@pytest.mark.slow
def test_a_budget_can_allow_it(worse_run, old_release, capsys):
    code = main(["parity", str(worse_run), "--baseline", str(old_release),
                 "--budget", "accuracy=7"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "release gate: PASS" in out


def test_size_and_latency_budgets_and_the_noise_floor():
    from types import SimpleNamespace

    from edgeport.export.baseline import Timing, _row_breaches

    row = SimpleNamespace(accuracy=0.91, agreement=1.0)
    old = SimpleNamespace(accuracy=0.91, agreement=1.0)
    quiet = (Timing(median=1.2, spread=0.01), Timing(median=1.0, spread=0.01), 0.02)
    lines = _row_breaches(row, old, (1100, 1000), quiet, Budget())
    assert [line.split(" ")[0] for line in lines] == ["size", "batch-1"]
    assert "grew 10.0% > budget 5%" in lines[0] and "grew 20.0% > budget 10%" in lines[1]
    noisy = (quiet[0], quiet[1], 0.30)  # a runner this noisy does not fail on +20 %
    assert _row_breaches(row, old, (1040, 1000), noisy, Budget()) == []


@pytest.mark.slow
def test_a_baseline_that_does_not_match_its_manifest_is_refused(old_release, tmp_path):
    from edgeport.export.baseline import resolve_baseline

    changed = tmp_path / "changed"
    shutil.copytree(old_release, changed)
    _rewrite_manifest(changed, lambda m: [a.update(bytes=a["bytes"] // 2)
                                          for a in m["artifacts"]])
    with pytest.raises(BaselineError, match="does not verify") as e:
        resolve_baseline(changed)
    assert "model_int8.tflite: size" in str(e.value) and "fix:" in str(e.value)


@pytest.mark.slow
def test_the_same_export_passes_against_itself(old_release, exported_run, capsys):
    code = main(["parity", str(exported_run), "--baseline", str(old_release)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "release gate: PASS (no budget broken)" in out
    assert "noise floor" in out
    assert sum(line.rstrip().endswith(" ok") for line in out.splitlines()) == 5


def test_a_folder_that_is_not_an_export_is_refused(tmp_path, capsys):
    code = main(["parity", str(tmp_path), "--baseline", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--baseline" in err and "no manifest.json" in err and "fix:" in err


def test_budget_without_baseline_is_refused(tmp_path, capsys):
    code = main(["parity", str(tmp_path), "--budget", "size=1%"])
    assert code == 2
    assert "--budget without --baseline" in capsys.readouterr().err


# ---- a signed baseline is verified first ----------------------------------------------------

@pytest.fixture(scope="module")
def signed_release(old_release, tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edgeport.export.signing import sign_export

    d = tmp_path_factory.mktemp("signed")
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "private.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "public.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    export = d / "export"
    shutil.copytree(old_release, export)
    sign_export(export, private_key=d / "private.pem")
    return export, d / "public.pem"


@pytest.mark.slow
def test_signed_baseline_needs_its_key_and_must_verify(signed_release, worse_run, capsys,
                                                       tmp_path):
    from edgeport.export.baseline import resolve_baseline

    export, public = signed_release
    assert resolve_baseline(export, public) == export
    code = main(["parity", str(worse_run), "--baseline", str(export)])
    assert code == 2
    assert "signed (model.sig) but no key given" in capsys.readouterr().err
    # A signed baseline whose card was edited after signing: refused before any work.
    tampered = tmp_path / "tampered"
    shutil.copytree(export, tampered)
    with open(tampered / "MODEL_CARD.md", "a") as f:
        f.write("\nall files passed\n")
    code = main(["parity", str(worse_run), "--baseline", str(tampered),
                 "--baseline-key", str(public)])
    err = capsys.readouterr().err
    assert code == 2
    assert "signature check failed" in err and "MODEL_CARD.md" in err


def _rewrite_manifest(export: Path, edit) -> None:
    m = json.loads((export / "manifest.json").read_text())
    edit(m)
    (export / "manifest.json").write_text(json.dumps(m))
