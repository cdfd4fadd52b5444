// The page's wiring: range selection, Refresh, and rendering each answer.
// Only the first load and Refresh send data requests (three, in parallel);
// nothing polls. Opening an endpoint row sends that endpoint's two detail
// requests (detail.js), nothing else does.

import { apiBase, getJson } from "./api.js";
import { clearCards, initCards, renderCards } from "./cards.js";
import { barChart, fillTable, lineChart } from "./charts.js";
import { h } from "./dom.js";
import { count, dateTime, ms, percent, tickNumber } from "./format.js";
import { closeDetail, openDetail, rangeChanged } from "./detail.js";
import { customError, fromUrl, parseLocal, rangeQuery, toLocalInput, toUrl } from "./range.js";
import { renderEndpoints } from "./table.js";
import { hideToast, showToast } from "./toast.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const API = apiBase();
const CALCULATING_AFTER_MS = 2000;
const TEXTS = {
  401: "Authentication required. Please log in.",
  403: "Admin access required. Only workspace administrators can view metrics.",
};
const PARTS = [
  ["performance", "performance metrics", (q) => `${API}/performance?${q}`],
  ["usage", "usage metrics", (q) => `${API}/usage?${q}`],
  ["series", "time-series metrics", (q) => `${API}/time-series?metric_type=both&${q}`],
];

const main = document.getElementById("main");
const dashboard = document.getElementById("dashboard");
const toolbar = document.getElementById("toolbar");
const selector = $("time-range-selector");
const refresh = $("refresh-button");
const custom = $("custom-range");
const start = $("custom-start");
const end = $("custom-end");
const apply = $("custom-apply");
const customErr = $("custom-range-error");

let range;
let busy = false;

/** Hands an event to tracker.js when it loaded (the page works without it). */
function track(event) {
  try {
    if (window.AppMetrics) window.AppMetrics.track({ page_name: window.location.pathname, ...event });
  } catch (_) {
    // Tracking never breaks the dashboard.
  }
}

// ===== range =====

function pressed() {
  for (const b of selector.querySelectorAll("button[data-range]")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === range.kind));
  }
}

function select(next) {
  const previous = range.kind;
  range = next;
  pressed();
  toUrl(range);
  rangeChanged(range);
  track({
    event_type: "preference_changed",
    element_id: "time-range-selector",
    metadata: { previous_time_range: previous, new_time_range: range.kind },
  });
}

function openCustom(open) {
  custom.hidden = !open;
  selector.querySelector('[data-range="custom"]').setAttribute("aria-expanded", String(open));
}

/** Checks the custom inputs; Apply is enabled only for a complete, valid range. */
function checkCustom() {
  const s = parseLocal(start.value);
  const e = parseLocal(end.value);
  const error = customError(s, e);
  customErr.textContent = error;
  apply.disabled = Boolean(error) || !s || !e;
  return error || !s || !e ? null : { kind: "custom", start: s, end: e };
}

selector.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-range]");
  if (!button) return;
  const kind = button.dataset.range;
  if (kind === "custom") {
    openCustom(true);
    start.focus();
    return;
  }
  openCustom(false);
  if (kind !== range.kind) select({ kind });
});

for (const input of [start, end]) {
  input.addEventListener("input", checkCustom);
  input.addEventListener("change", checkCustom);
}

apply.addEventListener("click", () => {
  const next = checkCustom();
  if (next) select(next);
});

// ===== loading =====

function setBusy(on) {
  busy = on;
  refresh.disabled = on;
  refresh.textContent = on ? "Refreshing\u2026" : "Refresh";
  main.setAttribute("aria-busy", String(on));
}

function denied(status) {
  redraw = () => {};
  clearCards();
  dashboard.hidden = true;
  toolbar.hidden = true;
  hideToast();
  const note = $("access-message");
  note.textContent = TEXTS[status];
  note.hidden = false;
}

async function load() {
  if (busy) return;
  setBusy(true);
  hideToast();
  const query = rangeQuery(range);
  const calculating = $("calculating");
  const timer = setTimeout(() => (calculating.hidden = false), CALCULATING_AFTER_MS);
  const results = await Promise.all(PARTS.map(([, , url]) => getJson(url(query))));
  clearTimeout(timer);
  calculating.hidden = true;
  $("loading").hidden = true;
  setBusy(false);

  const refused = [401, 403].find((s) => results.some((r) => r.status === s));
  if (refused) return denied(refused);

  const answers = {};
  const failures = [];
  results.forEach((r, i) => {
    const [key, name] = PARTS[i];
    if (r.ok) answers[key] = r.data;
    else failures.push(`Failed to load ${name}: ${r.message}`);
  });
  dashboard.hidden = false;
  render(answers);
  if (failures.length) showToast(failures);
}

refresh.addEventListener("click", () => {
  if (busy) return;
  // Refresh closes an open endpoint view rather than leaving it behind the
  // new numbers: it sends only its three requests, the rows it draws may
  // not hold that endpoint any more, and a refused refresh must leave no
  // numbers on screen. Opening the row again shows it for the new range.
  closeDetail(false);
  track({
    event_type: "button_click",
    element_id: "refresh-button",
    metadata: { time_range: range.kind, action: "manual_refresh" },
  });
  load();
});

