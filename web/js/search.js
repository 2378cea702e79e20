// The search view: a gallery (a demo bundle's model and index, from assets/), text queries ranked
// by the wasm Searcher, and the visitor's own images, embedded in the page.

import { digest, fetchFresh, openStore } from './files.js';
import { $, errorText, message, progressBar } from './ui.js';

// The largest file accepted, and the largest decoded image (pixels): beyond, a clear refusal.
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_PIXELS = 100e6;

const BUNDLE_FILES = ['model/config.json', 'model/model.safetensors', 'model/tokenizer.json', 'index/index.bin', 'index/index.json'];

// Where a gallery's searcher runs, in words.
export function searchLabel(gallery) {
  return gallery && gallery.searcher && gallery.searcher.backend() === 'webgpu' ? 'WebGPU' : 'the CPU backend';
}

export function createSearchView() {
  // The loaded gallery; the view shares it as ctx.gallery (the benchmark reports on it).
  const gallery = { name: null, searcher: null, base: '', known: null, added: 0 };

  async function loadGallery(ctx, name, initial = false) {
    const { params, timings, report } = ctx;
    const status = $('#search-status');
    $('#search-button').disabled = true;
    status.textContent = `Loading the ${name} model and gallery…`;
    const base = `assets/${name}/`;
    let files;
    let exported;
    let bar;
    try {
      // export.json (always fetched fresh) lists the bundle's files with their sizes; its digest
      // names the cache the big files are kept in.
      const manifest = await fetchFresh(`${base}export.json`);
      exported = JSON.parse(new TextDecoder().decode(manifest));
      const sizes = Object.fromEntries((exported.files || []).map((f) => [f.path, f.bytes]));
      const store = await openStore(ctx.cacheLog, name, await digest(manifest));
      bar = progressBar(`Loading the ${name} model and gallery`, BUNDLE_FILES.reduce((sum, f) => sum + (sizes[f] || 0), 0));
      files = await Promise.all(BUNDLE_FILES.map((f) => store.fetch(base + f, (n) => bar.add(n))));
    } catch (err) {
      if (bar) bar.close();
      status.textContent = `The ${name} gallery is not available.`;
      if (exported && exported.parts) {
        // A split bundle: git keeps its parts; the model file is assembled from the pretrained
        // checkpoint by a set-up step.
        message(`${errorText(err)}. This model's decoder is SmolLM2-135M's: assemble it with ` +
          `\`bash scripts/setup-extras.sh pretrained && ${exported.parts.assemble}\`, ` +
          'then rebuild the page with `trunk build --offline`.');
      } else {
        message(`${errorText(err)}. Build the demo bundles with \`bash scripts/make-demo-bundles.sh\` ` +
          '(or `cargo run -p native -- export`), then rebuild the page with `trunk build --offline`.');
      }
      if (gallery.searcher) $('#search-button').disabled = false;
      $('#gallery').value = gallery.name || name;
      return;
    }
    bar.close();
    const text = new TextDecoder();
    try {
      let { device } = ctx.deviceFor('searchdevice');
      let module;
      try {
        module = await ctx.modules.moduleFor(device);
      } catch (err) {
        message(`WebGPU: ${errorText(err)}; search runs on the CPU backend.`);
        [device, module] = ['cpu', ctx.modules.cpu];
      }
      const searcher = new module.Searcher(files[0], files[1], text.decode(files[2]), files[3], files[4], device);
      if (gallery.searcher) gallery.searcher.free();
      if (gallery.added) message(`Your ${gallery.added} added image(s) were embedded by the ${gallery.name} model and are not part of the ${name} gallery: add them again to search them here.`, 'info');
      Object.assign(gallery, { name, searcher, base, known: exported.known_query, added: 0 });
      $('#backend').dataset.search = searcher.backend();
      report.search = searcher.backend();
    } catch (err) {
      status.textContent = `The ${name} gallery could not be loaded.`;
      message(`${name}: ${errorText(err)}`);
      return;
    }
    if (initial) timings.modelLoadedMs = performance.now();
    $('#gallery').value = name;
    report.gallery = name;
    params.set('gallery', name);
    ctx.save();
    $('#search-button').disabled = false;
    status.textContent = `${gallery.searcher.count()} images in the ${name} gallery, on ${searchLabel(gallery)}.`;
    const query = (initial && params.get('q')) || gallery.known.query;
    $('#query').value = query;
    await runSearch(ctx);
    if (initial) timings.firstResultMs = performance.now();
  }

  async function runSearch(ctx) {
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
    ctx.params.set('q', query);
    ctx.save();
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

  // The visitor's images: decoded and downscaled by the browser, embedded by the model in the
  // page, added to the gallery. They are never sent anywhere.
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
      `(${gallery.added} of them yours), on ${searchLabel(gallery)}.`;
  }

  return {
    // Binds the form, the gallery menu and the drop zone, and loads the URL's gallery (whichever
    // view is open: the page's load timings, the badge and the benchmark report on it).
    setup(ctx) {
      ctx.gallery = gallery;
      $('#search-form').onsubmit = (e) => {
        e.preventDefault();
        runSearch(ctx);
      };
      $('#gallery').onchange = (e) => loadGallery(ctx, e.target.value);
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
      return loadGallery(ctx, ctx.params.get('gallery') || 'shapes', true);
    },
    show() {},
  };
}

// `bitmap` drawn into a `side` × `side` canvas, whole, centred on white.
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
