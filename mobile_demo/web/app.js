/* edgeport's phone page: the page half (drawing, camera, photo, results).

   How it works:
   - models/manifest.json (the export's manifest) lists the files; app models
     ("family": "app", input [1, S, S, 3] RGB 0-255, preprocessing inside) run with
     LiteRT.js, model.onnx runs with onnxruntime-web after the MNIST preprocessing in
     JavaScript (preprocess.js, a port of mobile_demo/preprocess.py);
   - the model runs in worker.js (a Web Worker), so the page stays responsive;
   - sw.js (a service worker) keeps a copy of every file fetched, so the page works
     offline once it has loaded a model (only in a secure context: https or localhost);
   - the picture (canvas, photo or camera frame) is handed to the worker as RGBA
     pixels: at S x S for an app model, at up to 512 px for model.onnx.

   One state machine drives what the page shows. `state` holds everything (the model,
   the backend asked for and the one running, the input, the answer, the error);
   dispatch(action) is the only way to change it, and render() draws the whole page from
   it. Phases:

     loading  --loaded-->  ready  --run-->  running  --answer/noDigit-->  answered
        |                    ^                 |                             |
        +--loadFailed-->  error  <--failed-----+------------(run again)------+

   Choosing a model or a backend (action 'load') clears the answer and starts over; a
   failed picture (action 'failed') clears it too, so no answer outlives what it answered.
   An answer is shown only if nothing happened since its picture was taken: a load bumps
   the state's generation (gen), a new picture, an error or Clear its sequence number
   (seq), and an answer carrying older numbers is dropped.

   window.edgeport exposes the same steps to the tests and the browser parity gate;
   window.edgeportState() returns a copy of the state. `?log=verbose` in the URL lets
   the runtimes' INFO lines through to the console (hidden by default). */

