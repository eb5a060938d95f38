"""The phone page (mobile_demo/web, edgeport-demo serve) in a real headless Chromium.

Playwright drives the system Chromium (``/usr/bin/chromium``, or ``$EDGEPORT_CHROMIUM``);
it downloads no browser. A missing browser or missing ``npm ci`` fails these tests with
the line that installs it, never skips them. Digits are drawn with pointer events along
the ink of real MNIST test digits; photos are made at test time (no digit files are
committed). Each test's screenshot lands in its tmp folder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runs import load_mnist
from _webmodels import APP_FILE, APP_INT8_FILE, ensure_app_model
from PIL import Image

from edgeport.export.browser import (
    CHROMIUM_FLAGS,
    LITERT_JS,
    LITERT_WEBGPU,
    ORT_WEB,
)
from edgeport.mobile_demo.serve import WEB_DIR

BIN = Path(sys.executable).parent
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15's CSS viewport


@pytest.fixture(scope="session")
def web_run(tmp_path_factory, exported_run) -> Path:
    """The session's exported MNIST run, copied, with an app model (stand-in until issue 10)."""
    run = tmp_path_factory.mktemp("web") / "run"
    shutil.copytree(exported_run, run)
    ensure_app_model(run)
    return run


@contextlib.contextmanager
def _serve(export_dir: Path, *extra: str):
    """``edgeport-demo serve EXPORT --port 0``, as a user starts it; yields its URL."""
    proc = subprocess.Popen(
        [str(BIN / "edgeport-demo"), "serve", str(export_dir), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving "), first + proc.stderr.read()
        yield first.split(" at ")[-1].strip()  # "serving EXPORT at URL"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(web_run, chromium):
    with _serve(web_run / "export") as url:
        yield url


@pytest.fixture
def page(server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, args=list(CHROMIUM_FLAGS),
            viewport=PHONE, device_scale_factor=2, has_touch=True,
        )
        pg = context.pages[0] if context.pages else context.new_page()
        pg.set_default_timeout(60_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server)
        pg.evaluate("window.edgeport.ready")
        yield pg
        assert not errors, errors
        context.close()


@pytest.fixture(scope="session")
def digit(web_run):
    """``digit(label)``: the first MNIST test digit of ``label`` the reference gets right."""
    x, y = load_mnist("test")
    reference = np.load(web_run / "reference.npz", allow_pickle=False)["probabilities"]

    def pick(label: int) -> np.ndarray:
        ok = np.flatnonzero((y == label) & (reference.argmax(axis=1) == label))
        return (x[ok[0]].reshape(28, 28) * 255).astype(np.uint8)

    return pick


def _draw(page, digit: np.ndarray) -> None:
    """Trace the ink of a 28x28 digit on the canvas: one pointer stroke per run of ink per row."""
    box = page.locator("#pad").bounding_box()
    cell = box["width"] / 28
    for row in range(28):
        ink = np.flatnonzero(digit[row] > 100)
        if not len(ink):
            continue
        runs = np.split(ink, np.flatnonzero(np.diff(ink) > 1) + 1)
        for run in runs:
            y = box["y"] + (row + 0.5) * cell
            page.mouse.move(box["x"] + (run[0] + 0.5) * cell, y)
            page.mouse.down()
            page.mouse.move(box["x"] + (run[-1] + 0.5) * cell, y, steps=max(1, len(run)))
            page.mouse.up()


def _select(page, file: str) -> str:
    return page.evaluate("(f) => window.edgeport.selectModel(f).then((c) => c.runtime)", file)


def _top1(page) -> str:
    return page.inner_text("#top1").strip()


@pytest.mark.slow
@pytest.mark.parametrize("file", [APP_FILE, APP_INT8_FILE, "model.onnx"])
@pytest.mark.parametrize("label", [7, 3])
def test_drawn_digit_is_classified_by_both_runtimes(page, digit, file, label, tmp_path):
    runtime = _select(page, file)
    assert runtime == ("LiteRT.js" if file.endswith(".tflite") else "onnxruntime-web")
    _draw(page, digit(label))
    page.evaluate("window.edgeport.classifyPad()")
    assert _top1(page) == str(label)
    status = page.inner_text("#status")
    assert "ms per inference" in status and "WASM" in status, status
    assert len(page.locator("#bars li").all()) == 3
    page.screenshot(path=str(tmp_path / f"phone_{label}_{file}.png"))


@pytest.mark.slow
def test_phone_screenshot_has_big_canvas_and_answer(page, digit, tmp_path):
    _select(page, APP_FILE)
    _draw(page, digit(7))
    page.evaluate("window.edgeport.classifyPad()")
    shot = tmp_path / "phone_390x844.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] >= 0.85 * PHONE["width"], pad  # the canvas spans the phone
    top1_px = float(page.eval_on_selector("#top1", "e => parseFloat(getComputedStyle(e).fontSize)"))
    assert top1_px >= 64
    bars = page.locator("#bars li").first.bounding_box()
    assert bars["y"] + bars["height"] <= PHONE["height"], "the answer is below the fold"


def _photo(digit: np.ndarray, path: Path) -> Path:
    """A digit 'on paper': dark ink on uneven light paper with sensor noise, as a JPEG."""
    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray(digit).resize((300, 300), Image.Resampling.BILINEAR),
                     dtype=np.float64) / 255
    paper = np.full((480, 360), 215.0) + np.linspace(-15, 15, 360)[None, :]
    paper[90:390, 30:330] -= big * 170
    paper += rng.normal(0, 4, paper.shape)
    rgb = np.stack([paper, paper * 0.98, paper * 0.93], axis=-1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("label", [7, 2, 4])
def test_uploaded_photo_is_classified_like_edgeport_demo(page, digit, web_run, label, tmp_path):
    photo = _photo(digit(label), tmp_path / f"paper_{label}.jpg")
    out = subprocess.run(
        [str(BIN / "edgeport-demo"), str(web_run / "export" / "model.onnx"), str(photo),
         "--json"], capture_output=True, text=True, check=True,
    )
    expected = json.loads(out.stdout)["predictions"][0]["label"]
    _select(page, "model.onnx")
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("document.body.dataset.state === 'answered'")
    assert _top1(page) == expected == str(label)


@pytest.mark.slow
def test_bad_input_shows_a_message(page, web_run, tmp_path):
    _select(page, "model.onnx")
    page.evaluate("window.edgeport.classifyPad().catch(() => {})")
    assert "canvas is empty" in page.inner_text("#message")

    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    page.set_input_files("#photo", str(text))
    page.wait_for_function("document.getElementById('message').textContent.includes('notes')")
    assert "is not a picture" in page.inner_text("#message")

    broken = tmp_path / "broken"
    shutil.copytree(web_run / "export", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with _serve(broken) as url:
        page.goto(url)
        page.evaluate("window.edgeport.ready")
        page.evaluate("window.edgeport.selectModel('model.onnx').catch(() => {})")
        message = page.inner_text("#message")
    assert "Could not load model.onnx with onnxruntime-web" in message, message
    assert page.inner_text("#status") == "no model loaded"


@pytest.mark.slow
def test_page_works_offline_once_loaded(page, digit):
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()  # now the service worker answers every fetch, and keeps a copy
    page.evaluate("window.edgeport.ready")
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    _select(page, "model.onnx")
    page.context.set_offline(True)
    page.reload()
    page.evaluate("window.edgeport.ready")
    _select(page, "model.onnx")
    _draw(page, digit(7))
    page.evaluate("window.edgeport.classifyPad()")
    assert _top1(page) == "7"


def test_serve_refuses_a_folder_that_is_not_an_export(tmp_path):
    out = subprocess.run([str(BIN / "edgeport-demo"), "serve", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no manifest.json" in lines[0] and "edgeport export" in lines[0]


@pytest.mark.slow
def test_serve_https_answers_with_a_self_signed_certificate(web_run, chromium):
    import ssl
    import urllib.request

    with _serve(web_run / "export", "--https") as url:
        assert url.startswith("https://localhost:")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(url + "models/manifest.json", context=ctx) as r:
            served = json.loads(r.read())
        assert served["artifacts"] and "run" not in served  # no machine path on the Wi-Fi
        with urllib.request.urlopen(url + "vendor/ort/ort-wasm-simd-threaded.wasm",
                                    context=ctx) as r:
            assert r.headers["Content-Type"] == "application/wasm"


def _parity(run: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    code, doc, _ = _parity_out(run, tmp_path, *extra)
    return code, doc


# WebGPU rows run on SwiftShader (the GPU emulated on the CPU): 0.2-0.9 s an app-model
# picture here, so the tests feed them the first few test images (the CLI's default: 200).
WEBGPU_TEST_SAMPLES = 24


def _parity_out(run: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    out = subprocess.run(
        [str(BIN / "edgeport"), "parity", str(run), "--browser", "--json",
         str(tmp_path / "parity.json"), "--junit", str(tmp_path / "parity.xml"),
         "--webgpu-samples", str(WEBGPU_TEST_SAMPLES), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads((tmp_path / "parity.json").read_text()), out.stdout


@pytest.fixture(scope="module")
def browser_parity_run(web_run, chromium, tmp_path_factory):
    """``edgeport parity RUN --browser`` once for the module: (exit code, parity.json, stdout)."""
    out = tmp_path_factory.mktemp("browser_parity")
    return (*_parity_out(web_run, out), out)


@pytest.mark.slow
def test_browser_parity_rows_pass(browser_parity_run):
    code, doc, _, out = browser_parity_run
    rows = {(r["artifact"], r["runtime"]): r for r in doc["results"]}
    for key in [(APP_FILE, LITERT_JS), ("model.onnx", ORT_WEB)]:
        assert rows[key]["passed"], rows[key]["failures"]
        assert rows[key]["max_abs_diff"] <= 1e-5  # float32 row of export/thresholds.py
        # The row says what it ran and what bounded it (the first 1,000 test images).
        assert (rows[key]["images"], rows[key]["bound_source"]) == (1000, "table")
    int8 = rows[APP_INT8_FILE, LITERT_JS]  # uint8 in, uint8 out dequantized by the page
    assert int8["passed"] and int8["agreement"] >= 0.99, int8["failures"]
    assert code == 0
    junit = (out / "parity.xml").read_text()
    assert f'name="model.onnx [{ORT_WEB}]"' in junit


@pytest.mark.slow
def test_webgpu_rows_measure_gpu_readiness(browser_parity_run, web_run):
    """LiteRT.js on WebGPU (SwiftShader) beside WASM: every app model and float file gets a
    row. The app models, written for the GPU delegate and claiming it in the manifest, run
    wholly on WebGPU within their WASM rows' thresholds; a file WebGPU cannot run says why,
    and passes (docs/contracts.md, "WebGPU rows")."""
    code, doc, stdout, _ = browser_parity_run
    gpu = {r["artifact"]: r for r in doc["results"] if r["runtime"] == LITERT_WEBGPU}
    assert set(gpu) == {APP_FILE, APP_INT8_FILE, "model_float32.tflite", "model_float16.tflite"}
    for name, row in gpu.items():
        assert row["passed"] and not row["failures"], (name, row["failures"])
        if not row["gpu_ready"]:
            assert row["note"].startswith("not GPU-ready (") and len(row["note"]) > 20, row
    for name in (APP_FILE, APP_INT8_FILE):  # every op on WebGPU, gated like the WASM row
        app = gpu[name]
        assert app["gpu_ready"] is True and app["note"] == "", app
        assert app["images"] == WEBGPU_TEST_SAMPLES, app
    float_app = gpu[APP_FILE]  # the float32 row's bound; top-1 as Python's LiteRT throughout
    assert float_app["max_abs_diff"] <= 1e-5 and float_app["agreement"] > 0.9999, float_app
    # LiteRT.js 2.5.3 cannot feed a batch-1 tensor to a [-1, 784] input: the reason is its own.
    assert "LiteRT.js: input [-1, 784]" in gpu["model_float32.tflite"]["note"]
    assert "does not match" in gpu["model_float32.tflite"]["note"]
    assert "not GPU-ready" in stdout and f"model_float32.tflite [{LITERT_WEBGPU}]: " in stdout
    assert code == 0
    # edgeport verify accepts parity.json with "not GPU-ready" rows (the gate's own file).
    from edgeport.export.integrity import parity_problems
    from edgeport.export.manifest import read_manifest
    from edgeport.export.thresholds import THRESHOLDS

    export = web_run / "export"
    assert parity_problems(export, read_manifest(export), THRESHOLDS) == []


@pytest.mark.slow
def test_a_file_claiming_webgpu_fails_when_webgpu_cannot_run_it(web_run, chromium):
    """The claim turns "not GPU-ready" into a FAIL: the plain float32 file (input [-1, 784],
    which LiteRT.js cannot feed at batch 1), said to run on WebGPU."""
    from edgeport.export.browser import _plain_webgpu_row, open_demo_page, webgpu_adapter
    from edgeport.export.manifest import read_manifest
    from edgeport.export.thresholds import THRESHOLDS

    export = web_run / "export"
    manifest = read_manifest(export)
    entry = next(e for e in manifest["artifacts"] if e["file"] == "model_float32.tflite")
    claimed = {**entry, "gpu": {**entry["gpu"], "claims_webgpu": True}}
    labels, reference = np.zeros(4, np.int64), np.full((4, 10), 0.1, np.float32)
    with open_demo_page(export, webgpu=True) as page:
        adapter = webgpu_adapter(page)
        plain = _plain_webgpu_row(page, adapter, export, entry, THRESHOLDS, labels=labels,
                                  reference=reference)
        row = _plain_webgpu_row(page, adapter, export, claimed, THRESHOLDS, labels=labels,
                                reference=reference)
    assert plain.passed and plain.note.startswith("not GPU-ready ("), plain
    assert not row.passed and row.gpu_ready is False, row
    assert any("cannot run on WebGPU" in f and "[-1, 784]" in f for f in row.failures), row


def test_manifest_records_gpu_readiness(web_run):
    manifest = json.loads((web_run / "export" / "manifest.json").read_text())
    entries = {e["file"]: e for e in manifest["artifacts"]}
    assert all("gpu" in e for e in entries.values())
    assert "edgeport parity RUN --browser" in entries[APP_FILE]["gpu"]["webgpu"]
    # The app graphs are written for the GPU delegate and say so; the plain files do not.
    assert entries[APP_FILE]["gpu"]["claims_webgpu"] is True
    assert entries[APP_INT8_FILE]["gpu"]["claims_webgpu"] is True
    assert "claims_webgpu" not in entries["model_float32.tflite"]["gpu"]
    usability = entries["model.onnx"]["gpu"]["ort_mobile_usability"]
    assert usability["dynamic_inputs"] == ["image"]
    for ep in ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram"):
        # The softmax graph (Gemm, Softmax after ORT's basic optimizations) is all supported
        # once the batch is fixed; with the dynamic batch ORT's check says no partition.
        assert usability[ep]["nodes"] >= 2 and usability[ep]["unsupported_ops"] == []
        assert (usability[ep]["verdict"], usability[ep]["verdict_with_fixed_shapes"]) == (
            "no", "yes")


@pytest.mark.slow
def test_tampered_app_model_fails_the_browser_row(web_run, chromium, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(web_run, run)
    model = run / "export" / APP_FILE
    data = bytearray(model.read_bytes())
    # One bit in the middle of the file: a weight or, in the larger app graph, the graph's
    # structure (LiteRT then refuses it). Either way the row fails, naming the sha256.
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    code, doc = _parity(run, tmp_path)
    assert code == 1
    row = next(r for r in doc["results"] if r["runtime"] == LITERT_JS)
    assert not row["passed"]
    assert any("sha256" in f for f in row["failures"]), row["failures"]


def test_missing_chromium_fails_with_the_install_line(monkeypatch, tmp_path):
    from edgeport.export.browser import BrowserError, find_chromium

    monkeypatch.setenv("EDGEPORT_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserError, match="apt-get update && apt-get install -y chromium"):
        find_chromium()


def test_page_files_are_packaged():
    import tomllib

    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    # mobile_demo/web is its own data package (edgeport.mobile_demo.web), so setuptools ships
    # it without a warning; tests/test_packaging.py checks the files inside the built wheel.
    assert data["tool"]["setuptools"]["package-dir"]["edgeport.mobile_demo.web"] == (
        "mobile_demo/web")
    patterns = data["tool"]["setuptools"]["package-data"]["edgeport.mobile_demo.web"]
    for name in ("index.html", "app.js", "worker.js", "sw.js", "style.css", "favicon.svg",
                 "package-lock.json"):
        assert any(Path(name).match(p) for p in patterns), name
    lock = json.loads((WEB_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@litertjs/core"]["version"] == "2.5.3"
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == "1.30.0"


@pytest.mark.slow
def test_bench_has_browser_rows(web_run, chromium):
    from edgeport.export.browser import WEBGPU_BENCH_RUNS, browser_bench

    rows = browser_bench(web_run, runs=50)
    assert {(r["artifact"], r["runtime"]) for r in rows} == {
        (APP_FILE, LITERT_JS), (APP_INT8_FILE, LITERT_JS), ("model.onnx", ORT_WEB),
        (APP_FILE, LITERT_WEBGPU), (APP_INT8_FILE, LITERT_WEBGPU)}
    for r in rows:
        assert r["backend"] == ("webgpu" if r["runtime"] == LITERT_WEBGPU else "wasm")
        if r["runs"]:  # WebGPU rows: at most WEBGPU_BENCH_RUNS calls (SwiftShader is slow)
            gpu = r["runtime"] == LITERT_WEBGPU
            assert r["runs"] == (min(50, WEBGPU_BENCH_RUNS) if gpu else 50) and r["warmup_ms"] > 0
            assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] and r["load_ms"] > 0
        else:  # a WebGPU row LiteRT.js could not run says why
            assert r["runtime"] == LITERT_WEBGPU and r["error"].startswith("LiteRT.js: "), r


def test_serve_prints_the_url_and_how_a_phone_reaches_it(web_run, chromium):
    proc = subprocess.Popen(
        [str(BIN / "edgeport-demo"), "serve", str(web_run / "export"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    try:
        while not lines or not lines[-1].startswith("press Ctrl+C"):
            lines.append(proc.stdout.readline().rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = "\n".join(lines)
    assert lines[0].startswith("serving ") and "http://localhost:" in lines[0]
    port = lines[0].rstrip("/").rsplit(":", 1)[1]
    # No QR code of a localhost URL (a phone cannot open it): the way to reach it instead,
    # with the real port (tests/test_serve.py checks the QR code of a LAN address).
    assert "█" not in text
    assert "--host 0.0.0.0 --https" in text and f"adb reverse tcp:{port} tcp:{port}" in text


def _gpu_friendly_app_model(path: Path, size: int = 112) -> bytes:
    """A batch-1 picture-in classifier made of ops LiteRT.js's GPU delegate takes (scale,
    average pooling, a 3x3 convolution, a dense layer, softmax), with fixed random weights."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((size, size, 3), batch_size=1),
        tf.keras.layers.Rescaling(1 / 255),
        tf.keras.layers.AveragePooling2D(4),
        tf.keras.layers.Conv2D(8, 3, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path.write_bytes(data)
    return data


@pytest.mark.slow
def test_webgpu_path_gates_a_model_it_runs_fully(tmp_path, chromium, digit):
    """The "GPU-ready" path end to end: a graph LiteRT.js puts wholly on WebGPU runs there
    (no split, no WASM fallback) and matches the same file in Python's LiteRT."""
    import hashlib

    from edgeport.export.app import predict_app
    from edgeport.export.browser import app_pictures, open_demo_page, run_images_webgpu

    export = tmp_path / "export"
    export.mkdir()
    data = _gpu_friendly_app_model(export / "model_app_gpu.tflite")
    entry = {"file": "model_app_gpu.tflite", "format": "tflite", "precision": "float32",
             "family": "app", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "inputs": [{"name": "image", "shape": [1, 112, 112, 3], "dtype": "float32"}],
             "outputs": [{"name": "probabilities", "shape": [1, 10], "dtype": "float32"}]}
    (export / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "labels": [str(i) for i in range(10)], "artifacts": [entry],
         "input": {"height": 28, "width": 28, "channels": 1}}))
    (export / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    pictures = app_pictures(np.stack([digit(label) for label in range(10)]), 112)
    with open_demo_page(export, webgpu=True) as page:
        run = run_images_webgpu(page, entry, pictures)
    assert (run.backend, run.partial) == ("webgpu", "")
    assert run.load_ms > 0 and run.warmup_ms > 0 and len(run.times_ms) == 10
    expected = predict_app(data, pictures)
    assert np.abs(run.probabilities - expected).max() <= 1e-5  # the float32 row's bound
