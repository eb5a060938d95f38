/* Offline copy: network first (a new export shows at once), the cached copy when the
   network is gone. Every same-origin GET that succeeds is cached, so the page, the
   runtimes' .wasm and the models all work offline once the page has run a model. */
'use strict';

const CACHE = 'edgeport-demo-v2';
const SHELL = ['./', 'index.html', 'style.css', 'app.js', 'worker.js', 'preprocess.js',
  'favicon.svg', 'models/manifest.json'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  // Drop the copies an older page version kept (their names differ from CACHE).
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok) cache.put(request, response.clone());
      return response;
    } catch (e) {
      const cached = await cache.match(request, { ignoreSearch: true });
      if (cached) return cached;
      throw e;
    }
  })());
});
