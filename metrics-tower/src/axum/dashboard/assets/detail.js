// The endpoint drill-down: one endpoint's P50 / P95 / P99 and request rate
// over the selected range (a chart with its data table), its status codes
// and its slowest requests of the last 7 days, each correlation id with a
// copy button. Its two requests are sent only when a row is opened, never by
// Refresh (main.js closes the view then) or a range change (the view stays,
// labelled with the range it shows and marked out of date). Its failures
// show inside the view, not as the page's toast.

import { apiBase, getJson } from "./api.js";
import { fillTable, lineChart } from "./charts.js";
import { h } from "./dom.js";
import { count, dateTime, ms, percent, preciseTime, raw, tickNumber } from "./format.js";
import { rangeQuery } from "./range.js";

const API = apiBase();
const LIMIT = 20;
// Raw rows are kept for 7 days; 5-minute buckets of one endpoint come from
// them, so a short range that starts earlier asks for hourly buckets.
const RAW_MS = 7 * 86400e3 - 10 * 60e3;
const DAY_MS = 86400e3;
const MINUTES = { "5min": 5, hourly: 60 };

const view = document.querySelector('[data-testid="endpoint-detail"]');
const $ = (testid) => view.querySelector(`[data-testid="${testid}"]`);
const heading = view.querySelector("h2");
const chart = $("endpoint-detail-chart");
const tooltip = view.querySelector(".tooltip");
const legend = view.querySelector(".legend");
const chartEmpty = view.querySelector("p.empty");
const error = $("endpoint-detail-error");

// What is shown: the row, the range it was loaded for, and its answers.
let shown = null;
// Each open counts; an answer for an older one is dropped.
let opened = 0;

/** The series query of `row` over `range` (hourly where 5 minutes cannot be had). */
function seriesUrl(row, range) {
  const q = `metric_type=performance&endpoint=${encodeURIComponent(row.endpoint)}&method=${encodeURIComponent(row.method)}`;
  const short = range.kind === "custom" && range.end - range.start <= DAY_MS;
  const old = range.kind === "custom" && range.start.getTime() < Date.now() - RAW_MS;
  return `${API}/time-series?${q}&${rangeQuery(range)}${short && old ? "&interval=hourly" : ""}`;
}

function requestsUrl(row) {
  return `${API}/requests?endpoint=${encodeURIComponent(row.endpoint)}&method=${encodeURIComponent(row.method)}&time_range=7d&limit=${LIMIT}`;
}

/**
 * Opens the view for `row` (an endpoint of /performance) over `range`,
 * `label` naming the range, and sends its two requests. `opener` gets the
 * focus back on close.
 */
export async function openDetail(row, range, label, opener) {
  const mine = ++opened;
  shown = { row, range, opener };
  const name = `${row.method} ${row.endpoint}`;
  heading.textContent = `Endpoint details: ${name}`;
  chart.setAttribute("aria-label", `Response time percentiles and request rate of ${name}`);
  $("endpoint-detail-range").textContent = `Response times for ${label}; status codes and slowest requests of the last 7 days.`;
  $("endpoint-detail-stale").hidden = true;
  $("endpoint-detail-copy-status").textContent = "";
  clear();
  setLoading(true);
  view.hidden = false;
  heading.focus();

  const [series, requests] = await Promise.all([getJson(seriesUrl(row, range)), getJson(requestsUrl(row))]);
  if (mine !== opened || view.hidden) return;
  setLoading(false);
  const failures = [];
  if (series.ok) drawSeries(series.data);
  else failures.push(`Failed to load response times: ${series.message}`);
  if (requests.ok) drawRequests(requests.data);
  else failures.push(`Failed to load slowest requests: ${requests.message}`);
  error.querySelector("ul").replaceChildren(...failures.map((f) => h("li", {}, f)));
  error.hidden = !failures.length;
}

/** Closes the view, forgetting its numbers; the focus goes back to the row when `restore`. */
export function closeDetail(restore = true) {
  if (view.hidden) return;
  opened++;
  view.hidden = true;
  clear();
  const was = shown;
  shown = null;
  if (restore && was) focusRow(was);
}

/** The page's range changed: the view stays, marked when it shows another range. */
export function rangeChanged(range) {
  if (!shown) return;
  $("endpoint-detail-stale").hidden = rangeQuery(range) === rangeQuery(shown.range);
}

function focusRow({ row, opener }) {
  if (opener && opener.isConnected) return opener.focus();
  // The table was sorted or redrawn since: the same endpoint's button.
  const label = `Details for ${row.method} ${row.endpoint}`;
  const button = [...document.querySelectorAll('[data-testid="endpoint-row"] button')].find((b) => b.ariaLabel === label);
  if (button) button.focus();
}

function setLoading(on) {
  $("endpoint-detail-loading").hidden = !on;
  view.setAttribute("aria-busy", String(on));
}

