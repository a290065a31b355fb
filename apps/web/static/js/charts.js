// Hand-drawn SVG charts for the admin pages: a line chart (agreement over rounds), a column
// chart (throughput per round) and grouped bars (per-annotator quality). Each is drawn at its
// container's width, so text keeps its size; colours come from the stylesheet's classes, so
// the charts follow light and dark mode; each chart has a text alternative.

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 260;
const PAD = { top: 16, right: 16, bottom: 40, left: 48 };

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The drawing area for `container`: {svg, width, height}. */
function canvas(container, label, height = HEIGHT) {
  const width = Math.max(320, Math.round(container.clientWidth || 640));
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  svg.append(svgEl("title", {}, label));
  return { svg, width, height };
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

// y: value -> pixel; yTicks: values; xTicks: [{px, text}]
function axes({ svg, width, height }, y, yTicks, xTicks, xText, yText) {
  const grid = svgEl("g", { class: "grid" });
  const axis = svgEl("g", { class: "axis" });
  const middle = PAD.top + (height - PAD.top - PAD.bottom) / 2;
  for (const t of yTicks) {
    grid.append(svgEl("line", { x1: PAD.left, x2: width - PAD.right, y1: y(t), y2: y(t) }));
    axis.append(svgEl("text", { x: PAD.left - 8, y: y(t) + 4, "text-anchor": "end" }, label(t)));
  }
  for (const t of xTicks) {
    axis.append(svgEl("text", { x: t.px, y: height - PAD.bottom + 16, "text-anchor": "middle" }, t.text));
  }
  axis.append(
    svgEl("line", { x1: PAD.left, x2: width - PAD.right, y1: height - PAD.bottom, y2: height - PAD.bottom }),
    svgEl("text", { x: (PAD.left + width - PAD.right) / 2, y: height - 6, "text-anchor": "middle" }, xText),
    svgEl("text", { x: 12, y: middle, transform: `rotate(-90 12 ${middle})`, "text-anchor": "middle" }, yText));
  svg.append(grid, axis);
}

function empty(container, message) {
  const p = document.createElement("p");
  p.className = "chart-empty";
  p.textContent = message;
  container.replaceChildren(p);
}

/** points: [{x, y}] (y may be null: no value that round). opts: {title, xLabel, yLabel,
 * yMin, yMax, threshold: {value, label}, emptyText}. */
export function lineChart(container, points, opts) {
  const shown = points.filter((p) => p.y !== null && p.y !== undefined && Number.isFinite(p.y));
  if (!shown.length) return empty(container, opts.emptyText);
  const c = canvas(container, opts.title);
  const xs = shown.map((p) => p.x);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  const yLo = Math.min(opts.yMin ?? Infinity, ...shown.map((p) => p.y));
  const yHi = Math.max(opts.yMax ?? -Infinity, ...shown.map((p) => p.y));
  const x = (v) => PAD.left + ((v - x0) / (x1 - x0)) * (c.width - PAD.left - PAD.right);
  const y = (v) => c.height - PAD.bottom - ((v - yLo) / (yHi - yLo || 1)) * (c.height - PAD.top - PAD.bottom);
  const xTicks = ticks(x0, x1, 6).filter(Number.isInteger).map((t) => ({ px: x(t), text: label(t) }));
  axes(c, y, ticks(yLo, yHi, 4), xTicks, opts.xLabel, opts.yLabel);
  if (opts.threshold && opts.threshold.value >= yLo && opts.threshold.value <= yHi) {
    const ty = y(opts.threshold.value);
    c.svg.append(svgEl("line", { class: "threshold", x1: PAD.left, x2: c.width - PAD.right, y1: ty, y2: ty }),
      svgEl("text", { class: "threshold-label", x: c.width - PAD.right, y: ty - 6, "text-anchor": "end" }, opts.threshold.label));
  }
  const path = shown.map((p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join("");
  const base = y(Math.max(yLo, Math.min(0, yHi)));
  c.svg.append(
    svgEl("path", { class: "area", d: `${path}L${x(shown.at(-1).x).toFixed(1)},${base}L${x(shown[0].x).toFixed(1)},${base}Z` }),
    svgEl("path", { class: "line", d: path }));
  for (const p of shown.slice(-60)) {
    const dot = svgEl("circle", { class: "point", cx: x(p.x), cy: y(p.y), r: 3.5 });
    dot.append(svgEl("title", {}, `${opts.xLabel} ${p.x}: ${label(p.y)}`));
    c.svg.append(dot);
  }
  container.replaceChildren(c.svg);
}

/** columns: [{x, y}] with y >= 0, the last 60 shown. opts: {title, xLabel, yLabel, emptyText}. */
export function columnChart(container, columns, opts) {
  if (!columns.length) return empty(container, opts.emptyText);
  const c = canvas(container, opts.title);
  const shown = columns.slice(-60);
  const yHi = Math.max(1, ...shown.map((col) => col.y));
  const slot = (c.width - PAD.left - PAD.right) / shown.length;
  const y = (v) => c.height - PAD.bottom - (v / yHi) * (c.height - PAD.top - PAD.bottom);
  const x = (i) => PAD.left + slot * (i + 0.5);
  const every = Math.ceil(shown.length / 8);
  const xTicks = shown.flatMap((col, i) => (i % every === 0 ? [{ px: x(i), text: String(col.x) }] : []));
  axes(c, y, ticks(0, yHi, 4), xTicks, opts.xLabel, opts.yLabel);
  const barWidth = Math.max(2, slot * 0.7);
  shown.forEach((col, i) => {
    const bar = svgEl("rect", { class: "bar-a", x: x(i) - barWidth / 2, y: y(col.y), width: barWidth,
      height: Math.max(0, y(0) - y(col.y)), rx: 2 });
    bar.append(svgEl("title", {}, `${opts.xLabel} ${col.x}: ${col.y}`));
    c.svg.append(bar);
  });
  container.replaceChildren(c.svg);
}

/** Two bars per row, values in [0, 1] (or null): rows [{name, a, b}], the first 30 shown.
 * opts: {title, aLabel, bLabel, emptyText}. */
export function qualityBars(container, rows, opts) {
  if (!rows.length) return empty(container, opts.emptyText);
  const shown = rows.slice(0, 30);
  const rowHeight = 28;
  const left = 140;
  const c = canvas(container, opts.title, PAD.top + shown.length * rowHeight + 28);
  const x = (v) => left + v * (c.width - left - PAD.right);
  const grid = svgEl("g", { class: "grid" });
  const axis = svgEl("g", { class: "axis" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    grid.append(svgEl("line", { x1: x(t), x2: x(t), y1: PAD.top, y2: c.height - 24 }));
    axis.append(svgEl("text", { x: x(t), y: c.height - 8, "text-anchor": "middle" }, `${t * 100}%`));
  }
  c.svg.append(grid, axis);
  shown.forEach((row, i) => {
    const top = PAD.top + i * rowHeight;
    c.svg.append(svgEl("text", { x: left - 8, y: top + rowHeight / 2 + 4, "text-anchor": "end" }, row.name));
    for (const [key, cls, offset, name] of [["a", "bar-a", 4, opts.aLabel], ["b", "bar-b", 14, opts.bLabel]]) {
      const v = row[key];
      if (v === null || v === undefined) continue;
      const bar = svgEl("rect", { class: cls, x: left, y: top + offset, width: Math.max(1, x(v) - left), height: 9, rx: 2 });
      bar.append(svgEl("title", {}, `${row.name}, ${name}: ${Math.round(v * 100)}%`));
      c.svg.append(bar);
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
  container.replaceChildren(c.svg, key);
}
