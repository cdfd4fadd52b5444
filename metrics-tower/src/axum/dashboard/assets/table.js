// The endpoint table: every endpoint, sortable by every column, each row
// opening that endpoint's detail view.

import { h } from "./dom.js";
import { count, ms, percent, raw } from "./format.js";

// [field, formatter, numeric]
const COLUMNS = [
  ["endpoint", String, false],
  ["method", String, false],
  ["avg_response_time_ms", ms, true],
  ["p50_response_time_ms", ms, true],
  ["p95_response_time_ms", ms, true],
  ["p99_response_time_ms", ms, true],
  ["request_count", count, true],
  ["error_rate", percent, true],
];
const NUMERIC = new Map(COLUMNS.map(([k, , n]) => [k, n]));

const table = document.querySelector('[data-testid="endpoint-table"]');
const body = table.tBodies[0];
const total = table.querySelector('[data-testid="endpoint-count"]');
const sort = { key: "avg_response_time_ms", dir: "descending" };
let rows = null;

function missing(v) {
  return v === undefined || v === null || (typeof v === "number" && Number.isNaN(v));
}

/**
 * Orders endpoints by `key` in `dir`: numbers by value, strings by
 * localeCompare, missing values last either way. The sort is stable, so
 * ties keep the API's order.
 */
export function sortEndpoints(list, key, dir) {
  const sign = dir === "ascending" ? 1 : -1;
  const numeric = NUMERIC.get(key);
  return [...list].sort((a, b) => {
    const x = a[key];
    const y = b[key];
    if (missing(x) || missing(y)) return missing(x) - missing(y);
    return sign * (numeric ? x - y : String(x).localeCompare(String(y)));
  });
}

/**
 * Called with the row's endpoint when a row is opened (click, or Enter /
 * Space on its button): an `endpoint-open` event on the table, which
 * main.js answers with the detail view (detail.js).
 */
export function openEndpointDetail(row) {
  table.dispatchEvent(new CustomEvent("endpoint-open", { detail: row }));
}

function headerState() {
  for (const th of table.tHead.rows[0].cells) {
    th.setAttribute("aria-sort", th.dataset.sortKey === sort.key ? sort.dir : "none");
  }
}

function message(text) {
  body.replaceChildren(h("tr", {}, h("td", { colSpan: COLUMNS.length, className: "empty" }, text)));
}

function draw() {
  headerState();
  if (!rows) return message("Endpoint data unavailable");
  total.textContent = `Total endpoints: ${rows.length}`;
  if (!rows.length) return message("No endpoint data available");
  body.replaceChildren(...sortEndpoints(rows, sort.key, sort.dir).map((ep) => {
    const cells = COLUMNS.map(([key, format]) => {
      const dataset = { value: raw(ep[key]) };
      if (key === "endpoint") {
        const label = `Details for ${ep.method} ${ep.endpoint}`;
        return h("td", { dataset }, h("button", { type: "button", className: "link", ariaLabel: label }, ep.endpoint));
      }
      const className = key === "error_rate" && ep[key] > 0 ? "error-text" : "";
      return h("td", { dataset, className }, missing(ep[key]) ? "\u2014" : format(ep[key]));
    });
    return h("tr", { className: "clickable", dataset: { testid: "endpoint-row" }, onclick: () => openEndpointDetail(ep) }, ...cells);
  }));
}

/** Shows `endpoints` (null when /performance failed). */
export function renderEndpoints(endpoints) {
  rows = endpoints;
  if (!rows) total.textContent = "Total endpoints: \u2014";
  draw();
}

for (const th of table.tHead.rows[0].cells) {
  th.querySelector("button").addEventListener("click", () => {
    const key = th.dataset.sortKey;
    sort.dir = sort.key === key && sort.dir === "descending" ? "ascending" : "descending";
    sort.key = key;
    draw();
  });
}
headerState();
