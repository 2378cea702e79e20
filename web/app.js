// The EGA demo page: search, lab and benchmark views over ega-core compiled to wasm.
// Everything runs in this page; the only requests are for the page's own files.
//
// Two wasm modules with the same API: trunk's (the `web` package: the CPU backend only, small,
// loaded with the page) and webgpu/ (`web-gpu`: the WebGPU backend and the WGSL kernels, several
// times the size), imported only when search, the lab or the benchmark runs on WebGPU.

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.hash.slice(1));
const timings = (window.egaTimings = { start: performance.now() });
let wasm = null; // the CPU module
let backendInfo = null; // what the browser offers: {backend: 'webgpu' | 'cpu', adapter, software, reason}
let webgpuLoading = null; // the WebGPU module, once asked for (a promise)

// ---------------------------------------------------------------------------------------------
// Messages: every error reaches the page as text, and the page stays usable.

function message(text, kind = 'error') {
  const box = document.createElement('div');
  box.className = `message ${kind}`;
  box.textContent = text;
  const close = document.createElement('button');
  close.textContent = '×';
  close.title = 'dismiss';
  close.onclick = () => box.remove();
  box.append(close);
  $('#messages').append(box);
  if (kind !== 'error') setTimeout(() => box.remove(), 8000);
  return box;
}

function errorText(err) {
  if (err instanceof Error) return err.message;
  return String(err);
}

window.addEventListener('error', (e) => message(`Unexpected error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => message(`Unexpected error: ${errorText(e.reason)}`));

function saveState() {
  history.replaceState(null, '', `#${params.toString()}`);
}

// ---------------------------------------------------------------------------------------------
// Start: the CPU module (trunk's loader sets window.wasmBindings), then what WebGPU offers.

function wasmReady() {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve, reject) => {
    addEventListener('TrunkApplicationStarted', () => resolve(window.wasmBindings), { once: true });
    setTimeout(() => reject(new Error('the wasm module did not load within 90 s (see the browser console); ' +
      'rebuild the page with `trunk build --offline`')), 90_000);
  });
}

async function main() {
  try {
    wasm = await wasmReady();
  } catch (err) {
    $('#backend').textContent = 'not loaded';
    $('#search-status').textContent = '';
    message(errorText(err));
    return;
  }
  timings.wasmReadyMs = performance.now();
  $('#version').textContent = `ega-core ${wasm.version()}`;
  const mode = params.get('backend') || 'auto';
  await wasm.init_backend('cpu');
  backendInfo = await probeWebgpu(mode);
  timings.backendReadyMs = performance.now();
  const searchOn = deviceFor('searchdevice');
  const badge = $('#backend');
  if (backendInfo.backend !== 'webgpu') badge.textContent = 'CPU (wasm)';
  else if (searchOn.device === 'cpu') badge.textContent = `CPU (wasm) search · WebGPU: ${backendInfo.adapter}`;
  else badge.textContent = `WebGPU · ${backendInfo.adapter}`;
  badge.title = searchOn.device === 'cpu' && backendInfo.backend === 'webgpu'
    ? `search runs on the CPU backend: ${searchOn.why}` : backendInfo.reason;
  badge.dataset.backend = backendInfo.backend;
  badge.dataset.search = searchOn.device === 'cpu' ? 'cpu' : backendInfo.backend;
  if (backendInfo.backend === 'cpu') message(`Running on the CPU backend: ${backendInfo.reason}.`, 'info');
  else if (searchOn.device === 'cpu') message(`Search runs on the CPU backend: ${searchOn.why}.`, 'info');
  window.ega = { backend: backendInfo, search: badge.dataset.search };
  setupTabs();
  setupSearch();
  setupLab();
  setupBench();
  await loadGallery(params.get('gallery') || 'shapes', true);
}

// Whether the browser offers a WebGPU adapter (`backend=auto|webgpu|cpu` in the URL), with the
// browser's own description of it (wgpu's is empty on the web) and whether it is a software
// renderer (SwiftShader), where the CPU backend is faster. Nothing is opened here: the WebGPU
// module opens the adapter when something first runs on it.
async function probeWebgpu(mode) {
  const cpu = (reason) => ({ backend: 'cpu', adapter: 'burn flex (wasm)', software: false, reason });
  if (mode === 'cpu') return cpu('the CPU backend was asked for');
  if (mode !== 'auto' && mode !== 'webgpu') {
    message(`Backend: unknown backend "${mode}" in the URL: expected auto, webgpu or cpu.`);
    return cpu(`unknown backend "${mode}"`);
  }
  let why;
  try {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    if (adapter) {
      const info = adapter.info || {};
      const words = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
      const software = /swiftshader|llvmpipe|lavapipe|software/i.test(words) || Boolean(info.isFallbackAdapter || adapter.isFallbackAdapter);
      return { backend: 'webgpu', adapter: words || 'unnamed adapter', software, reason: 'WebGPU adapter found' };
    }
    why = navigator.gpu ? 'the browser offers no WebGPU adapter' : 'this browser has no WebGPU (navigator.gpu is missing)';
  } catch (err) {
    why = `the WebGPU adapter failed: ${errorText(err)}`;
  }
  if (mode === 'webgpu') message(`Backend: ${why}.`);
  return cpu(`${why}; using the CPU backend`);
}

// The WebGPU module (webgpu/, built by scripts/build-webgpu-module.sh), imported and its adapter
// opened the first time something runs on WebGPU. The wasm file is kept in the Cache API under
// its digest (webgpu/module.json), with a progress bar while it downloads.
async function webgpuFiles() {
  const manifest = JSON.parse(new TextDecoder().decode(await fetchFresh('webgpu/module.json')));
  const version = manifest.sha256.slice(0, 16);
  const cache = await openCache('webgpu', version);
  const bar = progressBar('Loading the WebGPU module', manifest.bytes);
  try {
    const bytes = await fetchCached(cache, `webgpu/${manifest.wasm}?v=${version}`, (n) => bar.add(n));
    return { manifest, glue: `./webgpu/${manifest.js}?v=${version}`, bytes };
  } finally {
    bar.close();
  }
}

