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
   window.edgeport exposes the same steps to the tests and the browser parity gate. */

const $ = (id) => document.getElementById(id);
const pad = $('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
const video = $('video');
const MAX_SIDE = 512;

let manifest = null;
let choices = [];       // [{key, label, runtime, file, entry}]
let worker = null;
let current = null;     // the loaded choice + {backend, size, loadMs}
let pending = null;     // {resolve, reject} of the request the worker is answering
let inked = false;
let stream = null;

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
  if (text) document.body.dataset.state = 'error';
}

function setStatus(text) { $('status').textContent = text; }

// --- the worker: one request at a time, in order (a stroke may end while the
// previous picture is still being classified)
let queue = Promise.resolve();
function ask(message, transfer = []) {
  const answer = queue.then(() => new Promise((resolve, reject) => {
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
    showMessage('This export has no app model (model_app_*.tflite, "family": "app" in ' +
      'manifest.json), so LiteRT.js has nothing to run: re-export with a version of edgeport ' +
      'that writes app models. onnxruntime-web runs model.onnx meanwhile.');
  }
  if (!choices.length) throw new Error('the manifest lists no model the browser can run');
}

async function selectModel(key, backend = $('backend').value) {
  const choice = choices.find((c) => c.key === key);
  if (!choice) throw new Error(`no model ${key} in this export`);
  document.body.dataset.state = 'loading';
  setStatus(`loading ${choice.file}…`);
  showMessage('');
  current = null;
  startWorker();
  try {
    const info = await ask({ type: 'load', runtime: choice.runtime, file: choice.file,
      entry: choice.entry, backend, input: manifest.input || {} });
    current = { ...choice, ...info };
    $('model').value = key;
    setStatus(`${info.runtime} · ${info.backend.toUpperCase()} · loaded in ` +
      `${info.loadMs.toFixed(0)} ms`);
    document.body.dataset.state = 'ready';
    return current;
  } catch (e) {
    showMessage(`Could not load ${choice.file} with ` +
      `${choice.runtime === 'litert' ? 'LiteRT.js' : 'onnxruntime-web'}: ${e.message}. ` +
      'Check that the export is complete (edgeport verify RUN/export), or pick another model.');
    setStatus('no model loaded');
    throw e;
  }
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

async function classify(source, width, height) {
  if (!current) throw new Error('no model loaded');
  const { pixels, width: w, height: h } = pixelsOf(source, width, height);
  document.body.dataset.state = 'busy';
  try {
    const r = await ask({ type: 'classify', pixels, width: w, height: h }, [pixels.buffer]);
    showResult(r.probs, r.ms);
    document.body.dataset.state = 'done';
    return r;
  } catch (e) {
    const text = e.stage === 'classify' && /no ink/.test(e.message)
      ? `No digit found in the picture: ${e.message}.`
      : `The model could not classify this picture: ${e.message}`;
    showMessage(text);
    throw e;
  }
}

function showResult(probs, ms) {
  const labels = manifest.labels || [];
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, 3);
  const name = (i) => labels[i] ?? String(i);
  $('top1').textContent = name(order[0]);
  $('top1-prob').textContent = `${(100 * probs[order[0]]).toFixed(1)}%`;
  document.body.dataset.top1 = name(order[0]);
  $('bars').replaceChildren(...order.map((i) => {
    const li = document.createElement('li');
    const pct = (100 * probs[i]).toFixed(1);
    li.innerHTML = `<span class="label"></span><span class="bar"><span></span></span>` +
      `<span class="pct">${pct}%</span>`;
    li.querySelector('.label').textContent = name(i);
    li.querySelector('.bar > span').style.width = `${Math.max(0, Math.min(100, pct))}%`;
    return li;
  }));
  setStatus(`${current.runtime} · ${current.backend.toUpperCase()} · ${ms.toFixed(2)} ms ` +
    `per inference · ${current.file}`);
  showMessage('');
}

// --- drawing
function clearPad() {
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  $('hint').hidden = false;
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width,
    (event.clientY - r.top) * pad.height / r.height];
}

let last = null;
pad.addEventListener('pointerdown', (event) => {
  stopCamera();
  pad.setPointerCapture(event.pointerId);
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
    showMessage('The canvas is empty: draw one digit with your finger first.');
    throw new Error('empty canvas');
  }
  return classify(pad, pad.width, pad.height);
}

// --- photo and camera
async function classifyFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    showMessage(`${file.name} is not a picture this browser can open ` +
      `(type ${file.type || 'unknown'}): choose a JPEG or PNG photo of one digit.`);
    throw new Error('not an image');
  }
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  ctx.drawImage(bitmap, (pad.width - bitmap.width * s) / 2, (pad.height - bitmap.height * s) / 2,
    bitmap.width * s, bitmap.height * s);
  inked = false;
  $('hint').hidden = true;
  return classify(bitmap, bitmap.width, bitmap.height);
}