const $ = (id) => document.getElementById(id);
const pad = $('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
const video = $('video');
const MAX_SIDE = 512;
const NONE = 'none'; // the app models' extra class: no digit in the picture
const VERBOSE = new URLSearchParams(location.search).get('log') === 'verbose';
const RUNTIME_NAME = { litert: 'LiteRT.js', ort: 'onnxruntime-web' };

let manifest = null;
let choices = [];       // [{key, label, runtime, file, entry}]
let worker = null;
let current = null;     // the loaded choice + the worker's 'loaded' answer
let pending = null;     // {resolve, reject} of the request the worker is answering
let inked = false;
let stream = null;
let loading = null;     // the promise of the load in progress

// --- the state machine
const state = {
  phase: 'loading',     // loading | ready | running | answered | error
  gen: 0,               // bumped by every load: older loads and answers are dropped
  seq: 0,               // bumped by every picture, error and clear: older answers are dropped
  model: '',            // the chosen model's key (its file name)
  runtime: '',          // LiteRT.js | onnxruntime-web
  requested: 'wasm',    // the backend asked for
  backend: '',          // the backend running ('' while loading or when no model runs)
  fallback: '',         // why the requested backend is not the one running ('' if it is)
  partial: '',          // what of a WebGPU model runs on WASM ('' if none)
  loadMs: null,
  warmupMs: null,       // the first inference after load, reported apart
  input: 'draw',        // draw | photo | camera
  result: null,         // {labels: [top 3], probs: [top 3], top, none, ms, reason}
  error: '',            // the message shown in the red box
  notice: '',           // a lasting remark about the export (no app model)
};

const PHASES = {
  loading: ['loaded', 'loadFailed', 'load', 'failed'],
  ready: ['load', 'run', 'clear', 'failed'],
  running: ['load', 'answer', 'noDigit', 'failed', 'clear', 'run'],
  answered: ['load', 'run', 'clear', 'failed'],
  error: ['load', 'run', 'clear', 'failed'],
};

/** The class names of `entry`'s n outputs: its own `labels`, else the manifest's; an
    app model with one output more than those labels answers `none` with its last one. */
function labelsOf(entry, n) {
  const labels = (entry && Array.isArray(entry.labels) ? entry.labels : manifest?.labels) || [];
  return entry?.family === 'app' && n === labels.length + 1 ? [...labels, NONE] : labels;
}

function reduce(s, a) {
  switch (a.type) {
    case 'load':
      return { ...s, phase: 'loading', gen: s.gen + 1, seq: s.seq + 1, model: a.model,
        runtime: a.runtime,
        requested: a.requested, backend: '', fallback: '', partial: '', loadMs: null,
        warmupMs: null,
        result: null, error: '' };
    case 'loaded':
      return { ...s, phase: 'ready', backend: a.backend, fallback: a.fallback || '',
        partial: a.partial || '',
        loadMs: a.loadMs, warmupMs: a.warmupMs, error: '' };
    case 'loadFailed':
      return { ...s, phase: 'error', backend: '', result: null, error: a.message };
    case 'run':
      // A new picture: the last answer stays (greyed) only while the same input is redrawn.
      return { ...s, phase: 'running', seq: s.seq + 1, input: a.input, error: '',
        result: a.input === s.input ? s.result : null };
    case 'answer': {
      const labels = labelsOf(a.entry || current?.entry, a.probs.length);
      const name = (i) => String(labels[i] ?? i);
      const order = Array.from(a.probs.keys()).sort((x, y) => a.probs[y] - a.probs[x]).slice(0, 3);
      const top = name(order[0]);
      return { ...s, phase: 'answered', error: '', result: {
        labels: order.map(name), probs: order.map((i) => Number(a.probs[i])), top,
        none: top === NONE, ms: a.ms, reason: '' } };
    }
    case 'noDigit':
      return { ...s, phase: 'answered', error: '', result: {
        labels: [], probs: [], top: NONE, none: true, ms: a.ms ?? null, reason: a.reason } };
    case 'failed': // (a picture refused while a model loads: the load goes on)
      return { ...s, phase: s.phase === 'loading' ? 'loading' : 'error', seq: s.seq + 1,
        result: null, error: a.message };
    case 'clear':
      return { ...s, phase: s.backend ? 'ready' : s.phase, seq: s.seq + 1, result: null,
        error: '', input: 'draw' };
    case 'notice':
      return { ...s, notice: a.text };
    default:
      throw new Error(`unknown action ${a.type}`);
  }
}

function dispatch(action) {
  // An answer to an older load or picture (a newer one was started since) is dropped.
  if (action.gen !== undefined && action.gen !== state.gen) return false;
  if (action.seq !== undefined && action.seq !== state.seq) return false;
  if (action.type !== 'notice' && !PHASES[state.phase].includes(action.type)) {
    throw new Error(`${action.type} is not possible while ${state.phase}`);
  }
  Object.assign(state, reduce(state, action));
  render();
  return true;
}

const upper = (b) => (b === 'webgpu' ? 'WebGPU' : String(b).toUpperCase());
const running = (s) => `${upper(s.backend)}${s.partial ? ' (part on WASM)' : ''}`;
const fmtMs = (ms) => (ms >= 10 ? ms.toFixed(0) : ms.toFixed(2));

function render() {
  const s = state;
  const body = document.body;
  body.dataset.state = s.phase;
  body.dataset.top1 = s.result ? s.result.top : '';
  body.dataset.backend = s.backend;

  // The pickers show what runs; while a model loads they show what was asked for, locked.
  const busy = s.phase === 'loading';
  $('model').disabled = busy || !choices.length;
  $('backend').disabled = busy;
  if (s.model) $('model').value = s.model;
  $('backend').value = s.backend || s.requested;

  const choice = choices.find((c) => c.key === s.model);
  const file = choice ? choice.file : s.model;
  let status;
  if (busy) status = s.model ? `loading ${file} on ${upper(s.requested)}…` : 'loading…';
  else if (!s.backend) status = 'no model loaded';
  else if (s.result && s.result.ms != null) {
    status = `${s.runtime} · ${running(s)} · ${fmtMs(s.result.ms)} ms per inference`;
  } else status = `${s.runtime} · ${running(s)} · ready`;
  $('status').textContent = status;
  $('status').title = s.partial; // which operations WebGPU leaves to the CPU
  $('timing').textContent = s.backend && s.loadMs != null
    ? `${file}: loaded in ${s.loadMs.toFixed(0)} ms; first run (warm-up, not counted) ` +
      `${fmtMs(s.warmupMs)} ms` : '';
  $('timing').hidden = !$('timing').textContent;
  const why = /^WebGPU /.test(s.fallback) ? s.fallback
    : `${upper(s.requested)} is not running: ${s.fallback}`;
  $('fallback').textContent = s.backend && s.fallback
    ? `${why}. Running on ${upper(s.backend)}.` : '';
  $('fallback-box').hidden = !$('fallback').textContent;
  $('use-backend').textContent = `Use ${upper(s.backend || 'wasm')}`;

  $('notice').textContent = s.notice;
  $('notice').hidden = !s.notice;
  $('message').textContent = s.error;
  $('message').hidden = !s.error;

  // The answer: a digit with its probability, "No digit", or nothing.
  const r = s.result;
  const result = $('result');
  result.classList.toggle('empty', !r);
  result.classList.toggle('none', !!(r && r.none));
  result.classList.toggle('stale', !!r && s.phase === 'running');
  $('top1').textContent = !r ? '–' : r.none ? 'No digit' : r.top;
  $('top1-prob').textContent = r && !r.none ? `${(100 * r.probs[0]).toFixed(1)}%` : '';
  $('reason').textContent = r && r.none && r.reason ? r.reason : '';
  $('reason').hidden = !$('reason').textContent;
  $('bars').replaceChildren(...(r ? r.labels : []).map((label, i) => {
    const li = document.createElement('li');
    const pct = (100 * r.probs[i]).toFixed(1);
    li.innerHTML = '<span class="label"></span><span class="bar"><span></span></span>' +
      `<span class="pct">${pct}%</span>`;
    li.querySelector('.label').textContent = label === NONE ? 'no digit' : label;
    li.querySelector('.bar > span').style.width = `${Math.max(0, Math.min(100, pct))}%`;
    return li;
  }));
  $('hint').hidden = inked || s.input !== 'draw' || !!stream;
}

// --- the worker: one request at a time, in order (a stroke may end while the
// previous picture is still being classified)
let queue = Promise.resolve();
function ask(message, transfer = []) {
  const gen = state.gen;
  const answer = queue.then(() => new Promise((resolve, reject) => {
    if (gen !== state.gen) { reject({ stage: 'load', message: 'cancelled: another model was chosen' }); return; }
    pending = { resolve, reject };
    worker.postMessage(message, transfer);
  }));
  queue = answer.catch(() => {});
  return answer;
}

function startWorker() {
  if (worker) worker.terminate();
  if (pending) pending.reject({ stage: 'load', message: 'cancelled: another model was chosen' });
  pending = null;
  queue = Promise.resolve();
  worker = new Worker('worker.js');
  worker.onmessage = (event) => {
    const p = pending;
    pending = null;
    if (!p) return;
    if (event.data.type === 'error') p.reject(event.data);
    else p.resolve(event.data);
  };
  worker.onerror = (event) => {
    const p = pending;
    pending = null;
    if (p) p.reject({ stage: 'load', message: event.message || 'the worker failed to start' });
  };
}

// --- models
function modelChoices(doc) {
  const list = [];
  for (const entry of doc.artifacts || []) {
    if (entry.family === 'app' && entry.format === 'tflite') {
      list.push({ key: entry.file, runtime: 'litert', file: entry.file, entry,
        label: `LiteRT.js · ${entry.file}` });
    } else if (entry.format === 'onnx') {
      list.push({ key: entry.file, runtime: 'ort', file: entry.file, entry,
        label: `onnxruntime-web · ${entry.file}` });
    }
  }
  return list;
}

async function loadManifest() {
  const response = await fetch('models/manifest.json');
  if (!response.ok) throw new Error(`models/manifest.json: HTTP ${response.status}`);
  manifest = await response.json();
  choices = modelChoices(manifest);
  const select = $('model');
  select.replaceChildren(...choices.map((c) => new Option(c.label, c.key)));
  if (!choices.some((c) => c.runtime === 'litert')) {
    dispatch({ type: 'notice', text: 'This export has no app model (model_app_*.tflite, ' +
      '"family": "app" in manifest.json), so LiteRT.js has nothing to run: re-export with a ' +
      'version of edgeport that writes app models. onnxruntime-web runs model.onnx meanwhile.' });
  }
  if (!choices.length) throw new Error('the manifest lists no model the browser can run');
}

/** Load `key` on `backend` ('wasm' | 'webgpu'). options.strict: a backend that cannot
    run the file is an error instead of a fallback to WASM (what the parity gate needs). */
async function selectModel(key, backend = $('backend').value, options = {}) {
  const choice = choices.find((c) => c.key === key);
  if (!choice) throw new Error(`no model ${key} in this export`);
  current = null;
  dispatch({ type: 'load', model: key, runtime: RUNTIME_NAME[choice.runtime],
    requested: backend === 'webgpu' ? 'webgpu' : 'wasm' });
  const gen = state.gen;
  startWorker();
  const job = (async () => {
    try {
      const info = await ask({ type: 'load', runtime: choice.runtime, file: choice.file,
        entry: choice.entry, backend: state.requested, input: manifest.input || {},
        strict: !!options.strict, verbose: VERBOSE });
      if (gen !== state.gen) throw new Error('cancelled: another model was chosen');
      current = { ...choice, ...info };
      dispatch({ type: 'loaded', gen, ...info });
      return current;
    } catch (e) {
      if (gen === state.gen) {
        dispatch({ type: 'loadFailed', gen, message: `Could not load ${choice.file} with ` +
          `${RUNTIME_NAME[choice.runtime]} on ${upper(state.requested)}: ${e.message}. ` +
          'Check that the export is complete (edgeport verify RUN/export), or pick another model.' });
      }
      throw e instanceof Error ? e : new Error(e.message);
    }
  })();
  loading = job;
  return job;
}

// --- pictures to pixels
function pixelsOf(source, width, height) {
  // The model's own size for an app model; the picture's, at most 512 px, for model.onnx.
  let w = current.size, h = current.size;
  if (current.runtime !== 'LiteRT.js') {
    const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
    w = Math.max(1, Math.round(width * scale));
    h = Math.max(1, Math.round(height * scale));
  }
  const canvas = new OffscreenCanvas(w, h);
  const c = canvas.getContext('2d', { willReadFrequently: true });
  c.fillStyle = '#fff'; // transparent pictures lie on white paper
  c.fillRect(0, 0, w, h);
  c.imageSmoothingQuality = 'high';
  c.drawImage(source, 0, 0, w, h);
  return { pixels: c.getImageData(0, 0, w, h).data, width: w, height: h };
}

async function classify(source, width, height, input) {
  // A picture taken while a model loads waits for that load (or the one that replaced it).
  for (let job = null; !current && state.phase === 'loading' && loading !== job;) {
    job = loading;
    await job.catch(() => {});
  }
  if (!current) {
    dispatch({ type: 'failed', message: 'No model is loaded: pick one in the Model list.' });
    throw new Error('no model loaded');
  }
  const gen = state.gen;
  const entry = current.entry;
  const { pixels, width: w, height: h } = pixelsOf(source, width, height);
  dispatch({ type: 'run', input });
  const seq = state.seq;
  try {
    const r = await ask({ type: 'classify', pixels, width: w, height: h }, [pixels.buffer]);
    if (r.none !== undefined) dispatch({ type: 'noDigit', gen, seq, reason: r.none });
    else dispatch({ type: 'answer', gen, seq, probs: r.probs, ms: r.ms, entry });
    return r;
  } catch (e) {
    if (e.stage === 'classify' && /no ink/.test(e.message)) {
      // model.onnx: preprocess.js found nothing to classify, which is an answer too.
      dispatch({ type: 'noDigit', gen, seq, reason: e.message });
      return { none: true, reason: e.message };
    }
    dispatch({ type: 'failed', gen, seq,
      message: `The model could not classify this picture: ${e.message}` });
    throw e;
  }
}

// --- drawing: the canvas is square in every layout (CSS), and its backing store is
// sized to the element's box times devicePixelRatio, so strokes are never squashed.
const STROKE = 1 / 14; // of the canvas side: 20 px on a 280 px canvas

function sizePad() {
  const side = Math.round(pad.clientWidth * (window.devicePixelRatio || 1));
  if (!side || (side === pad.width && side === pad.height)) return;
  const old = new OffscreenCanvas(pad.width, pad.height);
  old.getContext('2d').drawImage(pad, 0, 0);
  pad.width = side;
  pad.height = side;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, side, side);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(old, 0, 0, side, side); // keep the drawing, scaled to the new size
  ctx.lineWidth = side * STROKE;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.strokeStyle = '#000';
}