/** How the range reads in the detail view: the button's text, or the dates. */
function rangeLabel(r) {
  if (r.kind === "custom") return `${dateTime(r.start)} \u2013 ${dateTime(r.end)}`;
  return selector.querySelector(`[data-range="${r.kind}"]`).textContent;
}

$("endpoint-table").addEventListener("endpoint-open", (e) => {
  const at = document.activeElement;
  openDetail(e.detail, range, rangeLabel(range), $("endpoint-table").contains(at) ? at : null);
});

// ===== rendering =====

function section(testid) {
  return $(testid).closest("section");
}

function empty(sec, text) {
  const p = sec.querySelector("p.empty");
  p.textContent = text || "";
  p.hidden = !text;
}

const NO_SERIES = "No time-series data available for the selected range.";
const NO_USAGE = "No usage data available";
const UNAVAILABLE = "Data unavailable";

// Charts are drawn at their box's width: draw them again when it changes.
let redraw = () => {};
let frame = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(frame);
  frame = requestAnimationFrame(() => redraw());
});

function render({ performance, usage, series }) {
  renderCards({ performance, usage });
  renderEndpoints(performance ? performance.endpoints || [] : null);
  const noRequests = performance && performance.metrics.total_requests === 0;
  const noEvents = usage && usage.metrics.total_events === 0;
  $("empty-state").hidden = !(noRequests && noEvents);

  const points = ((series && series.data_points) || []).map((p) => ({ t: new Date(p.timestamp), p }));
  const types = byCount(usage && usage.event_distribution);
  const table = (testid, cols) =>
    fillTable($(testid), points.map(({ t, p }) => [[p.timestamp, dateTime(t)], ...cols.map(([k, f]) => [p[k], f(p[k])])]));
  table("chart-performance-table", [["total_requests", count], ...PERF.map(([, k, f]) => [k, f])]);
  table("chart-usage-table", USAGE.map(([, k, , f]) => [k, f]));
  fillTable($("chart-event-types-table"), types.map(([type, n]) => [[type, type], [n, count(n)]]));

  const pages = byCount(usage && usage.page_views).slice(0, 5);
  $("top-pages").replaceChildren(...pages.map(([name, n]) =>
    h("li", {}, h("span", { className: "page-name" }, name),
      h("span", { className: "page-count", dataset: { value: n } }, count(n)))));
  empty(section("top-pages"), usage ? !pages.length && NO_USAGE : UNAVAILABLE);

  redraw = () => drawCharts(series, points, usage, types);
  redraw();
}

// [series key, point field, formatter, label, axis]
const PERF = [
  ["avg", "avg_response_time_ms", ms, "Avg"],
  ["p50", "p50_response_time_ms", ms, "P50"],
  ["p95", "p95_response_time_ms", ms, "P95"],
  ["p99", "p99_response_time_ms", ms, "P99"],
  ["err", "error_rate", percent, "Error Rate", "right"],
];
// [series key, point field, label, formatter]
const USAGE = [["events", "total_events", "Events", count], ["users", "unique_users", "Unique Users", count]];

function line(testid, points, series, axes, answered) {
  const sec = section(testid);
  const drew = lineChart($(testid), sec.querySelector(".tooltip"), sec.querySelector(".legend"), points, series, axes);
  empty(sec, answered ? !drew && NO_SERIES : UNAVAILABLE);
}

function drawCharts(series, points, usage, types) {
  // Latencies of a bucket without requests are no measurement: a gap, not 0 ms.
  const perf = points.some(({ p }) => p.total_requests > 0) ? points : [];
  line("chart-performance", perf.map(({ t, p }) => ({
    t,
    v: Object.fromEntries([
      ["req", p.total_requests],
      ...PERF.map(([key, field]) => [key, p.total_requests > 0 ? p[field] : undefined]),
    ]),
  })), [
    ...PERF.map(([key, , format, label, axis]) => ({ key, label, format, axis })),
    { key: "req", label: "Requests", format: count, draw: false },
  ], { left: (v) => `${tickNumber(v)} ms`, right: (v) => `${tickNumber(v * 100)}%` }, series);

  const use = points.some(({ p }) => p.total_events > 0) ? points : [];
  line("chart-usage", use.map(({ t, p }) => ({ t, v: Object.fromEntries(USAGE.map(([key, field]) => [key, p[field]])) })),
    USAGE.map(([key, , label, format]) => ({ key, label, format })), { left: tickNumber }, series);

  const ts = section("chart-event-types");
  barChart($("chart-event-types"), ts.querySelector(".tooltip"), types.map(([label, value]) => ({ label, value })), count);
  empty(ts, usage ? !types.length && NO_USAGE : UNAVAILABLE);
}

function byCount(obj) {
  return Object.entries(obj || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

// ===== start =====

initCards(document.getElementById("cards"));
const fromLink = fromUrl(window.location.search);
range = fromLink.range;
pressed();
if (range.kind === "custom") {
  start.value = toLocalInput(range.start);
  end.value = toLocalInput(range.end);
  openCustom(true);
  checkCustom();
} else if (fromLink.rejected) {
  // A link with a range the rules refuse: show it and why, load the default.
  if (fromLink.rejected.start) start.value = toLocalInput(fromLink.rejected.start);
  if (fromLink.rejected.end) end.value = toLocalInput(fromLink.rejected.end);
  openCustom(true);
  checkCustom();
  customErr.textContent = fromLink.rejected.error;
}
load();