function stopCamera() {
  if (!stream) return;
  stream.getTracks().forEach((t) => t.stop());
  stream = null;
  video.hidden = true;
  $('camera').textContent = 'Live camera';
}

async function startCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showMessage('The live camera needs a secure page (https:// or localhost): restart ' +
      '`edgeport-demo serve` with --https, or use the Photo button.');
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: 'environment' }, audio: false });
  } catch (e) {
    showMessage(`No camera: ${e.message}. Use the Photo button instead.`);
    return;
  }
  video.srcObject = stream;
  video.hidden = false;
  $('camera').textContent = 'Stop camera';
  await video.play();
  const loop = async () => {
    if (!stream) return;
    if (current && !pending && video.videoWidth) {
      // The centre square of the frame: where the user points the digit.
      const side = Math.min(video.videoWidth, video.videoHeight);
      const frame = new OffscreenCanvas(side, side);
      frame.getContext('2d').drawImage(video, (video.videoWidth - side) / 2,
        (video.videoHeight - side) / 2, side, side, 0, 0, side, side);
      await classify(frame, side, side).catch(() => {});
    }
    setTimeout(loop, 250);
  };
  loop();
}

// --- the parity gate's entry point: uint8 model inputs (base64), one call each
async function runMany(key, base64, count) {
  if (!current || current.key !== key) await selectModel(key);
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const r = await ask({ type: 'runMany', images: bytes, count }, [bytes.buffer]);
  return { probs: r.probs.map((p) => Array.from(p)), times: Array.from(r.times),
    runtime: current.runtime, backend: current.backend, loadMs: current.loadMs };
}

// --- wiring
$('clear').addEventListener('click', () => { stopCamera(); clearPad(); showMessage(''); });
$('photo').addEventListener('change', (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (file) { stopCamera(); classifyFile(file).catch(() => {}); }
});
$('camera').addEventListener('click', () => (stream ? stopCamera() : startCamera()));
$('model').addEventListener('change', (event) => selectModel(event.target.value).catch(() => {}));
$('backend').addEventListener('change', () => selectModel($('model').value).catch(() => {}));
if (!('gpu' in navigator)) $('backend').querySelector('[value=webgpu]').disabled = true;

ctx.lineWidth = 20;
ctx.lineCap = 'round';
ctx.lineJoin = 'round';
ctx.strokeStyle = '#000';
clearPad();

const ready = (async () => {
  try {
    await loadManifest();
    const first = choices.find((c) => c.runtime === 'litert') || choices[0];
    await selectModel(first.key);
  } catch (e) {
    if (!$('message').textContent) showMessage(`The demo could not start: ${e.message}`);
  }
})();

if ('serviceWorker' in navigator && window.isSecureContext) {
  navigator.serviceWorker.register('sw.js').catch(() => {});
}

window.edgeport = {
  ready, selectModel, classifyPad, classifyFile, runMany, clearPad,
  get current() { return current; },
  get choices() { return choices; },
};
