// The benchmark view: measured in this page, on this machine and backend (module sizes, the
// page's load timings, the device top-k against a JavaScript loop, lab steps). The results are
// also in window.egaBench, and window.egaRunBench runs them, for the browser test.

import { loadLabModel, newLab } from './lab.js';
import { searchLabel } from './search.js';
import { $, errorText, message, yieldToPage } from './ui.js';

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

async function runBench(ctx) {
  const { backend, modules, timings } = ctx;
  const status = $('#bench-status');
  const table = $('#bench-table');
  const results = { backend: backend.backend, adapter: backend.adapter, userAgent: navigator.userAgent };
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
      const { manifest, bytes } = await modules.files(); // from the Cache API once the module was loaded
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
        `${s(timings.modelLoadedMs)}; ${ctx.gallery.name} gallery, search on ${searchLabel(ctx.gallery)}`]);
    }
    show();

    const [n, dim, k, reps] = [100_000, 256, 10, 5];
    status.textContent = `top-${k} over ${n} × ${dim}: making the index…`;
    await yieldToPage();
    const random = mulberry32(7);
    const values = unitRows(n, dim, random);
    const query = unitRows(1, dim, random);
    const topkModule = backend.backend === 'webgpu' ? await modules.webgpu() : modules.cpu;
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
      await yieldToPage();
    }
    bench.free();
    Object.assign(results, { topkRows: n, topkDim: dim, topkK: k, topkKernelMs: median(kernelMs), topkJsMs: median(jsMs),
      topkSpeedup: median(jsMs) / median(kernelMs), topkSameRows: agree });
    rows.push([`top-${k} of ${n} × ${dim}, ${backend.backend === 'webgpu' ? 'WGSL kernels' : 'CPU backend (burn sort)'}`,
      `${results.topkKernelMs.toFixed(1)} ms`, `median of ${reps}, query upload + read-back included`]);
    rows.push([`top-${k}, plain JavaScript loop`, `${results.topkJsMs.toFixed(1)} ms`, `median of ${reps}`]);
    rows.push(['speed-up of the device search', `${results.topkSpeedup.toFixed(2)}×`, agree ? 'same rows' : 'ROWS DIFFER']);
    show();

    await loadLabModel(ctx);
    const devices = [['cpu', 'CPU backend']];
    if (backend.backend === 'webgpu') devices.push(['backend', `WebGPU (${backend.adapter})`]);
    for (const [device, label] of devices) {
      status.textContent = `lab: training steps on the ${label}…`;
      const probe = await newLab(ctx, { batch_size: 6, hard_negatives: 1 }, device);
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
    status.textContent = `Done, on ${backend.backend === 'webgpu' ? `WebGPU (${backend.adapter})` : 'the CPU backend'}.`;
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

export function createBenchView() {
  return {
    setup(ctx) {
      $('#bench-run').onclick = () => runBench(ctx);
      window.egaRunBench = () => runBench(ctx);
    },
    show() {},
  };
}
