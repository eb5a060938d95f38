/* The inference worker: loads one model with its runtime and answers run requests,
   so a slow phone's page keeps drawing while the model runs.

   A classic (not module) worker: LiteRT.js loads its WebAssembly glue with
   importScripts(), which module workers lack; the runtimes' ES modules come in with
   dynamic import(). Every file is served by `edgeport-demo serve` from the local
   node_modules (no CDN):
     /vendor/litertjs/core/index.js   @litertjs/core (its bare import of
                                      @litertjs/wasm-utils is pointed at /vendor/ by the server)
     /vendor/litertjs/wasm/           LiteRT.js .wasm files
     /vendor/ort/                     onnxruntime-web's .mjs and .wasm files

   Messages in:  {type: 'load', runtime: 'litert' | 'ort', file, entry, backend, input, strict,
                  verbose}  (verbose: pass the runtimes' INFO/WARNING lines to the console)
                 (strict: a backend that cannot run the file is an error, no fallback:
                 what the parity gate's WebGPU rows need)
                 {type: 'classify', pixels, width, height}  RGBA pixels of the picture
                 {type: 'runMany', images, count}           parity: uint8 model inputs
   Messages out: {type: 'loaded', backend, requested, fallback, partial, loadMs, warmupMs}
                 (fallback: why the requested backend is not the one running, or '';
                 partial: what of a WebGPU model runs on WASM, or '')
                 | {type: 'result', probs, ms} | {type: 'result', none: reason}
                 (none: model.onnx's picture holds no digit by findDigit, not classified)
                 | {type: 'many', probs, times} | {type: 'error', message, stage}
*/
'use strict';

importScripts('preprocess.js');

// --- the console: the runtimes' own chatter (LiteRT.js prints every INFO line through
// Emscripten's printErr, i.e. console.error) goes to console.debug, which browsers hide
// at the default log level; lines that are errors stay errors. A load with verbose: true
// passes everything through unchanged.
let verbose = false;
const ERROR_LINE = /^\s*(ERROR|FATAL|[EF]\d{4}\b)|abort|exception/i;
// console.warn lines of LiteRT.js that the page reports itself (as the backend's fallback)
const RUNTIME_WARNING = /^(Failed to create default WebGPU device|%c\[LiteRT\]|\[StreamWeights\])/;
const consoleWarn = console.warn.bind(console);
let litertWarnings = [];
console.warn = (...args) => {
  const text = String(args[0] ?? ''); // the message (LiteRT.js styles it with %c and CSS)
  if (verbose || !RUNTIME_WARNING.test(text)) { consoleWarn(...args); return; }
  litertWarnings.push(text.replace(/%c/g, '') + (args[1] instanceof Error ? ` ${args[1]}` : ''));
  console.debug(...args);
};
// LiteRT's GPU delegate lists the operations it leaves to the CPU ("ERROR: Following
// operations are not supported by GPU delegate:", then one "OP: why" line each): the page
// reports them in the backend's fallback reason, so they are collected, not shown.
let gpuOps = null;
let listing = false;
const GPU_REPORT = /not supported by GPU delegate/;
function runtimeLine(stream) {
  return (...args) => {
    const text = args.map(String).join(' ');
    if (GPU_REPORT.test(text)) { gpuOps = []; listing = true; }
    else if (listing && /^[A-Z][A-Z0-9_]*: /.test(text)) gpuOps.push(text.split(':')[0]);
    else listing = false;
    if (verbose) (stream === 'err' ? console.error : console.log)(...args);
    else if (stream === 'err' && ERROR_LINE.test(text) && !GPU_REPORT.test(text)) {
      console.error(...args);
    } else console.debug(...args);
  };
}
function gpuOpsNote() {
  if (!gpuOps || !gpuOps.length) return '';
  const kinds = [...new Set(gpuOps)].sort();
  return `; LiteRT's GPU delegate does not support ${gpuOps.length} of its operations ` +
    `(${kinds.join(', ')})`;
}

