// Hand-drawn SVG charts for the admin pages: a line chart (agreement over rounds), a column
// chart (throughput per round) and grouped bars (per-annotator quality). Colours come from
// the stylesheet's classes, so the charts follow light and dark mode; each chart has a text
// alternative naming what it shows.

const SVG = "http://www.w3.org/2000/svg";
const H = 260;
let W = 640; // set to the container's width before each drawing, so text keeps its size
const PAD = { top: 16, right: 16, bottom: 40, left: 48 };

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(label, height = H) {
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label });
  svg.append(svgEl("title", {}, label));
  return svg;
}

/** Round numbers for an axis from lo to hi: about `count` ticks at 1, 2 or 5 × 10^k. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.round(v / step) * step);
  }
  return out;
}

function label(value) {
  return Math.abs(value) >= 1000 ? `${Math.round(value / 100) / 10}k` : String(Math.round(value * 100) / 100);
}

// yTicks: values; xTicks: [{px, text}] (positions already on the canvas)
function axes(svg, y, yTicks, xTicks, xText, yText, height) {
  const grid = svgEl("g", { class: "grid" });
  const axis = svgEl("g", { class: "axis" });
  for (const t of yTicks) {
    grid.append(svgEl("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t) }));
    axis.append(svgEl("text", { x: PAD.left - 8, y: y(t) + 4, "text-anchor": "end" }, label(t)));
  }
  for (const t of xTicks) {
    axis.append(svgEl("text", { x: t.px, y: height - PAD.bottom + 16, "text-anchor": "middle" }, t.text));
  }
  axis.append(svgEl("line", { x1: PAD.left, x2: W - PAD.right, y1: height - PAD.bottom, y2: height - PAD.bottom }));
  axis.append(svgEl("text", { x: (PAD.left + W - PAD.right) / 2, y: height - 6, "text-anchor": "middle" }, xText));
  axis.append(svgEl("text", { x: 12, y: PAD.top + (height - PAD.top - PAD.bottom) / 2,
    transform: `rotate(-90 12 ${PAD.top + (height - PAD.top - PAD.bottom) / 2})`, "text-anchor": "middle" }, yText));
  svg.append(grid, axis);
}

function empty(container, message) {
  const p = document.createElement("p");
  p.className = "chart-empty";
  p.textContent = message;
  container.replaceChildren(p);
}

/** points: [{x, y}] (y may be null: a gap). opts: {xLabel, yLabel, yMin, yMax, threshold:
 * {value, label}, title, emptyText}. */