function clearPad() {
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  if (PHASES[state.phase].includes('clear')) dispatch({ type: 'clear' });
  else render();
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  const x = (event.clientX - r.left - pad.clientLeft) * pad.width / pad.clientWidth;
  const y = (event.clientY - r.top - pad.clientTop) * pad.height / pad.clientHeight;
  return [x, y];
}

let last = null;
pad.addEventListener('pointerdown', (event) => {
  stopCamera();
  pad.setPointerCapture(event.pointerId);
  if (state.input !== 'draw') { // a photo was on the canvas: start a fresh drawing
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, pad.width, pad.height);
  }
  last = padPoint(event);
  inked = true;
  $('hint').hidden = true;
  ctx.beginPath();
  ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fillStyle = '#000';
  ctx.fill();
});
pad.addEventListener('pointermove', (event) => {
  if (!last) return;
  const p = padPoint(event);
  ctx.beginPath();
  ctx.moveTo(...last);
  ctx.lineTo(...p);
  ctx.stroke();
  last = p;
});
const endStroke = () => {
  if (!last) return;
  last = null;
  classifyPad().catch(() => {});
};
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

async function classifyPad() {
  if (!inked) {
    dispatch({ type: 'failed', message: 'The canvas is empty: draw one digit first.' });
    throw new Error('empty canvas');
  }
  return classify(pad, pad.width, pad.height, 'draw');
}

