// Hand-written SVG charts (a time-series line chart and a bar chart) and the
// data tables beside them. Each chart is one focusable role="img" element:
// the arrow keys (or the mouse) move a cursor from point to point and a
// tooltip beside the chart reads the values out (aria-live), so every value
// can be reached without a mouse; the table holds them all for screen readers.
// The drawing is as wide as its box (one SVG unit per CSS pixel), so text
// keeps its size; the caller redraws when the window is resized.

import { h } from "./dom.js";
import { dateTime, raw, tick } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const H = 240;
const M = { top: 14, right: 64, bottom: 30, left: 72 };
const BAR_ROW = 30;

function svg(tag, attrs, parent) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

function text(parent, x, y, content, cls, anchor = "end") {
  const t = svg("text", { x, y, class: cls, "text-anchor": anchor }, parent);
  t.textContent = content;
  return t;
}

/** A round upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= v) return m * pow;
  return 10 * pow;
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/**
 * Shared keyboard and pointer handling: a cursor over `count` items, which
 * starts at `first` when the chart takes the focus.
 */
function interact(container, tooltip, count, show, nearest, first = count - 1) {
  let at = -1;
  const move = (i) => {
    at = Math.max(0, Math.min(count - 1, i));
    show(at);
    tooltip.hidden = false;
  };
  const hide = () => {
    show(-1);
    tooltip.hidden = true;
  };
  container.tabIndex = count ? 0 : -1;
  container.onfocus = () => count && move(at < 0 ? first : at);
  container.onblur = hide;
  container.onkeydown = (e) => {
    if (!count) return;
    const page = Math.max(1, Math.round(count / 10));
    const step = {
      ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1, PageUp: -page, PageDown: page,
    }[e.key];
    if (step) move(at + step);
    else if (e.key === "Home") move(0);
    else if (e.key === "End") move(count - 1);
    // A second Escape (nothing left to hide) is the page's: it may close a view.
    else if (e.key === "Escape" && !tooltip.hidden) hide();
    else return;
    e.preventDefault();
  };
  container.onmousemove = (e) => count && move(nearest(e));
  container.onmouseleave = () => document.activeElement !== container && hide();
  hide();
}

function fillTooltip(tooltip, title, lines) {
  tooltip.replaceChildren(h("strong", {}, title), ...lines.map((l) => h("div", {}, l)));
}

/** The width to draw at: the box's own, within reason. */
function widthOf(container) {
  return Math.max(300, Math.round(container.clientWidth || 720));
}

/** Places the tooltip beside the cursor at `fx` (0..1 of the chart width). */
function place(tooltip, fx, fy = 0) {
  const left = fx > 0.55;
  tooltip.classList.toggle("left", left);
  tooltip.style.left = `${(left ? fx - 0.02 : fx + 0.02) * 100}%`;
  tooltip.style.top = `${fy * 100}%`;
}

/**
 * Draws a time-series line chart into `container`.
 * `points`: [{ t: Date, v: { key: number } }], ascending.
 * `series`: [{ key, label, format, axis = "left" | "right", draw = true }];
 * each is drawn in the colour of the CSS class `s-<key>`.
 * `axes`: { left: formatter, right: formatter }. Returns false when there
 * is nothing to draw.
 */
