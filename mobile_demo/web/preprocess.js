/* MNIST-style digit preprocessing in JavaScript, for model.onnx (the app models do
   this inside the graph). A port of mobile_demo/preprocess.py's preprocess_digit, so
   the page feeds model.onnx what `edgeport-demo` feeds it:

   1. the paper level is the median of the border pixels; invert when the paper is
      lighter than the ink; stretch so the strongest stroke is 1 and drop the faint
      background (below max(15%, border noise, 5 sigma), at most 50%);
   2. crop to the ink (ignoring 0.2% stray specks on each side);
   3. average large crops down to 80 px, thicken strokes thinner than MNIST's,
      scale the longer side to 20 px (area average when shrinking, bilinear when
      enlarging, as Pillow's BOX / BILINEAR);
   4. paste into 28x28 with the centre of mass in the middle.

   Differences from the Python code: the browser decodes and downsizes the photo
   (to at most 512 px) before step 1, where Python shrinks to 1024 px with Pillow.
   findDigit is mobile_demo/preprocess.py's find_digit (DIGIT_RULE, the rule the app
   models carry in their graph): whether the frame holds a digit at all; a frame that
   does not is answered `none`. tests/test_preprocess.py runs both on the same frames.

   Loaded with importScripts() by worker.js; defines self.preprocessDigit and
   self.findDigit. */
'use strict';