// --- photo and camera
async function classifyFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    dispatch({ type: 'failed', message: `${file.name} is not a picture this browser can open ` +
      `(type ${file.type || 'unknown'}): choose a JPEG or PNG photo of one digit.` });
    throw new Error('not an image');
  }
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  ctx.drawImage(bitmap, (pad.width - bitmap.width * s) / 2, (pad.height - bitmap.height * s) / 2,
    bitmap.width * s, bitmap.height * s);
  inked = false;
  return classify(bitmap, bitmap.width, bitmap.height, 'photo');
}

function stopCamera() {
  if (!stream) return;
  stream.getTracks().forEach((t) => t.stop());
  stream = null;
  video.hidden = true;
  $('camera').textContent = 'Camera';
  render();
}

async function startCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    dispatch({ type: 'failed', message: 'The live camera needs a secure page (https:// or ' +
      'localhost): restart `edgeport-demo serve` with --https, or use the Photo button.' });
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: 'environment' }, audio: false });
  } catch (e) {
    dispatch({ type: 'failed', message: `No camera: ${e.message}. Use the Photo button instead.` });
    return;
  }
  video.srcObject = stream;
  video.hidden = false;
  $('camera').textContent = 'Stop';
  render();
  await video.play();
  const loop = async () => {
    if (!stream) return;
    if (current && !pending && video.videoWidth) {
      // The centre square of the frame: where the user points the digit.
      const side = Math.min(video.videoWidth, video.videoHeight);
      const frame = new OffscreenCanvas(side, side);
      frame.getContext('2d').drawImage(video, (video.videoWidth - side) / 2,
        (video.videoHeight - side) / 2, side, side, 0, 0, side, side);
      await classify(frame, side, side, 'camera').catch(() => {});
    }
    setTimeout(loop, 250);
  };
  loop();
}

