"""The phone page's behaviour and layout in a real headless Chromium (issue 20).

One page per test, driven like a user (pointer strokes along real MNIST digits, the
pickers, the file input): its state machine never leaves a stale answer, the backend
shown is the one running, warm-up is shown apart from latency, "No digit" is an answer,
the layouts keep the canvas square and the answer above the fold, and the console stays
clean. Screenshots of the four sizes land in the test's tmp folder
(``$EDGEPORT_PAGE_SHOTS``, when set, gets a copy).

The fixtures are a minimal copy of tests/test_web.py's (its parity and bench tests are
another module's business).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runs import load_mnist
from _webmodels import APP_FILE, APP_INT8_FILE, ensure_app_model
from PIL import Image

from edgeport.export.browser import CHROMIUM_FLAGS
from edgeport.mobile_demo.serve import WEB_DIR

BIN = Path(sys.executable).parent
SIZES = [(360, 640), (390, 844), (844, 390), (1280, 800)]  # phones, landscape, desktop
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_run, chromium):
    run = tmp_path_factory.mktemp("page") / "run"
    shutil.copytree(exported_run, run)
    ensure_app_model(run)
    proc = subprocess.Popen(
        [str(BIN / "edgeport-demo"), "serve", str(run / "export"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving "), first + proc.stderr.read()
        yield first.split(" at ")[-1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _open(url: str, chromium: str, tmp_path: Path, width: int = 390, height: int = 844,
          flags=CHROMIUM_FLAGS):
    """A fresh Chromium page at ``url``, loaded; yields (page, console messages)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(flags))
        try:
            context = browser.new_context(viewport={"width": width, "height": height},
                                          device_scale_factor=2, has_touch=True)
            page = context.new_page()
            page.set_default_timeout(60_000)
            console: list[tuple[str, str]] = []
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
            page.goto(url)
            page.evaluate("window.edgeport.ready")
            yield page, console
        finally:
            browser.close()


@pytest.fixture(scope="module")
def seven():
    """The first MNIST test 7, as 28x28 uint8."""
    x, y = load_mnist("test")
    return (x[np.flatnonzero(y == 7)[0]].reshape(28, 28) * 255).astype(np.uint8)


def _draw(page, digit: np.ndarray) -> None:
    """Trace the ink of a 28x28 digit on the canvas: one pointer stroke per run of ink per
    row; then wait for the page's answer to that drawing."""
    gen = _state(page)["gen"]
    box = page.locator("#pad").bounding_box()
    cell = box["width"] / 28
    for row in range(28):
        ink = np.flatnonzero(digit[row] > 100)
        if not len(ink):
            continue
        for run in np.split(ink, np.flatnonzero(np.diff(ink) > 1) + 1):
            y = box["y"] + (row + 0.5) * cell
            page.mouse.move(box["x"] + (run[0] + 0.5) * cell, y)
            page.mouse.down()
            page.mouse.move(box["x"] + (run[-1] + 0.5) * cell, y, steps=max(1, len(run)))
            page.mouse.up()
    # Every stroke is answered in order; the last one's answer is the drawing's.
    page.evaluate("window.edgeport.classifyPad()")
    assert _state(page)["gen"] == gen


def _state(page) -> dict:
    return page.evaluate("window.edgeportState()")


def _wait_phase(page, phase: str) -> dict:
    page.wait_for_function("(p) => window.edgeportState().phase === p", arg=phase)
    return _state(page)


def _assert_no_answer(page) -> None:
    s = _state(page)
    assert s["result"] is None, s
    assert page.inner_text("#top1").strip() == "\u2013"  # the en dash of "no answer"
    assert page.inner_text("#top1-prob").strip() == ""
    assert page.locator("#bars li").count() == 0


def _overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] - 0.5 and b["x"] < a["x"] + a["width"] - 0.5
            and a["y"] < b["y"] + b["height"] - 0.5 and b["y"] < a["y"] + a["height"] - 0.5)


