// A tiny `smolvlm` model runs in wasm as natively: the committed fixture bundle
// (tests/fixtures/smolvlm-tiny, checked natively by tests/integration/smolvlm.rs) must embed its
// texts and images here to 1e-4 of the recorded native embeddings.
// Usage: node web/tests/smolvlm.mjs PKG_DIR   (PKG_DIR: `wasm-bindgen --target nodejs` output)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const web = require(path.resolve(process.argv[2], 'web.js'));
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const dir = path.join(root, 'tests', 'fixtures', 'smolvlm-tiny');
const read = (file) => readFileSync(path.join(dir, file));
const expected = JSON.parse(read('expected.json'));

await web.init_backend('cpu');
const out = JSON.parse(await web.embed_bundle(
  read('config.json'), read('model.safetensors'), read('tokenizer.json').toString('utf8'),
  expected.texts, Float32Array.from(expected.pixels)));

function close(what, rows, flat) {
  const got = rows.flat();
  assert.equal(got.length, flat.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - flat[i]));
  assert.ok(worst <= 1e-4, `${what}: largest difference ${worst}`);
  return worst;
}
const t = close('text embeddings', out.texts, expected.text_embeddings);
const i = close('image embeddings', out.images, expected.image_embeddings);
console.log(`smolvlm.mjs: tiny smolvlm bundle embeds as natively (largest difference: texts ${t.toExponential(2)}, images ${i.toExponential(2)})`);
