// The lab, the teaching view: docs/ega.md's worked example, and a real batch of shapes with
// deliberate hard negatives on which two copies of a trained `tiny` model (assets/lab) fine-tune
// side by side, one with info-NCE and one with EGA. The whole state (settings, mode, step) is in
// the URL: a reloaded or shared link rebuilds the same models and replays the same steps.

import { chart, colour, scatter } from './charts.js';
import { digest, fetchFresh, openStore } from './files.js';
import { $, errorText, message, yieldToPage } from './ui.js';

const WORKED_EXAMPLE = { s: [0.9, 0.8, 0.3, 0.1, 0.7, 0.6], n: 2, m: 3 };
const DEFAULTS = { mode: 'live', tau: 0.05, alpha: 1, tauh: 0.05, rescale: 'sum', bs: 6, neg: 1, labdevice: null };
const MATRICES = [
  ['s', 'S', 'cosine similarities S = Q Tᵀ', 'diverging'],
  ['probs', 'P', 'P = softmax(S/τ) of each row', 'sequential'],
  ['hardness', 'h', 'h = σ((S[i][j] − S[i][i])/τ_h): how close a negative comes to the positive', 'sequential'],
  ['amplified', 'P̄', 'P̄ = P·(1 + α·h) off the diagonal (EGA); info-NCE keeps P', 'sequential'],
  ['grad', 'G', 'G = ∂L/∂S = (P̄ − I)/(Nτ): the push each pair gets', 'diverging'],
];

// The lab's starting model (assets/lab/model), fetched once into ctx.labModel; null when it is
// missing (the lab then starts from a fresh model). The benchmark uses it too.
export async function loadLabModel(ctx) {
  if (ctx.labModel !== undefined) return ctx.labModel;
  try {
    const config = await fetchFresh('assets/lab/model/config.json');
    const store = await openStore(ctx.cacheLog, 'lab', await digest(config));
    const files = await Promise.all(['model.safetensors', 'tokenizer.json'].map((f) => store.fetch(`assets/lab/model/${f}`)));
    ctx.labModel = { config, weights: files[0], tokenizer: new TextDecoder().decode(files[1]) };
  } catch (err) {
    message(`${errorText(err)}: the lab starts from a fresh, untrained model instead (build the starting model with ` +
      '`bash scripts/make-demo-bundles.sh lab`).');
    ctx.labModel = null;
  }
  return ctx.labModel;
}

// A wasm Lab (both copies) with `config` on `device`, from the starting model once it is loaded.
export async function newLab(ctx, config, device) {
  const json = JSON.stringify(config);
  const module = await ctx.modules.moduleFor(device);
  const model = ctx.labModel;
  return model ? new module.Lab(json, device, model.config, model.weights, model.tokenizer) : new module.Lab(json, device);
}

export function createLabView() {
  return {
    ctx: null,
    engine: null,
    history: [],
    playing: false,
    busy: false,
    views: null,
    info: null,
    built: false,

    setting(name) {
      const value = this.ctx.params.get(name);
      if (value === null) return DEFAULTS[name];
      return typeof DEFAULTS[name] === 'number' ? Number(value) : value;
    },

    config() {
      return {
        tau: this.setting('tau'), alpha: this.setting('alpha'), tau_h: this.setting('tauh'),
        rescale: this.setting('rescale'), batch_size: this.setting('bs'), hard_negatives: this.setting('neg'),
      };
    },

    // The controls, from the URL's settings; the browser test drives the lab through window.egaLab.
    setup(ctx) {
      this.ctx = ctx;
      window.egaLab = this;
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
        this.ctx.params.set('step', '0');
        this.rebuild();
      };
      $('#row').onchange = () => {
        this.ctx.params.set('row', $('#row').value);
        this.ctx.save();
        this.drawBars();
      };
    },

    // The batch and the two models are built when the lab is first shown (replaying the URL's
    // steps), not with the page: a visitor who only searches never pays for them.
    async show() {
      if (this.built) return;
      this.built = true;
      await this.rebuild(Number(this.ctx.params.get('step') || 0));
    },

    preset(mode) {
      this.pause();
      this.ctx.params.set('mode', mode);
      if (mode === 'example') {
        for (const [k, v] of Object.entries({ tau: 0.1, tauh: 0.1, alpha: 1, rescale: 'none' })) this.ctx.params.set(k, v);
      }
      for (const name of ['tau', 'alpha', 'tauh', 'rescale']) {
        $(`#${name}`).value = this.setting(name);
        const output = document.querySelector(`output[for=${name}]`);
        if (output) output.textContent = $(`#${name}`).value;
      }
      this.ctx.params.set('step', '0');
      this.ctx.save();
      this.rebuild();
    },

    async changed(name, value) {
      this.ctx.params.set(name, value);
      this.ctx.save();
      if (this.setting('mode') === 'example') return this.refresh();
      if (name === 'bs' || name === 'neg') {
        this.ctx.params.set('step', '0');
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
        await yieldToPage();
        await loadLabModel(this.ctx);
        const where = this.ctx.deviceFor('labdevice');
        try {
          this.engine = await newLab(this.ctx, this.config(), where.device);
          this.info = JSON.parse(this.engine.view_info());
          this.where = `training on ${this.engine.device() === 'webgpu' ? 'WebGPU' : 'the CPU backend'}` +
            (where.device === 'cpu' && this.ctx.backend.backend === 'webgpu' ? ` (${where.why})` : '');
          status.textContent = `Ready: ${this.ctx.labModel ? 'two copies of the trained tiny model (assets/lab)' : 'two copies of a fresh tiny model'}, ${this.where}.`;
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
        this.ctx.params.set('step', String(point.step));
        this.ctx.save();
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
        await yieldToPage();
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
          const info = JSON.parse(this.ctx.modules.cpu.ega_example(new Float64Array(s), n, m, c.tau, 0, c.tau_h, false));
          const ega = JSON.parse(this.ctx.modules.cpu.ega_example(new Float64Array(s), n, m, c.tau, c.alpha, c.tau_h, c.rescale === 'sum'));
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
      this.ctx.report.lab = { views, history: this.history, step: this.engine ? this.engine.step_count() : 0 };
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
      const chosen = Math.min(Number(this.ctx.params.get('row') || 0), n - 1);
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
}