export function lineChart(container, points, opts) {
  W = Math.max(320, Math.round(container.clientWidth || 640));
  const shown = points.filter((p) => p.y !== null && p.y !== undefined && Number.isFinite(p.y));
  if (!shown.length) return empty(container, opts.emptyText);
  const xs = shown.map((p) => p.x);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const yLo = Math.min(opts.yMin ?? Infinity, ...shown.map((p) => p.y));
  const yHi = Math.max(opts.yMax ?? -Infinity, ...shown.map((p) => p.y));
  const x = (v) => PAD.left + ((v - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - yLo) / (yHi - yLo || 1)) * (H - PAD.top - PAD.bottom);
  const svg = frame(opts.title);
  const xTicks = ticks(x0, x1, 6).filter((t) => Number.isInteger(t)).map((t) => ({ px: x(t), text: label(t) }));
  axes(svg, y, ticks(yLo, yHi, 4), xTicks, opts.xLabel, opts.yLabel, H);
  if (opts.threshold && opts.threshold.value >= yLo && opts.threshold.value <= yHi) {
    const ty = y(opts.threshold.value);
    svg.append(svgEl("line", { class: "threshold", x1: PAD.left, x2: W - PAD.right, y1: ty, y2: ty }),
      svgEl("text", { class: "threshold-label", x: W - PAD.right, y: ty - 6, "text-anchor": "end" }, opts.threshold.label));
  }
  const path = shown.map((p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join("");
  const base = y(Math.max(yLo, Math.min(0, yHi)));
  svg.append(svgEl("path", { class: "area", d: `${path}L${x(shown.at(-1).x).toFixed(1)},${base}L${x(shown[0].x).toFixed(1)},${base}Z` }),
    svgEl("path", { class: "line", d: path }));
  for (const p of shown.slice(-60)) {
    const dot = svgEl("circle", { class: "point", cx: x(p.x), cy: y(p.y), r: 3.5 });
    dot.append(svgEl("title", {}, `${opts.xLabel} ${p.x}: ${label(p.y)}`));
    svg.append(dot);
  }
  container.replaceChildren(svg);
}

/** Columns: [{x, y}] with y >= 0. opts: {xLabel, yLabel, title, emptyText}. */
export function columnChart(container, columns, opts) {
  W = Math.max(320, Math.round(container.clientWidth || 640));
  if (!columns.length) return empty(container, opts.emptyText);
  const shown = columns.slice(-60);
  const yHi = Math.max(1, ...shown.map((c) => c.y));
  const slot = (W - PAD.left - PAD.right) / shown.length;
  const y = (v) => H - PAD.bottom - (v / yHi) * (H - PAD.top - PAD.bottom);
  const x = (i) => PAD.left + slot * (i + 0.5);
  const svg = frame(opts.title);
  const every = Math.ceil(shown.length / 8);
  const xTicks = shown.flatMap((c, i) => (i % every === 0 ? [{ px: x(i), text: String(c.x) }] : []));
  axes(svg, y, ticks(0, yHi, 4), xTicks, opts.xLabel, opts.yLabel, H);
  shown.forEach((c, i) => {
    const width = Math.max(2, slot * 0.7);
    const bar = svgEl("rect", { class: "bar-a", x: x(i) - width / 2, y: y(c.y), width, height: Math.max(0, y(0) - y(c.y)), rx: 2 });
    bar.append(svgEl("title", {}, `${opts.xLabel} ${c.x}: ${c.y}`));
    svg.append(bar);
  });
  container.replaceChildren(svg);
}

/** Grouped horizontal bars in [0, 1]: rows [{name, a, b}] (a, b may be null). opts:
 * {aLabel, bLabel, title, emptyText}. */
export function qualityBars(container, rows, opts) {
  W = Math.max(320, Math.round(container.clientWidth || 640));
  if (!rows.length) return empty(container, opts.emptyText);
  const shown = rows.slice(0, 30);
  const rowH = 28;
  const left = 140;
  const height = PAD.top + shown.length * rowH + 28;
  const x = (v) => left + v * (W - left - PAD.right);
  const svg = frame(opts.title, height);
  const grid = svgEl("g", { class: "grid" });
  const axis = svgEl("g", { class: "axis" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    grid.append(svgEl("line", { x1: x(t), x2: x(t), y1: PAD.top, y2: height - 24 }));
    axis.append(svgEl("text", { x: x(t), y: height - 8, "text-anchor": "middle" }, `${t * 100}%`));
  }
  svg.append(grid, axis);
  shown.forEach((row, i) => {
    const top = PAD.top + i * rowH;
    svg.append(svgEl("text", { x: left - 8, y: top + rowH / 2 + 4, "text-anchor": "end" }, row.name));
    for (const [key, cls, offset, name] of [["a", "bar-a", 4, opts.aLabel], ["b", "bar-b", 14, opts.bLabel]]) {
      const v = row[key];
      if (v === null || v === undefined) continue;
      const bar = svgEl("rect", { class: cls, x: left, y: top + offset, width: Math.max(1, x(v) - left), height: 9, rx: 2 });
      bar.append(svgEl("title", {}, `${row.name}, ${name}: ${Math.round(v * 100)}%`));
      svg.append(bar);
    }
  });
  const key = document.createElement("div");
  key.className = "key";
  for (const [cls, text] of [["a", opts.aLabel], ["b", opts.bLabel]]) {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${cls}`;
    item.append(swatch, text);
    key.append(item);
  }
  container.replaceChildren(svg, key);
}