def test_layouts_keep_the_canvas_square_and_the_answer_in_view(server, chromium, seven,
                                                                tmp_path):
    with _open(server, chromium, tmp_path) as (page, console):
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.evaluate("window.edgeport.clearPad()")
            page.wait_for_function(
                "Math.abs(document.getElementById('pad').width - Math.round("
                "document.getElementById('pad').clientWidth * devicePixelRatio)) <= 1")
            _draw(page, seven)
            assert _top1(page) == "7", (width, height)
            shot = tmp_path / f"page_{width}x{height}.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("EDGEPORT_PAGE_SHOTS"):
                shots = Path(os.environ["EDGEPORT_PAGE_SHOTS"])
                shots.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, shots / shot.name)

            boxes = {sel: page.locator(sel).bounding_box()
                     for sel in ("header", "#pad", "#result", "#bars", ".tools")}
            where = f"at {width}x{height}: {boxes}"
            pad = boxes["#pad"]
            assert abs(pad["width"] - pad["height"]) <= 1, where  # square on screen
            store = page.evaluate("[pad.width, pad.height, pad.clientWidth, devicePixelRatio]"
                                  .replace("pad", "document.getElementById('pad')"))
            assert store[0] == store[1] and abs(store[0] - store[2] * store[3]) <= 1, store
            assert pad["width"] >= min(0.8 * width, 0.75 * height), where  # big enough to draw
            for a, b in [("header", "#pad"), ("header", "#result"), ("#pad", "#result"),
                         ("#pad", ".tools"), ("#result", ".tools"), ("#bars", ".tools"),
                         ("#bars", "#pad")]:
                assert not _overlap(boxes[a], boxes[b]), f"{a} overlaps {b} {where}"
            for sel in ("#result", "#bars"):  # the answer and its bars above the fold
                box = boxes[sel]
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, where
                assert box["y"] >= 0 and box["y"] + box["height"] <= height, where
            if width > height:  # landscape and desktop: the answer beside the canvas
                assert boxes["#result"]["x"] >= pad["x"] + pad["width"], where
            else:  # portrait: right under it
                assert 0 <= boxes["#result"]["y"] - (pad["y"] + pad["height"]) <= 24, where
        assert "finger" not in page.inner_text("body")  # the desktop has a mouse
    # Load and four answers without a console error or warning (the runtimes' INFO
    # lines go to console.debug); a favicon.ico 404 would show here as an error too.
    assert not _noisy(console), _noisy(console)


