// One place for every number and time on the page, so cards, tables and
// tooltips always agree.

const DASH = "\u2014";

function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** Milliseconds with two decimals: "12.34 ms". */
export function ms(v) {
  return isNumber(v) ? `${v.toFixed(2)} ms` : DASH;
}

/** A 0..1 ratio as a percentage with two decimals: 0.125 -> "12.50%". */
export function percent(v) {
  return isNumber(v) ? `${(v * 100).toFixed(2)}%` : DASH;
}

/** A count in the reader's locale digits: "1,234". */
export function count(v) {
  return isNumber(v) ? v.toLocaleString() : DASH;
}

/** A bucket's time for tables and tooltips, in local time. */
export function dateTime(d) {
  return d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** A single request's time, to the second, in local time. */
export function preciseTime(d) {
  return d.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}

/** An axis tick: the hour within a day, the date beyond. */
export function tick(d, spanMs) {
  return spanMs <= 36 * 3600e3
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** An axis label: three significant digits at most, locale digits. */
export function tickNumber(v) {
  return Number(v.toPrecision(3)).toLocaleString();
}

/** The raw API value for a data-value attribute ("" when absent). */
export function raw(v) {
  return v === undefined || v === null ? "" : String(v);
}
