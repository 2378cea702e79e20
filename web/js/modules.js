// The page's two wasm modules, with the same API: trunk's (the `web` package: the CPU backend
// only, small, loaded with the page) and webgpu/ (`web-gpu`: the WebGPU backend and the WGSL
// kernels, several times the size, built by scripts/build-webgpu-module.sh), imported only when
// search, the lab or the benchmark runs on WebGPU. Also: what WebGPU the browser offers, and
// where search and the lab run.

import { fetchFresh, openStore } from './files.js';
import { errorText, message, progressBar } from './ui.js';

// The CPU module: trunk's generated loader (a module script trunk writes into index.html, which
// imports the hashed `web-<hash>.js` and initialises `web-<hash>_bg.wasm`) sets
// window.wasmBindings and then fires TrunkApplicationStarted.
export function cpuModuleReady() {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve, reject) => {
    addEventListener('TrunkApplicationStarted', () => resolve(window.wasmBindings), { once: true });
    setTimeout(() => reject(new Error('the wasm module did not load within 90 s (see the browser console); ' +
      'rebuild the page with `trunk build --offline`')), 90_000);
  });
}

// Whether the browser offers a WebGPU adapter (`backend=auto|webgpu|cpu` in the URL), with the
// browser's own description of it (wgpu's is empty on the web) and whether it is a software
// renderer (SwiftShader), where the CPU backend is faster. Nothing is opened here: the WebGPU
// module opens the adapter when something first runs on it.
// Returns {backend: 'webgpu' | 'cpu', adapter, software, reason}.
export async function probeWebgpu(mode) {
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

// Where search (`searchdevice`) or the lab (`labdevice`) runs: the page's backend, except on a
// software WebGPU adapter (SwiftShader: each kernel runs on the CPU, slower than the CPU backend
// in wasm); `searchdevice=webgpu|cpu` / `labdevice=webgpu|cpu` in the URL overrides.
// Returns {device: 'backend' (WebGPU) | 'cpu', why}.
export function chooseDevice(params, backend, key) {
  const asked = params.get(key);
  if (asked === 'webgpu' || asked === 'cpu') return { device: asked === 'webgpu' ? 'backend' : 'cpu', why: `chosen in the URL (${key})` };
  if (backend.backend !== 'webgpu') return { device: 'cpu', why: 'the page runs on the CPU backend' };
  if (backend.software) {
    return { device: 'cpu', why: `the WebGPU adapter (${backend.adapter}) is a software renderer, slower than the CPU backend; add ${key}=webgpu to the URL to use it anyway` };
  }
  return { device: 'backend', why: 'WebGPU' };
}

// The modules, for the views: `cpu`; `files()`: the WebGPU module's files (its manifest, the glue's
// URL and the wasm bytes, kept in the Cache API under the digest of webgpu/module.json, with a
// progress bar while they download); `webgpu()`: that module, imported and its adapter opened
// the first time something runs on WebGPU (a promise, shared; a failure lets a later use try
// again); `moduleFor(device)`: the module that runs on `device` ('backend': WebGPU; 'cpu').
// `cacheLog` counts the Cache API's hits; `timings` and `report` (window.egaTimings and
// window.ega) get the module's load time and size.
export function createModules({ cpu, cacheLog, timings, report }) {
  let loading = null;

  async function files() {
    const manifest = JSON.parse(new TextDecoder().decode(await fetchFresh('webgpu/module.json')));
    const version = manifest.sha256.slice(0, 16);
    const store = await openStore(cacheLog, 'webgpu', version);
    const bar = progressBar('Loading the WebGPU module', manifest.bytes);
    try {
      const bytes = await store.fetch(`webgpu/${manifest.wasm}?v=${version}`, (n) => bar.add(n));
      // import() resolves against this module's URL (js/), the fetches against the page's.
      const glue = new URL(`webgpu/${manifest.js}?v=${version}`, document.baseURI).href;
      return { manifest, glue, bytes };
    } finally {
      bar.close();
    }
  }

  function webgpu() {
    if (!loading) {
      loading = (async () => {
        const started = performance.now();
        const { glue, bytes } = await files();
        const module = await import(glue);
        await module.default({ module_or_path: bytes });
        const opened = JSON.parse(await module.init_backend('webgpu'));
        timings.webgpuModuleMs = performance.now() - started;
        report.webgpuModule = { bytes: bytes.length, ms: timings.webgpuModuleMs, adapter: opened.adapter };
        return module;
      })();
      loading.catch(() => { loading = null; }); // a later use tries again
    }
    return loading;
  }

  async function moduleFor(device) {
    return device === 'backend' ? webgpu() : cpu;
  }

  return { cpu, files, webgpu, moduleFor };
}