function webgpuModule() {
  if (!webgpuLoading) {
    webgpuLoading = (async () => {
      const started = performance.now();
      const { glue, bytes } = await webgpuFiles();
      const module = await import(glue);
      await module.default({ module_or_path: bytes });
      const opened = JSON.parse(await module.init_backend('webgpu'));
      timings.webgpuModuleMs = performance.now() - started;
      window.ega.webgpuModule = { bytes: bytes.length, ms: timings.webgpuModuleMs, adapter: opened.adapter };
      return module;
    })();
    webgpuLoading.catch(() => { webgpuLoading = null; }); // a later use tries again
  }
  return webgpuLoading;
}

// The module that runs on `device` ('backend': WebGPU; 'cpu').
async function moduleFor(device) {
  return device === 'backend' ? webgpuModule() : wasm;
}

function setupTabs() {
  const show = (view) => {
    for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
    for (const button of document.querySelectorAll('#tabs button')) button.classList.toggle('active', button.dataset.view === view);
    params.set('view', view);
    saveState();
    if (view === 'lab') lab.show();
  };
  for (const button of document.querySelectorAll('#tabs button')) button.onclick = () => show(button.dataset.view);
  show(params.get('view') || 'search');
}

// ---------------------------------------------------------------------------------------------
// Search

const gallery = { name: null, searcher: null, base: '', known: null, added: 0 };

class MissingFile extends Error {}

async function fetchResponse(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new MissingFile(`${url} could not be fetched (${errorText(err)})`);
  }
  if (!response.ok) throw new MissingFile(`${url} is missing (HTTP ${response.status})`);
  return response;
}

// A small file fetched past every cache (it says which version of the big files is current).
async function fetchFresh(url) {
  return new Uint8Array(await (await fetchResponse(url, { cache: 'no-store' })).arrayBuffer());
}

// The body of a response, read in chunks so that `progress(bytes)` can follow the download.
async function readBody(response, progress) {
  if (!response.body || !progress) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.byteLength;
    progress(value.byteLength);
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

// Model and gallery files, kept in the browser's Cache API under a name that changes with the
// files themselves (`revision`: a digest of the small file that describes them), so that a repeat
// visit downloads nothing and a rebuilt bundle is fetched again. `window.egaCache` counts where each
// file came from (the browser test reads it). Without the Cache API (a page not served from a
// secure origin), plain fetches.
const CACHE_PREFIX = 'ega-';
window.egaCache = { hits: 0, misses: 0, files: {} };

async function digest(bytes) {
  if (!crypto.subtle) return String(bytes.length);
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...hash.slice(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function openCache(family, revision) {
  if (typeof caches === 'undefined') return null;
  try {
    const name = `${CACHE_PREFIX}${family}-${revision}`;
    for (const old of await caches.keys()) {
      if (old.startsWith(`${CACHE_PREFIX}${family}-`) && old !== name) await caches.delete(old);
    }
    return await caches.open(name);
  } catch (err) {
    return null; // storage refused (private mode, quota): fetch as usual
  }
}

async function fetchCached(cache, url, progress) {
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      window.egaCache.hits += 1;
      window.egaCache.files[url] = 'cache';
      const bytes = new Uint8Array(await hit.arrayBuffer());
      if (progress) progress(bytes.length);
      return bytes;
    }
  }
  const response = await fetchResponse(url, { cache: 'no-store' });
  const bytes = await readBody(response, progress);
  window.egaCache.misses += 1;
  window.egaCache.files[url] = 'network';
  if (cache) {
    const type = response.headers.get('content-type') || 'application/octet-stream';
    await cache.put(url, new Response(bytes, { headers: { 'content-type': type } })).catch(() => {});
  }
  return bytes;
}

// A progress bar under the search box while big files download.
function progressBar(label, total) {
  const bar = $('#load-progress');
  let done = 0;
  bar.hidden = false;
  bar.max = Math.max(1, total);
  bar.value = 0;
  const status = $('#search-status');
  const mb = (b) => (b / 2 ** 20).toFixed(1);
  return {
    add(bytes) {
      done += bytes;
      bar.value = Math.min(done, bar.max);
      status.textContent = `${label}: ${mb(done)} of ${mb(total)} MB…`;
    },
    close() {
      bar.hidden = true;
    },
  };
}

async function loadGallery(name, initial = false) {
  const status = $('#search-status');
  $('#search-button').disabled = true;
  status.textContent = `Loading the ${name} model and gallery…`;
  const base = `assets/${name}/`;
  const names = ['model/config.json', 'model/model.safetensors', 'model/tokenizer.json', 'index/index.bin', 'index/index.json'];
  let files;
  let exported;
  let bar;
  try {
    // export.json (always fetched fresh) lists the bundle's files with their sizes; its digest
    // names the cache the big files are kept in.
    const manifest = await fetchFresh(`${base}export.json`);
    exported = JSON.parse(new TextDecoder().decode(manifest));
    const sizes = Object.fromEntries((exported.files || []).map((f) => [f.path, f.bytes]));
    const cache = await openCache(name, await digest(manifest));
    bar = progressBar(`Loading the ${name} model and gallery`, names.reduce((sum, f) => sum + (sizes[f] || 0), 0));
    files = await Promise.all(names.map((f) => fetchCached(cache, base + f, (n) => bar.add(n))));
  } catch (err) {
    if (bar) bar.close();
    status.textContent = `The ${name} gallery is not available.`;
    message(`${errorText(err)}. Build the demo bundles with \`bash scripts/make-demo-bundles.sh\` ` +
      '(or `cargo run -p native -- export`), then rebuild the page with `trunk build --offline`.');
    if (gallery.searcher) $('#search-button').disabled = false;
    $('#gallery').value = gallery.name || name;
    return;
  }
  bar.close();
  const text = new TextDecoder();
  try {
    let { device } = deviceFor('searchdevice');
    let module;
    try {
      module = await moduleFor(device);
    } catch (err) {
      message(`WebGPU: ${errorText(err)}; search runs on the CPU backend.`);
      [device, module] = ['cpu', wasm];
    }
    const searcher = new module.Searcher(files[0], files[1], text.decode(files[2]), files[3], files[4], device);
    if (gallery.searcher) gallery.searcher.free();
    if (gallery.added) message(`Your ${gallery.added} added image(s) were embedded by the ${gallery.name} model and are not part of the ${name} gallery: add them again to search them here.`, 'info');
    Object.assign(gallery, { name, searcher, base, known: exported.known_query, added: 0 });
    $('#backend').dataset.search = searcher.backend();
    window.ega.search = searcher.backend();
  } catch (err) {
    status.textContent = `The ${name} gallery could not be loaded.`;
    message(`${name}: ${errorText(err)}`);
    return;
  }
  if (initial) timings.modelLoadedMs = performance.now();
  $('#gallery').value = name;
  window.ega.gallery = name;
  params.set('gallery', name);
  saveState();
  $('#search-button').disabled = false;
  status.textContent = `${gallery.searcher.count()} images in the ${name} gallery, on ${searchLabel()}.`;
  const query = (initial && params.get('q')) || gallery.known.query;
  $('#query').value = query;
  await runSearch();
  if (initial) timings.firstResultMs = performance.now();
}

async function runSearch() {
  const query = $('#query').value;
  const k = Math.max(1, Math.min(100, parseInt($('#k').value, 10) || 12));
  if (!query.trim()) {
    message('Type a description to search for.', 'info');
    return;
  }
  const status = $('#search-status');
  const started = performance.now();
  let results;
  try {
    results = JSON.parse(await gallery.searcher.search(query, k));
  } catch (err) {
    message(`Search: ${errorText(err)}`);
    return;
  }
  const ms = performance.now() - started;
  params.set('q', query);
  saveState();
  status.textContent = `Top ${results.length} of ${gallery.searcher.count()} images in ${ms.toFixed(0)} ms ` +
    `(${gallery.searcher.backend() === 'webgpu' ? 'WebGPU, WGSL top-k' : 'CPU backend'}).`;
  status.dataset.ms = ms.toFixed(1);
  const grid = $('#results');
  grid.replaceChildren();
  for (const hit of results) {
    const figure = document.createElement('figure');
    figure.className = 'hit';
    figure.dataset.id = hit.id;
    const img = document.createElement('img');
    const thumb = hit.thumbnail || '';
    img.src = /^(blob|data):/.test(thumb) ? thumb : `${gallery.base}index/${thumb}`;
    img.alt = hit.caption || hit.id;
    const caption = document.createElement('figcaption');
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = hit.score.toFixed(4);
    caption.append(score, ' ', hit.caption || hit.id);
    if (!hit.caption) figure.classList.add('yours');
    figure.append(img, caption);
    grid.append(figure);
  }
}

// The largest file accepted, and the largest decoded image (pixels): beyond, a clear refusal.
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_PIXELS = 100e6;

function drawContained(bitmap, side) {
  const canvas = new OffscreenCanvas(side, side);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, side, side);
  const scale = Math.min(side / bitmap.width, side / bitmap.height);
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, (side - w) / 2, (side - h) / 2, w, h);
  return canvas;
}