def _noisy(console: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The console's errors and warnings."""
    return [(t, m) for t, m in console if t in ("error", "warning", "pageerror")]


def _top1(page) -> str:
    return page.inner_text("#top1").strip()


def test_switching_model_backend_or_a_failed_upload_clears_the_answer(server, chromium, seven,
                                                                      tmp_path):
    with _open(server, chromium, tmp_path) as (page, console):
        s = _state(page)
        assert (s["phase"], s["model"], s["backend"]) == ("ready", APP_FILE, "wasm")
        # Warm-up apart: the first run after load is timed on its own, not as the latency.
        assert s["warmupMs"] > 0 and s["loadMs"] > 0
        _draw(page, seven)
        s = _state(page)
        assert s["phase"] == "answered" and s["result"]["top"] == "7"
        status, timing = page.inner_text("#status"), page.inner_text("#timing")
        assert "ms per inference" in status and "LiteRT.js · WASM" in status, status
        assert "warm-up" in timing and "warm-up" not in status, (status, timing)
        warm = s["warmupMs"]
        shown = f"{warm:.0f}" if warm >= 10 else f"{warm:.2f}"
        assert f"{shown} ms" in timing, (warm, timing)

        # 1. Another model: the answer goes at once, the pickers show the choice, locked.
        page.select_option("#model", "model.onnx")
        s = _state(page)
        assert s["phase"] == "loading" and s["model"] == "model.onnx", s
        _assert_no_answer(page)
        assert page.is_disabled("#model") and page.is_disabled("#backend")
        assert page.inner_text("#status").startswith("loading model.onnx on WASM")
        s = _wait_phase(page, "ready")
        assert s["runtime"] == "onnxruntime-web" and s["result"] is None
        _draw(page, seven)
        assert _top1(page) == "7"

        # 2. Another backend: WebGPU in a Chromium without a GPU (--disable-gpu) runs on
        # WASM, and the page says so: the picker shows WASM, the reason is on screen.
        page.select_option("#backend", "webgpu")
        assert _state(page)["phase"] == "loading"
        _assert_no_answer(page)
        s = _wait_phase(page, "ready")
        assert (s["requested"], s["backend"]) == ("webgpu", "wasm"), s
        assert "no WebGPU adapter" in s["fallback"], s
        assert page.input_value("#backend") == "wasm"
        assert page.is_visible("#fallback-box")
        note = page.inner_text("#fallback-box")
        assert "WebGPU is not running" in note and "no WebGPU adapter" in note, note
        assert "WASM" in page.inner_text("#status")
        page.click("#use-backend")  # the offered WASM: what runs is now what was asked
        s = _wait_phase(page, "ready")
        assert (s["requested"], s["backend"], s["fallback"]) == ("wasm", "wasm", "")
        assert not page.is_visible("#fallback-box")

        # 3. A failed upload: the old answer must not stand under the error.
        _draw(page, seven)
        assert _top1(page) == "7"
        bad = tmp_path / "notes.png"
        bad.write_text("this is not a picture\n")
        page.set_input_files("#photo", str(bad))
        s = _wait_phase(page, "error")
        _assert_no_answer(page)
        assert "is not a picture" in page.inner_text("#message")
    assert not _noisy(console), _noisy(console)


# A WebGPU adapter in headless Chromium without a GPU: SwiftShader (a CPU Vulkan).
SWIFTSHADER_FLAGS = (*(f for f in CHROMIUM_FLAGS if f != "--disable-gpu"),
                     "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
                     "--enable-unsafe-swiftshader")


def test_webgpu_shown_is_webgpu_running(server, chromium, seven, tmp_path):
    """With a WebGPU adapter, the page shows what LiteRT.js really runs each app model on.

    The app models' graphs are written for LiteRT's GPU delegate: each runs wholly on
    WebGPU (SwiftShader here), and the page says WebGPU, with no fallback and no "part on
    WASM". (A WebGPU that cannot start falls back to WASM and says why: the test above.)
    """
    with _open(server, chromium, tmp_path, flags=SWIFTSHADER_FLAGS) as (page, console):
        assert page.evaluate("navigator.gpu.requestAdapter().then((a) => a !== null)")
        page.select_option("#backend", "webgpu")
        for file in (APP_FILE, APP_INT8_FILE):
            page.evaluate("(f) => window.edgeport.selectModel(f)", file)
            s = _wait_phase(page, "ready")
            assert (s["model"], s["requested"], s["backend"], s["fallback"], s["partial"]) == (
                file, "webgpu", "webgpu", "", ""), s
            assert page.input_value("#backend") == "webgpu"
            status = page.inner_text("#status")
            assert "WebGPU" in status and "WASM" not in status, status
            assert not page.is_visible("#fallback-box")
            _draw(page, seven)
            assert _top1(page) == "7", file
    assert not _noisy(console), _noisy(console)


def test_no_digit_is_an_answer(server, chromium, seven, tmp_path):
    paper = tmp_path / "blank.jpg"  # blank paper, slightly uneven, as a camera sees it
    rng = np.random.default_rng(0)
    gray = 225 + np.linspace(-10, 10, 300)[None, :] + rng.normal(0, 3, (300, 300))
    Image.fromarray(np.clip(np.dstack([gray] * 3), 0, 255).astype(np.uint8)).save(paper)
    with _open(server, chromium, tmp_path) as (page, console):
        for file in (APP_FILE, "model.onnx"):
            # The app model's own "none" output (its 11th, after the manifest's 10 labels);
            # model.onnx has none: the page runs findDigit (preprocess.js) before it.
            page.evaluate("(f) => window.edgeport.selectModel(f)", file)
            _draw(page, seven)
            assert _top1(page) == "7", file
            page.set_input_files("#photo", str(paper))
            page.wait_for_function("(s => s.input === 'photo' && s.phase === 'answered')"
                                   "(window.edgeportState())")
            s = _state(page)
            assert s["result"]["none"] and s["result"]["top"] == "none", (file, s)
            assert _top1(page) == "No digit" and page.inner_text("#top1-prob").strip() == ""
            assert page.locator("#result.none").count() == 1  # bars (if any) greyed
            assert page.inner_text("#message").strip() == ""
            if file == APP_FILE:
                assert page.inner_text("#bars li:first-child .label") == "no digit"
            else:
                assert "no ink" in s["result"]["reason"], s  # findDigit's reason, shown
                assert page.locator("#bars li").count() == 0

        # An entry's own labels win over the manifest's (the answer goes in through the
        # state machine, as the worker's would).
        page.evaluate("""(p) => { window.edgeport.dispatch({type: 'run', input: 'draw'});
            window.edgeport.dispatch({type: 'answer', probs: p, ms: 1.5, entry: {
              family: 'app', labels: ['a', 'b', 'c', 'none']}}); }""", [0.1, 0.7, 0.1, 0.1])
        assert _top1(page) == "b" and page.inner_text("#top1-prob").strip() == "70.0%"
    assert not _noisy(console), _noisy(console)


def test_favicon_is_served(server):
    import urllib.request

    with urllib.request.urlopen(server + "favicon.ico") as r:  # follows the redirect
        assert r.url.endswith("/favicon.svg")
        assert r.headers["Content-Type"] == "image/svg+xml"
        assert r.read().startswith(b"<svg")
    assert (WEB_DIR / "favicon.svg").is_file()
    assert "favicon.svg" in (WEB_DIR / "sw.js").read_text()  # kept for offline use