(function () {
  const MIN_CONTRAST = 0.08, NOISE_FLOOR = 0.15, NOISE_CEIL = 0.5;
  const WORK_SCALE = 4, MIN_STROKE = 6.0, MASS_TRIM = 0.002;

  function median(values) {
    const a = Float64Array.from(values).sort();
    const n = a.length;
    return n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2;
  }

  function percentile(values, q) { // numpy's default (linear) interpolation
    const a = Float64Array.from(values).sort();
    const pos = (a.length - 1) * q / 100, lo = Math.floor(pos), hi = Math.ceil(pos);
    return a[lo] + (a[hi] - a[lo]) * (pos - lo);
  }

  function border(img) {
    const { data, w, h } = img, out = [];
    for (let x = 0; x < w; x++) out.push(data[x], data[(h - 1) * w + x]);
    for (let y = 1; y < h - 1; y++) out.push(data[y * w], data[y * w + w - 1]);
    return out;
  }

  function massRange(profile) {
    const cum = new Float64Array(profile.length);
    let s = 0;
    profile.forEach((v, i) => { s += v; cum[i] = s; });
    const total = s;
    let lo = cum.findIndex((c) => c > total * MASS_TRIM);            // searchsorted right
    let hi = cum.findIndex((c) => c >= total * (1 - MASS_TRIM)) + 1;  // searchsorted left
    const first = profile.findIndex((v) => v !== 0);
    let last = profile.length - 1;
    while (last > 0 && profile[last] === 0) last--;
    lo = Math.max(lo, first);
    hi = Math.min(Math.max(hi, lo + 1), last + 1);
    return [lo, hi];
  }

  // Pillow's resampling weights (precompute_coeffs in Resample.c) along one axis: BOX
  // (1 on (-0.5, 0.5]) when shrinking, BILINEAR (the triangle 1 - |x|) when enlarging,
  // the filter stretched by the scale when shrinking, each row normalised to sum 1.
  function pilWeights(inSize, outSize, box) {
    const scale = inSize / outSize, filterscale = Math.max(scale, 1);
    const support = (box ? 0.5 : 1.0) * filterscale, rows = [];
    for (let o = 0; o < outSize; o++) {
      const center = (o + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
      const taps = [];
      let sum = 0;
      for (let i = xmin; i < xmax; i++) {
        const x = (i - center + 0.5) / filterscale;
        const wgt = box ? (x > -0.5 && x <= 0.5 ? 1 : 0) : Math.max(0, 1 - Math.abs(x));
        taps.push([i, wgt]);
        sum += wgt;
      }
      rows.push(sum ? taps.map(([i, wgt]) => [i, wgt / sum]) : taps);
    }
    return rows;
  }

  // Python's round(): halves go to the even neighbour (Math.round sends them up).
  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function resize(img, w, h) {
    const shrinking = w < img.w || h < img.h;
    const wx = pilWeights(img.w, w, shrinking), wy = pilWeights(img.h, h, shrinking);
    // Pillow resamples a float ("F") picture in float32 storage, summing in double:
    // Math.fround keeps each pass to the same bits.
    const tmp = new Float64Array(img.h * w);
    for (let y = 0; y < img.h; y++) {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (const [i, wgt] of wx[x]) s += Math.fround(img.data[y * img.w + i]) * wgt;
        tmp[y * w + x] = Math.fround(s);
      }
    }
    const out = new Float64Array(w * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (const [i, wgt] of wy[y]) s += tmp[i * w + x] * wgt;
        out[y * w + x] = Math.fround(s);
      }
    }
    return { data: out, w, h };
  }

  function maxOf(a) { let m = -Infinity; for (const v of a) if (v > m) m = v; return m; }

  function strokeWidth(img) {
    const { data, w, h } = img, on = (x, y) => x >= 0 && y >= 0 && x < w && y < h &&
      data[y * w + x] > 0.5;
    let area = 0, inner = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!on(x, y)) continue;
        area++;
        if (on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) inner++;
      }
    }
    return area ? 2 * area / Math.max(area - inner, 1) : 0;
  }

  function dilate(img, k) {
    const { data, w, h } = img, r = Math.floor(k / 2), out = new Float64Array(w * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let m = 0;
        for (let dy = -r; dy <= r; dy++) {
          for (let dx = -r; dx <= r; dx++) {
            const yy = y + dy, xx = x + dx;
            if (yy >= 0 && xx >= 0 && yy < h && xx < w && data[yy * w + xx] > m) {
              m = data[yy * w + xx];
            }
          }
        }
        out[y * w + x] = m;
      }
    }
    return { data: out, w, h };
  }

  /** gray: Float64Array in [0, 1] (0 = black), w x h. Returns Float32Array(size*size). */
  function preprocessDigit(gray, w, h, size = 28) {
    const g = { data: gray, w, h };
    const paper = median(border(g));
    const lo = -maxOf(gray.map((v) => -v)), hi = maxOf(gray);
    const invert = paper >= (lo + hi) / 2;
    const signed = gray.map((v) => (invert ? paper - v : v - paper));
    const peak = maxOf(signed);
    if (!(peak >= MIN_CONTRAST)) {
      throw new Error(`no ink found in the ${w}x${h} picture (contrast ${peak.toFixed(3)} ` +
        `< ${MIN_CONTRAST}): expected one dark digit on light paper, or light on dark`);
    }
    const med = median(signed);
    const sigma = 1.4826 * median(signed.map((v) => Math.abs(v - med)));
    let ink = { data: signed.map((v) => Math.max(v, 0) / peak), w, h };
    const noise = Math.max(percentile(border(ink), 90), 5 * sigma / peak);
    const floor = Math.min(Math.max(noise, NOISE_FLOOR), NOISE_CEIL);
    ink.data = ink.data.map((v) => Math.min(Math.max((v - floor) / (1 - floor), 0), 1));

    const rows = new Float64Array(h), cols = new Float64Array(w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) { rows[y] += ink.data[y * w + x]; cols[x] += ink.data[y * w + x]; }
    }
    const [r0, r1] = massRange(Array.from(rows));
    const [c0, c1] = massRange(Array.from(cols));
    let crop = { data: new Float64Array((r1 - r0) * (c1 - c0)), w: c1 - c0, h: r1 - r0 };
    for (let y = r0; y < r1; y++) {
      for (let x = c0; x < c1; x++) crop.data[(y - r0) * crop.w + (x - c0)] = ink.data[y * w + x];
    }

    const box = Math.max(1, roundHalfEven(size * 20 / 28));
    const work = box * WORK_SCALE;
    if (Math.max(crop.w, crop.h) > work) {
      const scale = work / Math.max(crop.w, crop.h);
      crop = resize(crop, Math.max(1, roundHalfEven(crop.w * scale)),
        Math.max(1, roundHalfEven(crop.h * scale)));
      const m = Math.max(maxOf(crop.data), 1e-12);
      crop.data = crop.data.map((v) => v / m);
    }
    const target = MIN_STROKE * Math.max(crop.w, crop.h) / work;
    const width = strokeWidth(crop);
    const k = width > 0 && width < target ? roundHalfEven(target - width) | 1 : 1;
    if (k > 1) crop = dilate(crop, k);
    const longest = Math.max(crop.w, crop.h);
    const sh = Math.max(1, roundHalfEven(crop.h * box / longest));
    const sw = Math.max(1, roundHalfEven(crop.w * box / longest));
    const small = resize(crop, sw, sh);
    small.data = small.data.map((v) => Math.min(Math.max(v, 0), 1));
    const m = Math.max(maxOf(small.data), 1e-12);
    small.data = small.data.map((v) => v / m);

    let total = 0, cy = 0, cx = 0;
    for (let y = 0; y < sh; y++) {
      for (let x = 0; x < sw; x++) {
        const v = small.data[y * sw + x];
        total += v; cy += y * v; cx += x * v;
      }
    }
    cy = total > 0 ? cy / total : (sh - 1) / 2;
    cx = total > 0 ? cx / total : (sw - 1) / 2;
    const centre = size / 2;
    const top = Math.min(Math.max(roundHalfEven(centre - cy), 0), size - sh);
    const left = Math.min(Math.max(roundHalfEven(centre - cx), 0), size - sw);
    const out = new Float32Array(size * size);
    for (let y = 0; y < sh; y++) {
      for (let x = 0; x < sw; x++) out[(top + y) * size + left + x] = small.data[y * sw + x];
    }
    return out;
  }

  // DIGIT_RULE (mobile_demo/preprocess.py): judged on a grid of 2x the model's side.
  const RULE = { grid: 2, window: 11 / 56, ink: 0.3, minArea: 0.004, maxArea: 0.35,
    minHeight: 0.2, minDensity: 0.1, band: 1 / 16, maxEdge: 0.1 };

  function boxFilter(a, n, k, pick, pad) { // k x k max or min filter of an n x n grid
    const r = k >> 1, rows = new Float64Array(n * n), out = new Float64Array(n * n);
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        let m = pad;
        for (let i = y - r; i <= y + r; i++) m = pick(m, i < 0 || i >= n ? pad : a[i * n + x]);
        rows[y * n + x] = m;
      }
    }
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        let m = pad;
        for (let j = x - r; j <= x + r; j++) m = pick(m, j < 0 || j >= n ? pad : rows[y * n + j]);
        out[y * n + x] = m;
      }
    }
    return out;
  }

  /** Whether a grayscale picture (Float64Array in [0, 1], w x h) holds a digit.
      Returns {found, reason, area, height, density, edge}, as find_digit. */
  function findDigit(gray, w, h, size = 28) {
    const n = RULE.grid * size;
    let g = { data: gray, w, h };
    if (w !== n || h !== n) g = resize(g, n, n);
    const v0 = g.data.map((v) => Math.min(Math.max(v, 0), 1));
    const paper = median(border({ data: v0, w: n, h: n }));
    const lo = -maxOf(v0.map((v) => -v)), hi = maxOf(v0);
    const v = paper >= (lo + hi) / 2 ? v0 : v0.map((x) => 1 - x);
    const k = Math.max(3, roundHalfEven(RULE.window * n) | 1);
    const light = boxFilter(boxFilter(v, n, k, Math.max, 0), n, k, Math.min, 1);
    const band = Math.max(1, Math.floor(RULE.band * n));
    let count = 0, inner = 0, r0 = n, r1 = -1, c0 = n, c1 = -1;
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const ink = Math.min(Math.max(1 - v[y * n + x] / Math.max(light[y * n + x], 1e-3), 0), 1);
        if (!(ink > RULE.ink)) continue;
        count++;
        if (y >= band && y < n - band && x >= band && x < n - band) inner++;
        r0 = Math.min(r0, y); r1 = Math.max(r1, y); c0 = Math.min(c0, x); c1 = Math.max(c1, x);
      }
    }
    if (count === 0) {
      return { found: false, reason: 'blank: no ink darker than the paper around it',
        area: 0, height: 0, density: 0, edge: 0 };
    }
    const height = (r1 - r0 + 1) / n, width = (c1 - c0 + 1) / n;
    const area = count / (n * n), edge = 1 - inner / count, density = area / (height * width);
    let reason = '';
    if (area < RULE.minArea) reason = 'a speck, not a digit';
    else if (area > RULE.maxArea) reason = 'too much ink to be one digit';
    else if (edge > RULE.maxEdge) reason = "marks on the picture's edge";
    else if (height < RULE.minHeight) reason = 'ink too short to be a digit';
    else if (density < RULE.minDensity) reason = 'scattered marks, not one digit';
    return { found: !reason, reason, area, height, density, edge };
  }

  self.preprocessDigit = preprocessDigit;
  self.findDigit = findDigit;
})();
