// The wasm build tokenizes exactly like the native one: the ids of tests/fixtures/tokenization.json
// (written and checked natively by `cargo test`) must come out of the wasm module too.
// Usage: node web/tests/tokenize.mjs PKG_DIR   (PKG_DIR: `wasm-bindgen --target nodejs` output)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const pkg = process.argv[2];
if (!pkg) {
  console.error('usage: node web/tests/tokenize.mjs PKG_DIR');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const web = require(path.resolve(pkg, 'web.js'));
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const fixture = JSON.parse(readFileSync(path.join(root, 'tests/fixtures/tokenization.json'), 'utf8'));

const ids = JSON.parse(web.tokenize(fixture.tokenizer, fixture.captions));
assert.equal(ids.length, fixture.captions.length);
fixture.captions.forEach((caption, k) => {
  assert.deepEqual(ids[k], fixture.ids[k], `wasm and native ids differ for ${JSON.stringify(caption)}`);
});
// A broken tokenizer file is a readable error, not a crash.
assert.throws(() => web.tokenize('{"not": "a tokenizer"}', ['x']), /./);
console.log(`wasm tokenization: ${fixture.captions.length} captions, ids identical to native (ega-core ${web.version()})`);