export function lineChart(container, tooltip, legend, points, series, axes) {
  const drawn = series
    .map((s) => ({ ...s, axis: s.axis || "left" }))
    .filter((s) => s.draw !== false && points.some((p) => num(p.v[s.key])));
  container.replaceChildren();
  legend.replaceChildren(...drawn.map((s) => h("li", {}, h("span", { className: `swatch s-${s.key}` }), s.label)));
  const n = points.length;
  if (!n) {
    interact(container, tooltip, 0, () => {}, () => 0);
    return false;
  }
  const W = widthOf(container);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", "aria-hidden": "true", focusable: "false" }, container);
  const t0 = points[0].t.getTime();
  const t1 = points[n - 1].t.getTime();
  const span = t1 - t0;
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const x = (t) => M.left + (span ? ((t - t0) / span) * iw : iw / 2);
  const max = {};
  for (const side of ["left", "right"]) {
    const vals = drawn.filter((s) => s.axis === side).flatMap((s) => points.map((p) => p.v[s.key]).filter(num));
    max[side] = niceMax(Math.max(0, ...vals));
  }
  const y = (v, side) => M.top + ih - (v / max[side]) * ih;

  for (let i = 0; i <= 4; i++) {
    const gy = M.top + (ih * i) / 4;
    svg("line", { x1: M.left, x2: W - M.right, y1: gy, y2: gy, class: "grid" }, root);
    text(root, M.left - 6, gy + 4, axes.left(max.left * (1 - i / 4)), "axis-label");
    if (drawn.some((s) => s.axis === "right")) {
      text(root, W - M.right + 6, gy + 4, axes.right(max.right * (1 - i / 4)), "axis-label", "start");
    }
  }
  const ticks = Math.max(1, Math.min(6, n, Math.floor(iw / 90)));
  for (let i = 0; i < ticks; i++) {
    const p = points[Math.round((i * (n - 1)) / Math.max(1, ticks - 1))];
    const anchor = ticks === 1 ? "middle" : i === 0 ? "start" : i === ticks - 1 ? "end" : "middle";
    text(root, x(p.t.getTime()), H - 8, tick(p.t, span), "axis-label", anchor);
  }
  svg("line", { x1: M.left, x2: W - M.right, y1: M.top + ih, y2: M.top + ih, class: "axis" }, root);

  for (const s of drawn) {
    // A missing value (a bucket without requests) breaks the line; a point
    // alone between two gaps is drawn as a dot.
    const runs = [[]];
    for (const p of points) {
      if (num(p.v[s.key])) runs[runs.length - 1].push([x(p.t.getTime()), y(p.v[s.key], s.axis)]);
      else if (runs[runs.length - 1].length) runs.push([]);
    }
    let d = "";
    for (const run of runs) {
      run.forEach(([px, py], i) => (d += `${i ? "L" : "M"}${px.toFixed(1)} ${py.toFixed(1)}`));
      if (run.length === 1) svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, class: `point s-${s.key}` }, root);
    }
    svg("path", { d, class: `line s-${s.key}` }, root);
  }

  const cursor = svg("g", { class: "cursor", visibility: "hidden" }, root);
  const rule = svg("line", { y1: M.top, y2: M.top + ih, class: "rule" }, cursor);
  const dots = drawn.map((s) => svg("circle", { r: 4, class: `dot s-${s.key}` }, cursor));

  const show = (i) => {
    if (i < 0) return cursor.setAttribute("visibility", "hidden");
    const p = points[i];
    const px = x(p.t.getTime());
    rule.setAttribute("x1", px);
    rule.setAttribute("x2", px);
    drawn.forEach((s, k) => {
      const v = p.v[s.key];
      dots[k].setAttribute("visibility", num(v) ? "visible" : "hidden");
      if (num(v)) {
        dots[k].setAttribute("cx", px);
        dots[k].setAttribute("cy", y(v, s.axis));
      }
    });
    cursor.setAttribute("visibility", "visible");
    fillTooltip(tooltip, dateTime(p.t), series.map((s) => `${s.label}: ${s.format(p.v[s.key])}`));
    place(tooltip, px / W);
  };
  const nearest = (e) => {
    const r = root.getBoundingClientRect();
    const vx = ((e.clientX - r.left) / r.width) * W;
    const t = t0 + ((vx - M.left) / iw) * span;
    let best = 0;
    for (let i = 1; i < n; i++) {
      if (Math.abs(points[i].t.getTime() - t) < Math.abs(points[best].t.getTime() - t)) best = i;
    }
    return best;
  };
  interact(container, tooltip, n, show, nearest);
  return true;
}

/**
 * Draws a horizontal bar chart of `bars` ([{ label, value }], in order).
 * Returns false when there is nothing to draw.
 */
export function barChart(container, tooltip, bars, format) {
  container.replaceChildren();
  const n = bars.length;
  if (!n) {
    interact(container, tooltip, 0, () => {}, () => 0);
    return false;
  }
  const W = widthOf(container);
  const left = Math.min(170, Math.round(W * 0.35));
  const right = 60;
  const h = n * BAR_ROW + 8;
  const root = svg("svg", { viewBox: `0 0 ${W} ${h}`, class: "chart-svg", "aria-hidden": "true", focusable: "false" }, container);
  const max = Math.max(1, ...bars.map((b) => b.value));
  const bw = (v) => Math.max(1, (v / max) * (W - left - right));
  const rects = bars.map((b, i) => {
    const top = 4 + i * BAR_ROW;
    const chars = Math.floor(left / 7.5);
    const name = b.label.length > chars ? `${b.label.slice(0, chars - 1)}\u2026` : b.label;
    text(root, left - 8, top + BAR_ROW / 2 + 4, name, "bar-label");
    const rect = svg("rect", { x: left, y: top + 4, width: bw(b.value), height: BAR_ROW - 8, class: "bar" }, root);
    text(root, left + bw(b.value) + 6, top + BAR_ROW / 2 + 4, format(b.value), "bar-value", "start");
    return rect;
  });
  const show = (i) => {
    rects.forEach((r, k) => r.classList.toggle("active", k === i));
    if (i < 0) return;
    fillTooltip(tooltip, bars[i].label, [format(bars[i].value)]);
    place(tooltip, (left + bw(bars[i].value)) / W, (4 + i * BAR_ROW) / h);
  };
  const nearest = (e) => {
    const r = root.getBoundingClientRect();
    return Math.floor((((e.clientY - r.top) / r.height) * h - 4) / BAR_ROW);
  };
  interact(container, tooltip, n, show, nearest, 0);
  return true;
}

/**
 * Fills a data table's <tbody>: one row per item, each cell
 * `[raw value, text]`, with the raw value in data-value.
 */
export function fillTable(table, rows) {
  table.tBodies[0].replaceChildren(...rows.map((cells) => h("tr", {}, ...cells.map(([value, label], i) =>
    h(i ? "td" : "th", i ? { dataset: { value: raw(value) } } : { scope: "row", dataset: { value: raw(value) } }, label)))));
}
