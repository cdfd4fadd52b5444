// One place for every number and time on the page, so cards, tables and
// tooltips always agree.

const DASH = "\u2014";
// One formatter of each kind, built once: `toLocaleString(locales, options)`
// builds a new Intl formatter on every call, which a 90-day table (2,160
// rows) pays tens of thousands of times. Same output, `[]` = the reader's
// locale.
const COUNT = new Intl.NumberFormat();
const DATE_TIME = new Intl.DateTimeFormat([], { dateStyle: "medium", timeStyle: "short" });
const PRECISE_TIME = new Intl.DateTimeFormat([], { dateStyle: "medium", timeStyle: "medium" });
const HOUR = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DAY = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });

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
  return isNumber(v) ? COUNT.format(v) : DASH;
}

/** A bucket's time for tables and tooltips, in local time. */
export function dateTime(d) {
  return DATE_TIME.format(d);
}

/** A single request's time, to the second, in local time. */
export function preciseTime(d) {
  return PRECISE_TIME.format(d);
}

/** An axis tick: the hour within a day, the date beyond. */
export function tick(d, spanMs) {
  return (spanMs <= 36 * 3600e3 ? HOUR : DAY).format(d);
}

/** An axis label: three significant digits at most, locale digits. */
export function tickNumber(v) {
  return COUNT.format(Number(v.toPrecision(3)));
}

/** The raw API value for a data-value attribute ("" when absent). */
export function raw(v) {
  return v === undefined || v === null ? "" : String(v);
}