function clear() {
  setLoading(false);
  error.hidden = true;
  lineChart(chart, tooltip, legend, [], SERIES, AXES);
  chartEmpty.hidden = true;
  for (const testid of ["endpoint-detail-chart-table", "endpoint-detail-statuses", "endpoint-detail-requests"]) {
    $(testid).tBodies[0].replaceChildren();
  }
}

// ===== the chart and its table =====

const SERIES = [
  { key: "p50", label: "P50", format: ms },
  { key: "p95", label: "P95", format: ms },
  { key: "p99", label: "P99", format: ms },
  { key: "rate", label: "Requests/min", format: perMinute, axis: "right" },
];
const AXES = { left: (v) => `${tickNumber(v)} ms`, right: (v) => `${tickNumber(v)}/min` };

function perMinute(v) {
  return typeof v === "number" && Number.isFinite(v) ? `${tickNumber(v)}/min` : "\u2014";
}

let redraw = () => {};
let frame = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(frame);
  frame = requestAnimationFrame(() => !view.hidden && redraw());
});

function drawSeries(answer) {
  const minutes = MINUTES[answer.interval] || 60;
  const points = (answer.data_points || []).map((p) => ({ t: new Date(p.timestamp), p, rate: p.total_requests / minutes }));
  fillTable($("endpoint-detail-chart-table"), points.map(({ t, p, rate }) => [
    [p.timestamp, dateTime(t)],
    [p.total_requests, count(p.total_requests)],
    [rate, perMinute(rate)],
    [p.p50_response_time_ms, ms(p.p50_response_time_ms)],
    [p.p95_response_time_ms, ms(p.p95_response_time_ms)],
    [p.p99_response_time_ms, ms(p.p99_response_time_ms)],
    [p.error_rate, percent(p.error_rate)],
  ]));
  // Latencies of a bucket without requests are no measurement: a gap.
  const any = points.some(({ p }) => p.total_requests > 0);
  const data = any
    ? points.map(({ t, p, rate }) => {
      const v = { rate };
      for (const k of ["p50", "p95", "p99"]) v[k] = p.total_requests > 0 ? p[`${k}_response_time_ms`] : undefined;
      return { t, v };
    })
    : [];
  redraw = () => {
    lineChart(chart, tooltip, legend, data, SERIES, AXES);
    chartEmpty.textContent = "No requests to this endpoint in the selected range.";
    chartEmpty.hidden = any;
  };
  redraw();
}

// ===== status codes and slowest requests =====

function drawRequests(answer) {
  const codes = Object.entries(answer.status_codes || {}).sort((a, b) => Number(a[0]) - Number(b[0]));
  const total = codes.reduce((sum, [, n]) => sum + n, 0);
  const statuses = $("endpoint-detail-statuses").tBodies[0];
  statuses.replaceChildren(...codes.map(([code, n]) => h("tr", { className: Number(code) >= 400 ? "error-text" : "" },
    h("th", { scope: "row", dataset: { value: code } }, code),
    h("td", { dataset: { value: n } }, count(n)),
    h("td", { dataset: { value: n / total } }, percent(n / total)))));
  if (!codes.length) statuses.replaceChildren(none(3, "No requests in the last 7 days."));

  const list = answer.requests || [];
  const body = $("endpoint-detail-requests").tBodies[0];
  body.replaceChildren(...list.map((r) => h("tr", {},
    h("td", { dataset: { value: r.timestamp }, title: r.timestamp }, preciseTime(new Date(r.timestamp))),
    h("td", { dataset: { value: r.status_code }, className: r.status_code >= 400 ? "error-text" : "" }, String(r.status_code)),
    h("td", { dataset: { value: r.response_time_ms } }, ms(r.response_time_ms)),
    h("td", { dataset: { value: raw(r.user_id) } }, r.user_id || "\u2014"),
    h("td", { dataset: { value: raw(r.correlation_id) } }, ...correlation(r.correlation_id)))));
  if (!list.length) body.replaceChildren(none(5, "No requests in the last 7 days."));
}

function none(columns, text) {
  return h("tr", {}, h("td", { colSpan: columns, className: "empty" }, text));
}

function correlation(id) {
  if (!id) return ["\u2014"];
  const code = h("code", {}, id);
  const button = h("button", {
    type: "button",
    className: "copy",
    dataset: { testid: "copy-correlation-id" },
    ariaLabel: `Copy correlation id ${id}`,
    onclick: () => copy(id, code),
  }, "Copy");
  return [code, " ", button];
}

/** Copies `id` to the clipboard, or selects its text where the clipboard is refused. */
async function copy(id, code) {
  const status = $("endpoint-detail-copy-status");
  try {
    await navigator.clipboard.writeText(id);
    status.textContent = `Copied correlation id ${id}.`;
  } catch (_) {
    // No clipboard (an insecure origin, a refused permission): select it.
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Correlation id selected: press Ctrl+C (\u2318C on a Mac) to copy it.";
  }
}

// ===== closing =====

$("endpoint-detail-close").addEventListener("click", () => closeDetail());
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented || view.hidden) return;
  const at = document.activeElement;
  if (at && at !== document.body && !view.contains(at)) return;
  e.preventDefault();
  closeDetail();
});