// --- the parity gate's entry point: uint8 model inputs (base64), one call each.
// options: {backend, strict} as for selectModel (a different backend reloads the model).
async function runMany(key, base64, count, options = {}) {
  const backend = options.backend || (current ? current.requested : $('backend').value);
  if (!current || current.key !== key || current.requested !== backend) {
    await selectModel(key, backend, options);
  }
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const r = await ask({ type: 'runMany', images: bytes, count }, [bytes.buffer]);
  return { probs: r.probs.map((p) => Array.from(p)), times: Array.from(r.times),
    runtime: current.runtime, backend: current.backend, requested: current.requested,
    fallback: current.fallback, loadMs: current.loadMs, warmupMs: current.warmupMs };
}

// --- wiring
$('clear').addEventListener('click', () => { stopCamera(); clearPad(); });
$('photo').addEventListener('change', (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (file) { stopCamera(); classifyFile(file).catch(() => {}); }
});
$('camera').addEventListener('click', () => (stream ? stopCamera() : startCamera()));
$('model').addEventListener('change', (event) => selectModel(event.target.value).catch(() => {}));
$('backend').addEventListener('change', (event) =>
  selectModel(state.model, event.target.value).catch(() => {}));
$('use-backend').addEventListener('click', () =>
  selectModel(state.model, state.backend || 'wasm').catch(() => {}));

new ResizeObserver(sizePad).observe(pad);
sizePad();
clearPad();

const ready = (async () => {
  try {
    await loadManifest();
    const first = choices.find((c) => c.runtime === 'litert') || choices[0];
    await selectModel(first.key);
  } catch (e) {
    if (!state.error) {
      if (state.phase === 'loading' && !state.model) {
        Object.assign(state, { phase: 'error', error: `The demo could not start: ${e.message}` });
        render();
      }
    }
  }
})();

if ('serviceWorker' in navigator && window.isSecureContext) {
  navigator.serviceWorker.register('sw.js').catch(() => {});
}

const snapshot = () => JSON.parse(JSON.stringify(state));
window.edgeportState = snapshot;
window.edgeport = {
  ready, selectModel, classifyPad, classifyFile, runMany, clearPad, dispatch,
  get state() { return snapshot(); },
  get current() { return current; },
  get choices() { return choices; },
};
