// The nine summary cards: each shows one API number, formatted, with the raw
// value in data-value.

import { h } from "./dom.js";
import { count, ms, percent, raw } from "./format.js";

// [test id key, label, which answer, field, formatter]
const CARDS = [
  ["avg-response-time", "Avg Response Time", "performance", "avg_response_time_ms", ms],
  ["p50", "P50 Response Time", "performance", "p50_response_time_ms", ms],
  ["p95", "P95 Response Time", "performance", "p95_response_time_ms", ms],
  ["p99", "P99 Response Time", "performance", "p99_response_time_ms", ms],
  ["error-rate", "Error Rate", "performance", "error_rate", percent],
  ["total-requests", "Total Requests", "performance", "total_requests", count],
  ["active-users", "Active Users", "usage", "active_users", count],
  ["total-events", "Total Events", "usage", "total_events", count],
  ["unique-users", "Unique Users", "usage", "unique_users", count],
];

const values = new Map();

/** Builds the cards once, empty. */
export function initCards(container) {
  for (const [key, label] of CARDS) {
    const value = h("p", { className: "card-value", dataset: { testid: `card-${key}-value` } }, "\u2014");
    const className = key === "error-rate" ? "card card-error" : "card";
    container.append(h("div", { className, dataset: { testid: `card-${key}` } }, h("h3", {}, label), value));
    values.set(key, value);
  }
}

/**
 * Shows the answers' numbers; a missing answer (its call failed) leaves its
 * cards at a dash with no data-value.
 */
export function renderCards(answers) {
  for (const [key, , source, field, format] of CARDS) {
    const metrics = answers[source] && answers[source].metrics;
    let v = metrics ? metrics[field] : undefined;
    // Older servers have only the current hour's active users.
    if (v === undefined && metrics && field === "active_users") v = metrics.active_users_current_hour;
    const el = values.get(key);
    el.textContent = format(v);
    if (v === undefined || v === null) el.removeAttribute("data-value");
    else el.dataset.value = raw(v);
  }
}

/** Forgets every number (the caller may not see them). */
export function clearCards() {
  renderCards({});
}