async function addFiles(files) {
  if (!gallery.searcher) {
    message('The gallery is not loaded yet.', 'info');
    return;
  }
  for (const file of files) {
    const looksLikeImage = file.type.startsWith('image/') || /\.(png|jpe?g|gif|webp|bmp|avif)$/i.test(file.name);
    if (!looksLikeImage) {
      message(`${file.name} is not an image (type ${file.type || 'unknown'}); skipped.`);
      continue;
    }
    if (file.size > MAX_FILE_BYTES) {
      message(`${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MB; images up to 64 MB are accepted.`);
      continue;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (err) {
      message(`${file.name} could not be decoded: the file is damaged or not an image format this browser reads.`);
      continue;
    }
    try {
      const pixels = bitmap.width * bitmap.height;
      if (pixels > MAX_PIXELS) {
        message(`${file.name} is ${(pixels / 1e6).toFixed(0)} megapixels; up to 100 are accepted.`);
        continue;
      }
      const side = gallery.searcher.image_size();
      const input = drawContained(bitmap, side).getContext('2d').getImageData(0, 0, side, side).data;
      const rgb = new Uint8Array(side * side * 3);
      for (let i = 0, j = 0; i < input.length; i += 4, j += 3) {
        rgb[j] = input[i];
        rgb[j + 1] = input[i + 1];
        rgb[j + 2] = input[i + 2];
      }
      const thumb = URL.createObjectURL(await drawContained(bitmap, 96).convertToBlob({ type: 'image/png' }));
      const row = await gallery.searcher.add_image(rgb, side, side, file.name, thumb);
      gallery.added += 1;
      const scaled = pixels > side * side ? `, downscaled from ${bitmap.width}×${bitmap.height}` : '';
      message(`Added ${file.name} as image ${row + 1} of the gallery${scaled}. Search for it by describing it.`, 'info');
    } catch (err) {
      message(`${file.name}: ${errorText(err)}`);
    } finally {
      bitmap.close();
    }
  }
  $('#search-status').textContent = `${gallery.searcher.count()} images in the ${gallery.name} gallery ` +
    `(${gallery.added} of them yours), on ${searchLabel()}.`;
}

function setupSearch() {
  $('#search-form').onsubmit = (e) => {
    e.preventDefault();
    runSearch();
  };
  $('#gallery').onchange = (e) => loadGallery(e.target.value);
  $('#files').onchange = (e) => {
    addFiles([...e.target.files]);
    e.target.value = '';
  };
  const zone = $('#dropzone');
  zone.ondragover = (e) => {
    e.preventDefault();
    zone.classList.add('over');
  };
  zone.ondragleave = () => zone.classList.remove('over');
  zone.ondrop = (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    addFiles([...e.dataTransfer.files]);
  };
  // A file dropped anywhere else must not make the browser navigate away from the page.
  addEventListener('dragover', (e) => e.preventDefault());
  addEventListener('drop', (e) => e.preventDefault());
}

// ---------------------------------------------------------------------------------------------
// Lab

const WORKED_EXAMPLE = { s: [0.9, 0.8, 0.3, 0.1, 0.7, 0.6], n: 2, m: 3 };
const DEFAULTS = { mode: 'live', tau: 0.05, alpha: 1, tauh: 0.05, rescale: 'sum', bs: 6, neg: 1, labdevice: null };

// Where search (`searchdevice`) or the lab (`labdevice`) runs: the page's backend, except on a
// software WebGPU adapter (SwiftShader: each kernel runs on the CPU, slower than the CPU backend
// in wasm); `searchdevice=webgpu|cpu` / `labdevice=webgpu|cpu` in the URL overrides.
function deviceFor(key) {
  const asked = params.get(key);
  if (asked === 'webgpu' || asked === 'cpu') return { device: asked === 'webgpu' ? 'backend' : 'cpu', why: `chosen in the URL (${key})` };
  if (backendInfo.backend !== 'webgpu') return { device: 'cpu', why: 'the page runs on the CPU backend' };
  if (backendInfo.software) {
    return { device: 'cpu', why: `the WebGPU adapter (${backendInfo.adapter}) is a software renderer, slower than the CPU backend; add ${key}=webgpu to the URL to use it anyway` };
  }
  return { device: 'backend', why: 'WebGPU' };
}

function searchLabel() {
  return gallery.searcher && gallery.searcher.backend() === 'webgpu' ? 'WebGPU' : 'the CPU backend';
}

// The lab's starting model (assets/lab/model), fetched once; null when it is missing.
let labModel;
async function labModelFiles() {
  if (labModel !== undefined) return labModel;
  try {
    const config = await fetchFresh('assets/lab/model/config.json');
    const cache = await openCache('lab', await digest(config));
    const files = await Promise.all(['model.safetensors', 'tokenizer.json'].map((f) => fetchCached(cache, `assets/lab/model/${f}`)));
    labModel = { config, weights: files[0], tokenizer: new TextDecoder().decode(files[1]) };
  } catch (err) {
    message(`${errorText(err)}: the lab starts from a fresh, untrained model instead (build the starting model with ` +
      '`bash scripts/make-demo-bundles.sh lab`).');
    labModel = null;
  }
  return labModel;
}

async function newLab(config, device) {
  const json = JSON.stringify(config);
  const module = await moduleFor(device);
  return labModel ? new module.Lab(json, device, labModel.config, labModel.weights, labModel.tokenizer) : new module.Lab(json, device);
}
const MATRICES = [
  ['s', 'S', 'cosine similarities S = Q Tᵀ', 'diverging'],
  ['probs', 'P', 'P = softmax(S/τ) of each row', 'sequential'],
  ['hardness', 'h', 'h = σ((S[i][j] − S[i][i])/τ_h): how close a negative comes to the positive', 'sequential'],
  ['amplified', 'P̄', 'P̄ = P·(1 + α·h) off the diagonal (EGA); info-NCE keeps P', 'sequential'],
  ['grad', 'G', 'G = ∂L/∂S = (P̄ − I)/(Nτ): the push each pair gets', 'diverging'],
];

const lab = {
  engine: null,
  history: [],
  playing: false,
  busy: false,
  views: null,
  info: null,
  shown: false,

  setting(name) {
    const value = params.get(name);
    if (value === null) return DEFAULTS[name];
    return typeof DEFAULTS[name] === 'number' ? Number(value) : value;
  },

  config() {
    return {
      tau: this.setting('tau'), alpha: this.setting('alpha'), tau_h: this.setting('tauh'),
      rescale: this.setting('rescale'), batch_size: this.setting('bs'), hard_negatives: this.setting('neg'),
    };
  },

  async show() {
    if (this.shown) return;
    this.shown = true;
    for (const name of ['tau', 'alpha', 'tauh', 'bs', 'neg', 'rescale']) {
      const input = $(`#${name}`);
      input.value = this.setting(name);
      const output = document.querySelector(`output[for=${name}]`);
      if (output) output.textContent = input.value;
      input.oninput = () => {
        if (output) output.textContent = input.value;
      };
      input.onchange = () => this.changed(name, input.value);
    }
    $('#mode-example').onclick = () => this.preset('example');
    $('#mode-live').onclick = () => this.preset('live');
    $('#play').onclick = () => (this.playing ? this.pause() : this.play());
    $('#step').onclick = () => this.stepOnce();
    $('#reset').onclick = () => {
      params.set('step', '0');
      this.rebuild();
    };
    $('#row').onchange = () => {
      params.set('row', $('#row').value);
      saveState();
      this.drawBars();
    };
    await this.rebuild(Number(params.get('step') || 0));
  },

  preset(mode) {
    this.pause();
    params.set('mode', mode);
    if (mode === 'example') {
      for (const [k, v] of Object.entries({ tau: 0.1, tauh: 0.1, alpha: 1, rescale: 'none' })) params.set(k, v);
    }
    for (const name of ['tau', 'alpha', 'tauh', 'rescale']) {
      $(`#${name}`).value = this.setting(name);
      const output = document.querySelector(`output[for=${name}]`);
      if (output) output.textContent = $(`#${name}`).value;
    }
    params.set('step', '0');
    saveState();
    this.rebuild();
  },

  async changed(name, value) {
    params.set(name, value);
    saveState();
    if (this.setting('mode') === 'example') return this.refresh();
    if (name === 'bs' || name === 'neg') {
      params.set('step', '0');
      return this.rebuild();
    }
    try {
      const c = this.config();
      this.engine.set_loss(c.tau, c.alpha, c.tau_h, c.rescale === 'sum');
    } catch (err) {
      message(`Lab: ${errorText(err)}`);
    }
    await this.refresh();
  },

  async rebuild(replay = 0) {
    this.pause();
    const live = this.setting('mode') === 'live';
    document.body.classList.toggle('example-mode', !live);
    $('#mode-example').classList.toggle('active', !live);
    $('#mode-live').classList.toggle('active', live);
    $('#lab-explain').textContent = live
      ? 'A real batch from the shapes generator: each caption, its image, and images that differ from it in one ' +
        'attribute (deliberate hard negatives). Two copies of a small trained model fine-tune side by side, one with ' +
        'info-NCE and one with EGA, from the same weights and on the same batches. Try rescale = none: at α = 1 the ' +
        'extra push adds up and drives the EGA copy\'s embeddings apart (its loss climbs toward ln M); rescale = sum ' +
        'only redistributes the push toward the hard negatives.'
      : 'The worked example of docs/ega.md: S = [[0.9, 0.8, 0.3], [0.1, 0.7, 0.6]], N = 2, M = 3 (target 2 is an extra hard ' +
        'negative), τ = τ_h = 0.1, α = 1. Every number below can be checked against docs/ega.md.';
    this.history = [];
    if (this.engine) {
      this.engine.free();
      this.engine = null;
    }
    if (live) {
      const status = $('#lab-status');
      status.textContent = 'Building the batch and the two models…';
      await new Promise((r) => setTimeout(r, 0));
      await labModelFiles();
      const where = deviceFor('labdevice');
      try {
        this.engine = await newLab(this.config(), where.device);
        this.info = JSON.parse(this.engine.view_info());
        this.where = `training on ${this.engine.device() === 'webgpu' ? 'WebGPU' : 'the CPU backend'}` +
          (where.device === 'cpu' && backendInfo.backend === 'webgpu' ? ` (${where.why})` : '');
        status.textContent = `Ready: ${labModel ? 'two copies of the trained tiny model (assets/lab)' : 'two copies of a fresh tiny model'}, ${this.where}.`;
      } catch (err) {
        status.textContent = '';
        message(`Lab: ${errorText(err)}`);
        return;
      }
      this.drawBatch();
      await this.evaluate();
      const target = Math.min(replay, 300);
      if (target > 0) {
        status.textContent = `Replaying ${target} steps from the URL…`;
        for (let i = 0; i < target; i++) await this.trainStep(false);
      }
    } else {
      this.info = null;
      this.drawBatch();
    }
    await this.refresh();
  },

  async trainStep(draw = true) {
    if (this.busy || !this.engine) return;
    this.busy = true;
    try {
      const started = performance.now();
      const result = JSON.parse(await this.engine.step());
      const ms = performance.now() - started;
      const point = { step: result.step + 1, loss: result.losses, alpha: result.alpha, ms };
      this.history.push(point);
      if (point.step % 5 === 0) await this.evaluate();
      params.set('step', String(point.step));
      saveState();
      $('#lab-status').textContent = `step ${point.step} · loss info-NCE ${result.losses[0].toFixed(4)}, ` +
        `EGA ${result.losses[1].toFixed(4)} · α ${result.alpha.toFixed(2)} · ${ms.toFixed(0)} ms a step (both models), ${this.where}`;
      if (draw) await this.refresh();
    } catch (err) {
      this.pause();
      message(`Training: ${errorText(err)}`);
    } finally {
      this.busy = false;
    }
  },

  async evaluate() {
    const metrics = JSON.parse(await this.engine.evaluate());
    const step = this.engine.step_count();
    const last = this.history[this.history.length - 1];
    if (last && last.step === step) last.metrics = metrics;
    else this.history.push({ step, metrics });
  },

  async stepOnce() {
    this.pause();
    await this.trainStep();
  },

  async play() {
    if (!this.engine) return;
    this.playing = true;
    $('#play').textContent = '❚❚ Pause';
    while (this.playing) {
      await this.trainStep();
      await new Promise((r) => setTimeout(r, 0));
    }
  },

  pause() {
    this.playing = false;
    $('#play').textContent = '▶ Play';
  },

  async refresh() {
    const c = this.config();
    let views;
    if (this.setting('mode') === 'example') {
      const { s, n, m } = WORKED_EXAMPLE;
      try {
        const info = JSON.parse(wasm.ega_example(new Float64Array(s), n, m, c.tau, 0, c.tau_h, false));
        const ega = JSON.parse(wasm.ega_example(new Float64Array(s), n, m, c.tau, c.alpha, c.tau_h, c.rescale === 'sum'));
        views = { n, m, views: [
          { loss: 'info-NCE', s, probs: info.probs, hardness: info.hardness, amplified: info.probs, grad: info.grad_infonce, value: info.loss },
          { loss: 'EGA', s, probs: ega.probs, hardness: ega.hardness, amplified: ega.amplified_probs, grad: ega.grad, value: ega.loss },
        ] };
      } catch (err) {
        message(`Lab: ${errorText(err)}`);
        return;
      }
    } else {
      if (!this.engine) return;
      views = JSON.parse(await this.engine.views());
    }
    this.views = views;
    window.ega.lab = { views, history: this.history, step: this.engine ? this.engine.step_count() : 0 };
    this.drawMatrices();
    this.fillRows();
    this.drawBars();
    if (this.setting('mode') === 'live') {
      this.drawCurves();
      this.drawPca();
    }
  },

  targetLabel(j) {
    const { n } = this.views;
    if (j < n) return `image ${j}`;
    if (this.setting('mode') === 'example' || !this.info) return `extra target ${j}`;
    return `negative of ${this.info.owners[j]}`;
  },

  drawBatch() {
    const box = $('#batch');
    box.replaceChildren();
    if (!this.info) return;
    const { captions, side, m: count, n, owners } = this.info;
    const pixels = this.engine.view_pixels();
    const list = document.createElement('ol');
    list.className = 'captions';
    list.start = 0;
    for (const caption of captions) {
      const li = document.createElement('li');
      li.textContent = caption;
      list.append(li);
    }
    const images = document.createElement('div');
    images.className = 'thumbs';
    for (let t = 0; t < count; t++) {
      const canvas = document.createElement('canvas');
      canvas.width = side;
      canvas.height = side;
      const data = new ImageData(side, side);
      for (let p = 0; p < side * side; p++) {
        data.data.set([pixels[(t * side * side + p) * 3], pixels[(t * side * side + p) * 3 + 1], pixels[(t * side * side + p) * 3 + 2], 255], p * 4);
      }
      canvas.getContext('2d').putImageData(data, 0, 0);
      const figure = document.createElement('figure');
      const label = document.createElement('figcaption');
      label.textContent = t < n ? `${t}` : `neg ${owners[t]}`;
      figure.className = t < n ? 'positive' : 'negative';
      figure.append(canvas, label);
      images.append(figure);
    }
    const title = document.createElement('h3');
    title.textContent = 'The batch: queries (captions) and targets (images)';
    box.append(title, list, images);
  },

  drawMatrices() {
    const { n, m, views } = this.views;
    const box = $('#matrices');
    box.replaceChildren();
    const showNumbers = n * m <= 48;
    for (const [key, symbol, explain, scale] of MATRICES) {
      const row = document.createElement('div');
      row.className = 'matrix-row';
      const head = document.createElement('div');
      head.className = 'matrix-explain';
      head.innerHTML = `<strong>${symbol}</strong><br>`;
      head.append(explain);
      row.append(head);
      const values = views.flatMap((v) => v[key]);
      const extent = Math.max(1e-12, ...values.map(Math.abs));
      // S: its own range (a young model's similarities all sit near 1); the others: 0 or ±extent.
      const [low, high] = [Math.min(...values), Math.max(...values)];
      const shade = key === 's' ? (v) => colour((v - low) / Math.max(1e-12, high - low), 'sequential') : (v) => colour(v / extent, scale);
      for (const view of views) {
        const table = document.createElement('table');
        table.className = 'heat';
        table.dataset.matrix = `${view.loss === 'EGA' ? 'ega' : 'infonce'}-${key}`;
        const caption = document.createElement('caption');
        caption.textContent = `${view.loss}: ${symbol}` + (key === 's' ? ` (loss ${view.value.toFixed(4)})` : '');
        table.append(caption);
        for (let i = 0; i < n; i++) {
          const tr = document.createElement('tr');
          for (let j = 0; j < m; j++) {
            const value = view[key][i * m + j];
            const td = document.createElement('td');
            const blank = key === 'hardness' && i === j;
            td.dataset.value = String(value);
            td.dataset.i = i;
            td.dataset.j = j;
            td.title = `${symbol}[${i}][${j}] = ${blank ? '— (the positive)' : value.toFixed(6)}\nquery ${i} vs ${this.targetLabel(j)}`;
            td.style.background = blank ? '#eee' : shade(value);
            if (i === j) td.classList.add('diag');
            if (showNumbers) td.textContent = blank ? '–' : value.toFixed(4);
            tr.append(td);
          }
          table.append(tr);
        }
        row.append(table);
      }
      box.append(row);
    }
  },

  fillRows() {
    const select = $('#row');
    const { n } = this.views;
    const chosen = Math.min(Number(params.get('row') || 0), n - 1);
    select.replaceChildren(...Array.from({ length: n }, (_, i) => new Option(String(i), String(i))));
    select.value = String(chosen);
  },

  drawBars() {
    if (!this.views) return;
    const { m, views } = this.views;
    const i = Number($('#row').value || 0);
    const pushes = views.map((v) => Array.from({ length: m }, (_, j) => Math.abs(v.grad[i * m + j])));
    const largest = Math.max(1e-12, ...pushes.flatMap((p, k) => p.filter((_, j) => j !== i)));
    const box = $('#bars');
    box.replaceChildren();
    for (let j = 0; j < m; j++) {
      if (j === i) continue;
      const row = document.createElement('div');
      row.className = 'bar-row';
      const label = document.createElement('span');
      label.className = 'bar-label';
      label.textContent = this.targetLabel(j);
      row.append(label);
      for (const [k, name] of [[0, 'info-NCE'], [1, 'EGA']]) {
        const bar = document.createElement('span');
        bar.className = `bar ${k ? 'ega' : 'infonce'}`;
        bar.style.width = `${(100 * pushes[k][j]) / largest}%`;
        bar.title = `${name}: |G[${i}][${j}]| = ${pushes[k][j].toFixed(6)}`;
        bar.textContent = pushes[k][j].toFixed(3);
        row.append(bar);
      }
      const ratio = document.createElement('span');
      ratio.className = 'bar-ratio';
      ratio.textContent = pushes[0][j] > 0 ? `×${(pushes[1][j] / pushes[0][j]).toFixed(2)}` : '';
      row.append(ratio);
      box.append(row);
    }
  },

  drawCurves() {
    const box = $('#curves');
    const losses = this.history.filter((p) => p.loss);
    const evals = this.history.filter((p) => p.metrics);
    box.replaceChildren(
      chart('loss', losses.map((p) => [p.step, p.loss[0]]), losses.map((p) => [p.step, p.loss[1]])),
      chart('held-out R@1', evals.map((p) => [p.step, p.metrics[0].r1]), evals.map((p) => [p.step, p.metrics[1].r1]), [0, 1]),
      chart('hard-negative acc', evals.map((p) => [p.step, p.metrics[0].hard_negative_acc]),
        evals.map((p) => [p.step, p.metrics[1].hard_negative_acc]), [0, 1]),
    );
  },

  drawPca() {
    const { n, m, views } = this.views;
    $('#pca').replaceChildren(...views.map((v) => scatter(v.loss, v.pca, n, m, this.info.owners)));
  },
};

function colour(x, scale) {
  // sequential: white → blue; diverging: red (negative) ← white → blue (positive)
  const t = Math.max(-1, Math.min(1, x));
  if (scale === 'sequential' || t >= 0) {
    const a = Math.abs(t);
    return `rgb(${Math.round(255 - 200 * a)}, ${Math.round(255 - 140 * a)}, ${Math.round(255 - 30 * a)})`;
  }
  const a = -t;
  return `rgb(${Math.round(255 - 20 * a)}, ${Math.round(255 - 170 * a)}, ${Math.round(255 - 170 * a)})`;
}

const SVG = 'http://www.w3.org/2000/svg';
function svgElement(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function chart(title, first, second, yRange = null) {
  const w = 300, h = 160, pad = 30;
  const svg = svgElement('svg', { width: w, height: h, class: 'chart' });
  svg.dataset.title = title;
  const all = [...first, ...second];
  const t = svgElement('text', { x: pad, y: 14, class: 'chart-title' });
  t.textContent = `${title} — info-NCE (grey), EGA (orange)`;
  svg.append(t);
  if (all.length === 0) return svg;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const [y0, y1] = yRange || [Math.min(...ys), Math.max(...ys) + 1e-9];
  const px = (x) => pad + ((x - x0) / (x1 - x0)) * (w - pad - 8);
  const py = (y) => h - pad + 8 - ((y - y0) / (y1 - y0 || 1)) * (h - pad - 16);
  svg.append(svgElement('line', { x1: pad, y1: h - pad + 8, x2: w - 8, y2: h - pad + 8, class: 'axis' }));
  for (const [label, y] of [[y0, py(y0)], [y1, py(y1)]]) {
    const tick = svgElement('text', { x: 2, y: y + 4, class: 'tick' });
    tick.textContent = label.toFixed(2);
    svg.append(tick);
  }
  const end = svgElement('text', { x: w - 40, y: h - 4, class: 'tick' });
  end.textContent = `step ${x1}`;
  svg.append(end);
  for (const [points, cls] of [[first, 'infonce'], [second, 'ega']]) {
    if (!points.length) continue;
    svg.append(svgElement('polyline', { points: points.map(([x, y]) => `${px(x)},${py(y)}`).join(' '), class: `line ${cls}` }));
  }
  return svg;
}

function scatter(title, points, n, m, owners) {
  const size = 260, pad = 14;
  const svg = svgElement('svg', { width: size, height: size + 16, class: 'scatter' });
  const t = svgElement('text', { x: 4, y: 12, class: 'chart-title' });
  t.textContent = title;
  svg.append(t);
  const extent = Math.max(1e-9, ...points.flat().map(Math.abs));
  const p = ([x, y]) => [size / 2 + (x / extent) * (size / 2 - pad), 16 + size / 2 - (y / extent) * (size / 2 - pad)];
  const hue = (i) => `hsl(${(i * 360) / n}, 70%, 45%)`;
  for (let i = 0; i < n; i++) {
    const [a, b] = [p(points[i]), p(points[n + i])];
    svg.append(svgElement('line', { x1: a[0], y1: a[1], x2: b[0], y2: b[1], stroke: hue(i), class: 'pair' }));
  }
  for (let j = 0; j < m; j++) {
    const [x, y] = p(points[n + j]);
    const owner = owners[j];
    svg.append(svgElement('rect', { x: x - 4, y: y - 4, width: 8, height: 8, stroke: hue(owner),
      fill: j < n ? hue(owner) : 'white' }));
  }
  for (let i = 0; i < n; i++) {
    const [x, y] = p(points[i]);
    svg.append(svgElement('circle', { cx: x, cy: y, r: 4.5, fill: hue(i) }));
  }
  return svg;
}

function setupLab() {
  window.egaLab = lab;
}

// ---------------------------------------------------------------------------------------------
// Benchmarks: measured in this page; results also in window.egaBench for the browser test.

function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function unitRows(rows, dim, random) {
  const values = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let norm = 0;
    for (let c = 0; c < dim; c++) {
      const v = random() * 2 - 1;
      values[r * dim + c] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let c = 0; c < dim; c++) values[r * dim + c] /= norm;
  }
  return values;
}

function topkJs(values, dim, query, k) {
  const rows = values.length / dim;
  const best = []; // [score, row], descending
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const o = r * dim;
    for (let c = 0; c < dim; c++) s += values[o + c] * query[c];
    if (best.length < k || s > best[best.length - 1][0]) {
      let at = best.length;
      while (at > 0 && best[at - 1][0] < s) at--;
      best.splice(at, 0, [s, r]);
      if (best.length > k) best.pop();
    }
  }
  return best.map((b) => b[1]);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function gzipSize(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

async function runBench() {
  const status = $('#bench-status');
  const table = $('#bench-table');
  const results = { backend: backendInfo.backend, adapter: backendInfo.adapter, userAgent: navigator.userAgent };
  const rows = [];
  const show = () => {
    table.replaceChildren();
    for (const [name, value, note] of rows) {
      const tr = table.insertRow();
      tr.insertCell().textContent = name;
      tr.insertCell().textContent = value;
      tr.insertCell().textContent = note || '';
    }
  };
  $('#bench-run').disabled = true;
  try {
    status.textContent = 'wasm size…';
    const mib = (b) => (b / 2 ** 20).toFixed(1);
    const wasmEntry = performance.getEntriesByType('resource').find((e) => /_bg-?[0-9a-f]*\.wasm$/.test(new URL(e.name).pathname) && !e.name.includes('/webgpu/'));
    if (wasmEntry) {
      const bytes = new Uint8Array(await (await fetch(wasmEntry.name)).arrayBuffer());
      results.wasmBytes = bytes.length;
      results.wasmGzipBytes = await gzipSize(bytes);
      rows.push(['wasm module (CPU; loaded with the page)', `${mib(results.wasmBytes)} MiB, ${mib(results.wasmGzipBytes)} MiB gzipped`,
        new URL(wasmEntry.name).pathname]);
    }
    try {
      const { manifest, bytes } = await webgpuFiles(); // from the Cache API once the module was loaded
      results.webgpuWasmBytes = bytes.length;
      results.webgpuWasmGzipBytes = await gzipSize(bytes);
      rows.push(['wasm module (WebGPU; loaded when something runs on WebGPU)',
        `${mib(results.webgpuWasmBytes)} MiB, ${mib(results.webgpuWasmGzipBytes)} MiB gzipped`, `/webgpu/${manifest.wasm}`]);
    } catch (err) {
      rows.push(['wasm module (WebGPU)', 'missing', errorText(err)]);
    }
    if (timings.firstResultMs) {
      const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
      Object.assign(results, { wasmReadyMs: timings.wasmReadyMs, backendReadyMs: timings.backendReadyMs,
        modelLoadedMs: timings.modelLoadedMs, firstResultMs: timings.firstResultMs });
      rows.push(['page load → first search result', s(timings.firstResultMs),
        `wasm ready at ${s(timings.wasmReadyMs)}, backend at ${s(timings.backendReadyMs)}, model + gallery loaded at ` +
        `${s(timings.modelLoadedMs)}; ${gallery.name} gallery, search on ${searchLabel()}`]);
    }
    show();

    const [n, dim, k, reps] = [100_000, 256, 10, 5];
    status.textContent = `top-${k} over ${n} × ${dim}: making the index…`;
    await new Promise((r) => setTimeout(r, 0));
    const random = mulberry32(7);
    const values = unitRows(n, dim, random);
    const query = unitRows(1, dim, random);
    const topkModule = backendInfo.backend === 'webgpu' ? await webgpuModule() : wasm;
    const bench = new topkModule.TopkBench(values, dim);
    const expected = topkJs(values, dim, query, k);
    const first = JSON.parse(await bench.run(query, k)); // warm-up (shader compilation, upload)
    const kernelMs = [];
    const jsMs = [];
    let agree = JSON.stringify(first) === JSON.stringify(expected);
    for (let r = 0; r < reps; r++) {
      status.textContent = `top-${k}: run ${r + 1} of ${reps}…`;
      let t = performance.now();
      const got = JSON.parse(await bench.run(query, k));
      kernelMs.push(performance.now() - t);
      agree &&= JSON.stringify(got) === JSON.stringify(expected);
      t = performance.now();
      topkJs(values, dim, query, k);
      jsMs.push(performance.now() - t);
      await new Promise((r2) => setTimeout(r2, 0));
    }
    bench.free();
    Object.assign(results, { topkRows: n, topkDim: dim, topkK: k, topkKernelMs: median(kernelMs), topkJsMs: median(jsMs),
      topkSpeedup: median(jsMs) / median(kernelMs), topkSameRows: agree });
    rows.push([`top-${k} of ${n} × ${dim}, ${backendInfo.backend === 'webgpu' ? 'WGSL kernels' : 'CPU backend (burn sort)'}`,
      `${results.topkKernelMs.toFixed(1)} ms`, `median of ${reps}, query upload + read-back included`]);
    rows.push([`top-${k}, plain JavaScript loop`, `${results.topkJsMs.toFixed(1)} ms`, `median of ${reps}`]);
    rows.push(['speed-up of the device search', `${results.topkSpeedup.toFixed(2)}×`, agree ? 'same rows' : 'ROWS DIFFER']);
    show();

    await labModelFiles();
    const devices = [['cpu', 'CPU backend']];
    if (backendInfo.backend === 'webgpu') devices.push(['backend', `WebGPU (${backendInfo.adapter})`]);
    for (const [device, label] of devices) {
      status.textContent = `lab: training steps on the ${label}…`;
      const probe = await newLab({ batch_size: 6, hard_negatives: 1 }, device);
      await probe.step(); // warm-up (shader compilation on WebGPU)
      const stepMs = [];
      for (let r = 0; r < (device === 'cpu' ? 3 : 1); r++) {
        const t = performance.now();
        await probe.step();
        stepMs.push(performance.now() - t);
      }
      probe.free();
      results[device === 'cpu' ? 'labStepCpuMs' : 'labStepWebgpuMs'] = median(stepMs);
      rows.push([`lab step on the ${label}: tiny model, 6 pairs + 6 hard negatives, both copies`, `${median(stepMs).toFixed(0)} ms`,
        `${stepMs.length === 1 ? 'one step' : `median of ${stepMs.length}`}, after one warm-up`]);
      show();
    }
    status.textContent = `Done, on ${backendInfo.backend === 'webgpu' ? `WebGPU (${backendInfo.adapter})` : 'the CPU backend'}.`;
  } catch (err) {
    status.textContent = 'Stopped.';
    message(`Benchmark: ${errorText(err)}`);
    results.error = errorText(err);
  } finally {
    $('#bench-run').disabled = false;
  }
  window.egaBench = results;
  return results;
}

function setupBench() {
  $('#bench-run').onclick = () => runBench();
  window.egaRunBench = runBench;
}

main();