// Why WebGPU cannot run here ('' when an adapter answers): navigator.gpu alone is not
// enough (headless or --disable-gpu Chromium has it, but no adapter).
async function webgpuProblem() {
  if (!('gpu' in navigator)) return 'this browser has no WebGPU (navigator.gpu is missing)';
  try {
    if (!(await navigator.gpu.requestAdapter())) {
      return 'this browser exposes no WebGPU adapter (no usable GPU, or the GPU is disabled)';
    }
  } catch (e) {
    return `WebGPU refused an adapter (${String(e.message || e).split('\n')[0]})`;
  }
  return '';
}

let model = null; // {runtime, backend, run(tensorData) -> Promise<Float32Array>, size, ...}

function fail(stage, error) {
  const text = error && error.message ? error.message : String(error);
  postMessage({ type: 'error', stage, message: text.split('\n')[0] });
}

async function fetchModel(file) {
  const response = await fetch(`models/${file}`);
  if (!response.ok) throw new Error(`HTTP ${response.status} for models/${file}`);
  return new Uint8Array(await response.arrayBuffer());
}

// --- LiteRT.js: the app models, input [1, S, S, 3] RGB pixel values (float32 or uint8).
let litert = null;
async function loadLiteRtModel(file, entry, backend, strict) {
  if (!litert) {
    litert = await import('/vendor/litertjs/core/index.js');
    // The Emscripten glue looks for its .wasm next to the worker; the loader passes
    // self.Module to it, so point locateFile at the served folder.
    // print/printErr: Emscripten's stdout and stderr, filtered (see runtimeLine).
    self.Module = { locateFile: (name) => `/vendor/litertjs/wasm/${name}`,
      print: runtimeLine('out'), printErr: runtimeLine('err') };
    await litert.loadLiteRt('/vendor/litertjs/wasm/');
  }
  const bytes = await fetchModel(file);
  let accelerator = backend === 'webgpu' ? 'webgpu' : 'wasm';
  let fallback = '';
  const problem = accelerator === 'webgpu' ? await webgpuProblem() : '';
  if (problem) {
    if (strict) throw new Error(`webgpu: ${problem}`);
    accelerator = 'wasm';
    fallback = problem;
  }
  litertWarnings = [];
  let compiled;
  try {
    compiled = await litert.loadAndCompile(bytes, { accelerator });
  } catch (e) {
    if (accelerator === 'wasm' || strict) throw new Error(`${accelerator}: ${e.message || e}`);
    // WebGPU refused this model or device: CPU still works, and the page says so.
    fallback = `WebGPU could not run ${file} (${String(e.message || e).split('\n')[0]}` +
      `${gpuOpsNote()})`;
    accelerator = 'wasm';
    compiled = await litert.loadAndCompile(bytes, { accelerator });
  }
  // LiteRT.js itself recompiles for WASM (with a console warning) when WebGPU cannot
  // run the whole model on a browser without JSPI: the backend is the one it compiled for.
  const compiledFor = (compiled.options && compiled.options.accelerator) || accelerator;
  if (compiledFor !== accelerator) {
    const why = litertWarnings.find((w) => /Model not fully compiled/.test(w)) ||
      `LiteRT.js compiled ${file} for ${compiledFor}`;
    if (strict) { compiled.delete(); throw new Error(`${accelerator}: ${why.trim()}`); }
    fallback = `WebGPU could not run all of ${file} (${why.replace(/^\s*\[LiteRT\]\s*/, '')})`;
    accelerator = compiledFor;
  }
  // WebGPU with some operations left to the CPU (LiteRT.js on a JSPI build): said, too.
  const partial = accelerator === 'webgpu' && compiled.isFullyAccelerated === false
    ? `part of ${file} runs on WASM${gpuOpsNote()}` : '';
  const input = compiled.getInputDetails()[0];
  const outputs = compiled.getOutputDetails();
  const shape = Array.from(input.shape);
  if (shape.length !== 4 || shape[0] !== 1 || shape[3] !== 3) {
    throw new Error(`input shape [${shape}]; expected an app model's [1, S, S, 3]`);
  }
  let out = outputs.findIndex((o) => o.name.includes('probabilities'));
  if (out < 0) out = 0;
  // LiteRT.js exposes no quantization parameters: take them from the manifest.
  const described = entry.outputs || [];
  const q = described.find((o) => o.name === 'probabilities') || described[0] || {};
  return {
    runtime: 'LiteRT.js', backend: accelerator, fallback, partial, size: shape[1],
    dtype: input.dtype,
    async run(rgb) {
      // Typed arrays in without per-pixel JavaScript: a uint8 picture as it is; float
      // pixels to levels by Uint8ClampedArray (clamped, rounded half to even, natively).
      // Array.from with a rounding callback cost 3.8 ms a 112 x 112 picture.
      let data = rgb;
      if (input.dtype === 'uint8' && !(rgb instanceof Uint8Array)) {
        data = new Uint8Array(new Uint8ClampedArray(rgb).buffer);
      } else if (input.dtype !== 'uint8' && !(rgb instanceof Float32Array)) {
        data = Float32Array.from(rgb);
      }
      const tensor = new litert.Tensor(data, shape);
      const results = await compiled.run([tensor]);
      tensor.delete();
      let t = results[out];
      if (t.accelerator !== 'wasm') t = await t.moveTo('wasm');
      const raw = t.toTypedArray();
      const probs = raw instanceof Float32Array ? Float32Array.from(raw)
        : Float32Array.from(raw, (v) => (v - (q.zero_point || 0)) * (q.scale ?? 1 / 256));
      for (const r of results) r.delete();
      return probs;
    },
  };
}

