// The committed demo bundles search the same in wasm as natively: each bundle's known query
// (recorded by `native export` in export.json, with its native score) must rank the same image
// first here, with the same score to 1e-4.
// Usage: node web/tests/search.mjs PKG_DIR   (PKG_DIR: `wasm-bindgen --target nodejs` output)
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const web = require(path.resolve(process.argv[2], 'web.js'));
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

// This is the page's CPU module (the `web` package without its `webgpu` feature): no WebGPU
// backend, and asking for one is a readable error, not a crash.
assert.equal(web.has_webgpu_backend(), false, 'the CPU module was built without WebGPU');
await assert.rejects(web.init_backend('webgpu'), /WebGPU/);

// The split bundle (SmolLM2's decoder) once scripts/test.sh has assembled it from the GGUF.
const bundles = ['openmoji', 'shapes'];
if (existsSync(path.join(root, 'assets/openmoji-lm/model/model.safetensors'))) bundles.push('openmoji-lm');
else if (process.env.REQUIRE_PRETRAINED === '1') assert.fail('REQUIRE_PRETRAINED=1 but assets/openmoji-lm is not assembled');
else console.log('*** SKIPPED wasm search openmoji-lm: not assembled (bash scripts/setup-extras.sh pretrained) ***');

for (const name of bundles) {
  const dir = path.join(root, 'assets', name);
  const read = (file) => readFileSync(path.join(dir, file));
  const report = JSON.parse(read('export.json'));
  const searcher = new web.Searcher(
    read('model/config.json'), read('model/model.safetensors'), read('model/tokenizer.json').toString('utf8'),
    read('index/index.bin'), read('index/index.json'));
  assert.equal(searcher.model_id(), report.model_id);
  const known = report.known_query;
  const started = performance.now();
  const hits = JSON.parse(await searcher.search(known.query, 5));
  const ms = performance.now() - started;
  assert.equal(hits[0].id, known.id, `${name}: ${known.query} → ${JSON.stringify(hits[0])}`);
  assert.ok(Math.abs(hits[0].score - known.score) < 1e-4, `${name}: score ${hits[0].score} vs native ${known.score}`);
  await assert.rejects(searcher.search('', 5), /empty/);
  // A damaged weights file is a readable error.
  const weights = read('model/model.safetensors');
  assert.throws(() => new web.Searcher(read('model/config.json'), weights.subarray(0, weights.length / 2),
    read('model/tokenizer.json').toString('utf8'), read('index/index.bin'), read('index/index.json')), /model/);
  // An added image (the known image's thumbnail at the model's input size) becomes searchable.
  const side = searcher.image_size();
  const rgb = new Uint8Array(side * side * 3).fill(255);
  const row = await searcher.add_image(rgb, side, side, 'white.png', 'blob:white');
  assert.equal(row, searcher.count() - 1);
  const all = JSON.parse(await searcher.search(known.query, searcher.count()));
  assert.ok(all.some((hit) => hit.id === 'white.png' && hit.thumbnail === 'blob:white'), `${name}: the added image is ranked`);
  await assert.rejects(searcher.add_image(new Uint8Array(5), side, side, 'short.png', ''), /short.png: expected/);
  console.log(`wasm search ${name}: "${known.query}" → ${hits[0].id} (${hits[0].score.toFixed(4)}, native ${known.score.toFixed(4)}), ${searcher.count()} images, ${ms.toFixed(0)} ms`);
}
