"""Shared fixtures: the real MNIST files, and one trained + exported run per test session.

Tests use the real dataset at ``$EDGEPORT_DATA/mnist`` (CI and the Makefile set
``EDGEPORT_DATA=../shared/data``); when the variable is unset, the repo's sibling
``../shared/data`` is used if it exists. Nothing is downloaded during tests.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if not os.environ.get("EDGEPORT_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["EDGEPORT_DATA"] = str(REPO.parent / "shared" / "data")
if os.environ.get("EDGEPORT_DATA"):
    # Absolute, so subprocesses started in other folders (and symlinks) find the same files.
    os.environ["EDGEPORT_DATA"] = str(Path(os.environ["EDGEPORT_DATA"]).resolve())
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The gate cache (export/gate_cache.py) of this test session: its own folder, not the user's
# ~/.cache, so a run of the suite starts cold and leaves nothing behind in $HOME.
os.environ.setdefault("EDGEPORT_CACHE", tempfile.mkdtemp(prefix="edgeport-test-cache-"))

# `make test-fast` (-m "not slow and not device and not browser") is the inner loop: unit
# tests on small inputs, about 2 minutes on 2 cores. A test that reaches one of these
# fixtures trains or exports a real model, starts Chromium or needs the device venv, so it
# is slow (browser, device) whatever its own marks say: pytest_collection_modifyitems marks
# it, so a new test cannot slip into the fast set. Tests that train inline carry
# @pytest.mark.slow themselves.
SLOW_FIXTURES = frozenset({"seed_run", "exported_run", "cnn_run"})
BROWSER_FIXTURES = frozenset({"chromium"})
DEVICE_FIXTURES = frozenset({"device_python"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        if used & DEVICE_FIXTURES:
            item.add_marker(pytest.mark.device)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four MNIST gzip IDX files (must exist: tests never download)."""
    d = Path(os.environ["EDGEPORT_DATA"]) / "mnist"
    missing = [f for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")
               if not (d / f).is_file()]
    assert not missing, f"MNIST files missing in {d}: {missing}; set EDGEPORT_DATA"
    return d


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from edgeport.train.data import load_dataset

    return load_dataset("mnist", data_dir=mnist_dir, progress=False)


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory, mnist):
    """The tutorial's softmax regression, trained for real (1,000 iterations, ~5 s)."""
    from edgeport.train import fit, make_config

    out = tmp_path_factory.mktemp("runs") / "seed"
    result = fit(make_config(recipe="seed"), out_dir=out, progress=False, dataset=mnist)
    return result


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, mnist_dir) -> Path:
    """`edgeport run --model cnn` on real MNIST, 300 steps (about 98.3 %): trained, exported
    with the app models and model.ort, and gated (all 10,000 test images; the app models
    through LiteRT and MediaPipe). Returns the run folder."""
    from edgeport.export.cli import main

    out = tmp_path_factory.mktemp("runs") / "cnn"
    code = main(["run", "--model", "cnn", "--iterations", "300", "--data-dir", str(mnist_dir),
                 "--out", str(out), "--quiet"])
    assert code == 0, f"edgeport run --model cnn exited {code}"
    return out


@pytest.fixture(scope="session")
def exported_run(seed_run):
    """``seed_run`` exported to all five formats (``RUN/export``).

    Without the app models and model.ort, which tests/test_app.py exports itself: their
    parity rows run MediaPipe over 10,000 pictures, too slow to repeat in every parity test.
    """
    from edgeport.export.exporter import export_model

    export_model(seed_run.run_dir, formats="all", progress=False, app_models=False)
    return seed_run.run_dir


@pytest.fixture(scope="session")
def device_python() -> str:
    """The TensorFlow-free device venv's python (tflite-runtime, numpy<2, Pillow).

    ``make test`` builds it (``.venv-device``) and sets ``EDGEPORT_DEVICE_PYTHON``.
    """
    from edgeport.export.bench import device_python as find_device_python

    found = find_device_python(REPO / ".venv-device" / "bin" / "python")
    assert found, "no device venv: run `make device-venv` or set EDGEPORT_DEVICE_PYTHON"
    return found


def _mount_tmpfs(path: Path, options: str) -> bool:
    import subprocess

    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can write into: a read-only tmpfs as root, else chmod 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if _mount_tmpfs(d, "ro,size=1m"):
        yield d
        _umount(d)
        return
    assert os.geteuid() != 0, "root without mount: no way to make a read-only folder"
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a nearly full disk: a 4 MB tmpfs as root, else RLIMIT_FSIZE (EFBIG)."""
    d = tmp_path / "disk"
    d.mkdir()
    if _mount_tmpfs(d, "size=4m"):
        yield d
        _umount(d)
        return
    import resource

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: a write fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, old[1]))
    yield d
    resource.setrlimit(resource.RLIMIT_FSIZE, old)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium and the page's JavaScript runtimes, or a failure naming the fix."""
    from edgeport.export.browser import INSTALL_CHROMIUM, BrowserError, find_chromium
    from edgeport.mobile_demo.serve import WEB_DIR

    try:
        path = find_chromium()
    except BrowserError as e:
        pytest.fail(f"{e}\nfix: {INSTALL_CHROMIUM}", pytrace=False)
    if not (WEB_DIR / "node_modules" / "@litertjs" / "core").is_dir() and not os.environ.get(
        "EDGEPORT_WEB_MODULES"
    ):
        pytest.fail(f"the page's runtimes are missing; fix: npm ci --prefix {WEB_DIR}",
                    pytrace=False)
    return path
