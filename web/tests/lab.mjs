// The lab's wasm bindings in node (CPU backend): a lab starts from the committed assets/lab model,
// steps both copies, draws views and evaluates; bad settings are readable errors. The browser test runs the same on WebGPU.
// Usage: node web/tests/lab.mjs PKG_DIR   (PKG_DIR: `wasm-bindgen --target nodejs` output)
import { createRequire } from 'node:module';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const web = require(path.resolve(process.argv[2], 'web.js'));

assert.equal(JSON.parse(await web.init_backend('auto')).backend, 'cpu', 'node has no WebGPU');
assert.throws(() => new web.Lab('{"batch_size": 1}', 'cpu'), /batch_size/);
assert.throws(() => new web.Lab('{"no_such_option": 1}', 'cpu'), /lab settings/);
assert.throws(() => new web.Lab('{}', 'gpu0'), /unknown lab device/);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const read = (file) => readFileSync(path.join(root, 'assets/lab/model', file));
assert.throws(() => new web.Lab('{}', 'cpu', read('config.json')), /together/);
const lab = new web.Lab('{"batch_size": 4, "hard_negatives": 1, "heldout": 8}', 'backend',
  read('config.json'), read('model.safetensors'), read('tokenizer.json').toString('utf8'));
assert.equal(lab.device(), 'cpu');
const info = JSON.parse(lab.view_info());
assert.deepEqual([info.n, info.m, info.owners.length], [4, 8, 8]);
assert.deepEqual(info.owners, [0, 1, 2, 3, 0, 1, 2, 3]);
assert.equal(lab.view_pixels().length, info.m * info.side * info.side * 3);
const started = performance.now();
const losses = [];
for (let i = 0; i < 3; i++) losses.push(JSON.parse(await lab.step()).losses);
const ms = (performance.now() - started) / 3;
assert.equal(lab.step_count(), 3);
assert.ok(losses.flat().every(Number.isFinite));
const views = JSON.parse(await lab.views());
assert.equal(views.views.length, 2);
assert.equal(views.views[1].grad.length, 4 * 8);
assert.equal(views.views[0].pca.length, 12);
assert.notDeepEqual(views.views[0].s, views.views[1].s, 'the EGA copy trained differently');
const metrics = JSON.parse(await lab.evaluate());
assert.ok(metrics.every((m) => m.r1 >= 0 && m.r1 <= 1));
assert.throws(() => lab.set_loss(-1, 1, 0.05, false), /tau/);
console.log(`wasm lab: 3 steps of both copies, ${ms.toFixed(0)} ms a step on the CPU backend; losses ${JSON.stringify(losses.at(-1).map((v) => +v.toFixed(4)))}`);