// --- onnxruntime-web: model.onnx, input [N, 784] or [N, 28, 28, 1] in [0, 1].
async function loadOrtModel(file, entry, backend, inputDesc, strict) {
  const problem = backend === 'webgpu' ? await webgpuProblem() : '';
  const webgpu = backend === 'webgpu' && !problem;
  if (problem && strict) throw new Error(`webgpu: ${problem}`);
  const ort = await import(webgpu ? '/vendor/ort/ort.webgpu.min.mjs' : '/vendor/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = '/vendor/ort/';
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one is plenty here
  ort.env.logLevel = verbose ? 'verbose' : 'error';
  const bytes = await fetchModel(file);
  const providers = webgpu ? ['webgpu', 'wasm'] : ['wasm'];
  const session = await ort.InferenceSession.create(bytes, { executionProviders: providers });
  const dims = ((entry.inputs || [])[0] || {}).shape || [-1, 784];
  const sample = dims.slice(1);
  const size = inputDesc.height || 28;
  const name = session.inputNames[0];
  const outName = session.outputNames.includes('probabilities') ? 'probabilities'
    : session.outputNames[0];
  return {
    runtime: 'onnxruntime-web', backend: webgpu ? 'webgpu' : 'wasm', size,
    fallback: problem,
    preprocess: inputDesc.preprocess || 'mnist',
    async run(x) {
      const tensor = new ort.Tensor('float32', Float32Array.from(x), [1, ...sample]);
      const result = await session.run({ [name]: tensor });
      return Float32Array.from(result[outName].data);
    },
  };
}

// The picture as the model's input: RGB 0-255 at S x S for an app model (the model
// does the rest), the MNIST pipeline (preprocess.js) in [0, 1] for model.onnx.
function modelInput(pixels, width, height) {
  if (model.runtime === 'LiteRT.js') {
    const rgb = new Float32Array(width * height * 3);
    for (let i = 0; i < width * height; i++) {
      rgb[3 * i] = pixels[4 * i];
      rgb[3 * i + 1] = pixels[4 * i + 1];
      rgb[3 * i + 2] = pixels[4 * i + 2];
    }
    return rgb;
  }
  const gray = new Float64Array(width * height);
  for (let i = 0; i < width * height; i++) { // Pillow's "L": ITU-R 601-2 luma, its fixed point
    gray[i] = ((pixels[4 * i] * 19595 + pixels[4 * i + 1] * 38470 + pixels[4 * i + 2] * 7471 +
      0x8000) >> 16) / 255;
  }
  // The digit rule first (what the app models do in their graph, and edgeport-demo
  // before model.onnx): a picture without a digit is answered `none`, not classified.
  if (model.preprocess === 'mnist' && self.findDigit) {
    const check = self.findDigit(gray, width, height, model.size);
    if (!check.found) return { none: check.reason };
  }
  return self.preprocessDigit(gray, width, height, model.size);
}

onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === 'load') {
    model = null;
    verbose = !!msg.verbose;
    gpuOps = null;
    listing = false;
    const t0 = performance.now();
    const load = (backend) => (msg.runtime === 'litert'
      ? loadLiteRtModel(msg.file, msg.entry, backend, !!msg.strict)
      : loadOrtModel(msg.file, msg.entry, backend, msg.input || {}, !!msg.strict));
    // One warm-up call, so the first answer's latency is the model's, not the JIT's;
    // reported apart (warmupMs) so nobody reads it as the steady latency.
    const warmUp = (m) => m.run(new Float32Array(m.runtime === 'LiteRT.js'
      ? m.size * m.size * 3 : m.size * m.size));
    try {
      model = await load(msg.backend);
      let loadMs = performance.now() - t0;
      let t1 = performance.now();
      try {
        await warmUp(model);
      } catch (e) {
        // A WebGPU model that compiled but cannot run (LiteRT.js 2.5.3 splits a graph the
        // GPU delegate cannot take whole, and the split run then fails) is a failed start.
        if (model.backend !== 'webgpu') throw e;
        const why = `${String(e.message || e).split('\n')[0]}${gpuOpsNote()}`;
        if (msg.strict) throw new Error(`webgpu: ${why}`);
        model = await load('wasm');
        model.fallback = `WebGPU could not run ${msg.file} (${why})`;
        loadMs = performance.now() - t0;
        t1 = performance.now();
        await warmUp(model);
      }
      postMessage({ type: 'loaded', runtime: model.runtime, backend: model.backend,
        requested: msg.backend, fallback: model.fallback || '', partial: model.partial || '',
        size: model.size,
        loadMs, warmupMs: performance.now() - t1 });
    } catch (e) {
      fail('load', e);
    }
  } else if (msg.type === 'classify') {
    if (!model) { fail('classify', new Error('no model loaded')); return; }
    try {
      const x = modelInput(msg.pixels, msg.width, msg.height);
      if (x.none !== undefined) { postMessage({ type: 'result', none: x.none }); return; }
      const t0 = performance.now();
      const probs = await model.run(x);
      postMessage({ type: 'result', probs, ms: performance.now() - t0 });
    } catch (e) {
      fail('classify', e);
    }
  } else if (msg.type === 'runMany') {
    // The parity gate, batch 1 each: RGB pictures [S, S, 3] (0-255) for an app model,
    // MNIST-style images [28, 28] for model.onnx (fed as pixel / 255, as Python does).
    try {
      const n = msg.images.length / msg.count;
      const probs = [], times = new Float64Array(msg.count);
      for (let i = 0; i < msg.count; i++) {
        const img = msg.images.subarray(i * n, (i + 1) * n);
        // An app model's uint8 input takes the bytes as they are (a copy, not a view).
        const x = model.runtime !== 'LiteRT.js' ? Float32Array.from(img, (v) => v / 255)
          : model.dtype === 'uint8' ? img.slice() : Float32Array.from(img);
        const t0 = performance.now();
        probs.push(await model.run(x));
        times[i] = performance.now() - t0;
      }
      postMessage({ type: 'many', probs, times });
    } catch (e) {
      fail('runMany', e);
    }
  }
};
