// The EGA demo page: search, lab and benchmark views over ega-core compiled to wasm. Everything
// runs in this page; the only requests are for the page's own files.
//
// This module starts the page (the CPU module, what WebGPU the browser offers, the badge) and
// routes between the views. Each view is `{ setup(ctx), show(ctx) }`: the router runs every
// view's setup once when the page starts, in the table's order (it binds the view's controls;
// search also loads the URL's gallery, which the page's timings, the badge and the benchmark
// report on whichever view is open), and a view's show each time its tab is opened (the lab
// builds its models on its first show). The views share what they need through `ctx`:
//
//   params, save()     the page's state, kept in the URL's hash (#view=lab&tau=0.1…)
//   timings            load timings (window.egaTimings); cacheLog: Cache API hits (window.egaCache)
//   report             what the page reports to the browser test (window.ega)
//   backend            probeWebgpu's answer: {backend: 'webgpu' | 'cpu', adapter, software, reason}
//   modules            the CPU module and the WebGPU one (modules.js: cpu, files, webgpu, moduleFor)
//   deviceFor(key)     where search (`searchdevice`) or the lab (`labdevice`) runs
//   gallery            search's loaded gallery (set by search; the benchmark reports on it)
//   labModel           the lab's starting model once loaded (lab.js, loadLabModel)

import { createBenchView } from './bench.js';
import { createLabView } from './lab.js';
import { chooseDevice, cpuModuleReady, createModules, probeWebgpu } from './modules.js';
import { createSearchView } from './search.js';
import { $, errorText, message } from './ui.js';

const VIEWS = { search: createSearchView(), lab: createLabView(), bench: createBenchView() };

const timings = (window.egaTimings = { start: performance.now() });
const cacheLog = (window.egaCache = { hits: 0, misses: 0, files: {} });

window.addEventListener('error', (e) => message(`Unexpected error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => message(`Unexpected error: ${errorText(e.reason)}`));

// The tabs: shows one view's section, marks its tab, keeps it in the URL, and runs its show().
function startRouter(ctx, views) {
  const setups = Object.values(views).map((view) => view.setup(ctx));
  ctx.report.views = Object.keys(views);
  const buttons = document.querySelectorAll('#tabs button');
  const show = (name) => {
    for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${name}`;
    for (const button of buttons) button.classList.toggle('active', button.dataset.view === name);
    ctx.params.set('view', name);
    ctx.save();
    if (Object.hasOwn(views, name)) views[name].show(ctx);
  };
  for (const button of buttons) button.onclick = () => show(button.dataset.view);
  show(ctx.params.get('view') || 'search');
  return Promise.all(setups);
}

// The badge in the corner: the page's backend, where search runs, and why (its title).
function showBackend(ctx) {
  const { backend } = ctx;
  const searchOn = ctx.deviceFor('searchdevice');
  const badge = $('#backend');
  if (backend.backend !== 'webgpu') badge.textContent = 'CPU (wasm)';
  else if (searchOn.device === 'cpu') badge.textContent = `CPU (wasm) search · WebGPU: ${backend.adapter}`;
  else badge.textContent = `WebGPU · ${backend.adapter}`;
  badge.title = searchOn.device === 'cpu' && backend.backend === 'webgpu'
    ? `search runs on the CPU backend: ${searchOn.why}` : backend.reason;
  badge.dataset.backend = backend.backend;
  badge.dataset.search = searchOn.device === 'cpu' ? 'cpu' : backend.backend;
  if (backend.backend === 'cpu') message(`Running on the CPU backend: ${backend.reason}.`, 'info');
  else if (searchOn.device === 'cpu') message(`Search runs on the CPU backend: ${searchOn.why}.`, 'info');
  return badge.dataset.search;
}

async function main() {
  const params = new URLSearchParams(location.hash.slice(1));
  let cpu;
  try {
    cpu = await cpuModuleReady();
  } catch (err) {
    $('#backend').textContent = 'not loaded';
    $('#search-status').textContent = '';
    message(errorText(err));
    return;
  }
  timings.wasmReadyMs = performance.now();
  $('#version').textContent = `ega-core ${cpu.version()}`;
  await cpu.init_backend('cpu');
  const backend = await probeWebgpu(params.get('backend') || 'auto');
  timings.backendReadyMs = performance.now();
  const report = (window.ega = { backend });
  const ctx = {
    params,
    save: () => history.replaceState(null, '', `#${params.toString()}`),
    timings,
    cacheLog,
    report,
    backend,
    modules: createModules({ cpu, cacheLog, timings, report }),
    deviceFor: (key) => chooseDevice(params, backend, key),
    gallery: null,
    labModel: undefined,
  };
  report.search = showBackend(ctx);
  await startRouter(ctx, VIEWS);
}

main();
