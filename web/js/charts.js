// The lab's drawings: heatmap colours, line charts and the PCA scatter, as SVG.

const SVG = 'http://www.w3.org/2000/svg';

// sequential: white → blue; diverging: red (negative) ← white → blue (positive)
export function colour(x, scale) {
  const t = Math.max(-1, Math.min(1, x));
  if (scale === 'sequential' || t >= 0) {
    const a = Math.abs(t);
    return `rgb(${Math.round(255 - 200 * a)}, ${Math.round(255 - 140 * a)}, ${Math.round(255 - 30 * a)})`;
  }
  const a = -t;
  return `rgb(${Math.round(255 - 20 * a)}, ${Math.round(255 - 170 * a)}, ${Math.round(255 - 170 * a)})`;
}

function svgElement(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// Two curves ([step, value] points: info-NCE's and EGA's) in one chart.
export function chart(title, first, second, yRange = null) {
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

// The batch's embeddings in 2-D: captions (circles), images (squares; hollow: extra hard negatives).
export function scatter(title, points, n, m, owners) {
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
