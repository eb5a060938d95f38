"""pyproject.toml: one installed package, ``edgeport``, and a device install without TensorFlow.

The slow tests build a wheel from the checkout and install it, without extras,
into one fresh venv per session (pip fills numpy, Pillow and LiteRT from its
cache): what ``pip install edgeport`` gives a device. The fast ones run the
README's API from a folder holding a user's own ``train.py`` and ``export/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import _models
import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str | Path], *, cwd: Path | None = None, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # one line, no traceback
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the checkout.

    A copy, because setuptools builds in ``build/`` beside the sources and would
    package a module deleted since the last build.
    """
    src = tmp_path_factory.mktemp("src") / "edgeport"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "runs", ".*_cache",
        ".hypothesis"))
    out = tmp_path_factory.mktemp("wheel")
    res = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", src, "-w", out])
    assert res.returncode == 0, res.stderr
    (found,) = out.glob("edgeport-*.whl")
    return found


@pytest.fixture(scope="session")
def device_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, no extras: the device side. Returns its bin/."""
    root = tmp_path_factory.mktemp("device-install")
    venv.create(root, with_pip=True)
    bin_dir = root / "bin"
    res = _run([bin_dir / "python", "-m", "pip", "install", "-q", wheel])
    assert res.returncode == 0, res.stderr
    return bin_dir


@pytest.mark.slow
def test_wheel_installs_only_the_edgeport_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"edgeport", f"{wheel.name.split('-py')[0]}.dist-info"}
    for sub in ("train", "export", "mobile_demo"):
        assert f"edgeport/{sub}/__init__.py" in names
    assert "edgeport/mobile_demo/requirements-device.txt" in names  # package data
    for page in ("index.html", "app.js", "worker.js", "style.css", "favicon.svg", "package.json"):
        assert f"edgeport/mobile_demo/web/{page}" in names  # the phone page (a data package)
    assert not [n for n in names if "node_modules" in n]


@pytest.mark.slow
def test_device_install_has_no_tensorflow(device_bin: Path) -> None:
    probe = ("import importlib.util as u; "
             "print([m for m in ('tensorflow', 'matplotlib', 'sklearn') if u.find_spec(m)], "
             "u.find_spec('ai_edge_litert') is not None, u.find_spec('onnxruntime') is not None)")
    res = _run([device_bin / "python", "-c", probe])
    assert res.stdout.split() == ["[]", "True", "True"], res.stderr


@pytest.mark.slow
def test_demo_runs_from_the_device_install(
    device_bin: Path, exported_run: Path, tmp_path: Path
) -> None:
    samples = tmp_path / "samples"
    res = _run([device_bin / "edgeport-demo", "--export-samples", "50", samples])
    assert res.returncode == 0, res.stderr
    model = exported_run / "export" / "model_int8.tflite"
    res = _run([device_bin / "edgeport-demo", model, samples / "7_00000.png"])
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert re.match(r".*7_00000\.png: 7 \(", res.stdout), res.stdout
    res = _run([device_bin / "edgeport-demo", model, "--eval", samples, "--json"])
    assert res.returncode == 0, res.stderr
    # The seed model scores 91.4% on the test set; its first 50 images are easier.
    assert '"accuracy": ' in res.stdout and '"runtime": "litert"' in res.stdout
    res = _run([device_bin / "edgeport-demo", model, "--bench", "--runs", "20"])
    assert res.returncode == 0, res.stderr
    assert "p50" in res.stdout and "(20 runs after 10 warm-up)" in res.stdout


@pytest.mark.slow
def test_tensorflow_commands_name_the_extra(device_bin: Path, exported_run: Path) -> None:
    res = _run([device_bin / "edgeport", "train", "--out", "never-written"])
    _one_line_error(res, 2, "TensorFlow is not installed", "pip install 'edgeport[tensorflow]'")
    res = _run([device_bin / "edgeport", "parity", exported_run])
    _one_line_error(res, 2, "pip install 'edgeport[tensorflow]'")
    t = _run([device_bin / "python", "-c",
              "import time, subprocess, sys; t = time.perf_counter(); "
              "subprocess.run([sys.argv[1], '--help'], capture_output=True); "
              "print(time.perf_counter() - t)", device_bin / "edgeport"])
    assert float(t.stdout) < 2.0  # a second on a quiet machine; 2 on a shared one


@pytest.mark.slow
def test_verify_runs_from_the_device_install(device_bin: Path, exported_run: Path) -> None:
    export_dir = exported_run / "export"
    # The base install has LiteRT and ONNX Runtime: every file of the export is checked.
    res = _run([device_bin / "edgeport", "verify", export_dir])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout
    probe = "import importlib.util as u; print(u.find_spec('tensorflow') is None)"
    assert _run([device_bin / "python", "-c", probe]).stdout.strip() == "True"


# --- a user's folder with its own train.py and export/ ---------------------------------


def _readme_api_imports() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    return [ln.split("#")[0].rstrip() for ln in block.splitlines() if ln.startswith("from ")]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A project folder whose own ``train.py`` and ``export/`` would shadow generic names."""
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "__init__.py").write_text("raise ImportError('the user export/')\n")
    (tmp_path / "mobile_demo.py").write_text("raise SystemExit('user mobile_demo.py')\n")
    return tmp_path


def test_readme_api_works_beside_a_users_train_py(
    user_folder: Path, exported_run: Path, tmp_path: Path
) -> None:
    imports = _readme_api_imports()
    assert imports and all(ln.startswith("from edgeport.") for ln in imports), imports
    picture = tmp_path / "seven.png"
    _models.draw_digit().save(picture)
    code = "\n".join([
        *imports,
        "import sys",
        "cfg = make_config(recipe='seed')",
        "assert callable(fit) and callable(export_model) and callable(check_parity)",
        "report = verify_export(sys.argv[1] + '/export')",
        "assert report.passed, report.failures",
        "model = load_model(sys.argv[1] + '/export/model_int8.tflite')",
        "x = preprocess_digit(load_image(sys.argv[2]))[None]",
        "print(int(model.predict(x)['probabilities'].argmax()), cfg.model)",
    ])
    res = _run([sys.executable, "-c", code, exported_run, picture], cwd=user_folder)
    assert res.returncode == 0, res.stderr
    label, model = res.stdout.split()
    assert 0 <= int(label) <= 9 and model == "softmax"


def test_module_entry_points_work_beside_a_users_train_py(user_folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(user_folder)}  # even on the import path itself
    for module in ("edgeport", "edgeport.train", "edgeport.mobile_demo"):
        res = _run([sys.executable, "-m", module, "--help"], cwd=user_folder, env=env)
        assert res.returncode == 0, (module, res.stderr)
        assert "usage:" in res.stdout
