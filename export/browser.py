"""Browser runtimes in the parity gate and the benchmark: the phone page, in headless Chromium.

Usage::

    edgeport parity RUN --browser          # adds the rows below to the parity table
    edgeport bench RUN --browser           # adds batch-1 p50/p99 and load time in the page

    from edgeport.export.browser import browser_parity
    rows = browser_parity("runs/mnist")    # -> list[ParityResult]

The page the user opens on a phone (``mobile_demo/web``, served by
:func:`edgeport.mobile_demo.serve.start_server`) runs in Chromium, driven by Playwright
with the system browser (``/usr/bin/chromium``; Playwright downloads nothing). Two rows:

- ``litert.js (chromium)``: every app model (``"family": "app"`` in the manifest,
  input ``[1, S, S, 3]`` RGB 0-255, preprocessing in the graph) in LiteRT.js;
- ``onnxruntime-web (chromium)``: ``model.onnx`` in onnxruntime-web;
- ``litert.js webgpu (chromium)``: the app models and the plain float files
  (``model_float32.tflite``, ``model_float16.tflite``) in LiteRT.js on WebGPU, in a second
  Chromium started with SwiftShader's WebGPU adapter (:data:`WEBGPU_FLAGS`, without
  ``--disable-gpu``). The worker loads them ``strict``: a file WebGPU cannot run is an
  error with LiteRT.js's reason, never a silent WASM run. A file that runs is gated like
  its WASM row (same oracle, same thresholds) and is "GPU-ready"; a file that does not
  load, does not run, or misses the thresholds gets a passing "not GPU-ready" row with
  the reason, unless its manifest entry claims WebGPU support
  (``"gpu": {"claims_webgpu": true}``): then it fails. A Chromium without a WebGPU
  adapter fails every WebGPU row, with the fix. SwiftShader computes in float32 on the
  CPU: it proves the WebGPU path runs the graph, not a phone GPU's float16 arithmetic
  (docs/contracts.md, "WebGPU rows").

Each row goes through the parity gate's own steps: the file's hash against the manifest;
the golden vectors (``golden.npz``, when it holds the file's outputs) within the
precision's ``golden_atol``; then the first ``samples`` test images (default 1,000),
batch 1, against the precision's row of :data:`export.thresholds.THRESHOLDS`:

- ``model.onnx`` gets ``pixel / 255``, exactly what the Python rows feed it, and is
  compared with ``RUN/reference.npz``;
- an app model gets the pictures an app hands in (the digit as dark ink on white
  paper, RGB, enlarged to S x S, as ``export.app`` renders them) and is compared with
  the same file run by Python's LiteRT on the same pictures: the gate's app rows tie
  that to the reference, this row ties the browser to it (the in-graph crop and
  resampling are float math, so the browser must match the native run, not the
  numpy preprocessing).

Accuracy figures of a browser row are on those ``samples`` images, and the
reference accuracy beside them is the oracle's on the same images.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import statistics
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError

from .app import predict_app
from .formats import ArtifactFormat, Precision
from .manifest import artifact_file_problems, read_manifest
from .thresholds import THRESHOLDS, WEBGPU_SAMPLES, Thresholds

__all__ = [
    "BROWSER_RUNTIMES",
    "CHROMIUM_FLAGS",
    "LITERT_WEBGPU",
    "WEBGPU_FLAGS",
    "BrowserError",
    "BrowserRun",
    "browser_bench",
    "browser_bench_report",
    "browser_parity",
    "browser_targets",
    "find_chromium",
    "open_demo_page",
]

LITERT_JS = "litert.js (chromium)"
ORT_WEB = "onnxruntime-web (chromium)"
LITERT_WEBGPU = "litert.js webgpu (chromium)"
BROWSER_RUNTIMES = (LITERT_JS, ORT_WEB, LITERT_WEBGPU)
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium"
# Flags that make a headless Chromium quiet and self-contained on a build machine.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
# A WebGPU adapter in headless Chromium without a GPU: SwiftShader (float32 on the CPU).
# The WebGPU page is started with these and without --disable-gpu.
WEBGPU_FLAGS = (
    "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader",
)
NO_ADAPTER_FIX = (
    f"fix: install Debian's Chromium ({INSTALL_CHROMIUM}; it ships SwiftShader) and keep "
    f"the flags {' '.join(WEBGPU_FLAGS)}"
)
WEBGPU_BENCH_RUNS = 30  # calls per WebGPU latency row of `bench --browser`
_CHUNK_BYTES = 4_000_000  # pixels per page call: a few MB per message
_TIMEOUT_MS = 120_000


class BrowserError(EdgeportError, RuntimeError):
    """Chromium or Playwright is missing, or the page could not start in the browser."""


@dataclass(frozen=True)
class BrowserRun:
    """One model run in the page on a batch of images.

    Attributes:
        probabilities: float32 ``[N, K]``.
        times_ms: each batch-1 call's time inside the worker (``performance.now``).
        load_ms: fetching and compiling the model in the page.
        backend: ``wasm`` or ``webgpu``.
        warmup_ms: the one warm-up call after loading (shader compilation on WebGPU).
        partial: WebGPU only: why LiteRT.js did not put the whole graph on WebGPU (its
            GPU delegate's own lines, summarized); ``""``: every op on WebGPU.
    """

    probabilities: np.ndarray
    times_ms: np.ndarray
    load_ms: float
    backend: str
    warmup_ms: float = 0.0
    partial: str = ""


def find_chromium() -> str:
    """The Chromium executable: ``$EDGEPORT_CHROMIUM``, else ``chromium`` on the PATH.

    Raises:
        BrowserError: none found, with the line that installs it.
    """
    env = os.environ.get("EDGEPORT_CHROMIUM")
    found = env if env and Path(env).is_file() else shutil.which("chromium")
    if not found:
        raise BrowserError(
            f"no Chromium found ({'EDGEPORT_CHROMIUM=' + env if env else 'chromium not on PATH'}); "
            f"expected a Chromium browser for the browser runtimes; fix: {INSTALL_CHROMIUM}"
        )
    return found


def browser_targets(manifest: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """``(manifest entry, runtime)`` for every file the page runs, in manifest order."""
    targets = []
    for entry in manifest["artifacts"]:
        if entry.get("family") == "app" and entry.get("format") == ArtifactFormat.TFLITE.value:
            targets.append((entry, LITERT_JS))
        elif entry.get("format") == ArtifactFormat.ONNX.value and str(entry["file"]).endswith(
            ".onnx"
        ):
            targets.append((entry, ORT_WEB))
    return targets


def webgpu_targets(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifest entries the WebGPU rows run: app models and plain float ``.tflite``."""
    float_precisions = (Precision.FLOAT32.value, Precision.FLOAT16.value)
    return [e for e in manifest["artifacts"]
            if e.get("format") == ArtifactFormat.TFLITE.value
            and (e.get("family") == "app" or e.get("precision") in float_precisions)]


def claims_webgpu(entry: Mapping[str, Any]) -> bool:
    """The manifest entry says the file runs on WebGPU (``"gpu": {"claims_webgpu": true}``)."""
    gpu = entry.get("gpu")
    return isinstance(gpu, Mapping) and gpu.get("claims_webgpu") is True


@contextlib.contextmanager
def open_demo_page(export_dir: str | os.PathLike[str], *,
                   webgpu: bool = False) -> Generator[Any, None, None]:
    """The phone page for ``export_dir`` open in headless Chromium (a Playwright ``Page``).

    Serves the page on a free local port for the duration of the ``with`` block.
    ``webgpu``: start Chromium with SwiftShader's WebGPU adapter (:data:`WEBGPU_FLAGS`)
    instead of ``--disable-gpu``.

    Raises:
        BrowserError: Playwright or Chromium is missing, or the page does not start.
        ServeError: ``export_dir`` is not an export, or the JavaScript runtimes are
            not installed (``npm ci``).
    """
    from edgeport.mobile_demo.serve import start_server

    chromium = find_chromium()
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserError(
            "the Python package playwright is not installed; expected it to drive Chromium; "
            'fix: pip install "edgeport[web]"'
        ) from None
    server = start_server(export_dir, port=0)
    try:
        with sync_playwright() as p:
            try:
                flags = [f for f in CHROMIUM_FLAGS if not (webgpu and f == "--disable-gpu")]
                browser = p.chromium.launch(executable_path=chromium,
                                            args=flags + list(WEBGPU_FLAGS if webgpu else ()))
            except PlaywrightError as e:
                raise BrowserError(
                    f"{chromium}: does not start ({str(e).splitlines()[0]}); "
                    f"expected a working Chromium; fix: {INSTALL_CHROMIUM}"
                ) from None
            try:
                page = browser.new_page()
                page.set_default_timeout(_TIMEOUT_MS)
                page.goto(server.url)
                page.evaluate("window.edgeport.ready")
                yield page
            finally:
                browser.close()
    finally:
        server.close()


def run_images(page: Any, file: str, images: np.ndarray) -> BrowserRun:
    """Run uint8 model inputs through ``file`` in the page, batch 1 each.

    Args:
        page: a page from :func:`open_demo_page`.
        file: a model file of the export (the page loads it when it is not loaded yet).
        images: RGB pictures ``[N, S, S, 3]`` (0-255) for an app model; MNIST-style
            ``[N, 28, 28]`` (light ink on black) for ``model.onnx``, fed as ``pixel / 255``.

    Raises:
        BrowserError: the page could not load or run the model (the page's own message).
    """
    probs, times, out = _run_chunks(page, "window.edgeport.runMany", file, images)
    load_ms, backend = float(out.get("loadMs", 0.0)), str(out.get("backend", "?"))
    return BrowserRun(np.asarray(probs, dtype=np.float32), np.asarray(times), load_ms, backend)


# The WebGPU rows talk to a worker of their own (mobile_demo/web/worker.js, the page's), so
# the load is `strict` and the page's model picker is left alone.
_GPU_JS = """() => {
  if (window.edgeportGpu) return;
  let worker = null, loaded = null;
  const ask = (msg, transfer) => new Promise((resolve, reject) => {
    worker.onmessage = (e) => (e.data.type === 'error' ? reject(new Error(e.data.message))
      : resolve(e.data));
    worker.onerror = (e) => reject(new Error(e.message || 'the worker failed to start'));
    worker.postMessage(msg, transfer || []);
  });
  window.edgeportGpu = {
    async adapter() {
      if (!('gpu' in navigator)) return '';
      const a = await navigator.gpu.requestAdapter();
      return a ? [a.info && a.info.vendor, a.info && a.info.architecture]
        .filter(Boolean).join(' ') || 'unnamed' : '';
    },
    async load(file, entry, input) {
      if (worker) worker.terminate();
      worker = new Worker('worker.js');
      loaded = null;
      try {
        loaded = await ask({ type: 'load', runtime: 'litert', file, entry, backend: 'webgpu',
          input, strict: true });
      } catch (e) {
        return { error: String(e.message || e) };
      }
      loaded.file = file;
      return loaded;
    },
    async runMany(file, base64, count) {
      if (!loaded || loaded.file !== file) throw new Error(`${file} is not loaded on WebGPU`);
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      try {
        const r = await ask({ type: 'runMany', images: bytes, count }, [bytes.buffer]);
        return { probs: r.probs.map((p) => Array.from(p)), times: Array.from(r.times) };
      } catch (e) {
        return { error: String(e.message || e) };
      }
    },
  };
}"""

# A plain file (input [-1, 784]) through LiteRT.js on WebGPU, batch 1: the page's worker
# only feeds app models, so this small worker asks LiteRT.js itself whether it runs the file.
_PLAIN_PROBE_JS = r"""async ([file, shape]) => {
  const code = `onmessage = async (ev) => {
    const [origin, file, shape] = ev.data;
    try {
      const litert = await import(origin + '/vendor/litertjs/core/index.js');
      self.Module = { locateFile: (n) => origin + '/vendor/litertjs/wasm/' + n };
      await litert.loadLiteRt(origin + '/vendor/litertjs/wasm/');
      const response = await fetch(origin + '/models/' + file);
      const bytes = new Uint8Array(await response.arrayBuffer());
      const model = await litert.loadAndCompile(bytes, { accelerator: 'webgpu' });
      const declared = Array.from(model.getInputDetails()[0].shape);
      const size = shape.reduce((a, b) => a * b, 1);
      const out = await model.run([new litert.Tensor(new Float32Array(size), shape)]);
      postMessage({ ok: true, declared, outputs: out.length });
    } catch (e) {
      postMessage({ ok: false, error: String(e.message || e).split('\\n')[0] });
    }
  };`;
  const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
  const worker = new Worker(url);
  return await new Promise((resolve) => {
    worker.onmessage = (e) => { worker.terminate(); resolve(e.data); };
    worker.onerror = (e) => { worker.terminate(); resolve({ ok: false, error: e.message }); };
    worker.postMessage([location.origin, file, shape]);
  });
}"""


def webgpu_adapter(page: Any) -> str:
    """The WebGPU adapter the page sees (e.g. ``google swiftshader``), ``''`` for none."""
    page.evaluate(_GPU_JS)
    return str(page.evaluate("window.edgeportGpu.adapter()"))


def run_images_webgpu(page: Any, entry: Mapping[str, Any], images: np.ndarray,
                      input_desc: Mapping[str, Any] | None = None) -> BrowserRun:
    """:func:`run_images` for an app model on LiteRT.js WebGPU, loaded ``strict`` (no WASM
    fallback) in a page from ``open_demo_page(..., webgpu=True)``.

    Raises:
        BrowserError: LiteRT.js cannot load or run the file on WebGPU (its own message,
            as ``LiteRT.js: <reason>``).
    """
    from playwright.sync_api import Error as PlaywrightError

    file = str(entry["file"])
    page.evaluate(_GPU_JS)
    console: list[str] = []  # LiteRT.js prints its GPU delegate's partition on the console

    def listen(message: Any) -> None:
        console.append(message.text)

    page.on("console", listen)
    try:
        info = page.evaluate("([f, e, i]) => window.edgeportGpu.load(f, e, i)",
                             [file, dict(entry), dict(input_desc or {})])
    except PlaywrightError as e:
        raise BrowserError(_page_error(e, file)) from None
    finally:
        page.remove_listener("console", listen)
    split = delegation_summary(console)
    if "error" in info:
        error = _strip_backend(info["error"])
        # The page's worker may name the refused ops itself; else add the delegate's lines.
        extra = f" ({split})" if split and "GPU delegate" not in error else ""
        raise BrowserError(f"LiteRT.js: {error}{extra}")
    if info.get("backend") != "webgpu":  # strict: cannot happen; never gate a WASM run as GPU
        raise BrowserError(f"LiteRT.js: ran on {info.get('backend')}, not WebGPU "
                           f"({info.get('fallback') or 'no reason given'})")
    probs, times, _ = _run_chunks(page, "window.edgeportGpu.runMany", file, images)
    return BrowserRun(np.asarray(probs, dtype=np.float32), np.asarray(times),
                      float(info["loadMs"]), "webgpu", float(info.get("warmupMs") or 0.0),
                      partial=f"LiteRT.js: {split}" if split else "")


def delegation_summary(console: Sequence[str]) -> str:
    """LiteRT.js's console lines at compile time, as one reason; ``""``: all on WebGPU.

    When its GPU delegate does not take the whole graph, LiteRT.js prints ``ERROR:
    Following operations are not supported by GPU delegate:``, one ``OP: reason`` line
    each, and ``N operations will run on the GPU, and the remaining M operations will run
    on the CPU``. Its default build cannot split a graph between WebGPU and WASM (it then
    fails with "Asyncify is not defined"); its JSPI build runs the split.
    """
    import re

    text = "\n".join(console)
    counts = re.search(r"(\d+) operations will run on the GPU, and the remaining (\d+) "
                       r"operations will run on the CPU", text)
    partial = counts is not None or "not fully compiled for webgpu" in text.lower()
    if not partial:
        return ""
    reasons: dict[str, list[str]] = {}  # reason -> ops, in the delegate's order
    for op, why in re.findall(r"(?m)^([A-Z][A-Z0-9_]+): (.+)$", text):
        if op in ("INFO", "ERROR", "WARNING"):
            continue
        why = re.sub(r'Tensor "[^"]*" has bad input dims size: 0\.?', "a 0-d (scalar) input",
                     why).strip().rstrip(".")
        ops = reasons.setdefault(why, [])
        if op not in ops:
            ops.append(op)
    refused = "; ".join(f"{'/'.join(ops)}: {why}" for why, ops in reasons.items())
    head = (f"its GPU delegate takes {counts.group(1)} of "
            f"{int(counts.group(1)) + int(counts.group(2))} ops" if counts
            else "its GPU delegate does not take every op")
    return head + (f" and refuses {refused}" if refused else "")


def probe_plain_webgpu(page: Any, entry: Mapping[str, Any]) -> str | None:
    """Why LiteRT.js cannot run a plain file on WebGPU at batch 1, ``None`` when it can.

    The manifest's input shape with a dynamic (``-1``) batch set to 1 is what an app would
    feed; LiteRT.js 2.5 compiles such files but refuses the batch-1 tensor.
    """
    from playwright.sync_api import Error as PlaywrightError

    shape = ((entry.get("inputs") or [{}])[0]).get("shape") or []
    batch1 = [1 if int(d) < 0 else int(d) for d in shape]
    try:
        out = page.evaluate(_PLAIN_PROBE_JS, [str(entry["file"]), batch1])
    except PlaywrightError as e:
        return _page_error(e, str(entry["file"]))
    if out.get("ok"):
        return None
    dynamic = " (its batch dimension is dynamic)" if any(int(d) < 0 for d in shape) else ""
    return (f"LiteRT.js: input {list(shape)}{dynamic}, fed {batch1}: "
            f"{' '.join(str(out.get('error')).split())[:300]}")


def _strip_backend(text: str) -> str:
    text = " ".join(str(text).split())
    return text[len("webgpu: "):] if text.startswith("webgpu: ") else text


def _run_chunks(page: Any, runner: str, file: str,
                images: np.ndarray) -> tuple[list[list[float]], list[float], dict[str, Any]]:
    """``runner(file, base64, count)`` in the page over ``images`` in chunks of a few MB:
    every answer and time, and the last chunk's reply (``loadMs``, ``backend``...)."""
    from playwright.sync_api import Error as PlaywrightError

    images = np.ascontiguousarray(images, dtype=np.uint8)
    chunk = max(1, _CHUNK_BYTES // max(1, images[0].size))
    probs: list[list[float]] = []
    times: list[float] = []
    out: dict[str, Any] = {}
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        b64 = base64.b64encode(part.tobytes()).decode("ascii")
        try:
            out = page.evaluate(f"([f, b, n]) => {runner}(f, b, n)", [file, b64, len(part)])
        except PlaywrightError as e:
            raise BrowserError(_page_error(e, file)) from None
        if "error" in out:
            raise BrowserError(f"LiteRT.js: {_strip_backend(out['error'])}")
        probs += out["probs"]
        times += out["times"]
    return probs, times, out


def _page_error(e: Exception, file: str) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{file}: the page could not run it in Chromium ({text})"


def _as_images(x: np.ndarray, input_desc: Mapping[str, Any]) -> np.ndarray:
    """Model inputs in [0, 1] (flat or NHWC, one channel) as uint8 ``[N, H, W]``."""
    h, w = int(input_desc.get("height", 28)), int(input_desc.get("width", 28))
    channels = int(input_desc.get("channels", 1))
    if channels != 1 or h != w:
        from .parity import ParityError

        raise ParityError(
            f"model input {h}x{w}x{channels}; the browser rows expected square grayscale "
            "digits (the MNIST family); fix: run `edgeport parity RUN` without --browser"
        )
    return np.rint(np.asarray(x, dtype=np.float64).reshape(len(x), h, w) * 255).astype(np.uint8)


def app_pictures(images: np.ndarray, size: int) -> np.ndarray:
    """MNIST-style uint8 ``[N, H, W]`` as the pictures an app hands in: RGB ``[N, S, S, 3]``,
    dark ink on white paper, enlarged to ``size`` (bilinear), as ``export.app`` renders them."""
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        big = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = (255 - big)[..., None]
    return out


def _app_size(entry: Mapping[str, Any]) -> int:
    shape = ((entry.get("inputs") or [{}])[0]).get("shape") or []
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        from .parity import ParityError

        raise ParityError(
            f"{entry.get('file')}: input shape {shape} in manifest.json; expected an app "
            "model's [1, S, S, 3]; fix: re-run `edgeport export RUN --force`"
        )
    return int(shape[1])


def browser_parity(
    run_dir: str | os.PathLike[str],
    *,
    thresholds: Thresholds | None = None,
    samples: int = 1000,
    webgpu_samples: int = WEBGPU_SAMPLES,
    data_dir: str | os.PathLike[str] | None = None,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
) -> list[Any]:
    """The browser rows of the parity gate (see the module docstring).

    Args:
        run_dir: the run directory, with ``reference.npz`` and ``export/``.
        thresholds: the tolerance table (default :data:`~export.thresholds.THRESHOLDS`).
        samples: test images per row (the first ones of the test split).
        webgpu_samples: of those, the images per WebGPU row (default
            :data:`~export.thresholds.WEBGPU_SAMPLES`): SwiftShader emulates the GPU on
            the CPU.
        data_dir: where the dataset lives, if not where the run found it.
        split: the test split ``(x, labels)`` when the caller has loaded it already.
        progress: a progress line per (file, runtime) on stderr (:mod:`edgeport.progress`).

    Returns:
        One :class:`~export.parity.ParityResult` per browser target, in manifest order.

    Raises:
        ParityError: no ``model.onnx`` and no app model to run, or a non-digit model.
        BrowserError: Chromium or Playwright is missing, or the page does not start.
    """
    from edgeport.train.run_dir import load_run, load_split

    from .parity import ParityError

    if samples < 1 or webgpu_samples < 1:
        raise ValueError(f"samples={samples}, webgpu_samples={webgpu_samples}; expected "
                         "positive numbers of test images")
    table = thresholds or THRESHOLDS
    info = load_run(run_dir)
    export_dir = info.path / "export"
    manifest = read_manifest(export_dir)
    targets = browser_targets(manifest)
    if not targets:
        raise ParityError(
            f"{export_dir / 'manifest.json'}: no file the browser runs (model.onnx, or an app "
            "model with \"family\": \"app\"); fix: re-run `edgeport export RUN --force`"
        )
    x, labels = split if split is not None else load_split(info, "test", data_dir=data_dir)
    n = min(samples, len(x))
    images = _as_images(x[:n], manifest.get("input") or {})
    labels = np.asarray(labels[:n], dtype=np.int64)
    golden = _golden(export_dir, manifest.get("input") or {})
    cases = []
    for entry, runtime in targets:
        name = str(entry["file"])
        golden_probs = golden.get(f"{name.rsplit('.', 1)[0]}__probabilities")
        problem = None
        if runtime == ORT_WEB:
            case = (images, info.reference_probabilities[:n], golden.get("images"))
        else:
            # The same file in Python's LiteRT on the same pictures is the oracle: it is
            # what the app rows of the gate check against the reference.
            pictures = app_pictures(images, _app_size(entry))
            oracle, problem = _litert_oracle(export_dir / name, pictures, runtime)
            case = (pictures, oracle, golden.get("app_pictures"))
        cases.append((entry, runtime, *case, golden_probs, problem))
    from edgeport.progress import progress_bar

    gpu_entries = webgpu_targets(manifest)
    app_cases = {c[0]["file"]: c for c in cases if c[1] == LITERT_JS}
    # One step per (file, runtime) after each Chromium starts: the phase is minutes long.
    bar = progress_bar(total=len(cases) + 1 + (len(gpu_entries) + 1 if gpu_entries else 0),
                       desc="parity browser", unit="file", disable=not progress, leave=False)
    rows = []
    with bar:
        bar.set_description("parity browser starting Chromium")
        with open_demo_page(export_dir) as page:
            bar.update(1)
            for entry, runtime, inputs, oracle, golden_inputs, golden_probs, problem in cases:
                bar.set_description(f"parity browser {entry['file']} on {runtime} "
                                    f"({len(inputs)} images)")
                rows.append(_check(page, export_dir, entry, runtime, inputs=inputs,
                                   oracle=oracle, labels=labels, golden_inputs=golden_inputs,
                                   golden_probs=golden_probs, table=table,
                                   problems=[problem] if problem else []))
                bar.update(1)
        if not gpu_entries:
            return rows
        bar.set_description("parity browser starting Chromium with WebGPU (SwiftShader)")
        with open_demo_page(export_dir, webgpu=True) as page:
            adapter = webgpu_adapter(page)
            bar.update(1)
            for entry in gpu_entries:
                bar.set_description(f"parity browser {entry['file']} on {LITERT_WEBGPU}")
                case = app_cases.get(entry["file"])
                if case is None:  # a plain float file: does LiteRT.js run it at all?
                    rows.append(_plain_webgpu_row(page, adapter, export_dir, entry, table,
                                                  labels=labels,
                                                  reference=info.reference_probabilities[:n]))
                else:
                    _, _, inputs, oracle, golden_inputs, golden_probs, problem = case
                    m = min(n, webgpu_samples)
                    rows.append(_webgpu_row(
                        page, adapter, export_dir, entry, inputs=inputs[:m],
                        oracle=None if oracle is None else oracle[:m], labels=labels[:m],
                        golden_inputs=golden_inputs, golden_probs=golden_probs,
                        table=table, problems=[problem] if problem else [],
                        input_desc=manifest.get("input") or {}))
                bar.update(1)
    return rows


def _no_adapter(runtime: str) -> str:
    return (f"{runtime}: Chromium exposes no WebGPU adapter; expected SwiftShader's; "
            f"{NO_ADAPTER_FIX}")


def _webgpu_row(page: Any, adapter: str, export_dir: Path, entry: Mapping[str, Any],
                **check: Any) -> Any:
    """An app model's WebGPU row: gated like its WASM row; "not GPU-ready" (a pass, with the
    reason) when LiteRT.js cannot run it on WebGPU or misses the thresholds, unless the
    manifest claims WebGPU support for it."""
    from dataclasses import replace

    name = str(entry["file"])
    if not adapter:
        check["problems"] = [*check.get("problems", ()), _no_adapter(LITERT_WEBGPU)]
    input_desc = check.pop("input_desc", {})
    partial: list[str] = []

    def runner(pg: Any, images: np.ndarray) -> BrowserRun:
        run = run_images_webgpu(pg, entry, images, input_desc)
        partial.append(run.partial)
        return run

    row = _check(page, export_dir, entry, LITERT_WEBGPU, runner=runner, **check)
    split = next((p for p in partial if p), "")  # ran, but not all of it on WebGPU
    if not row.failures and not split:
        return replace(row, gpu_ready=True)
    prefix = f"{LITERT_WEBGPU}: "
    reasons = [f[len(prefix):] if f.startswith(prefix) else f for f in row.failures]
    reasons = [r[len("cannot run: "):] if r.startswith("cannot run: ") else r for r in reasons]
    if split:
        reasons = [split, *(f"the split run: {r}" for r in reasons)]
    if not adapter or artifact_file_problems(export_dir / name, entry):
        return replace(row, gpu_ready=False)  # a FAIL: the machine or the file
    if claims_webgpu(entry):  # a FAIL: the manifest promised WebGPU
        return replace(row, passed=False, gpu_ready=False, failures=(
            *row.failures, *([f"{LITERT_WEBGPU}: claims WebGPU, but {split}"] if split else [])))
    return replace(row, passed=True, failures=(), gpu_ready=False,
                   images=row.images if row.accuracy is not None else None,
                   note=f"not GPU-ready ({'; '.join(reasons)})")


def _plain_webgpu_row(page: Any, adapter: str, export_dir: Path, entry: Mapping[str, Any],
                      table: Thresholds, *, labels: np.ndarray, reference: np.ndarray) -> Any:
    """A plain float file's WebGPU row: LiteRT.js runs it on WebGPU at batch 1, or why not.

    The page feeds only app models, so a plain file is not gated in the browser (its
    Python rows are); the row records whether the WebGPU path runs it.
    """
    from .parity import ParityResult

    name = str(entry["file"])
    path = export_dir / name
    failures = [f"{LITERT_WEBGPU}: {p}" for p in artifact_file_problems(path, entry)]
    reason = None
    if not adapter:
        failures.append(_no_adapter(LITERT_WEBGPU))
    elif not failures:
        reason = probe_plain_webgpu(page, entry)
        if reason is not None and claims_webgpu(entry):
            failures.append(f"{LITERT_WEBGPU}: cannot run on WebGPU: {reason}")
    if reason is None and not failures:
        note = ("not GPU-ready (not measured: LiteRT.js ran one batch-1 call on WebGPU, "
                "but the page feeds only app models)")
    else:
        note = f"not GPU-ready ({reason})" if reason and not failures else ""
    return ParityResult(
        artifact=name, format=ArtifactFormat(entry["format"]),
        precision=Precision(entry.get("precision")), runtime=LITERT_WEBGPU, accuracy=None,
        reference_accuracy=float(np.mean(reference.argmax(axis=1) == labels)),
        agreement=None, max_abs_diff=None, mean_abs_diff=None, passed=not failures,
        failures=tuple(failures), bytes=path.stat().st_size if path.is_file() else 0,
        images=None, max_abs_diff_bound=None, bound_source="not gated", gpu_ready=False,
        note=note,
    )


def _litert_oracle(path: Path, pictures: np.ndarray,
                   runtime: str) -> tuple[np.ndarray | None, str | None]:
    """The app file's answers in Python's LiteRT (the browser row's oracle), or why not."""
    if not path.is_file():
        return None, None  # artifact_file_problems names the missing file
    try:
        return predict_app(path.read_bytes(), pictures), None
    except (RuntimeError, ValueError) as e:  # LiteRT's answer to a damaged flatbuffer
        text = " ".join(str(e).split())[:300]
        return None, f"{runtime}: Python's LiteRT cannot run the file either: {text}"


def _golden(export_dir: Path, input_desc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    path = export_dir / "golden.npz"
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "inputs" in arrays:
        arrays["images"] = _as_images(arrays["inputs"], input_desc)
    return arrays


def _check(
    page: Any,
    export_dir: Path,
    entry: Mapping[str, Any],
    runtime: str,
    *,
    inputs: np.ndarray,
    oracle: np.ndarray | None,
    labels: np.ndarray,
    golden_inputs: np.ndarray | None,
    golden_probs: np.ndarray | None,
    table: Thresholds,
    problems: Sequence[str] = (),
    runner: Any = None,
) -> Any:
    from .parity import ParityResult, _gate

    def run(images: np.ndarray) -> BrowserRun:
        return runner(page, images) if runner else run_images(page, name, images)

    name = str(entry["file"])
    precision = Precision(entry.get("precision"))
    tol = table.get(precision, THRESHOLDS[precision])
    path = export_dir / name
    failures = [f"{runtime}: {p}" for p in artifact_file_problems(path, entry)]
    failures += problems
    figures: dict[str, Any] = {"runtime": runtime, "accuracy": None, "agreement": None,
                               "max_abs_diff": None, "mean_abs_diff": None}
    ref_top = None if oracle is None else oracle.argmax(axis=1)
    reference_accuracy = 0.0 if ref_top is None else float(np.mean(ref_top == labels))

    def result() -> ParityResult:
        return ParityResult(
            artifact=name, format=ArtifactFormat(entry["format"]), precision=precision,
            reference_accuracy=reference_accuracy, passed=not failures,
            failures=tuple(failures), bytes=path.stat().st_size if path.is_file() else 0,
            images=len(labels), max_abs_diff_bound=tol.max_abs_diff,
            bound_source="table" if tol.max_abs_diff is not None else "not gated",
            **figures,
        )

    if not path.is_file() or oracle is None or ref_top is None:
        return result()
    try:
        if golden_inputs is not None and golden_probs is not None:
            replay = run(golden_inputs).probabilities
            gdiff = float(np.max(np.abs(replay.astype(np.float64) - golden_probs)))
            if gdiff > tol.golden_atol:
                failures.append(f"{runtime}: golden max |Δp| {gdiff:.1e} > {tol.golden_atol:.1e}")
        probs = run(inputs).probabilities
    except BrowserError as e:
        failures.append(f"{runtime}: cannot run: {e}")
        return result()
    if probs.shape != oracle.shape:
        failures.append(f"{runtime}: probabilities shape {list(probs.shape)} != reference "
                        f"{list(oracle.shape)}")
        return result()
    top = probs.argmax(axis=1)
    flips = int(np.count_nonzero(top != ref_top))
    accuracy = float(np.mean(top == labels))
    agreement = 1.0 - flips / len(top)
    diff = np.abs(probs.astype(np.float64) - oracle.astype(np.float64))
    max_diff = float(diff.max()) if np.isfinite(probs).all() else None
    if max_diff is None:
        failures.append(f"{runtime}: probabilities hold non-finite values (NaN or inf)")
    figures.update(accuracy=accuracy, agreement=agreement, max_abs_diff=max_diff,
                   mean_abs_diff=None if max_diff is None else float(diff.mean()))
    failures.extend(
        f"{runtime}: {f}" for f in _gate(
            tol, accuracy=accuracy, reference_accuracy=reference_accuracy,
            agreement=agreement, flips=flips, n=len(top), max_diff=max_diff)
    )
    return result()


def browser_bench(
    run_dir: str | os.PathLike[str],
    *,
    runs: int = 1000,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Batch-1 latency inside the page (p50/p99 over ``runs`` calls) and load time per target.

    WASM rows for every browser target, then ``litert.js webgpu (chromium)`` rows for the
    app models in a Chromium with SwiftShader's WebGPU adapter (the warm-up call, where
    WebGPU compiles its shaders, apart from the load), over at most
    :data:`WEBGPU_BENCH_RUNS` calls (SwiftShader takes 0.2-0.9 s a call here).

    Returns:
        One dict per row: ``artifact``, ``precision``, ``runtime``, ``backend``, ``bytes``,
        ``load_ms``, ``warmup_ms``, ``latency_p50_ms``, ``latency_p99_ms``, ``runs``; a
        WebGPU row LiteRT.js could not run has ``None`` figures, ``runs`` 0 and ``error``.
    """
    from edgeport.train.run_dir import load_run, load_split

    info = load_run(run_dir)
    export_dir = info.path / "export"
    manifest = read_manifest(export_dir)
    x, _ = load_split(info, "test", data_dir=data_dir)
    images = _as_images(x[:runs], manifest.get("input") or {})
    images = np.resize(images, (runs, *images.shape[1:]))  # repeat when the split is smaller
    rows = []
    with open_demo_page(export_dir) as page:
        for entry, runtime in browser_targets(manifest):
            name = str(entry["file"])
            inputs = images if runtime == ORT_WEB else app_pictures(images, _app_size(entry))
            page.evaluate("(f) => window.edgeport.selectModel(f)", name)  # a cold load
            run = run_images(page, name, inputs)
            warmup = page.evaluate("window.edgeport.current.warmupMs")
            rows.append(_bench_row(entry, runtime, replace(run, warmup_ms=float(warmup or 0))))
    apps = [e for e in webgpu_targets(manifest) if e.get("family") == "app"]
    if apps:  # LiteRT.js on WebGPU (SwiftShader): a second Chromium, as in the parity gate
        with open_demo_page(export_dir, webgpu=True) as page:
            adapter = webgpu_adapter(page)
            for entry in apps:
                try:
                    if not adapter:
                        raise BrowserError(_no_adapter(LITERT_WEBGPU))
                    pictures = app_pictures(images[:WEBGPU_BENCH_RUNS], _app_size(entry))
                    run = run_images_webgpu(page, entry, pictures, manifest.get("input") or {})
                except BrowserError as e:
                    rows.append(_bench_row(entry, LITERT_WEBGPU, None, error=str(e)))
                else:
                    rows.append(_bench_row(entry, LITERT_WEBGPU, run))
    return rows


def _bench_row(entry: Mapping[str, Any], runtime: str, run: BrowserRun | None,
               error: str = "") -> dict[str, Any]:
    """One browser bench row; ``run`` ``None``: the runtime could not run it (``error``)."""
    row: dict[str, Any] = {
        "artifact": str(entry["file"]), "precision": str(entry.get("precision")),
        "runtime": runtime, "backend": run.backend if run else "webgpu",
        "bytes": int(entry.get("bytes") or 0), "load_ms": None, "warmup_ms": None,
        "latency_p50_ms": None, "latency_p99_ms": None, "runs": 0,
    }
    if run is not None:
        row.update(load_ms=run.load_ms, warmup_ms=run.warmup_ms,
                   latency_p50_ms=float(statistics.median(run.times_ms)),
                   latency_p99_ms=float(np.percentile(run.times_ms, 99)),
                   runs=len(run.times_ms))
    if error:
        row["error"] = error
    elif run is not None and run.partial:
        row["error"] = run.partial  # it ran, split between WebGPU and WASM
    return row


_BENCH_HEADERS = ("artifact", "runtime", "backend", "size KB", "load ms", "warm-up ms",
                  "p50 ms", "p99 ms", "note")


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _bench_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["artifact"], r["runtime"], r["backend"].upper(), f"{r['bytes'] / 1024:.1f}",
             _cell(r["load_ms"], ".0f"), _cell(r.get("warmup_ms"), ".0f"),
             _cell(r["latency_p50_ms"], ".3f"), _cell(r["latency_p99_ms"], ".3f"),
             " ".join(str(r.get("error", "")).split())[:120]]
            for r in rows]


def format_browser_bench(rows: Sequence[Mapping[str, Any]]) -> str:
    """The browser rows of ``edgeport bench`` as a terminal table."""
    from .report import render_table

    return render_table(_BENCH_HEADERS, _bench_cells(rows))


def browser_bench_report(
    run_dir: str | os.PathLike[str],
    *,
    runs: int = 1000,
    json_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
) -> str:
    """Measure :func:`browser_bench`, record it, and return the terminal table.

    The bench JSON (``RUN/bench.json``, and ``json_path`` when given) gains a
    ``"browser"`` list; ``markdown_path`` gains a second table.
    """
    import json

    from edgeport.fileio import atomic_write_json

    from .bench import BENCH_NAME
    from .report import markdown_table

    rows = browser_bench(run_dir, runs=runs)
    for path in {Path(run_dir) / BENCH_NAME, *([Path(json_path)] if json_path else [])}:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        atomic_write_json(path, {**doc, "browser": rows})
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as f:
            f.write("\n### Browser runtimes (headless Chromium, batch 1 inside the page)\n\n")
            f.write(markdown_table(_BENCH_HEADERS, _bench_cells(rows)) + "\n")
    return format_browser_bench(rows)
