// The selected time range: quick ranges, the custom range's rules, the
// query string it becomes and the URL that reopens it.

export const QUICK = ["24h", "7d", "30d", "90d"];
export const DEFAULT_RANGE = { kind: "24h" };

const DAY_MS = 86400e3;
const MAX_DAYS = 90;
// The server's slack for clocks a little apart (END_DATE_SLACK): an end up to
// 60 s ahead is "now", a start up to 60 s before the horizon is the horizon.
const SLACK_MS = 60e3;

export const MESSAGES = {
  future: "Cannot select future dates.",
  order: "Start date must be before end date.",
  span: "Date range cannot exceed 90 days. Please select a shorter range.",
  horizon: "Data is only available for the last 90 days. Please select a more recent date.",
};

/**
 * The first rule a custom range breaks, as its message, or "" when it is
 * valid. `start`/`end` are Dates or null (not filled in yet).
 */
export function customError(start, end, now = Date.now()) {
  if ([start, end].some((d) => d && d.getTime() > now + SLACK_MS)) return MESSAGES.future;
  if (!start || !end) return "";
  if (start.getTime() >= end.getTime()) return MESSAGES.order;
  if (end.getTime() - start.getTime() > MAX_DAYS * DAY_MS) return MESSAGES.span;
  if (start.getTime() < now - MAX_DAYS * DAY_MS - SLACK_MS) return MESSAGES.horizon;
  return "";
}

/** A datetime-local value (local time) as a Date, or null. */
export function parseLocal(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A Date as a datetime-local value in local time. */
export function toLocalInput(d) {
  const p = (n) => String(n).padStart(2, "0");
  const secs = d.getSeconds() ? `:${p(d.getSeconds())}` : "";
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}${secs}`;
}

/** RFC 3339 UTC without milliseconds: 2024-05-01T10:30:00Z. */
export function rfc3339(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The API's range parameters. Colons stay literal: they are valid in a query. */
export function rangeQuery(range) {
  return range.kind === "custom"
    ? `start_date=${rfc3339(range.start)}&end_date=${rfc3339(range.end)}`
    : `time_range=${range.kind}`;
}

/** The range a link asks for (?range=7d or ?start=..&end=..), with any problem. */
export function fromUrl(search) {
  const params = new URLSearchParams(search);
  const quick = params.get("range");
  if (QUICK.includes(quick)) return { range: { kind: quick } };
  const start = params.get("start");
  const end = params.get("end");
  if (start || end) {
    const s = start ? new Date(start) : null;
    const e = end ? new Date(end) : null;
    const valid = (d) => d && !Number.isNaN(d.getTime());
    const error = valid(s) && valid(e) ? customError(s, e) : MESSAGES.order;
    return error
      ? { range: DEFAULT_RANGE, rejected: { start: valid(s) ? s : null, end: valid(e) ? e : null, error } }
      : { range: { kind: "custom", start: s, end: e } };
  }
  return { range: DEFAULT_RANGE };
}

/** Writes `range` into the address bar, keeping other parameters. */
export function toUrl(range) {
  const url = new URL(window.location.href);
  for (const k of ["range", "start", "end"]) url.searchParams.delete(k);
  if (range.kind === "custom") {
    url.searchParams.set("start", rfc3339(range.start));
    url.searchParams.set("end", rfc3339(range.end));
  } else {
    url.searchParams.set("range", range.kind);
  }
  window.history.replaceState(null, "", url);
}
